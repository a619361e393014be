//! The durable outbox: every email is a row here before it is sent, written in the same
//! transaction as the change that caused it, so nothing is lost between commit and SMTP.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{Result, Store, on_pool, on_writer};

/// Lower sends first: confirmations before anything else.
pub const PRIORITY_CONFIRMATION: i32 = 0;
pub const PRIORITY_TRANSACTIONAL: i32 = 10;

#[derive(Debug, Clone)]
pub struct NewOutboxMessage {
    pub kind: &'static str,
    pub priority: i32,
    pub recipient: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    /// Extra headers (List-Id, List-Unsubscribe, ...), already validated.
    pub headers: Vec<(String, String)>,
    pub subscription_id: Option<i64>,
}

impl NewOutboxMessage {
    /// The extra headers as stored: a JSON array of `[name, value]` pairs.
    pub fn headers_json(&self) -> String {
        serde_json::to_string(&self.headers).unwrap_or_else(|_| "[]".into())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxMessage {
    pub id: i64,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub headers: String,
    pub attempts: i32,
    pub priority: i32,
    pub subscription_id: Option<i64>,
}

impl OutboxMessage {
    pub fn extra_headers(&self) -> Vec<(String, String)> {
        serde_json::from_str(&self.headers).unwrap_or_default()
    }
}

/// Inserts one outbox row through any executor of either backend (a transaction, usually).
macro_rules! insert_outbox {
    ($executor:expr, $msg:expr, $now:expr) => {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO outbox (kind, priority, recipient, subject, text_body, html_body, headers,
                                 subscription_id, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind($msg.kind)
        .bind($msg.priority)
        .bind(&$msg.recipient)
        .bind(&$msg.subject)
        .bind(&$msg.text_body)
        .bind(&$msg.html_body)
        .bind($msg.headers_json())
        .bind($msg.subscription_id)
        .bind($now)
        .fetch_one($executor)
        .await
    };
}

impl Store {
    /// Queues `msg` inside the caller's transaction.
    pub(crate) async fn enqueue_in<DB>(
        tx: &mut sqlx::Transaction<'static, DB>,
        msg: &NewOutboxMessage,
        now: DateTime<Utc>,
    ) -> Result<()>
    where
        DB: OutboxBackend,
    {
        DB::insert(tx, msg, now).await
    }

    /// Queues `msg` on its own; returns its id.
    pub async fn enqueue(&self, msg: &NewOutboxMessage) -> Result<i64> {
        let now = super::now();
        on_writer!(self, |pool, _d| Ok(insert_outbox!(pool, msg, now)?))
    }

    /// An outbox message's status and last error.
    pub async fn outbox_status(&self, id: i64) -> Result<(String, Option<String>)> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as("SELECT status, last_error FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or(super::StoreError::NotFound)
        })
    }

    /// Leases up to `limit` messages that are due, confirmations first, to `worker` until
    /// `lease_until`. A message whose lease ran out (its worker died) is due again.
    pub async fn claim_outbox(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxMessage>> {
        let now = super::now();
        on_writer!(self, |pool, d| {
            let sql = d.claim(
                "outbox",
                "status = 'queued' AND next_attempt_at <= $3",
                "priority, next_attempt_at, id",
                "id, kind, recipient, subject, text_body, html_body, headers, attempts, priority, subscription_id",
            );
            let mut rows = sqlx::query_as::<_, OutboxMessage>(AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(worker)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            // RETURNING has no order: confirmations first, then oldest first.
            rows.sort_by_key(|m| (m.priority, m.id));
            Ok(rows)
        })
    }
}

/// The two queues the sender works: transactional mail (`outbox`) and digest deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Outbox,
    Deliveries,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Outbox => "outbox",
            Queue::Deliveries => "deliveries",
        }
    }

    /// Outbox rows carry their bodies (which may hold a token): drop them once they are done.
    fn finished_extra(self) -> &'static str {
        match self {
            Queue::Outbox => ", text_body = NULL, html_body = NULL",
            Queue::Deliveries => "",
        }
    }
}

impl Store {
    /// Extends the leases this worker still holds.
    pub async fn renew_leases(
        &self,
        queue: Queue,
        worker: &str,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET lease_until = $1 WHERE id = $2 AND leased_by = $3 AND status = 'queued'",
            queue.table()
        );
        for id in ids {
            on_writer!(self, |pool, _d| {
                sqlx::query(AssertSqlSafe(sql.as_str()))
                    .bind(lease_until)
                    .bind(id)
                    .bind(worker)
                    .execute(pool)
                    .await?;
            });
        }
        Ok(())
    }

    /// The SMTP server accepted these messages: one statement for the whole batch.
    pub async fn queue_sent(&self, queue: Queue, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = super::now();
        on_writer!(self, |pool, _d| {
            let mut update = sqlx::QueryBuilder::new(format!(
                "UPDATE {} SET status = 'sent', attempts = attempts + 1, lease_until = NULL, last_error = NULL{}, sent_at = ",
                queue.table(),
                queue.finished_extra()
            ));
            update.push_bind(now).push(" WHERE id IN (");
            let mut list = update.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            update.push(")");
            update.build().execute(pool).await?;
        });
        Ok(())
    }

    /// A temporary failure of this message: try again at `next_attempt_at`.
    pub async fn queue_retry(&self, queue: Queue, id: i64, next_attempt_at: DateTime<Utc>, error: &str) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET attempts = attempts + 1, next_attempt_at = $1, lease_until = NULL, last_error = $2
             WHERE id = $3",
            queue.table()
        );
        on_writer!(self, |pool, _d| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(next_attempt_at)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A permanent failure (`failed`), or a message no longer wanted (`cancelled`): never sent.
    pub async fn queue_fail(&self, queue: Queue, id: i64, status: &'static str, error: &str) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET status = $1, attempts = attempts + 1, lease_until = NULL, last_error = $2{}
             WHERE id = $3",
            queue.table(),
            queue.finished_extra()
        );
        on_writer!(self, |pool, _d| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(status)
                .bind(error)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Gives a claimed message back untouched (the session failed, not the message).
    pub async fn queue_release(&self, queue: Queue, id: i64) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET lease_until = NULL WHERE id = $1 AND status = 'queued'",
            queue.table()
        );
        on_writer!(self, |pool, _d| {
            sqlx::query(AssertSqlSafe(sql)).bind(id).execute(pool).await?;
        });
        Ok(())
    }
}

/// Lets transactional code of either backend queue a message in its own transaction.
pub(crate) trait OutboxBackend: sqlx::Database {
    fn insert(
        tx: &mut sqlx::Transaction<'static, Self>,
        msg: &NewOutboxMessage,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl OutboxBackend for sqlx::Sqlite {
    async fn insert(
        tx: &mut sqlx::Transaction<'static, Self>,
        msg: &NewOutboxMessage,
        now: DateTime<Utc>,
    ) -> Result<()> {
        insert_outbox!(&mut **tx, msg, now)?;
        Ok(())
    }
}

impl OutboxBackend for sqlx::Postgres {
    async fn insert(
        tx: &mut sqlx::Transaction<'static, Self>,
        msg: &NewOutboxMessage,
        now: DateTime<Utc>,
    ) -> Result<()> {
        insert_outbox!(&mut **tx, msg, now)?;
        Ok(())
    }
}
