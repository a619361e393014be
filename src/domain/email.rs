//! Email addresses: only valid, normalised addresses can exist as an `EmailAddress`.

use std::fmt;
use std::str::FromStr;

use validator::ValidateEmail;

/// A valid address: trimmed, domain lowercased and IDNA-encoded, at most 254 octets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Please enter your email address.")]
    Empty,
    #[error("Please enter a valid email address: it cannot contain spaces or line breaks.")]
    Whitespace,
    #[error("Please enter a valid email address: it needs exactly one @.")]
    At,
    #[error("Please enter the address alone, like name@example.org, without a name or brackets.")]
    Forbidden,
    #[error("Please enter a valid email address: the part before the @ is missing or too long.")]
    LocalLength,
    #[error("Please enter a valid email address: dots cannot start, end or repeat before the @.")]
    LocalDots,
    #[error("Please enter a valid email address: the domain after the @ is not valid.")]
    Domain,
    #[error("Please enter a valid email address: it is too long.")]
    TooLong,
    #[error("Please enter a valid email address.")]
    Invalid,
}

/// Characters allowed in an unquoted local part (RFC 5322 atext and dots). Quoted local parts
/// are refused: they are a header-injection and deliverability hazard.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || (!c.is_ascii() && !c.is_control())
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Whitespace);
        }
        if s.contains(['<', '>', '"', '(', ')', ',', ':', ';', '[', ']', '\\']) {
            return Err(EmailError::Forbidden);
        }
        let (local, domain) = match s.split_once('@') {
            Some((l, d)) if !d.contains('@') => (l, d),
            _ => return Err(EmailError::At),
        };
        if local.is_empty() || local.len() > 64 {
            return Err(EmailError::LocalLength);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::LocalDots);
        }
        if !local.chars().all(is_atext) {
            return Err(EmailError::Forbidden);
        }
        let domain = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
        check_domain(&domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > 254 {
            return Err(EmailError::TooLong);
        }
        if !address.validate_email() {
            return Err(EmailError::Invalid);
        }
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or(&self.0)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// The lowercased address: what uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// At least two labels of letters, digits and inner hyphens, each 1–63 octets; the top-level
/// label not all digits (so no IP addresses).
fn check_domain(domain: &str) -> Result<(), EmailError> {
    let labels: Vec<&str> = domain.split('.').collect();
    let valid_label = |l: &&str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tld_ok = labels.last().is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    if labels.len() < 2 || domain.len() > 253 || !labels.iter().all(valid_label) || !tld_ok {
        return Err(EmailError::Domain);
    }
    Ok(())
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for EmailAddress {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl serde::Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "a@x.org",
            "a+tag@x.org",
            "O'Brien@x.org",
            "first.last@mail.news.example",
            "x_y-z@sub-domain.co.uk",
        ] {
            assert_eq!(
                EmailAddress::parse(ok).map(|e| e.to_string()),
                Ok(ok.to_owned()),
                "{ok}"
            );
        }
    }

    #[test]
    fn normalises_domain_and_trims() {
        let e = EmailAddress::parse("  Reader@MÜNCHEN.de\t").unwrap();
        assert_eq!(e.as_str(), "Reader@xn--mnchen-3ya.de");
        assert_eq!(e.key(), "reader@xn--mnchen-3ya.de");
        assert_eq!(e.local_part(), "Reader");
        assert_eq!(e.domain(), "xn--mnchen-3ya.de");
        assert_eq!(EmailAddress::parse("a@EXAMPLE.ORG").unwrap().as_str(), "a@example.org");
    }

    #[test]
    fn rejects_what_validator_alone_accepts_and_more() {
        let long = format!(
            "{}@{}.{}.{}.org",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60)
        );
        for bad in [
            "",
            " ",
            "no-at.example.org",
            "two@@x.org",
            "a@b@x.org",
            "spa ce@x.org",
            "a@x.org\r\nBcc: b@y.org",
            "a@x.org\nBcc: b@y.org",
            "a\u{0}@x.org",
            "Jane <j@x.org>",
            "\"Jane\" <j@x.org>",
            "\"quoted\"@x.org",
            "a@b",
            "dot..dot@example.com",
            ".a@x.org",
            "a.@x.org",
            "a@-x.org",
            "a@x-.org",
            "a@x..org",
            "a@x.123",
            "a@[127.0.0.1]",
            "a@127.0.0.1",
            &long,
            &format!("{}@x.org", "a".repeat(65)),
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn accepted_addresses_round_trip_without_whitespace() {
        let parts = [
            "a", "B", ".", "..", "@", " ", "\r\n", "-", "ü", "x.org", "+", "\"", "<", "例え", "0",
        ];
        let mut seed = 7u64;
        for _ in 0..500 {
            let mut s = String::new();
            for _ in 0..8 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push_str(parts[(seed >> 33) as usize % parts.len()]);
            }
            if let Ok(e) = EmailAddress::parse(&s) {
                assert_eq!(EmailAddress::parse(e.as_str()), Ok(e.clone()), "{s:?}");
                assert!(
                    !e.as_str().contains(|c: char| c.is_whitespace() || c.is_control()),
                    "{s:?}"
                );
                assert!(e.as_str().len() <= 254);
            }
        }
    }
}
