//! Starting double opt-in: the one path every signup takes (form, API, resend, import).

use std::time::Duration;

use chrono::TimeDelta;

use crate::config::Config;
use crate::domain::{ConfirmationToken, EmailAddress};
use crate::store::{List, NewSignup, RequestOrigin, SignupOutcome, Store, StoreError};

/// At most one confirmation email per address within this window.
pub const RESEND_AFTER: Duration = Duration::from_secs(5 * 60);
/// And at most this many per day, so a victim of list bombing gets a handful of emails at most.
pub const MAX_CONFIRMATIONS_PER_DAY: i32 = 5;

/// Records a signup for `lists` and queues its confirmation email (subject to the resend
/// window). Nothing is sent here: the sender picks the email up from the outbox.
pub async fn start_opt_in(
    store: &Store,
    config: &Config,
    email: &EmailAddress,
    lists: &[List],
    origin: &RequestOrigin,
) -> Result<SignupOutcome, StoreError> {
    let token = ConfirmationToken::generate();
    let link = config.link(&format!("/subscriptions/confirm?token={}", token.as_str()));
    let ttl = config.confirm_ttl;
    let signup = NewSignup {
        email,
        lists,
        origin,
        token_hash: &token.hash(),
        token_ttl: TimeDelta::from_std(ttl).unwrap_or(TimeDelta::hours(48)),
        resend_after: TimeDelta::from_std(RESEND_AFTER).unwrap_or(TimeDelta::minutes(5)),
        daily_cap: MAX_CONFIRMATIONS_PER_DAY,
    };
    let outcome = store
        .signup(signup, |lists| {
            crate::mail::confirmation_email(email.as_str(), lists, &link, ttl)
        })
        .await?;
    tracing::debug!(?outcome, lists = lists.len(), "signup recorded");
    Ok(outcome)
}
