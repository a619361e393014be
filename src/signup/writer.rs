//! Group commit for signups. Requests hand their signup to a channel; writer tasks take whatever
//! has gathered (up to `MAX_BATCH`), write it in one transaction, and answer each request once
//! the batch has committed. Under light load a batch is one signup and nothing waits; under a
//! burst, one transaction (one fsync on PostgreSQL, one turn of SQLite's writer) carries many.
//!
//! Signups of one address always go to the same writer, so that within a process they are
//! written in the order they arrived, in one batch when they pile up (list bombing is capped by
//! one plan, not raced by two transactions).
//!
//! A request that goes away (the client hung up, the deadline passed) leaves its signup in the
//! batch: the writer, not the request, owns the transaction, so no transaction is ever abandoned
//! half-way.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};

use super::Signup;
use crate::config::Config;
use crate::store::{SignupOutcome, Store, StoreError};

/// Signups per transaction at most.
const MAX_BATCH: usize = 256;
/// Signups waiting for each writer at most; further requests wait for room.
const QUEUE: usize = 2 * MAX_BATCH;

type Reply = oneshot::Sender<Result<SignupOutcome, StoreError>>;

#[derive(Clone)]
pub struct SignupWriter {
    /// One queue per writer task.
    queues: Arc<[mpsc::Sender<(Signup, Reply)>]>,
    pressure: Arc<Pressure>,
}

impl SignupWriter {
    /// Starts the writer tasks of this process. SQLite has one writer connection, so one task;
    /// PostgreSQL gets four, so that batches are built and planned while others commit (its cost
    /// per signup is CPU, not the commit's flush, so more writers overlap more of it).
    pub fn spawn(store: Store, config: Config, wake: Arc<Notify>) -> Self {
        let writers = match store {
            Store::Sqlite(_) => 1,
            Store::Postgres(_) => crate::store::SIGNUP_WRITERS,
        };
        let pressure = Arc::new(Pressure::default());
        let shared = Arc::new(Shared {
            store,
            config,
            wake,
            pressure: pressure.clone(),
        });
        let queues: Vec<_> = (0..writers)
            .map(|_| {
                let (queue, receiver) = mpsc::channel(QUEUE);
                tokio::spawn(run(shared.clone(), receiver));
                queue
            })
            .collect();
        Self {
            queues: queues.into(),
            pressure,
        }
    }

    /// How busy signups are, for the sender to yield to them.
    pub fn pressure(&self) -> Arc<Pressure> {
        self.pressure.clone()
    }

    /// Records `signup` with the next batch; answers once that batch has committed.
    pub async fn submit(&self, signup: Signup) -> Result<SignupOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queue = &self.queues[writer_of(&signup.email.key(), self.queues.len())];
        if queue.send((signup, reply)).await.is_err() {
            return Err(StoreError::Unavailable("the signup writer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the signup writer has stopped".into())))
    }
}

/// The writer of an address: the same for every signup of it.
fn writer_of(key: &str, writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % writers as u64) as usize
}

struct Shared {
    store: Store,
    config: Config,
    wake: Arc<Notify>,
    pressure: Arc<Pressure>,
}

/// Takes batches until every `SignupWriter` is dropped and the queue is empty.
async fn run(shared: Arc<Shared>, mut receiver: mpsc::Receiver<(Signup, Reply)>) {
    let Shared {
        store,
        config,
        wake,
        pressure,
    } = &*shared;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        pressure.note_batch(batch.len());
        let (signups, replies): (Vec<Signup>, Vec<Reply>) = batch.drain(..).unzip();
        let started = std::time::Instant::now();
        let outcomes = write(store, config, &signups).await;
        tracing::debug!(signups = signups.len(), elapsed = ?started.elapsed(), "signup batch written");
        if outcomes
            .iter()
            .any(|o| matches!(o, Ok(SignupOutcome::ConfirmationQueued)))
        {
            wake.notify_one();
        }
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The request may have gone away; its signup is recorded all the same.
            let _ = reply.send(outcome);
        }
    }
}

/// One transaction for the batch. When the database refuses it (a constraint, say), each signup
/// is tried alone so that one bad request cannot fail the others; when the database is
/// unreachable, every request of the batch gets the error at once.
async fn write(store: &Store, config: &Config, signups: &[Signup]) -> Vec<Result<SignupOutcome, StoreError>> {
    match super::record(store, config, signups).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(StoreError::Database(sqlx::Error::Database(e))) if signups.len() > 1 => {
            tracing::warn!(error = %e, signups = signups.len(), "a signup batch failed: writing its signups one by one");
            let mut outcomes = Vec::with_capacity(signups.len());
            for signup in signups {
                outcomes.push(
                    super::record(store, config, std::slice::from_ref(signup))
                        .await
                        .map(|mut o| o.pop().unwrap_or(SignupOutcome::Throttled)),
                );
            }
            outcomes
        }
        Err(e) => {
            let unavailable = e.is_unavailable();
            let message = e.to_string();
            signups
                .iter()
                .map(|_| {
                    Err(if unavailable {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::Batch(message.clone())
                    })
                })
                .collect()
        }
    }
}

/// Whether signups are arriving faster than the writer takes them one at a time: set by each
/// large batch, and read by the sender, which then leaves the database (and the CPU) to them.
#[derive(Debug, Default)]
pub struct Pressure {
    /// Milliseconds since the Unix epoch until which signups count as busy.
    busy_until: std::sync::atomic::AtomicU64,
}

/// A batch this large means requests are queuing for the writer.
const BUSY_BATCH: usize = 16;
/// How long one busy batch keeps the pressure on.
const BUSY_HOLD_MS: u64 = 250;

impl Pressure {
    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn note_batch(&self, size: usize) {
        if size >= BUSY_BATCH {
            self.busy_until
                .store(Self::now_ms() + BUSY_HOLD_MS, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn is_high(&self) -> bool {
        self.busy_until.load(std::sync::atomic::Ordering::Relaxed) > Self::now_ms()
    }
}
