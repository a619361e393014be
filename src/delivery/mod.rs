//! The sender: workers that lease due outbox messages, send them, and record what happened.
//!
//! Each worker keeps its own SMTP session. A message is leased for `LEASE` and the lease is renewed
//! while the worker holds it, so a dead process's messages are taken over by others within
//! `LEASE`. Replies are classified: 5xx fails the message, 4xx retries it later with backoff, and
//! trouble with the session itself (connection, timeout, TLS, AUTH, 421) fails nothing and counts
//! no attempt: the session is re-opened with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::mail::Composer;
use crate::mail::transport::{SendError, SmtpSettings, send_on, write_eml};
use crate::store::{OutboxMessage, Store, now};

/// How long a claim holds before another worker may take the message over.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a worker renews the leases it holds.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often an idle worker looks for messages queued by other processes.
const IDLE_POLL: Duration = Duration::from_millis(500);
const BATCH: i64 = 20;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
const MAX_SESSION_BACKOFF: Duration = Duration::from_secs(300);

/// Where messages go.
#[derive(Clone)]
pub enum Transport {
    Smtp(SmtpSettings),
    /// No SMTP configured: `.eml` files, so `cargo run` needs nothing else.
    Files(PathBuf),
}

#[derive(Clone)]
pub struct SenderConfig {
    pub workers: usize,
    pub retry_base: Duration,
    pub max_attempts: u32,
}

#[derive(Clone)]
pub struct Sender {
    store: Store,
    composer: Composer,
    transport: Transport,
    config: SenderConfig,
    wake: Arc<Notify>,
    /// Identifies this process's leases.
    instance: String,
}

impl Sender {
    pub fn new(
        store: Store,
        composer: Composer,
        transport: Transport,
        config: SenderConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Self {
            store,
            composer,
            transport,
            config,
            wake,
            instance,
        }
    }

    /// Runs the workers until `shutdown` turns true; in-flight sends finish and are recorded.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut workers = JoinSet::new();
        for n in 0..self.config.workers.max(1) {
            let worker = Worker {
                sender: self.clone(),
                name: format!("{}-{n}", self.instance),
                session: None,
                session_backoff: None,
            };
            workers.spawn(worker.run(shutdown.clone()));
        }
        while workers.join_next().await.is_some() {}
    }
}

struct Worker {
    sender: Sender,
    name: String,
    session: Option<AsyncSmtpConnection>,
    /// Current delay before re-opening a failed session; `None` after a success.
    session_backoff: Option<Duration>,
}

enum Outcome {
    Continue,
    /// The session failed: give the rest of the batch back and wait.
    SessionFailed(String),
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let batch = match self.claim().await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "sender: cannot read the outbox");
                    wait(&mut shutdown, Duration::from_secs(1), None).await;
                    continue;
                }
            };
            if batch.is_empty() {
                wait(&mut shutdown, IDLE_POLL, Some(&self.sender.wake)).await;
                continue;
            }
            let renewal = self.renew_leases(batch.iter().map(|m| m.id).collect());
            let mut failure = None;
            let mut rest = batch.iter();
            for msg in rest.by_ref() {
                match self.process(msg).await {
                    Outcome::Continue => {}
                    Outcome::SessionFailed(e) => {
                        self.release(msg).await;
                        failure = Some(e);
                        break;
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
            }
            for msg in rest {
                self.release(msg).await;
            }
            renewal.abort();
            if let Some(error) = failure {
                let first = self.session_backoff.is_none();
                let delay = self.next_session_backoff();
                // One clear error per outage, not one per retry.
                if first {
                    tracing::error!(%error, retry_in = ?delay, "sender: SMTP session failed; nothing is lost, retrying with backoff");
                } else {
                    tracing::debug!(%error, retry_in = ?delay, "sender: SMTP still unavailable");
                }
                wait(&mut shutdown, delay, None).await;
            }
        }
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.quit()).await;
        }
    }

    async fn claim(&self) -> crate::store::Result<Vec<OutboxMessage>> {
        let lease_until = now() + TimeDelta::from_std(LEASE).unwrap_or(TimeDelta::seconds(30));
        self.sender.store.claim_outbox(&self.name, lease_until, BATCH).await
    }

    /// Keeps the batch's leases alive while this worker works through it.
    fn renew_leases(&self, ids: Vec<i64>) -> tokio::task::JoinHandle<()> {
        let store = self.sender.store.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let until = now() + TimeDelta::from_std(LEASE).unwrap_or(TimeDelta::seconds(30));
                if let Err(e) = store.renew_outbox_lease(&name, &ids, until).await {
                    tracing::warn!(error = %e, "sender: cannot renew leases");
                }
            }
        })
    }

    async fn release(&self, msg: &OutboxMessage) {
        if let Err(e) = self.sender.store.outbox_release(msg.id).await {
            tracing::warn!(error = %e, id = msg.id, "sender: cannot release message (its lease will expire)");
        }
    }

    async fn process(&mut self, msg: &OutboxMessage) -> Outcome {
        let store = &self.sender.store.clone();
        if let Some(subscription) = msg.subscription_id {
            match store.subscription_is_confirmed(subscription).await {
                Ok(true) => {}
                Ok(false) => {
                    record(
                        store
                            .outbox_fail(msg.id, "cancelled", "the subscription is no longer active")
                            .await,
                    );
                    return Outcome::Continue;
                }
                Err(e) => return Outcome::SessionFailed(format!("database: {e}")),
            }
        }
        let (envelope, raw) = match self.sender.composer.compose(msg) {
            Ok(built) => built,
            Err(e) => {
                record(store.outbox_fail(msg.id, "failed", &e).await);
                return Outcome::Continue;
            }
        };
        let result = match self.sender.transport.clone() {
            Transport::Files(dir) => write_eml(&dir, &format!("{:010}-{}", msg.id, msg.kind), &raw)
                .await
                .map(|_| ()),
            Transport::Smtp(settings) => self.send_smtp(settings, &envelope, &raw).await,
        };
        match result {
            Ok(()) => {
                if self.session_backoff.take().is_some() {
                    tracing::info!("sender: SMTP session restored");
                }
                record(store.outbox_sent(msg.id).await);
                tracing::info!(id = msg.id, kind = %msg.kind, "sent");
            }
            Err(SendError::Permanent(e)) => {
                tracing::warn!(id = msg.id, error = %e, "rejected permanently");
                record(store.outbox_fail(msg.id, "failed", &e).await);
            }
            Err(SendError::Transient(e)) => {
                let attempts = u32::try_from(msg.attempts).unwrap_or(0) + 1;
                if attempts >= self.sender.config.max_attempts {
                    tracing::warn!(id = msg.id, error = %e, attempts, "giving up after the last attempt");
                    record(store.outbox_fail(msg.id, "failed", &e).await);
                } else {
                    let delay = retry_delay(self.sender.config.retry_base, attempts);
                    tracing::info!(id = msg.id, error = %e, retry_in = ?delay, "deferred");
                    let at = now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1));
                    record(store.outbox_retry(msg.id, at, &e).await);
                }
            }
            Err(SendError::Session(e)) => return Outcome::SessionFailed(e),
        }
        Outcome::Continue
    }

    /// Sends over this worker's session, opening it when needed. A session that had been working
    /// and merely dropped is re-opened at once, once.
    async fn send_smtp(
        &mut self,
        settings: SmtpSettings,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), SendError> {
        let reused = self.session.is_some();
        let result = self.send_once(&settings, envelope, raw).await;
        match result {
            Err(SendError::Session(_)) if reused => self.send_once(&settings, envelope, raw).await,
            other => other,
        }
    }

    async fn send_once(
        &mut self,
        settings: &SmtpSettings,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), SendError> {
        let mut session = match self.session.take() {
            Some(s) if !s.has_broken() => s,
            _ => settings.connect().await?,
        };
        let result = send_on(&mut session, envelope, raw).await;
        // lettre closes the session after an error reply; keep only a healthy one.
        if !session.has_broken() && !matches!(result, Err(SendError::Session(_))) {
            self.session = Some(session);
        }
        result
    }

    fn next_session_backoff(&mut self) -> Duration {
        let base = self.sender.config.retry_base;
        let next = match self.session_backoff {
            None => base,
            Some(d) => (d * 2).min(MAX_SESSION_BACKOFF),
        };
        self.session_backoff = Some(next);
        next
    }
}

fn record(result: crate::store::Result<()>) {
    if let Err(e) = result {
        // The lease expires and the message is tried again: at worst a duplicate, never a loss.
        tracing::error!(error = %e, "sender: cannot record a result");
    }
}

/// Exponential backoff with jitter: base·2^(attempt-1), ±50 %, capped at one hour.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let jitter = 0.5 + rand::random::<f64>();
    exp.min(MAX_RETRY_DELAY).mul_f64(jitter).min(MAX_RETRY_DELAY)
}

/// Sleeps for `d`, or until woken, or until shutdown.
async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration, wake: Option<&Notify>) {
    let woken = async {
        match wake {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = woken => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let base = Duration::from_secs(30);
        let first = retry_delay(base, 1);
        assert!(
            first >= Duration::from_secs(15) && first <= Duration::from_secs(45),
            "{first:?}"
        );
        let third = retry_delay(base, 3);
        assert!(
            third >= Duration::from_secs(60) && third <= Duration::from_secs(180),
            "{third:?}"
        );
        assert!(retry_delay(base, 40) <= MAX_RETRY_DELAY);
    }
}
