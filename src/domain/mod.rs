//! Domain types that can only hold valid values: handlers never see a raw string where one exists.

mod cidr;
mod email;
mod origin;
mod signed;
mod slug;
mod token;

pub use cidr::{Cidr, canonical_ip};
pub use email::{EmailAddress, EmailError};
pub use origin::{WebOrigin, allowed_url};
pub use signed::{ExpiringToken, LinkPurpose, LinkToken, LinkTokenError, keyed_hex, sign_expiring, sign_link};
pub use slug::{ListSlug, SlugError};
pub use token::{ConfirmationToken, TokenError, hex};

#[cfg(test)]
mod properties;
