//! Links put in emails: signed unsubscribe URLs under `BULLETIN_PUBLIC_URL`.

use crate::config::Config;
use crate::domain::{UnsubscribeTokenError, sign_unsubscribe, verify_unsubscribe};

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

    pub fn unsubscribe_url(&self, subscription_id: i64) -> String {
        self.link(&format!(
            "/unsubscribe?token={}",
            sign_unsubscribe(&self.secret, subscription_id)
        ))
    }

    pub fn verify_unsubscribe(&self, token: &str) -> Result<i64, UnsubscribeTokenError> {
        verify_unsubscribe(&self.secret, token)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// An identifier derived from the secret, stable for this installation.
    pub fn keyed(&self, data: &[u8]) -> String {
        crate::domain::keyed_hex(&self.secret, data)
    }
}
