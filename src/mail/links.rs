//! Links put in emails: signed unsubscribe and preference URLs under `BULLETIN_PUBLIC_URL`.

use crate::config::Config;
use crate::domain::{ExpiringToken, LinkPurpose, LinkToken, LinkTokenError, sign_expiring, sign_link};

#[derive(Clone)]
pub struct Links {
    secret: Vec<u8>,
    public_url: String,
    /// The sender's domain: `List-Id` values are `<slug.namespace>`.
    namespace: String,
}

impl Links {
    pub fn new(config: &Config, secret: Vec<u8>) -> Self {
        Self {
            secret,
            public_url: config.public_url.as_str().trim_end_matches('/').to_owned(),
            namespace: config.from.email.domain().to_owned(),
        }
    }

    /// `BULLETIN_PUBLIC_URL` joined with `path_and_query` (which starts with `/`).
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url)
    }

    /// The one-click unsubscribe link of a subscription, signed with its link key.
    pub fn unsubscribe_url(&self, subscription_id: i64, link_key: Option<i64>) -> String {
        self.link(&format!(
            "/unsubscribe?token={}",
            sign_link(&self.secret, LinkPurpose::Unsubscribe, subscription_id, link_key)
        ))
    }

    /// The preference centre of a subscriber ("Manage your newsletters"), signed with its link key.
    pub fn preferences_url(&self, subscriber_id: i64, link_key: Option<i64>) -> String {
        self.link(&format!(
            "/preferences?token={}",
            sign_link(&self.secret, LinkPurpose::Preferences, subscriber_id, link_key)
        ))
    }

    /// The page that erases everything about a subscriber, working until `expires` (Unix seconds).
    pub fn erasure_url(&self, subscriber_id: i64, link_key: Option<i64>, expires: i64) -> String {
        self.link(&format!(
            "/preferences/erase?token={}",
            sign_expiring(&self.secret, LinkPurpose::Erasure, subscriber_id, link_key, expires)
        ))
    }

    /// Whether an expiring `token` was signed for the row it names and has not expired at `now`.
    pub fn verify_expiring(
        &self,
        token: &ExpiringToken,
        link_key: Option<i64>,
        now: i64,
    ) -> Result<i64, LinkTokenError> {
        token.verify(&self.secret, LinkPurpose::Erasure, link_key, now)
    }

    /// Whether `token` was signed for the row it names, whose link key is `link_key`.
    pub fn verify(
        &self,
        token: &LinkToken,
        purpose: LinkPurpose,
        link_key: Option<i64>,
    ) -> Result<i64, LinkTokenError> {
        token.verify(&self.secret, purpose, link_key)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The keyed hash an erasure leaves of an address (`privacy::erased_key`).
    pub fn erased_key(&self, email_key: &str) -> String {
        crate::privacy::erased_key(&self.secret, email_key)
    }

    /// The installation's key for signed links and hashes.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// An identifier derived from the secret, stable for this installation.
    pub fn keyed(&self, data: &[u8]) -> String {
        crate::domain::keyed_hex(&self.secret, data)
    }
}
