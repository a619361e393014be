//! Signed links: a row id and that row's link key (a random number written with the row, never
//! reused with its id), signed with HMAC-SHA256 under the installation's secret. They need no
//! database row per email and work for the life of the row they were made for, and for no other:
//! on SQLite a deleted row's id can be taken by a new row, which has a new link key.
//!
//! Links made before link keys existed sign the id alone; they stay valid for the rows that have
//! no key (the rows that existed then), and never for a row written since.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a signed link acts on; each signs under its own prefix, so one never passes for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// One subscription: leave its list.
    Unsubscribe,
    /// One subscriber: their preference centre.
    Preferences,
    /// One subscriber: the page that erases everything about them (an expiring link).
    Erasure,
}

impl LinkPurpose {
    fn prefix(self) -> &'static [u8] {
        match self {
            LinkPurpose::Unsubscribe => b"unsubscribe:",
            LinkPurpose::Preferences => b"preferences:",
            LinkPurpose::Erasure => b"erasure:",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkTokenError {
    #[error("This link is malformed. Please copy the whole link from the email.")]
    Malformed,
    #[error("This link is not valid.")]
    BadSignature,
    #[error("This link has expired. Please ask for a new one.")]
    Expired,
}

fn mac(key: &[u8], purpose: LinkPurpose, id: i64, link_key: Option<i64>) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(purpose.prefix());
    mac.update(id.to_string().as_bytes());
    if let Some(link_key) = link_key {
        mac.update(b":");
        mac.update(link_key.to_string().as_bytes());
    }
    mac
}

/// `<id>.<signature>`, URL-safe. `link_key` is the row's (`None` for a row from before link
/// keys: its links sign the id alone, as the ones it was sent before).
pub fn sign_link(key: &[u8], purpose: LinkPurpose, id: i64, link_key: Option<i64>) -> String {
    let signature = mac(key, purpose, id, link_key).finalize().into_bytes();
    format!("{id}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A link token that parsed: the id it names and its signature, not checked yet (that needs the
/// row's link key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    pub id: i64,
    signature: Vec<u8>,
}

impl LinkToken {
    pub fn parse(token: &str) -> Result<Self, LinkTokenError> {
        let (id, signature) = token.split_once('.').ok_or(LinkTokenError::Malformed)?;
        let id: i64 = id.parse().ok().filter(|n| *n > 0).ok_or(LinkTokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or(LinkTokenError::Malformed)?;
        Ok(Self { id, signature })
    }

    /// Whether the signature holds for the row with this id and `link_key` (checked in constant
    /// time). `None`: a row from before link keys, which only an id-only signature fits.
    pub fn verify(&self, key: &[u8], purpose: LinkPurpose, link_key: Option<i64>) -> Result<i64, LinkTokenError> {
        mac(key, purpose, self.id, link_key)
            .verify_slice(&self.signature)
            .map(|()| self.id)
            .map_err(|_| LinkTokenError::BadSignature)
    }
}

/// `<id>.<expires>.<signature>`: a link that also stops working at `expires` (Unix seconds), which
/// the signature covers.
pub fn sign_expiring(key: &[u8], purpose: LinkPurpose, id: i64, link_key: Option<i64>, expires: i64) -> String {
    let mut mac = mac(key, purpose, id, link_key);
    mac.update(format!("@{expires}").as_bytes());
    format!("{id}.{expires}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// An expiring link token that parsed, not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringToken {
    pub id: i64,
    pub expires: i64,
    signature: Vec<u8>,
}

impl ExpiringToken {
    pub fn parse(token: &str) -> Result<Self, LinkTokenError> {
        let (id, rest) = token.split_once('.').ok_or(LinkTokenError::Malformed)?;
        let (expires, signature) = rest.split_once('.').ok_or(LinkTokenError::Malformed)?;
        let expires: i64 = expires.parse().map_err(|_| LinkTokenError::Malformed)?;
        // The same checks as a plain link's on `<id>.<signature>`.
        let plain = LinkToken::parse(&format!("{id}.{signature}"))?;
        Ok(Self {
            id: plain.id,
            expires,
            signature: plain.signature,
        })
    }

    /// The id, when the signature holds for that row and `now` (Unix seconds) is before expiry.
    /// A forged expiry fails the signature, so only a genuine link is ever told it expired.
    pub fn verify(
        &self,
        key: &[u8],
        purpose: LinkPurpose,
        link_key: Option<i64>,
        now: i64,
    ) -> Result<i64, LinkTokenError> {
        let mut mac = mac(key, purpose, self.id, link_key);
        mac.update(format!("@{}", self.expires).as_bytes());
        mac.verify_slice(&self.signature)
            .map_err(|_| LinkTokenError::BadSignature)?;
        if now >= self.expires {
            return Err(LinkTokenError::Expired);
        }
        Ok(self.id)
    }
}

/// HMAC-SHA256 of `data` under `key`, hex: for identifiers derived from the secret.
pub fn keyed_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    super::hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: LinkPurpose = LinkPurpose::Unsubscribe;

    fn check(key: &[u8], token: &str, link_key: Option<i64>) -> Result<i64, LinkTokenError> {
        LinkToken::parse(token)?.verify(key, U, link_key)
    }

    #[test]
    fn signed_tokens_verify_and_forgeries_do_not() {
        let token = sign_link(b"key", U, 42, Some(7));
        assert_eq!(check(b"key", &token, Some(7)), Ok(42));
        assert_eq!(check(b"other key", &token, Some(7)), Err(LinkTokenError::BadSignature));
        let forged = token.replacen("42.", "43.", 1);
        assert_eq!(check(b"key", &forged, Some(7)), Err(LinkTokenError::BadSignature));
    }

    #[test]
    fn a_token_fits_only_the_row_it_was_made_for() {
        let token = sign_link(b"key", U, 42, Some(7));
        // The same id taken by a new row, with a new link key.
        assert_eq!(check(b"key", &token, Some(8)), Err(LinkTokenError::BadSignature));
        assert_eq!(check(b"key", &token, None), Err(LinkTokenError::BadSignature));
        // A link from before link keys (the id alone) fits only a row without one.
        let old = sign_link(b"key", U, 42, None);
        assert_eq!(check(b"key", &old, None), Ok(42));
        assert_eq!(check(b"key", &old, Some(7)), Err(LinkTokenError::BadSignature));
    }

    #[test]
    fn purposes_do_not_pass_for_each_other() {
        let token = sign_link(b"key", LinkPurpose::Preferences, 42, Some(7));
        assert_eq!(check(b"key", &token, Some(7)), Err(LinkTokenError::BadSignature));
        assert_eq!(
            LinkToken::parse(&token).and_then(|t| t.verify(b"key", LinkPurpose::Preferences, Some(7))),
            Ok(42)
        );
    }

    #[test]
    fn expiring_links_hold_until_their_time_and_their_expiry_cannot_be_moved() {
        let e = LinkPurpose::Erasure;
        let token = sign_expiring(b"key", e, 42, Some(7), 1_000);
        let parsed = ExpiringToken::parse(&token).unwrap();
        assert_eq!(parsed.verify(b"key", e, Some(7), 999), Ok(42));
        assert_eq!(parsed.verify(b"key", e, Some(7), 1_000), Err(LinkTokenError::Expired));
        assert_eq!(
            parsed.verify(b"key", e, Some(8), 999),
            Err(LinkTokenError::BadSignature)
        );
        let moved = token.replacen(".1000.", ".9000.", 1);
        let moved = ExpiringToken::parse(&moved).unwrap();
        assert_eq!(moved.verify(b"key", e, Some(7), 999), Err(LinkTokenError::BadSignature));
        // Neither passes for the other kind of link.
        assert!(LinkToken::parse(&token).is_err());
        assert!(ExpiringToken::parse(&sign_link(b"key", e, 42, Some(7))).is_err());
        for bad in ["", "42.1000", "42.x.abc", "0.1000.abc", "42.1000.!!!"] {
            assert_eq!(ExpiringToken::parse(bad), Err(LinkTokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn malformed_tokens_are_told_apart() {
        for bad in ["", "42", "x.abc", "-1.abc", "42.!!!", "42.c2hvcnQ"] {
            assert_eq!(LinkToken::parse(bad), Err(LinkTokenError::Malformed), "{bad}");
        }
    }
}
