//! Digests and their deliveries: one row per recipient, written in chunks, claimed in batches.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, conflict_on_unique, now, on_pool, on_queue, on_writer};

/// Delivery rows written per transaction: small enough that SQLite's write lock is held briefly
/// (signups keep flowing), large enough to fill 100,000 rows in a few dozen transactions.
pub const ENQUEUE_CHUNK: i64 = 5_000;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: TimeDelta = TimeDelta::hours(24);

/// How much older than a digest's `since` a story may be dated and still be news to it, when
/// Bulletin first saw it after `since`: feeds are polled, and a story dated 13:35 but fetched at
/// 13:37 missed the 13:36 digest through no fault of its own. A new feed's backlog of older
/// stories stays out.
pub const LATE_ARRIVAL: TimeDelta = TimeDelta::hours(24);

/// Which items a digest may carry, besides those no earlier digest of its list carried.
#[derive(Debug, Clone, Copy)]
pub struct ItemWindow {
    /// Items published since this time...
    pub since: DateTime<Utc>,
    /// ...or first seen since `since` and published since this time.
    pub dated_from: DateTime<Utc>,
}

impl ItemWindow {
    /// What came after `since` (the last digest, or a time the operator gave): stories published
    /// since, and those first seen since that are dated at most `LATE_ARRIVAL` before it.
    pub fn after(since: DateTime<Utc>) -> Self {
        Self {
            since,
            dated_from: since - LATE_ARRIVAL,
        }
    }

    /// Stories published within `lookback` of `now`, however late they came.
    pub fn published_within(now: DateTime<Utc>, lookback: TimeDelta) -> Self {
        Self {
            since: now - lookback,
            dated_from: now - lookback,
        }
    }
}

/// Items of list `$1` no earlier (uncancelled) digest of it carried, published since `$2`, or
/// first seen since `$2` and published since `$4` (an `ItemWindow`), newest first, at most `$3`.
const ELIGIBLE_ITEMS: &str = "SELECT i.id, i.title, i.url, i.summary_html, i.summary_text, i.published_at,
            i.image_url, i.image_width
     FROM items i
     WHERE i.list_id = $1 AND i.published_at >= $4
       AND (i.published_at >= $2 OR i.first_seen_at >= $2)
       AND NOT EXISTS (SELECT 1 FROM digest_items di JOIN digests d ON d.id = di.digest_id
                       WHERE di.item_id = i.id AND d.list_id = $1 AND d.status <> 'cancelled')
     ORDER BY i.published_at DESC, i.id DESC LIMIT $3";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DigestItem {
    pub id: i64,
    pub title: String,
    pub url: Option<String>,
    pub summary_html: String,
    pub summary_text: String,
    pub published_at: DateTime<Utc>,
    pub image_url: Option<String>,
    pub image_width: Option<i32>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DigestView {
    pub id: i64,
    #[serde(rename = "list")]
    pub list_slug: String,
    pub status: String,
    pub subject: String,
    pub items: i64,
    pub recipients: i64,
    pub sent: i64,
    pub failed: i64,
    pub pending: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the next digest of a list is to be made of. The store chooses its items itself, inside
/// the same write that records it, so two concurrent requests never carry the same item.
pub struct NewDigest<'a> {
    pub list_id: i64,
    /// The web version's id: 32 hex digits of random.
    pub public_id: &'a str,
    pub window: ItemWindow,
    pub max_items: i64,
    pub idempotency_key: Option<&'a str>,
    /// Fingerprint of the request, to tell a retry under the same key from a different request.
    pub request_hash: &'a str,
}

/// The rendered part every recipient of a digest shares.
#[derive(Debug, Clone)]
pub struct DigestContent {
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    /// Marks the per-recipient values: `{placeholder}U` is the unsubscribe URL, `{placeholder}E`
    /// the address. Random per digest, so no feed text can contain it by design.
    pub placeholder: String,
}

/// What asking for the next digest of a list came to.
#[derive(Debug, PartialEq)]
pub enum NextDigest {
    Created(i64),
    /// The idempotency key was used in the last 24 h, for the same request or not.
    Existing {
        id: i64,
        same_request: bool,
    },
    NoItems,
    NoRecipients,
    RenderFailed(String),
}

/// The parts of a digest every delivery shares, and what they need to be personalised.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DigestParts {
    pub id: i64,
    pub list_id: i64,
    pub list_slug: String,
    pub list_name: String,
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    pub placeholder: String,
    pub status: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub digest_id: i64,
    pub subscription_id: i64,
    pub recipient: String,
    pub attempts: i32,
    /// The subscription's link key, signed into its unsubscribe link.
    pub link_key: Option<i64>,
    /// The subscriber and its link key, signed into its preference link (0 and none when the
    /// subscription is gone: the message is then not wanted anyway).
    pub subscriber_id: i64,
    pub subscriber_key: Option<i64>,
}

/// A delivery that failed for good.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FailedDelivery {
    pub recipient: String,
    pub attempts: i32,
    pub error: String,
    pub failed_at: Option<DateTime<Utc>>,
}

const VIEW_SELECT: &str = "SELECT d.id, l.slug AS list_slug, d.status, d.subject, d.items, d.recipients,
        COALESCE(d.sent_count, (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = d.id AND x.status = 'sent')) AS sent,
        COALESCE(d.failed_count, (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = d.id AND x.status = 'failed')) AS failed,
        CASE WHEN d.status = 'done' THEN 0
             ELSE (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = d.id AND x.status = 'queued') END AS pending,
        d.created_at, d.started_at, d.finished_at
 FROM digests d JOIN lists l ON l.id = d.list_id";

impl Store {
    /// Items no earlier (uncancelled) digest of the list carried, in `window`, newest first.
    pub async fn eligible_items(&self, list_id: i64, window: ItemWindow, max: i64) -> Result<Vec<DigestItem>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, DigestItem>(ELIGIBLE_ITEMS)
                .bind(list_id)
                .bind(window.since)
                .bind(max)
                .bind(window.dated_from)
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn confirmed_count(&self, list_id: i64) -> Result<i64> {
        on_pool!(self, |pool, _d| {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM subscriptions WHERE list_id = $1 AND status = 'confirmed'")
                    .bind(list_id)
                    .fetch_one(pool)
                    .await?,
            )
        })
    }

    /// Creates the next digest of a list in one write that holds the list: looks the idempotency
    /// key up, chooses the eligible items, renders them with `render`, and records the digest and
    /// its items. Requests for one list are thereby serialised: concurrent ones never share an
    /// item, and a retry under the same key finds the digest its twin made. Delivery rows follow
    /// with `enqueue_deliveries`.
    pub async fn create_digest(
        &self,
        new: &NewDigest<'_>,
        render: impl FnOnce(&[DigestItem]) -> std::result::Result<DigestContent, String>,
    ) -> Result<NextDigest> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            // SQLite's write lock already serialises; PostgreSQL needs the list's row lock.
            let lock = format!("SELECT id FROM lists WHERE id = $1 {}", d.for_update);
            let list: Option<i64> = sqlx::query_scalar(AssertSqlSafe(lock))
                .bind(new.list_id)
                .fetch_optional(&mut *tx)
                .await?;
            if list.is_none() {
                return Err(StoreError::NotFound);
            }
            if let Some(key) = new.idempotency_key {
                let existing: Option<(i64, Option<String>)> = sqlx::query_as(
                    "SELECT id, request_hash FROM digests
                     WHERE list_id = $1 AND idempotency_key = $2 AND created_at > $3",
                )
                .bind(new.list_id)
                .bind(key)
                .bind(now - IDEMPOTENCY_WINDOW)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((id, hash)) = existing {
                    let same_request = hash.as_deref() == Some(new.request_hash);
                    return Ok(NextDigest::Existing { id, same_request });
                }
            }
            let items = sqlx::query_as::<_, DigestItem>(ELIGIBLE_ITEMS)
                .bind(new.list_id)
                .bind(new.window.since)
                .bind(new.max_items)
                .bind(new.window.dated_from)
                .fetch_all(&mut *tx)
                .await?;
            if items.is_empty() {
                return Ok(NextDigest::NoItems);
            }
            // Any one confirmed reader will do: no need to count them all while holding the list.
            let confirmed: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM subscriptions WHERE list_id = $1 AND status = 'confirmed' LIMIT 1")
                    .bind(new.list_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if confirmed.is_none() {
                return Ok(NextDigest::NoRecipients);
            }
            let content = match render(&items) {
                Ok(content) => content,
                Err(e) => return Ok(NextDigest::RenderFailed(e)),
            };
            // Keys expire after 24 h: free them so the unique index allows reuse.
            sqlx::query(
                "UPDATE digests SET idempotency_key = NULL
                 WHERE list_id = $1 AND created_at <= $2 AND idempotency_key IS NOT NULL",
            )
            .bind(new.list_id)
            .bind(now - IDEMPOTENCY_WINDOW)
            .execute(&mut *tx)
            .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO digests (list_id, status, subject, html_body, text_body, placeholder, items,
                                      idempotency_key, request_hash, created_at, public_id)
                 VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            )
            .bind(new.list_id)
            .bind(&content.subject)
            .bind(&content.html_body)
            .bind(&content.text_body)
            .bind(&content.placeholder)
            .bind(items.len() as i64)
            .bind(new.idempotency_key)
            .bind(new.request_hash)
            .bind(now)
            .bind(new.public_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict_on_unique)?;
            for (position, item) in items.iter().enumerate() {
                sqlx::query("INSERT INTO digest_items (digest_id, item_id, position) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(item.id)
                    .bind(position as i32)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(NextDigest::Created(id))
        })
    }

    /// Writes the next chunk of delivery rows (`INSERT … SELECT` over a keyset range of the list's
    /// subscribers confirmed before the digest was created). Returns `true` once all are written.
    pub async fn enqueue_deliveries(&self, digest_id: i64) -> Result<bool> {
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let row: Option<(i64, i64, bool, DateTime<Utc>)> =
                sqlx::query_as("SELECT list_id, enqueue_cursor, enqueued, created_at FROM digests WHERE id = $1")
                    .bind(digest_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((list_id, cursor, enqueued, created_at)) = row else {
                return Err(StoreError::NotFound);
            };
            if enqueued {
                return Ok(true);
            }
            let boundary: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM subscriptions WHERE list_id = $1 AND status = 'confirmed' AND id > $2
                 ORDER BY id LIMIT 1 OFFSET $3",
            )
            .bind(list_id)
            .bind(cursor)
            .bind(ENQUEUE_CHUNK - 1)
            .fetch_optional(&mut *tx)
            .await?;
            let upper = boundary.unwrap_or(i64::MAX);
            let inserted = sqlx::query(
                "INSERT INTO deliveries (digest_id, subscription_id, recipient, next_attempt_at)
                 SELECT $1, s.id, sub.email, $2
                 FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id
                 WHERE s.list_id = $3 AND s.status = 'confirmed' AND s.confirmed_at <= $4
                   AND s.id > $5 AND s.id <= $6
                 ORDER BY s.id
                 ON CONFLICT (digest_id, subscription_id) DO NOTHING",
            )
            .bind(digest_id)
            .bind(created_at)
            .bind(list_id)
            .bind(created_at)
            .bind(cursor)
            .bind(upper)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            let done = boundary.is_none();
            sqlx::query(
                "UPDATE digests SET recipients = recipients + $1, enqueue_cursor = $2, enqueued = $3 WHERE id = $4",
            )
            .bind(inserted)
            .bind(boundary.unwrap_or(cursor))
            .bind(done)
            .bind(digest_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done)
        })
    }

    /// Unfinished digests as (id, whether every delivery row is written).
    pub async fn unfinished_digests(&self) -> Result<Vec<(i64, bool)>> {
        on_pool!(self, |pool, _d| {
            Ok(
                sqlx::query_as("SELECT id, enqueued FROM digests WHERE status IN ('queued', 'sending')")
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    pub async fn digest(&self, id: i64) -> Result<DigestView> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, DigestView>(AssertSqlSafe(format!("{VIEW_SELECT} WHERE d.id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    /// A digest's status alone (one row; no counting).
    pub async fn digest_status(&self, id: i64) -> Result<String> {
        on_pool!(self, |pool, _d| {
            sqlx::query_scalar("SELECT status FROM digests WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    /// Digests of one list (or all), newest first.
    pub async fn digests(&self, list_id: Option<i64>) -> Result<Vec<DigestView>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, DigestView>(AssertSqlSafe(format!(
                "{VIEW_SELECT} WHERE (CAST($1 AS BIGINT) IS NULL OR d.list_id = $1) ORDER BY d.id DESC LIMIT 200"
            )))
            .bind(list_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// A digest's failed deliveries with the SMTP server's answer, the latest first.
    pub async fn failed_deliveries(&self, digest_id: i64, limit: i64) -> Result<Vec<FailedDelivery>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, FailedDelivery>(
                "SELECT recipient, attempts, COALESCE(last_error, '') AS error, failed_at FROM deliveries
                 WHERE digest_id = $1 AND status = 'failed' ORDER BY id DESC LIMIT $2",
            )
            .bind(digest_id)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Cancels a digest that is not finished: its queued deliveries are cancelled with it.
    /// Returns `false` when it was already done.
    pub async fn cancel_digest(&self, id: i64) -> Result<bool> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let status: Option<String> = sqlx::query_scalar("SELECT status FROM digests WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            match status.as_deref() {
                None => return Err(StoreError::NotFound),
                Some("done") => return Ok(false),
                Some("cancelled") => return Ok(true),
                Some(_) => {}
            }
            sqlx::query("UPDATE digests SET status = 'cancelled', finished_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', lease_until = NULL, last_error = 'digest cancelled'
                 WHERE digest_id = $1 AND status = 'queued'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn digest_parts(&self, id: i64) -> Result<DigestParts> {
        on_queue!(read, self, |pool, _d| {
            sqlx::query_as::<_, DigestParts>(
                "SELECT d.id, d.list_id, l.slug AS list_slug, l.name AS list_name, d.subject, d.html_body,
                        d.text_body, d.placeholder, d.status
                 FROM digests d JOIN lists l ON l.id = d.list_id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    /// Leases up to `limit` due deliveries to `worker`.
    pub async fn claim_deliveries(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let now = now();
        on_queue!(write, self, |pool, d| {
            let sql = d.claim(
                "deliveries",
                "status = 'queued' AND next_attempt_at <= $3",
                "next_attempt_at, id",
                "id, digest_id, subscription_id, recipient, attempts,
                 (SELECT s.link_key FROM subscriptions s WHERE s.id = deliveries.subscription_id) AS link_key,
                 COALESCE((SELECT s.subscriber_id FROM subscriptions s WHERE s.id = deliveries.subscription_id), 0)
                     AS subscriber_id,
                 (SELECT r.link_key FROM subscriptions s JOIN subscribers r ON r.id = s.subscriber_id
                  WHERE s.id = deliveries.subscription_id) AS subscriber_key",
            );
            let mut rows = sqlx::query_as::<_, Delivery>(AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(worker)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.sort_by_key(|r| r.id);
            Ok(rows)
        })
    }

    /// Marks a digest as sending when its first delivery is claimed.
    pub async fn digest_started(&self, id: i64) -> Result<()> {
        on_queue!(write, self, |pool, _d| {
            sqlx::query("UPDATE digests SET status = 'sending', started_at = $1 WHERE id = $2 AND status = 'queued'")
                .bind(now())
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks a digest done once every delivery row is written and none is left queued, and
    /// keeps its counts by outcome on its row (they do not change after this).
    pub async fn finish_digest_if_complete(&self, id: i64) -> Result<bool> {
        on_queue!(write, self, |pool, _d| {
            let done = sqlx::query(
                "UPDATE digests SET status = 'done', finished_at = $1,
                     sent_count = (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = $2 AND x.status = 'sent'),
                     failed_count = (SELECT COUNT(*) FROM deliveries x WHERE x.digest_id = $2 AND x.status = 'failed')
                 WHERE id = $2 AND status IN ('queued', 'sending') AND enqueued = TRUE
                   AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.digest_id = $2 AND x.status = 'queued')",
            )
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(done == 1)
        })
    }
}

/// A digest as its web version shows it: nothing of any recipient.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PublicDigest {
    #[sqlx(rename = "digest_id")]
    pub id: i64,
    #[sqlx(flatten)]
    pub list: super::List,
    pub subject: String,
    #[sqlx(rename = "digest_created_at")]
    pub created_at: DateTime<Utc>,
}

/// One digest of a list's archive.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArchivedDigest {
    pub public_id: String,
    pub subject: String,
    pub items: i64,
    /// When sending began.
    pub sent_at: DateTime<Utc>,
}

impl Store {
    /// The digest whose web version is `public_id`, whatever its status.
    pub async fn public_digest(&self, public_id: &str) -> Result<Option<PublicDigest>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, PublicDigest>(
                "SELECT d.id AS digest_id, l.id, l.slug, l.name, l.description, l.created_at, d.subject,
                        d.created_at AS digest_created_at
                 FROM digests d JOIN lists l ON l.id = d.list_id WHERE d.public_id = $1",
            )
            .bind(public_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// The items a digest carried, in its order.
    pub async fn digest_items(&self, digest_id: i64) -> Result<Vec<DigestItem>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, DigestItem>(
                "SELECT i.id, i.title, i.url, i.summary_html, i.summary_text, i.published_at,
                        i.image_url, i.image_width
                 FROM digest_items di JOIN items i ON i.id = di.item_id
                 WHERE di.digest_id = $1 ORDER BY di.position",
            )
            .bind(digest_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// A page of a list's sent digests (sending or done, with a web version), newest first.
    pub async fn archived_digests(&self, list_id: i64, offset: i64, limit: i64) -> Result<Vec<ArchivedDigest>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ArchivedDigest>(
                "SELECT public_id, subject, items, COALESCE(started_at, created_at) AS sent_at FROM digests
                 WHERE list_id = $1 AND status IN ('sending', 'done') AND public_id IS NOT NULL
                 ORDER BY id DESC LIMIT $2 OFFSET $3",
            )
            .bind(list_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?)
        })
    }
}
