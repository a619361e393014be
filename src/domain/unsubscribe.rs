//! Unsubscribe tokens: a subscription id signed with HMAC-SHA256 under the installation's secret.
//! They need no database row per email and work for the life of the subscription.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsubscribeTokenError {
    #[error("This unsubscribe link is malformed. Please copy the whole link from the email.")]
    Malformed,
    #[error("This unsubscribe link is not valid.")]
    BadSignature,
}

fn mac(key: &[u8], subscription_id: i64) -> HmacSha256 {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"unsubscribe:");
    mac.update(subscription_id.to_string().as_bytes());
    mac
}

/// `<id>.<signature>`, URL-safe.
pub fn sign_unsubscribe(key: &[u8], subscription_id: i64) -> String {
    let signature = mac(key, subscription_id).finalize().into_bytes();
    format!("{subscription_id}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The subscription id a token names, if its signature holds (checked in constant time).
pub fn verify_unsubscribe(key: &[u8], token: &str) -> Result<i64, UnsubscribeTokenError> {
    let (id, signature) = token.split_once('.').ok_or(UnsubscribeTokenError::Malformed)?;
    let id: i64 = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(UnsubscribeTokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or(UnsubscribeTokenError::Malformed)?;
    mac(key, id)
        .verify_slice(&signature)
        .map(|()| id)
        .map_err(|_| UnsubscribeTokenError::BadSignature)
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

    #[test]
    fn signed_tokens_verify_and_forgeries_do_not() {
        let token = sign_unsubscribe(b"key", 42);
        assert_eq!(verify_unsubscribe(b"key", &token), Ok(42));
        assert_eq!(
            verify_unsubscribe(b"other key", &token),
            Err(UnsubscribeTokenError::BadSignature)
        );
        let forged = token.replacen("42.", "43.", 1);
        assert_eq!(
            verify_unsubscribe(b"key", &forged),
            Err(UnsubscribeTokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_told_apart() {
        for bad in ["", "42", "x.abc", "-1.abc", "42.!!!", "42.c2hvcnQ"] {
            assert_eq!(
                verify_unsubscribe(b"key", bad),
                Err(UnsubscribeTokenError::Malformed),
                "{bad}"
            );
        }
    }
}
