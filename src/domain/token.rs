//! Confirmation tokens: 256 random bits, URL-safe, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

const TOKEN_BYTES: usize = 32;
/// Length of the base64url (unpadded) text of `TOKEN_BYTES` bytes.
const TOKEN_CHARS: usize = 43;

#[derive(Clone, PartialEq, Eq)]
pub struct ConfirmationToken(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("This confirmation link is malformed. Please copy the whole link from the email.")]
pub struct TokenError;

impl ConfirmationToken {
    pub fn generate() -> Self {
        let bytes: [u8; TOKEN_BYTES] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(s: &str) -> Result<Self, TokenError> {
        if s.len() != TOKEN_CHARS {
            return Err(TokenError);
        }
        match URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == TOKEN_BYTES => Ok(Self(s.to_owned())),
            _ => Err(TokenError),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database keeps: the hex SHA-256 of the token text.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

// Never print a token, not even in debug output.
impl std::fmt::Debug for ConfirmationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmationToken(..)")
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = ConfirmationToken::generate();
        let b = ConfirmationToken::generate();
        assert_ne!(a, b);
        assert_eq!(ConfirmationToken::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.as_str());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = ConfirmationToken::generate();
        for bad in [
            "",
            "abc",
            &good.as_str()[1..],
            &format!("{}=", good.as_str()),
            &"!".repeat(43),
        ] {
            assert_eq!(ConfirmationToken::parse(bad), Err(TokenError), "{bad}");
        }
    }
}
