//! Starting double opt-in: the one path every signup takes (form, API, resend, import). Requests
//! of the HTTP surface are written in batches by the [`SignupWriter`] (group commit); the CLI and
//! imports write theirs directly. Either way each batch is one transaction.

mod lists;
mod writer;

pub use lists::ListCache;
pub use writer::{Pressure, SignupWriter};

use std::time::Duration;

use chrono::TimeDelta;

use crate::config::Config;
use crate::domain::{ConfirmationToken, EmailAddress};
use crate::store::{List, NewSignup, RequestOrigin, SignupOutcome, SignupRules, Store, StoreError};

/// At most one confirmation email per address within this window.
pub const RESEND_AFTER: Duration = Duration::from_secs(5 * 60);
/// And at most this many per day, so a victim of list bombing gets a handful of emails at most.
pub const MAX_CONFIRMATIONS_PER_DAY: i32 = 5;

/// A validated signup, with the confirmation token its email will carry if one is sent.
pub struct Signup {
    pub email: EmailAddress,
    pub lists: Vec<List>,
    pub origin: RequestOrigin,
    token: ConfirmationToken,
    token_hash: String,
}

impl Signup {
    pub fn new(email: EmailAddress, lists: Vec<List>, origin: RequestOrigin) -> Self {
        let token = ConfirmationToken::generate();
        let token_hash = token.hash();
        Self {
            email,
            lists,
            origin,
            token,
            token_hash,
        }
    }
}

fn rules(config: &Config) -> SignupRules {
    SignupRules {
        token_ttl: TimeDelta::from_std(config.confirm_ttl).unwrap_or(TimeDelta::hours(48)),
        resend_after: TimeDelta::from_std(RESEND_AFTER).unwrap_or(TimeDelta::minutes(5)),
        daily_cap: MAX_CONFIRMATIONS_PER_DAY,
    }
}

/// Records `batch` in one write transaction and queues the confirmation emails the caps allow.
/// Nothing is sent here: the sender picks the emails up from the outbox.
pub async fn record(store: &Store, config: &Config, batch: &[Signup]) -> Result<Vec<SignupOutcome>, StoreError> {
    let new: Vec<NewSignup<'_>> = batch
        .iter()
        .map(|s| NewSignup {
            email: &s.email,
            lists: &s.lists,
            origin: &s.origin,
            token_hash: &s.token_hash,
        })
        .collect();
    store
        .signup_batch(&new, &rules(config), |i, lists| {
            let signup = &batch[i];
            crate::mail::confirmation_email(signup.email.as_str(), lists, signup.token.as_str(), config.confirm_ttl)
        })
        .await
}

/// Records one signup for `lists` at once (the CLI and imports; HTTP requests go through the
/// [`SignupWriter`]).
pub async fn start_opt_in(
    store: &Store,
    config: &Config,
    email: &EmailAddress,
    lists: &[List],
    origin: &RequestOrigin,
) -> Result<SignupOutcome, StoreError> {
    let signup = Signup::new(email.clone(), lists.to_vec(), origin.clone());
    let outcome = record(store, config, std::slice::from_ref(&signup))
        .await?
        .pop()
        .unwrap_or(SignupOutcome::Throttled);
    tracing::debug!(?outcome, lists = lists.len(), "signup recorded");
    Ok(outcome)
}
