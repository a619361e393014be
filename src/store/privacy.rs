//! What Bulletin holds about one address (GDPR Article 15), and its erasure (Article 17).
//!
//! An erasure deletes the address from every table. What stays is one row in `erasures` under a
//! keyed hash of the address (the caller makes it: HMAC under the installation's secret), with
//! the lists the reader had left, so that an import never adds them back; and a suppression, if
//! there was one, moves to the same hashed key, so that it stays in force.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::readers::{Reader, ReaderDelivery, ReaderSubscription};
use super::{Result, Store, Suppression, now, on_pool, on_writer};

/// A confirmation email not clicked yet (its token is never shown: only its hash is stored).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PendingConfirmation {
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The lists it confirms, by slug.
    #[sqlx(skip)]
    pub lists: Vec<String>,
    #[serde(skip)]
    pub list_ids: String,
}

/// Everything stored about one address.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriberData {
    pub subscriber: Reader,
    pub subscriptions: Vec<ReaderSubscription>,
    pub pending_confirmations: Vec<PendingConfirmation>,
    pub deliveries: Vec<ReaderDelivery>,
    pub suppressions: Vec<Suppression>,
}

/// What an erasure deleted outside the database's own rows: the messages whose `.eml` files the
/// file transport may have written (`(id, kind)`; a digest delivery's kind is `digest`).
#[derive(Debug, Clone, Default)]
pub struct Erased {
    pub messages: Vec<(i64, String)>,
}

/// What an erasure left for an address: the lists it had left, and whether a suppression that
/// forbids all email (any but a bounce) is in force.
#[derive(Debug, Clone, Default)]
pub struct ErasureRecord {
    pub left_lists: Vec<i64>,
    pub suppressed: bool,
}

impl Store {
    /// The subscriber with this address key.
    pub async fn reader_by_key(&self, email_key: &str) -> Result<Option<Reader>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, Reader>(
                "SELECT id, email, email_key, name, created_at, last_confirmation_at FROM subscribers WHERE email_key = $1",
            )
            .bind(email_key)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Everything stored about the subscriber with this address key, or `None`.
    pub async fn subscriber_data(&self, email_key: &str) -> Result<Option<SubscriberData>> {
        let Some(reader) = self.reader_by_key(email_key).await? else {
            return Ok(None);
        };
        let subscriptions = self.readers_subscriptions(&[reader.id]).await?;
        let deliveries = self.reader_deliveries(&reader, i64::MAX).await?;
        let lists = self.lists().await?;
        let mut pending: Vec<PendingConfirmation> = on_pool!(self, |pool, _d| {
            sqlx::query_as(
                "SELECT created_at, expires_at, list_ids FROM confirmations
                 WHERE subscriber_id = $1 AND expires_at > $2 ORDER BY created_at",
            )
            .bind(reader.id)
            .bind(now())
            .fetch_all(pool)
            .await?
        });
        // A link stays valid after it was used (confirming twice answers the same): pending are
        // the lists it names that are still waiting for a click.
        let waiting: Vec<&str> = subscriptions
            .iter()
            .filter(|s| s.status == "pending")
            .map(|s| s.list_slug.as_str())
            .collect();
        for p in &mut pending {
            p.lists = super::subscriptions::named_lists(lists.clone(), &p.list_ids)
                .into_iter()
                .map(|l| l.slug)
                .filter(|slug| waiting.contains(&slug.as_str()))
                .collect();
        }
        pending.retain(|p| !p.lists.is_empty());
        let suppressions = match self.suppression(email_key).await {
            Ok(s) => vec![s],
            Err(super::StoreError::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Some(SubscriberData {
            subscriber: reader,
            subscriptions,
            pending_confirmations: pending,
            deliveries,
            suppressions,
        }))
    }

    /// Erases the address with key `email_key` (spelled `email` in the subscriber's row, if one
    /// exists) from every table, in one write transaction; `hashed` is its keyed hash, under which
    /// the lists it left and its suppression are kept. `None`: nothing was stored about it.
    pub async fn erase(&self, email_key: &str, hashed: &str) -> Result<Option<Erased>> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let subscriber: Option<(i64, String)> =
                sqlx::query_as("SELECT id, email FROM subscribers WHERE email_key = $1")
                    .bind(email_key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let suppression: Option<(String, DateTime<Utc>)> =
                sqlx::query_as("SELECT reason, created_at FROM suppressions WHERE email_key = $1")
                    .bind(email_key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (id, email) = subscriber.clone().unwrap_or((0, email_key.to_owned()));
            // Messages to the address: by its subscriptions, and by recipient (confirmations
            // and test sends name no subscription).
            let messages: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, kind FROM outbox WHERE recipient IN ($1, $2)
                    OR subscription_id IN (SELECT id FROM subscriptions WHERE subscriber_id = $3)",
            )
            .bind(&email)
            .bind(email_key)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            if subscriber.is_none() && suppression.is_none() && messages.is_empty() {
                return Ok(None);
            }
            let deliveries: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE subscription_id IN (SELECT id FROM subscriptions WHERE subscriber_id = $1)",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let left: Vec<i64> = sqlx::query_scalar(
                "SELECT list_id FROM subscriptions WHERE subscriber_id = $1 AND status = 'unsubscribed'",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;

            // What leaves the counts (migration 0014): each row as it stood when this hour began.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO count_adjustments (list_id, status, delta, at)
                 SELECT list_id, was, -COUNT(*), $2 FROM (
                     SELECT list_id, {} AS was FROM subscriptions WHERE subscriber_id = $1) t
                 WHERE was <> 'none' GROUP BY list_id, was",
                d.status_at_start_of("", "$2"),
            )))
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for statement in [
                "DELETE FROM deliveries WHERE subscription_id IN (SELECT id FROM subscriptions WHERE subscriber_id = $1)",
                "DELETE FROM outbox WHERE subscription_id IN (SELECT id FROM subscriptions WHERE subscriber_id = $1)",
                "DELETE FROM confirmations WHERE subscriber_id = $1",
                "DELETE FROM subscriptions WHERE subscriber_id = $1",
                "DELETE FROM subscribers WHERE id = $1",
            ] {
                sqlx::query(statement).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM outbox WHERE recipient IN ($1, $2)")
                .bind(&email)
                .bind(email_key)
                .execute(&mut *tx)
                .await?;

            // The suppression stays in force under the hash; its detail (an SMTP answer that may
            // quote the address, or an operator's note) does not.
            if let Some((reason, created_at)) = &suppression {
                sqlx::query(
                    "INSERT INTO suppressions (email_key, email, reason, detail, created_at)
                     VALUES ($1, '(erased)', $2, NULL, $3)
                     ON CONFLICT (email_key) DO UPDATE SET reason = excluded.reason, created_at = excluded.created_at",
                )
                .bind(hashed)
                .bind(reason)
                .bind(created_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM suppressions WHERE email_key = $1")
                    .bind(email_key)
                    .execute(&mut *tx)
                    .await?;
            }

            // An earlier erasure of the same address keeps the lists it recorded.
            let earlier: Option<String> = sqlx::query_scalar("SELECT left_lists FROM erasures WHERE email_hash = $1")
                .bind(hashed)
                .fetch_optional(&mut *tx)
                .await?;
            let mut lists: Vec<i64> = earlier.and_then(|e| serde_json::from_str(&e).ok()).unwrap_or_default();
            lists.extend(left);
            lists.sort_unstable();
            lists.dedup();
            sqlx::query(
                "INSERT INTO erasures (email_hash, left_lists, erased_at) VALUES ($1, $2, $3)
                 ON CONFLICT (email_hash) DO UPDATE SET left_lists = excluded.left_lists, erased_at = excluded.erased_at",
            )
            .bind(hashed)
            .bind(serde_json::to_string(&lists).unwrap_or_else(|_| "[]".into()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;

            let mut erased = Erased { messages };
            erased
                .messages
                .extend(deliveries.into_iter().map(|id| (id, "digest".to_owned())));
            Ok(Some(erased))
        })
    }

    /// What earlier erasures left for these hashed addresses: only those that have a record.
    pub async fn erasure_records(&self, hashed: &[String]) -> Result<std::collections::HashMap<String, ErasureRecord>> {
        if hashed.is_empty() {
            return Ok(Default::default());
        }
        let rows: Vec<(String, String, Option<String>)> = on_pool!(self, |pool, d| {
            let sql = format!(
                "SELECT e.email_hash, e.left_lists, x.reason FROM erasures e
                 LEFT JOIN suppressions x ON x.email_key = e.email_hash
                 WHERE e.email_hash IN (SELECT t.value FROM {})",
                (d.json_values)("$1")
            );
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(serde_json::to_string(hashed).unwrap_or_default())
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(hash, lists, reason)| {
                (
                    hash,
                    ErasureRecord {
                        left_lists: serde_json::from_str(&lists).unwrap_or_default(),
                        suppressed: reason.is_some_and(|r| r != "bounce"),
                    },
                )
            })
            .collect())
    }

    /// Whether any address was ever erased (imports skip the hashing when none was).
    pub async fn any_erasure(&self) -> Result<bool> {
        on_pool!(self, |pool, _d| {
            let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM erasures LIMIT 1")
                .fetch_optional(pool)
                .await?;
            Ok(any.is_some())
        })
    }
}
