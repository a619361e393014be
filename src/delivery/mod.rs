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

use std::collections::HashMap;

use crate::mail::transport::{SendError, SmtpSettings, send_on, write_eml};
use crate::mail::{Composer, DigestMessage, Links};
use crate::store::{Claimed, Delivery, OutboxMessage, Queue, Store, now};

/// How long a claim holds before another worker may take the message over.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a worker renews the leases it holds.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often an idle worker looks for messages queued by other processes.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Claims of a worker that found less than a full batch are at least this far apart.
const CLAIM_INTERVAL: Duration = Duration::from_millis(100);
/// While signups are busy, the one worker still sending claims this many at a time (a short
/// batch, so `CLAIM_INTERVAL` apart): at most 200 messages a second, the queue drains after.
const PRESSURE_BATCH: i64 = 20;
/// Messages claimed at once. The batch is checked (still subscribed, not cancelled, not
/// suppressed) in one read when claimed, and again before any message sent more than
/// `RECHECK_AFTER` after the last check.
const BATCH: i64 = 100;
/// The unsubscribe window: a message is sent at most this long after its last check (plus the
/// one SMTP transaction already under way).
pub const RECHECK_AFTER: Duration = Duration::from_millis(500);
/// Accepted messages are recorded at least this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
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
    /// Messages per second for the whole process (all workers), if limited.
    pub send_rate: Option<f64>,
}

/// Spaces sends evenly so the process stays under a rate, whatever the number of workers.
pub struct RateLimit {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    pub fn per_second(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this message's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[derive(Clone)]
pub struct Sender {
    /// What `/readyz` reports of the workers.
    health: Arc<SenderHealth>,
    store: Store,
    composer: Composer,
    links: Links,
    transport: Transport,
    config: SenderConfig,
    wake: Arc<Notify>,
    /// While signups are busy, all workers but the first pause: signups first.
    signups: Arc<crate::signup::Pressure>,
    /// Identifies this process's leases.
    instance: String,
    rate: Option<Arc<RateLimit>>,
}

impl Sender {
    pub fn new(
        store: Store,
        composer: Composer,
        links: Links,
        transport: Transport,
        config: SenderConfig,
        wake: Arc<Notify>,
    ) -> Self {
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let rate = config.send_rate.map(|r| Arc::new(RateLimit::per_second(r)));
        Self {
            rate,
            health: Arc::default(),
            signups: Arc::default(),
            store,
            composer,
            links,
            transport,
            config,
            wake,
            instance,
        }
    }

    /// Yields to this process's signups: under their pressure only one worker keeps sending (the
    /// queue waits, and drains once the burst is over).
    pub fn yield_to(mut self, signups: Arc<crate::signup::Pressure>) -> Self {
        self.signups = signups;
        self
    }

    /// Reports to `health` (the app's, which `/readyz` reads).
    pub fn reporting_to(mut self, health: Arc<SenderHealth>) -> Self {
        self.health = health;
        self
    }

    /// Runs the workers until `shutdown` turns true; in-flight sends finish and are recorded.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let mut workers = JoinSet::new();
        for n in 0..self.config.workers.max(1) {
            let worker = Worker {
                first: n == 0,
                sender: self.clone(),
                name: format!("{}-{n}", self.instance),
                session: None,
                session_backoff: None,
                digests: HashMap::new(),
                accepted: Vec::new(),
                first_accepted_at: None,
                owed: Vec::new(),
            };
            workers.spawn(worker.run(shutdown.clone()));
        }
        while workers.join_next().await.is_some() {}
    }
}

/// The sender's state as `/readyz` shows it: when a worker last came round its loop, and the
/// error of a session that failed with no success since.
#[derive(Debug, Default)]
pub struct SenderHealth {
    /// Unix milliseconds; 0 before any worker ran.
    beat: std::sync::atomic::AtomicI64,
    failure: std::sync::Mutex<Option<String>>,
}

/// Longer than any wait of a working worker's loop (idle polls, one slow message) and shorter
/// than an operator's patience.
const STALLED_AFTER: TimeDelta = TimeDelta::seconds(60);

impl SenderHealth {
    fn beat(&self) {
        self.beat
            .store(now().timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = failure;
    }

    /// `Ok`, or what is wrong with the sender.
    pub fn state(&self) -> Result<(), String> {
        if let Some(e) = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Err(format!("sending fails: {e}"));
        }
        let beat = self.beat.load(std::sync::atomic::Ordering::Relaxed);
        if beat == 0 {
            return Err("the sender has not started".to_owned());
        }
        let idle = now().timestamp_millis() - beat;
        if idle > STALLED_AFTER.num_milliseconds() {
            return Err(format!("no sender worker has run for {} s", idle / 1000));
        }
        Ok(())
    }
}

struct Worker {
    /// The worker that keeps sending while signups are busy.
    first: bool,
    sender: Sender,
    name: String,
    session: Option<AsyncSmtpConnection>,
    /// Current delay before re-opening a failed session; `None` after a success.
    session_backoff: Option<Duration>,
    /// The shared parts of digests this worker is sending, rendered once per digest.
    digests: HashMap<i64, Arc<DigestMessage>>,
    /// Messages the SMTP server accepted, not yet recorded: written in one statement at least
    /// every `FLUSH_EVERY`, so a crash can only re-send what was accepted just before it.
    accepted: Vec<i64>,
    first_accepted_at: Option<std::time::Instant>,
    /// Results the database did not take when they were written: tried again first.
    owed: Vec<Owed>,
}

/// A write the sender owes the queue.
enum Owed {
    /// Accepted by the SMTP server.
    Sent(Queue, Vec<i64>),
    /// Claimed and not tried: their leases, given back.
    Release(Queue, Vec<i64>),
}

/// A claimed message of either queue.
enum Job {
    Outbox(OutboxMessage),
    Delivery(Delivery),
}

impl Job {
    fn queue(&self) -> Queue {
        match self {
            Job::Outbox(_) => Queue::Outbox,
            Job::Delivery(_) => Queue::Deliveries,
        }
    }

    fn id(&self) -> i64 {
        match self {
            Job::Outbox(m) => m.id,
            Job::Delivery(d) => d.id,
        }
    }

    fn recipient(&self) -> &str {
        match self {
            Job::Outbox(m) => &m.recipient,
            Job::Delivery(d) => &d.recipient,
        }
    }

    fn kind(&self) -> &str {
        match self {
            Job::Outbox(m) => &m.kind,
            Job::Delivery(_) => "digest",
        }
    }

    fn attempts(&self) -> i32 {
        match self {
            Job::Outbox(m) => m.attempts,
            Job::Delivery(d) => d.attempts,
        }
    }
}

enum Outcome {
    Continue,
    /// The session failed: give the rest of the batch back and wait.
    SessionFailed(String),
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut last_claim: Option<tokio::time::Instant> = None;
        while !*shutdown.borrow() {
            // After a short batch, the next claim waits out `CLAIM_INTERVAL`: during a burst of
            // signups each claim then takes many confirmations instead of a few, so the sender
            // costs the database (SQLite's one writer above all) a small, bounded share.
            if let Some(at) = last_claim.take() {
                let next = at + CLAIM_INTERVAL;
                if next > tokio::time::Instant::now() {
                    wait(&mut shutdown, next - tokio::time::Instant::now(), None).await;
                }
            }
            self.sender.health.beat();
            if !self.owed.is_empty() && !self.settle_owed().await {
                wait(&mut shutdown, Duration::from_secs(1), None).await;
                continue;
            }
            let under_pressure = self.sender.signups.is_high();
            if under_pressure && !self.first {
                wait(&mut shutdown, CLAIM_INTERVAL, None).await;
                continue;
            }
            let claimed_at = tokio::time::Instant::now();
            let limit = if under_pressure { PRESSURE_BATCH } else { BATCH };
            let batch = match self.claim(limit).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "sender: cannot read the outbox");
                    wait(&mut shutdown, Duration::from_secs(1), None).await;
                    continue;
                }
            };
            if batch.is_empty() {
                // Nothing waits to be sent, so nothing is failing to be.
                self.sender.health.set_failure(None);
                wait(&mut shutdown, IDLE_POLL, Some(&self.sender.wake)).await;
                last_claim = Some(claimed_at);
                continue;
            }
            if (batch.len() as i64) < BATCH {
                last_claim = Some(claimed_at);
            }
            let queue = batch[0].queue();
            let renewal = self.renew_leases(queue, batch.iter().map(Job::id).collect());
            let mut failure = None;
            let mut rest = batch.iter().peekable();
            // Checked for the whole batch at claim time, then again whenever the last check is
            // older than `RECHECK_AFTER`: the unsubscribe window.
            let mut wanted = Wanted::default();
            while let Some(job) = rest.peek().copied() {
                // Everything that may wait comes before the check, so that the check is the last
                // step before the SMTP transaction starts: the message, the rate limit's slot
                // and an open session.
                let built = self.prepare(job).await;
                if let Some(rate) = &self.sender.rate {
                    rate.wait().await;
                }
                if let Err(e) = self.open_session().await {
                    failure = Some(e);
                    break;
                }
                if wanted.is_stale() {
                    let remaining: Vec<&Job> = rest.clone().collect();
                    if let Err(e) = wanted
                        .check(&self.sender.store, &self.sender.links, queue, &remaining)
                        .await
                    {
                        failure = Some(format!("database: {e}"));
                        break;
                    }
                }
                if !wanted.contains(job.id()) {
                    rest.next();
                    continue;
                }
                match self.process(job, built).await {
                    Outcome::Continue => {}
                    Outcome::SessionFailed(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                rest.next();
                if self.first_accepted_at.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
                    self.flush(queue).await;
                }
                if *shutdown.borrow() {
                    break;
                }
            }
            self.flush(queue).await;
            let unsent: Vec<i64> = rest.map(Job::id).collect();
            self.settle(Owed::Release(queue, unsent)).await;
            self.finish_digests(&batch).await;
            renewal.abort();
            if let Some(error) = failure {
                self.sender.health.set_failure(Some(error.clone()));
                let first = self.session_backoff.is_none();
                let delay = self.next_session_backoff();
                // One clear error per outage, not one per retry.
                if first && error.starts_with("cannot write the email file") {
                    tracing::error!(%error, retry_in = ?delay, "sender: cannot write emails to BULLETIN_OUTBOX_DIR; nothing is lost, retrying with backoff");
                } else if first && error.starts_with("database: ") {
                    tracing::error!(%error, retry_in = ?delay, "sender: the database is unavailable; nothing is lost, retrying with backoff");
                } else if first {
                    tracing::error!(%error, retry_in = ?delay, "sender: SMTP session failed; nothing is lost, retrying with backoff");
                } else {
                    tracing::debug!(%error, retry_in = ?delay, "sender: SMTP still unavailable");
                }
                wait(&mut shutdown, delay, None).await;
            }
        }
        // A last try at what is owed; what still fails waits out its leases.
        self.settle_owed().await;
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.quit()).await;
        }
    }

    /// Transactional mail first, then digest deliveries.
    async fn claim(&self, limit: i64) -> crate::store::Result<Vec<Job>> {
        let lease_until = now() + TimeDelta::from_std(LEASE).unwrap_or(TimeDelta::seconds(30));
        let store = &self.sender.store;
        let outbox = store.claim_outbox(&self.name, lease_until, limit).await?;
        if !outbox.is_empty() {
            return Ok(outbox.into_iter().map(Job::Outbox).collect());
        }
        let deliveries = store.claim_deliveries(&self.name, lease_until, limit).await?;
        Ok(deliveries.into_iter().map(Job::Delivery).collect())
    }

    /// Keeps the batch's leases alive while this worker works through it.
    fn renew_leases(&self, queue: Queue, ids: Vec<i64>) -> tokio::task::JoinHandle<()> {
        let store = self.sender.store.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let until = now() + TimeDelta::from_std(LEASE).unwrap_or(TimeDelta::seconds(30));
                if let Err(e) = store.renew_leases(queue, &name, &ids, until).await {
                    tracing::warn!(error = %e, "sender: cannot renew leases");
                }
            }
        })
    }

    /// Records the accepted messages in one statement.
    async fn flush(&mut self, queue: Queue) {
        self.first_accepted_at = None;
        if self.accepted.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.accepted);
        self.settle(Owed::Sent(queue, ids)).await;
    }

    /// Writes `owed`, or keeps it for the next turn of the loop when the database does not
    /// answer: once it does, the sent are recorded and the leases given back at once, instead
    /// of the messages waiting out their leases (and the sent being sent again).
    async fn settle(&mut self, owed: Owed) {
        let store = &self.sender.store;
        let written = match &owed {
            Owed::Sent(_, ids) | Owed::Release(_, ids) if ids.is_empty() => return,
            Owed::Sent(queue, ids) => store.queue_sent(*queue, ids).await,
            Owed::Release(queue, ids) => store.queue_release(*queue, &self.name, ids).await,
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "sender: cannot record a result yet; trying again when the database answers");
            self.owed.push(owed);
        }
    }

    /// Writes what earlier turns owe; `false` while the database still does not answer.
    async fn settle_owed(&mut self) -> bool {
        for owed in std::mem::take(&mut self.owed) {
            self.settle(owed).await;
        }
        self.owed.is_empty()
    }

    /// Marks the batch's digests done when nothing of them is left to send.
    async fn finish_digests(&mut self, batch: &[Job]) {
        let mut ids: Vec<i64> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Delivery(d) => Some(d.digest_id),
                Job::Outbox(_) => None,
            })
            .collect();
        ids.dedup();
        for id in ids {
            match self.sender.store.finish_digest_if_complete(id).await {
                Ok(true) => {
                    self.digests.remove(&id);
                    tracing::info!(digest = id, "digest done");
                    crate::telemetry::digest("done");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(digest = id, error = %e, "cannot update digest status"),
            }
        }
    }

    /// The digest's shared part, read and encoded once per worker.
    async fn digest(&mut self, id: i64) -> crate::store::Result<Arc<DigestMessage>> {
        if let Some(digest) = self.digests.get(&id) {
            return Ok(digest.clone());
        }
        self.sender.store.digest_started(id).await?;
        let parts = self.sender.store.digest_parts(id).await?;
        let digest = Arc::new(
            self.sender
                .composer
                .prepare_digest(parts, self.sender.links.namespace()),
        );
        self.digests.insert(id, digest.clone());
        Ok(digest)
    }

    /// The message, ready for the wire.
    async fn prepare(&mut self, job: &Job) -> Result<(lettre::address::Envelope, Vec<u8>), PrepareError> {
        match job {
            Job::Outbox(msg) => Ok(self
                .sender
                .composer
                .compose(msg, &self.sender.links)
                .map_err(PrepareError::Compose)?),
            Job::Delivery(d) => {
                let digest = self.digest(d.digest_id).await?;
                let links = &self.sender.links;
                let unsubscribe = links.unsubscribe_url(d.subscription_id, d.link_key);
                let preferences = links.preferences_url(d.subscriber_id, d.subscriber_key);
                let to = crate::digest::Recipient {
                    email: &d.recipient,
                    unsubscribe_url: &unsubscribe,
                    preferences_url: &preferences,
                };
                self.sender
                    .composer
                    .digest_for(&digest, d.id, &to, links.namespace())
                    .map_err(PrepareError::Compose)
            }
        }
    }

    /// Sends a prepared message and records what happened.
    async fn process(
        &mut self,
        job: &Job,
        built: Result<(lettre::address::Envelope, Vec<u8>), PrepareError>,
    ) -> Outcome {
        let store = self.sender.store.clone();
        let (queue, id, kind) = (job.queue(), job.id(), job.kind());
        let (envelope, raw) = match built {
            Ok(built) => built,
            Err(PrepareError::Compose(e)) => {
                record(store.queue_fail(queue, id, "failed", &e).await);
                crate::telemetry::delivery(kind, "failed");
                return Outcome::Continue;
            }
            // The database is unavailable: give the message back and wait.
            Err(PrepareError::Database(e)) => return Outcome::SessionFailed(format!("database: {e}")),
        };
        let name = format!("{id:010}-{kind}");
        let started = std::time::Instant::now();
        let result = match self.sender.transport.clone() {
            Transport::Files(dir) => write_eml(&dir, &name, &raw).await.map(|_| ()),
            Transport::Smtp(settings) => self.send_smtp(settings, &envelope, &raw).await,
        };
        if !matches!(result, Err(SendError::Session(_))) {
            crate::telemetry::smtp_send(started.elapsed());
        }
        let outcome = match &result {
            Ok(()) => "sent",
            Err(SendError::Transient(_))
                if u32::try_from(job.attempts()).unwrap_or(0) + 1 < self.sender.config.max_attempts =>
            {
                "deferred"
            }
            Err(SendError::Session(_)) => "",
            Err(_) => "failed",
        };
        if !outcome.is_empty() {
            crate::telemetry::delivery(kind, outcome);
        }
        match result {
            Ok(()) => {
                if self.session_backoff.take().is_some() {
                    tracing::info!("sender: SMTP session restored");
                    self.sender.health.set_failure(None);
                }
                self.accepted.push(id);
                self.first_accepted_at.get_or_insert_with(std::time::Instant::now);
                tracing::debug!(id, ?queue, "sent");
            }
            Err(SendError::Rejected(e)) => {
                tracing::warn!(id, ?queue, error = %e, "recipient rejected: suppressing the address");
                record(store.queue_fail(queue, id, "failed", &e).await);
                let recipient = match job {
                    Job::Outbox(m) => &m.recipient,
                    Job::Delivery(d) => &d.recipient,
                };
                record(
                    store
                        .suppress(&recipient.to_lowercase(), recipient, "bounce", Some(&e))
                        .await,
                );
            }
            Err(SendError::Permanent(e)) => {
                tracing::warn!(id, ?queue, error = %e, "rejected permanently");
                record(store.queue_fail(queue, id, "failed", &e).await);
            }
            Err(SendError::Transient(e)) => {
                let attempts = u32::try_from(job.attempts()).unwrap_or(0) + 1;
                if attempts >= self.sender.config.max_attempts {
                    tracing::warn!(id, ?queue, error = %e, attempts, "giving up after the last attempt");
                    record(store.queue_fail(queue, id, "failed", &e).await);
                } else {
                    let delay = retry_delay(self.sender.config.retry_base, attempts);
                    tracing::info!(id, ?queue, error = %e, retry_in = ?delay, "deferred");
                    let at = now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::hours(1));
                    record(store.queue_retry(queue, id, at, &e).await);
                }
            }
            Err(SendError::Session(e)) => return Outcome::SessionFailed(e),
        }
        Outcome::Continue
    }

    /// Opens this worker's SMTP session unless one is open (nothing to do for `.eml` files).
    async fn open_session(&mut self) -> Result<(), String> {
        if let Transport::Smtp(settings) = &self.sender.transport
            && self.session.as_ref().is_none_or(|s| s.has_broken())
        {
            match settings.connect().await {
                Ok(session) => self.session = Some(session),
                Err(SendError::Session(e)) => return Err(e),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
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

/// Which messages of a batch are still wanted, and since when that is known.
#[derive(Default)]
struct Wanted {
    ids: std::collections::HashSet<i64>,
    checked_at: Option<std::time::Instant>,
}

impl Wanted {
    fn is_stale(&self) -> bool {
        self.checked_at.is_none_or(|t| t.elapsed() >= RECHECK_AFTER)
    }

    fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id)
    }

    /// Checks `jobs` in one read; those no longer wanted are cancelled.
    async fn check(&mut self, store: &Store, links: &Links, queue: Queue, jobs: &[&Job]) -> crate::store::Result<()> {
        let keys: Vec<(String, String)> = jobs
            .iter()
            .map(|j| {
                let key = j.recipient().to_lowercase();
                let erased = links.erased_key(&key);
                (key, erased)
            })
            .collect();
        let claimed: Vec<Claimed<'_>> = jobs
            .iter()
            .zip(&keys)
            .map(|(j, (key, erased))| Claimed {
                id: j.id(),
                email_key: key,
                erased_key: erased,
                is_confirmation: matches!(j, Job::Outbox(m) if m.kind == "confirmation"),
            })
            .collect();
        let checked_at = std::time::Instant::now();
        self.ids = store.still_wanted(queue, &claimed).await?.into_iter().collect();
        self.checked_at = Some(checked_at);
        let unwanted: Vec<i64> = jobs
            .iter()
            .map(|j| j.id())
            .filter(|id| !self.ids.contains(id))
            .collect();
        if !unwanted.is_empty() {
            tracing::debug!(count = unwanted.len(), ?queue, "no longer wanted: cancelled");
            let keys: Vec<&str> = claimed
                .iter()
                .filter(|c| !self.ids.contains(&c.id))
                .flat_map(|c| [c.email_key, c.erased_key])
                .collect();
            let suppressed = store.suppressed_among(&keys).await.unwrap_or_default();
            for (job, c) in jobs.iter().zip(&claimed) {
                if self.ids.contains(&c.id) {
                    continue;
                }
                let why = if suppressed.contains(c.email_key) || suppressed.contains(c.erased_key) {
                    "suppressed"
                } else {
                    "cancelled"
                };
                crate::telemetry::delivery(job.kind(), why);
            }
            record(
                store
                    .queue_cancel(
                        queue,
                        &unwanted,
                        "no longer wanted (unsubscribed, suppressed or cancelled)",
                    )
                    .await,
            );
        }
        Ok(())
    }
}

/// Why a claimed message could not be made ready to send.
enum PrepareError {
    /// The message itself cannot be built: it fails.
    Compose(String),
    /// The database did not answer: the message goes back to the queue.
    Database(crate::store::StoreError),
}

impl From<crate::store::StoreError> for PrepareError {
    fn from(e: crate::store::StoreError) -> Self {
        PrepareError::Database(e)
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

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_sends_across_workers() {
        let limit = Arc::new(RateLimit::per_second(10.0));
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let limit = limit.clone();
            tasks.spawn(async move {
                for _ in 0..5 {
                    limit.wait().await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        // 20 sends at 10/s: the last one waits 1.9 s (virtual time).
        assert_eq!(start.elapsed(), Duration::from_millis(1900));
    }

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
