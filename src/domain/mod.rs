//! Domain types that can only hold valid values: handlers never see a raw string where one exists.

mod cidr;
mod email;
mod slug;
mod token;
mod unsubscribe;

pub use cidr::{Cidr, canonical_ip};
pub use email::{EmailAddress, EmailError};
pub use slug::{ListSlug, SlugError};
pub use token::{ConfirmationToken, TokenError, hex};
pub use unsubscribe::{UnsubscribeTokenError, keyed_hex, sign_unsubscribe, verify_unsubscribe};
