//! The durable outbox: every email is a row here before it is sent, written in the same
//! transaction as the change that caused it, so nothing is lost between commit and SMTP.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::{Result, Store, now, on_pool, on_queue, on_writer};

/// Lower sends first: confirmations before anything else.
pub const PRIORITY_CONFIRMATION: i32 = 0;
pub const PRIORITY_TRANSACTIONAL: i32 = 10;

#[derive(Debug, Clone)]
pub struct NewOutboxMessage {
    pub kind: &'static str,
    pub priority: i32,
    pub recipient: String,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    /// Instead of bodies: what the sender renders the email from (JSON; see `mail`).
    pub params: Option<String>,
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
    pub params: Option<String>,
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
            "INSERT INTO outbox (kind, priority, recipient, subject, text_body, html_body, params, headers,
                                 subscription_id, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $10, $7, $8, $9, $9) RETURNING id",
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
        .bind(&$msg.params)
        .fetch_one($executor)
        .await
    };
}

/// Counted on the queues' partial indexes of queued rows (`next_attempt_at IS NOT NULL`, always
/// true, steers SQLite there: without it, it read every delivery ever made on another index).
pub(super) const QUEUE_DEPTHS: &str = "SELECT kind, COUNT(*) FROM outbox WHERE status = 'queued' GROUP BY kind
 UNION ALL SELECT 'digest', COUNT(*) FROM deliveries WHERE status = 'queued' AND next_attempt_at IS NOT NULL";

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

    /// Messages waiting to be sent, by outbox kind (`digest` for digest deliveries).
    pub async fn queue_depths(&self) -> Result<Vec<(String, i64)>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as(QUEUE_DEPTHS).fetch_all(pool).await?)
        })
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
        on_queue!(write, self, |pool, d| {
            let sql = d.claim(
                "outbox",
                "status = 'queued' AND next_attempt_at <= $3",
                "priority, next_attempt_at, id",
                "id, kind, recipient, subject, text_body, html_body, params, headers, attempts, priority, subscription_id",
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
            Queue::Outbox => ", text_body = NULL, html_body = NULL, params = NULL",
            Queue::Deliveries => "",
        }
    }
}

/// A claimed message as the check at claim time sees it: its id, the key of its recipient, and
/// whether it is a confirmation (which may still go to a bounced address).
pub struct Claimed<'a> {
    pub id: i64,
    pub email_key: &'a str,
    /// The hashed key an erasure of the address left (a suppression may be kept under it).
    pub erased_key: &'a str,
    pub is_confirmation: bool,
}

impl Store {
    /// Extends the leases this worker still holds: one statement for all of them.
    pub async fn renew_leases(
        &self,
        queue: Queue,
        worker: &str,
        ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<()> {
        on_queue!(write, self, |pool, d| {
            let sql = format!(
                "UPDATE {} SET lease_until = $1
                 WHERE id IN (SELECT CAST(t.value AS BIGINT) FROM {}) AND leased_by = $3 AND status = 'queued'",
                queue.table(),
                (d.json_values)("$2"),
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(serde_json::to_string(ids).unwrap_or_default())
                .bind(worker)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The SMTP server accepted these messages: one statement for the whole batch.
    pub async fn queue_sent(&self, queue: Queue, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = super::now();
        on_queue!(write, self, |pool, d| {
            let sql = format!(
                "UPDATE {} SET status = 'sent', attempts = attempts + 1, lease_until = NULL, last_error = NULL{},
                        sent_at = $1
                 WHERE id IN (SELECT CAST(t.value AS BIGINT) FROM {})",
                queue.table(),
                queue.finished_extra(),
                (d.json_values)("$2"),
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(now)
                .bind(serde_json::to_string(ids).unwrap_or_default())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Which of these claimed messages are still wanted: still queued, the subscription (if
    /// any) still confirmed, the digest (if any) not cancelled, the address not suppressed (a
    /// bounce still lets a confirmation through). One read for a whole batch, at claim time and
    /// again within the unsubscribe window.
    pub async fn still_wanted(&self, queue: Queue, claimed: &[Claimed<'_>]) -> Result<Vec<i64>> {
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<serde_json::Value> = claimed
            .iter()
            .map(|c| serde_json::json!([c.id, c.email_key, i32::from(c.is_confirmation), c.erased_key]))
            .collect();
        let wanted_by_list = match queue {
            Queue::Outbox => {
                "(q.subscription_id IS NULL OR EXISTS (SELECT 1 FROM subscriptions s
                                                        WHERE s.id = q.subscription_id AND s.status = 'confirmed'))"
            }
            Queue::Deliveries => {
                "EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = q.subscription_id AND s.status = 'confirmed')
                 AND EXISTS (SELECT 1 FROM digests g WHERE g.id = q.digest_id AND g.status <> 'cancelled')"
            }
        };
        on_queue!(read, self, |pool, d| {
            let sql = format!(
                "SELECT q.id FROM {rows} JOIN {table} q ON q.id = CAST(t.value ->> 0 AS BIGINT)
                 WHERE q.status = 'queued' AND {wanted_by_list}
                   AND NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.email_key IN (t.value ->> 1, t.value ->> 3)
                                   AND (x.reason <> 'bounce' OR CAST(t.value ->> 2 AS INTEGER) = 0))",
                rows = (d.json_rows)("$1"),
                table = queue.table(),
            );
            Ok(sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(serde_json::Value::Array(rows).to_string())
                .fetch_all(pool)
                .await?)
        })
    }

    /// Messages no longer wanted (unsubscribed, cancelled, suppressed): never sent.
    pub async fn queue_cancel(&self, queue: Queue, ids: &[i64], reason: &str) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_queue!(write, self, |pool, d| {
            let sql = format!(
                "UPDATE {} SET status = 'cancelled', lease_until = NULL, last_error = $1{}
                 WHERE id IN (SELECT CAST(t.value AS BIGINT) FROM {}) AND status = 'queued'",
                queue.table(),
                queue.finished_extra(),
                (d.json_values)("$2"),
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(reason)
                .bind(serde_json::to_string(ids).unwrap_or_default())
                .execute(pool)
                .await?;
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
        on_queue!(write, self, |pool, _d| {
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
            "UPDATE {} SET status = $1, attempts = attempts + 1, lease_until = NULL, last_error = $2,
                    failed_at = CASE WHEN $1 = 'failed' THEN $4 END{}
             WHERE id = $3",
            queue.table(),
            queue.finished_extra()
        );
        on_queue!(write, self, |pool, _d| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(status)
                .bind(error)
                .bind(id)
                .bind(now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Gives claimed messages back untouched (the session failed, not the messages).
    pub async fn queue_release(&self, queue: Queue, worker: &str, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_queue!(write, self, |pool, d| {
            // Only leases this worker still holds: given back late (after an outage), a message
            // another worker has claimed since keeps its lease.
            let sql = format!(
                "UPDATE {} SET lease_until = NULL
                 WHERE id IN (SELECT CAST(t.value AS BIGINT) FROM {}) AND status = 'queued' AND leased_by = $2",
                queue.table(),
                (d.json_values)("$1"),
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(serde_json::to_string(ids).unwrap_or_default())
                .bind(worker)
                .execute(pool)
                .await?;
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
