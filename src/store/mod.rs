//! Storage: the only code that knows SQL. One `Store` over SQLite or PostgreSQL; each query is
//! written once and run on whichever pool backs the store (`on_pool!`). Where the dialects differ,
//! the difference lives in [`Dialect`], side by side.

mod admin_sessions;
mod counts;
mod digests;
mod export;
mod feeds;
mod import;
mod lists;
pub mod outbox;
mod plans;
mod preferences;
mod privacy;
mod readers;
mod schedules;
mod settings;
mod signups;
mod stats;
mod subscriptions;
mod suppressions;

pub use admin_sessions::AdminSession;
pub use digests::{
    ArchivedDigest, Delivery, DigestContent, DigestItem, DigestParts, DigestView, ENQUEUE_CHUNK, FailedDelivery,
    ItemWindow, NewDigest, NextDigest, PublicDigest,
};
pub use export::ExportRow;
pub use feeds::{Feed, IngestCounts, NewItem, PollValidators};
pub use import::ImportRow;
pub use lists::{List, ListChange, ListCounts, NewList};
pub use outbox::{Claimed, NewOutboxMessage, OutboxMessage, Queue};
pub use preferences::{Joined, LinkedSubscriber, PreferenceList};
pub use privacy::{Erased, ErasureRecord, PendingConfirmation, SubscriberData};
pub use readers::{Reader, ReaderDelivery, ReaderPage, ReaderQuery, ReaderRow, ReaderSearch, ReaderSubscription};
pub use schedules::{ClaimedRun, NewSchedule, ScheduleRow, ScheduleRun, SlotClaim};
pub use signups::{NewSignup, SignupOutcome, SignupRules};
pub use stats::{DayFigures, ListActivity, QueueDepth};
pub use subscriptions::{
    ConfirmOutcome, RequestOrigin, SubscriberPage, SubscriberRow, SubscriptionInfo, SubscriptionStatus,
};
pub use suppressions::Suppression;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A batch written for many callers failed; each of them gets this.
    #[error("{0}")]
    Batch(String),
    /// As `Batch`, because the database did not answer.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether the database did not answer (unreachable, shutting down, locked past the busy
    /// timeout, no connection free in time), rather than refused what was asked.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => database_unavailable(e),
            _ => false,
        }
    }
}

fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // SQLite: SQLITE_BUSY and SQLITE_LOCKED with their extended codes (the busy timeout
            // ran out). PostgreSQL: connection exceptions (class 08) and a server shutting down
            // or starting (57P01–57P03).
            matches!(&*code, "5" | "6" | "261" | "262" | "517" | "773")
                || code.starts_with("08")
                || code.starts_with("57P")
        }),
        _ => false,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Maps a unique-key violation to `Conflict`, passing other errors through.
pub(crate) fn conflict_on_unique(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(err),
    }
}

/// What differs between the two SQL dialects. Everything else is written once.
pub(crate) struct Dialect {
    /// Opens a transaction that will write. SQLite must take the write lock up front: a deferred
    /// transaction that reads and then writes fails with "database is locked" under contention,
    /// and the busy timeout does not help it.
    pub begin_write: &'static str,
    /// Suffix for a sub-select that claims queue rows: PostgreSQL skips rows another worker holds;
    /// SQLite serialises writers, so a plain sub-select inside one UPDATE is already exclusive.
    pub skip_locked: &'static str,
    /// Suffix that locks the rows a select reads until the transaction ends (PostgreSQL); SQLite
    /// has one writer at a time, so its write transaction already holds them.
    pub for_update: &'static str,
    /// A table of the elements of the JSON array bound as `param`, as `t(value)`: many values in
    /// one parameter, so that the statement text stays the same whatever their number (and is
    /// prepared once). `t.value ->> 0` reads an element of an inner array.
    pub json_rows: fn(param: &str) -> String,
    /// The same for an array of scalars, as `t(value)`: `CAST(t.value AS BIGINT)` on both.
    pub json_values: fn(param: &str) -> String,
    /// The UTC day of a time column, as `YYYY-MM-DD` text.
    pub day: fn(column: &str) -> String,
    /// The UTC hour of a time column, as `YYYY-MM-DDTHH` text.
    pub hour: fn(column: &str) -> String,
    /// A random 64-bit integer per row: the link key of a new subscriber or subscription
    /// (migration 0016). It only has to differ from a deleted row's; the signature is the secret.
    pub random_key: &'static str,
}

impl Dialect {
    /// A subscription's status when the UTC hour of `at` (an SQL time expression) began, from
    /// the row as it is (`row` is its prefix, e.g. `subscriptions.`): its recorded one when it
    /// changed in that hour, 'none' when it was written in that hour and never changed (a new
    /// signup records no change: see migrations 0014 and 0022, and `counts`), else its status.
    pub fn status_at_start_of(&self, row: &str, at: &str) -> String {
        format!(
            "CASE WHEN {row}changed_at IS NOT NULL AND {} = {hour} THEN {row}status_at_hour_start
                  WHEN {row}changed_at IS NULL AND {} = {hour} THEN 'none'
                  ELSE {row}status END",
            (self.hour)(&format!("{row}changed_at")),
            (self.hour)(&format!("{row}created_at")),
            hour = (self.hour)(at),
        )
    }

    /// The `SET` items that record a subscription's status change at `new` (a time): when it
    /// changed, and its status when that UTC hour began, read from the row as it was (`old` is
    /// the row's prefix: `subscriptions.` in an upsert, empty in an `UPDATE`).
    pub fn track_change(&self, old: &str, new: &str) -> String {
        format!(
            "status_at_hour_start = {}, changed_at = {new}",
            self.status_at_start_of(old, new),
        )
    }

    /// The statement that leases up to `$4` rows of `table` matching `due` (where `$3` is now),
    /// whose lease is free or lapsed, to worker `$2` until `$1`. One statement, so on SQLite it
    /// is atomic without `SKIP LOCKED`.
    pub fn claim(&self, table: &str, due: &str, order: &str, returning: &str) -> String {
        format!(
            "UPDATE {table} SET lease_until = $1, leased_by = $2
             WHERE id IN (SELECT id FROM {table} WHERE {due} AND (lease_until IS NULL OR lease_until < $3)
                          ORDER BY {order} LIMIT $4 {})
             RETURNING {returning}",
            self.skip_locked
        )
    }
}

pub(crate) const SQLITE: Dialect = Dialect {
    begin_write: "BEGIN IMMEDIATE",
    skip_locked: "",
    for_update: "",
    json_rows: |param| format!("json_each({param}) AS t"),
    json_values: |param| format!("json_each({param}) AS t"),
    // Times are stored as RFC 3339 UTC text: the day is its first ten characters.
    day: |column| format!("substr({column}, 1, 10)"),
    hour: |column| format!("substr({column}, 1, 13)"),
    random_key: "random()",
};

pub(crate) const POSTGRES: Dialect = Dialect {
    begin_write: "BEGIN",
    skip_locked: "FOR UPDATE SKIP LOCKED",
    for_update: "FOR UPDATE",
    json_rows: |param| format!("json_array_elements({param}::json) AS t(value)"),
    json_values: |param| format!("json_array_elements_text({param}::json) AS t(value)"),
    day: |column| format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
    hour: |column| format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')"),
    random_key: "CAST(floor((random() - 0.5) * 1.8e19) AS BIGINT)",
};

/// Runs `$body` with `$pool` bound to the backing pool and `$d` to its [`Dialect`]. The body is
/// compiled once per backend, so one query text serves both. `on_pool!` reads (on SQLite, from
/// the pool of readers); `on_writer!` writes (on SQLite, on the one writer connection).
macro_rules! on_pool {
    (@$sqlite:ident, $postgres:ident; $store:expr, |$pool:ident, $d:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(db) => {
                #[allow(unused_variables)]
                let $d = &$crate::store::SQLITE;
                let $pool = &db.$sqlite;
                $body
            }
            $crate::store::Store::Postgres(db) => {
                #[allow(unused_variables)]
                let $d = &$crate::store::POSTGRES;
                let $pool = &db.$postgres;
                $body
            }
        }
    };
    ($store:expr, |$pool:ident, $d:ident| $body:expr) => {
        $crate::store::on_pool!(@read, pool; $store, |$pool, $d| $body)
    };
}
macro_rules! on_writer {
    ($store:expr, |$pool:ident, $d:ident| $body:expr) => {
        $crate::store::on_pool!(@write, pool; $store, |$pool, $d| $body)
    };
}
/// The sender's statements: on PostgreSQL, the connections that walk queue indexes in order.
macro_rules! on_queue {
    (read, $store:expr, |$pool:ident, $d:ident| $body:expr) => {
        $crate::store::on_pool!(@read, queue; $store, |$pool, $d| $body)
    };
    (write, $store:expr, |$pool:ident, $d:ident| $body:expr) => {
        $crate::store::on_pool!(@write, queue; $store, |$pool, $d| $body)
    };
}
pub(crate) use {on_pool, on_queue, on_writer};

/// The database behind Bulletin. Cheap to clone (pools are reference counted).
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

#[derive(Clone, Debug)]
pub struct PgStore {
    pub pool: PgPool,
    /// For the signup writer only (see `Store::connect`).
    signups: PgPool,
    /// For the sender's claims and records (see `Store::connect`).
    queue: PgPool,
}

/// SQLite lets one connection write at a time, and a connection that finds the file locked
/// sleeps in the busy handler (1 ms, 2 ms, … 100 ms) however soon the lock is free: under load
/// that is where the time goes. So this process writes through one connection, whose callers
/// queue in order without sleeping, and reads through a pool beside it (WAL: readers never wait
/// for the writer). Other processes on the same file still meet the busy timeout.
///
/// The writer does not checkpoint the WAL into the database file itself (SQLite would, inside
/// every thousandth commit, holding up the writes queued behind it): a task of the store's own
/// does it every `CHECKPOINT_EVERY` on a connection of its own, beside the writer.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub read: SqlitePool,
    pub write: SqlitePool,
    checkpoint: SqlitePool,
}

/// Signup writer tasks of a process on PostgreSQL, each with a connection of its own.
pub const SIGNUP_WRITERS: usize = 4;

const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed WAL frames into the database file without blocking the writer or readers
/// (`PASSIVE`), until the store is closed.
impl Store {
    /// SQLite: checkpoints the whole WAL into the database file and empties it (waiting for
    /// readers up to the busy timeout), so that pages as they were before a write are nowhere
    /// on disk. PostgreSQL: nothing.
    pub async fn checkpoint_truncate(&self) -> Result<()> {
        if let Store::Sqlite(db) = self {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&db.checkpoint)
                .await?;
        }
        Ok(())
    }
}

async fn checkpoint_loop(pool: SqlitePool) {
    while !pool.is_closed() {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "SQLite checkpoint failed; the WAL grows until one succeeds");
        }
    }
}

/// Begins a transaction with `statement`, in a task of its own. A caller's future may be dropped
/// at any await (a client hangs up, a timeout passes); dropped during the `BEGIN` round trip,
/// sqlx (0.9.0) leaves a pooled PostgreSQL connection inside a transaction nothing will end, and
/// whoever gets that connection next runs inside it, holding its locks. In a task, `BEGIN`
/// always completes, and a `Transaction` nobody took is dropped and rolled back as usual.
pub(crate) async fn begin<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    statement: &'static str,
) -> Result<sqlx::Transaction<'static, DB>> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin_with(statement).await }).await {
        Ok(begun) => Ok(begun?),
        Err(_) => Err(StoreError::Database(sqlx::Error::WorkerCrashed)),
    }
}

/// The current time as stored: millisecond precision, so that a value read back compares equal
/// to the one written on both backends.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// The longest a query waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). SQLite files are created if missing.
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, ACQUIRE_TIMEOUT).await
    }

    /// As `connect`, waiting at most `acquire` for a free (or new) connection: past it a query
    /// fails as unavailable. Serving, that is within the request timeout, so that a database
    /// that went away answers `503` rather than the request timing out.
    pub async fn connect_with(url: &str, acquire: Duration) -> Result<Store> {
        let acquire = acquire.min(ACQUIRE_TIMEOUT);
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // After a checkpoint lets the WAL start over, its file is cut back to this.
                .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
                // Statement journals (an upsert of many rows keeps one, to undo itself alone)
                // in memory rather than in temporary files.
                .pragma("temp_store", "memory")
                // Deleted and rewritten rows are zeroed in the file, free pages included: an
                // erased address leaves no bytes behind (an outbox row loses its body when sent,
                // and the old copy would otherwise stay in a free page).
                .pragma("secure_delete", "on");
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(acquire)
                .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
                .await?;
            let checkpoint = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            tokio::spawn(checkpoint_loop(checkpoint.clone()));
            // Read-only: a write sent to the readers by mistake fails loudly instead of
            // contending with the writer.
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(acquire)
                .connect_with(options.read_only(true))
                .await?;
            Ok(Store::Sqlite(SqliteStore {
                read,
                write,
                checkpoint,
            }))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Defence in depth: a transaction left open by a cancelled future (a known sqlx
            // fault with PostgreSQL) is ended by the server instead of holding locks forever.
            let options = PgConnectOptions::from_str(url)?.options([("idle_in_transaction_session_timeout", "60s")]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(acquire)
                .connect_with(options.clone())
                .await?;
            // The signup writer's statements reach rows only through ON CONFLICT arbiters and
            // unnested arrays, so no plan of theirs depends on a table's size: a pool of their
            // own, so that nothing else competes with them for a connection.
            let signups = PgPoolOptions::new()
                .max_connections(SIGNUP_WRITERS as u32)
                .acquire_timeout(acquire)
                .connect_lazy_with(options.clone());
            // The queues fill in seconds (a burst of signups, a digest to a million readers),
            // far faster than statistics follow: planned from statistics of a near-empty table,
            // a claim sorts the whole queue to take the first hundred rows. The sender's
            // statements only ever walk an index in its order or look rows up by id, so on its
            // connections the planner may not sort or build bitmaps, and plans each statement for
            // its arguments and the tables' current size. (Not on the other connections: the
            // setting re-plans foreign-key checks too, one per inserted row.)
            let queue = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(acquire)
                .connect_lazy_with(options.options([
                    ("plan_cache_mode", "force_custom_plan"),
                    ("enable_sort", "off"),
                    ("enable_bitmapscan", "off"),
                ]));
            Ok(Store::Postgres(PgStore { pool, signups, queue }))
        } else {
            Err(StoreError::Database(sqlx::Error::Configuration(
                "the URL must start with sqlite:// or postgres://".into(),
            )))
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies the embedded migrations of this backend. Safe to run from several processes.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite(db) => sqlx::migrate!("migrations/sqlite").run(&db.write).await?,
            Store::Postgres(db) => sqlx::migrate!("migrations/postgres").run(&db.pool).await?,
        }
        Ok(())
    }

    /// Refreshes the planner's statistics of the subscriber tables after a bulk load, which
    /// changes them faster than autovacuum follows (PostgreSQL; SQLite plans without them).
    pub async fn analyze_subscribers(&self) -> Result<()> {
        if let Store::Postgres(db) = self {
            sqlx::query("ANALYZE subscribers, subscriptions")
                .execute(&db.pool)
                .await?;
        }
        Ok(())
    }

    /// The embedded migrations this database has not applied (or whose last run failed), by
    /// version: empty when its schema is the one this build expects.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let (migrator, applied): (sqlx::migrate::Migrator, Vec<(i64, bool)>) = match self {
            Store::Sqlite(db) => (
                sqlx::migrate!("migrations/sqlite"),
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                    .fetch_all(&db.read)
                    .await?,
            ),
            Store::Postgres(db) => (
                sqlx::migrate!("migrations/postgres"),
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                    .fetch_all(&db.pool)
                    .await?,
            ),
        };
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(&(*v, true)))
            .collect())
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool, _d| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(db) => {
                db.write.close().await;
                db.read.close().await;
                db.checkpoint.close().await;
            }
            Store::Postgres(db) => {
                db.pool.close().await;
                db.signups.close().await;
                db.queue.close().await;
            }
        }
    }
}
