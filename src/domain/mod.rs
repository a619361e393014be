//! Domain types that can only hold valid values: handlers never see a raw string where one exists.

#[path = "email_stub.rs"]
mod email;
mod slug;
mod token;

pub use email::{EmailAddress, EmailError};
pub use slug::{ListSlug, SlugError};
pub use token::{ConfirmationToken, TokenError, hex};
