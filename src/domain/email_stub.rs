#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Please enter a valid email address.")]
pub struct EmailError;
impl EmailAddress {
    pub fn parse(s: &str) -> Result<Self, EmailError> {
        let s = s.trim();
        if s.contains('@') && !s.contains(char::is_whitespace) {
            Ok(Self(s.to_owned()))
        } else {
            Err(EmailError)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}
