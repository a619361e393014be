//! List slugs: the stable public name of a list in URLs and forms.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListSlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("A list slug is 1 to 64 characters of lowercase letters, digits and hyphens.")]
pub struct SlugError;

impl ListSlug {
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        let valid = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid { Ok(Self(s.to_owned())) } else { Err(SlugError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ListSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_digits_hyphens() {
        for ok in ["daily", "weekly-explainer", "a", "2026", &"x".repeat(64)] {
            assert!(ListSlug::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "Daily", "daily news", "daily_news", "ä", "../x", &"x".repeat(65)] {
            assert_eq!(ListSlug::parse(bad), Err(SlugError), "{bad}");
        }
    }
}
