//! Feeds and their items. A feed is polled by one process at a time: its row is leased.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, conflict_on_unique, now, on_pool, on_writer};

/// What a successful poll learnt about the feed for the next one.
#[derive(Debug, Clone, Copy)]
pub struct PollValidators<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    pub next_poll_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Feed {
    pub id: i64,
    #[serde(skip)]
    pub list_id: i64,
    #[serde(rename = "list")]
    pub list_slug: String,
    pub url: String,
    pub kind: String,
    #[serde(skip)]
    pub poll_interval_secs: i64,
    #[serde(skip)]
    pub etag: Option<String>,
    #[serde(skip)]
    pub last_modified: Option<String>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: i32,
    pub next_poll_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub items: i64,
}

/// An item as parsed or pushed, before storage.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub key: String,
    pub title: String,
    pub url: Option<String>,
    pub summary_html: String,
    pub summary_text: String,
    /// The item's picture: an absolute http(s) URL, and its width when known (at most 600).
    pub image_url: Option<String>,
    pub image_width: Option<i32>,
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IngestCounts {
    pub new: u64,
    pub updated: u64,
}

const FEED_SELECT: &str = "SELECT f.id, f.list_id, l.slug AS list_slug, f.url, f.kind, f.poll_interval_secs, f.etag,
        f.last_modified, f.last_polled_at, f.last_error, f.consecutive_failures, f.next_poll_at, f.created_at,
        (SELECT COUNT(*) FROM items i WHERE i.feed_id = f.id) AS items
 FROM feeds f JOIN lists l ON l.id = f.list_id";

impl Store {
    /// Adds a polled feed to a list, due at once. `Conflict` when the list has that URL already.
    pub async fn create_feed(&self, list_id: i64, url: &str, poll_interval_secs: i64) -> Result<Feed> {
        let now = now();
        let id: i64 = on_writer!(self, |pool, _d| {
            sqlx::query_scalar(
                "INSERT INTO feeds (list_id, url, kind, poll_interval_secs, next_poll_at, created_at)
                 VALUES ($1, $2, 'poll', $3, $4, $4) RETURNING id",
            )
            .bind(list_id)
            .bind(url)
            .bind(poll_interval_secs)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(conflict_on_unique)?
        });
        self.feed(id).await
    }

    pub async fn feed(&self, id: i64) -> Result<Feed> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, Feed>(AssertSqlSafe(format!("{FEED_SELECT} WHERE f.id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
                .ok_or(StoreError::NotFound)
        })
    }

    /// Feeds of one list, or of every list, oldest first.
    pub async fn feeds(&self, list_id: Option<i64>) -> Result<Vec<Feed>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, Feed>(AssertSqlSafe(format!(
                "{FEED_SELECT} WHERE (CAST($1 AS BIGINT) IS NULL OR f.list_id = $1) ORDER BY l.id, f.id"
            )))
            .bind(list_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Removes a feed and its items. (Items already sent in a digest are kept by the digest.)
    pub async fn delete_feed(&self, id: i64) -> Result<()> {
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            // Items a digest carried stay (their feed becomes NULL); the others go.
            sqlx::query(
                "DELETE FROM items WHERE feed_id = $1
                 AND NOT EXISTS (SELECT 1 FROM digest_items di WHERE di.item_id = items.id)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let deleted = sqlx::query("DELETE FROM feeds WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Leases up to `limit` polled feeds that are due.
    pub async fn claim_due_feeds(&self, worker: &str, lease_until: DateTime<Utc>, limit: i64) -> Result<Vec<Feed>> {
        let now = now();
        let ids: Vec<i64> = on_writer!(self, |pool, d| {
            let sql = d.claim("feeds", "kind = 'poll' AND next_poll_at <= $3", "next_poll_at", "id");
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(lease_until)
                .bind(worker)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        let mut feeds = Vec::with_capacity(ids.len());
        for id in ids {
            feeds.push(self.feed(id).await?);
        }
        Ok(feeds)
    }

    /// Leases one feed now, whether due or not; `false` while another poll of it holds the lease.
    pub async fn try_claim_feed(&self, id: i64, worker: &str, lease_until: DateTime<Utc>) -> Result<bool> {
        let now = now();
        on_writer!(self, |pool, _d| {
            let claimed = sqlx::query(
                "UPDATE feeds SET lease_until = $1, leased_by = $2
                 WHERE id = $3 AND kind = 'poll' AND (lease_until IS NULL OR lease_until < $4)",
            )
            .bind(lease_until)
            .bind(worker)
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(claimed == 1)
        })
    }

    /// Records a successful poll and stores its items in one transaction, so a reader never sees
    /// the items of a poll without the poll: clears the error, schedules the next poll, frees the
    /// lease. A 304 stores no items.
    pub async fn record_poll_success(
        &self,
        feed: &Feed,
        items: &[NewItem],
        validators: PollValidators<'_>,
    ) -> Result<IngestCounts> {
        self.ingest(feed.id, feed.list_id, items, Some(validators)).await
    }

    /// Stores items of one feed in one transaction: new keys are inserted, changed items updated,
    /// unchanged ones left alone. Items without a date are dated when first seen.
    pub async fn ingest_items(&self, feed_id: i64, list_id: i64, items: &[NewItem]) -> Result<IngestCounts> {
        self.ingest(feed_id, list_id, items, None).await
    }

    /// Records a failed poll; items already stored are untouched.
    pub async fn record_poll_failure(&self, id: i64, error: &str, next_poll_at: DateTime<Utc>) -> Result<()> {
        on_writer!(self, |pool, _d| {
            sqlx::query(
                "UPDATE feeds SET last_polled_at = $1, last_error = $2,
                        consecutive_failures = consecutive_failures + 1, next_poll_at = $3,
                        lease_until = NULL, leased_by = NULL
                 WHERE id = $4",
            )
            .bind(now())
            .bind(error)
            .bind(next_poll_at)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The list's own feed for pushed items, made on first use.
    pub async fn push_feed(&self, list_id: i64) -> Result<i64> {
        let now = now();
        on_writer!(self, |pool, _d| {
            sqlx::query(
                "INSERT INTO feeds (list_id, url, kind, poll_interval_secs, next_poll_at, created_at)
                 VALUES ($1, 'push', 'push', 0, $2, $2) ON CONFLICT (list_id, url) DO NOTHING",
            )
            .bind(list_id)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT id FROM feeds WHERE list_id = $1 AND url = 'push'")
                    .bind(list_id)
                    .fetch_one(pool)
                    .await?,
            )
        })
    }

    async fn ingest(
        &self,
        feed_id: i64,
        list_id: i64,
        items: &[NewItem],
        poll: Option<PollValidators<'_>>,
    ) -> Result<IngestCounts> {
        let now = now();
        let mut counts = IngestCounts::default();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            for item in items {
                type Existing = (i64, String, Option<String>, String, DateTime<Utc>, Option<String>);
                let existing: Option<Existing> = sqlx::query_as(
                    "SELECT id, title, url, summary_html, published_at, image_url FROM items
                     WHERE feed_id = $1 AND key = $2",
                )
                .bind(feed_id)
                .bind(&item.key)
                .fetch_optional(&mut *tx)
                .await?;
                match existing {
                    None => {
                        sqlx::query(
                            "INSERT INTO items (list_id, feed_id, key, title, url, summary_html, summary_text,
                                                published_at, first_seen_at, updated_at, image_url, image_width)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)",
                        )
                        .bind(list_id)
                        .bind(feed_id)
                        .bind(&item.key)
                        .bind(&item.title)
                        .bind(&item.url)
                        .bind(&item.summary_html)
                        .bind(&item.summary_text)
                        .bind(item.published_at.unwrap_or(now))
                        .bind(now)
                        .bind(&item.image_url)
                        .bind(item.image_width)
                        .execute(&mut *tx)
                        .await?;
                        counts.new += 1;
                    }
                    Some((id, title, url, summary, published, image)) => {
                        let published_at = item.published_at.unwrap_or(published);
                        if title != item.title
                            || url != item.url
                            || summary != item.summary_html
                            || published != published_at
                            || image != item.image_url
                        {
                            sqlx::query(
                                "UPDATE items SET title = $1, url = $2, summary_html = $3, summary_text = $4,
                                        published_at = $5, updated_at = $6, image_url = $8, image_width = $9
                                 WHERE id = $7",
                            )
                            .bind(&item.title)
                            .bind(&item.url)
                            .bind(&item.summary_html)
                            .bind(&item.summary_text)
                            .bind(published_at)
                            .bind(now)
                            .bind(id)
                            .bind(&item.image_url)
                            .bind(item.image_width)
                            .execute(&mut *tx)
                            .await?;
                            counts.updated += 1;
                        }
                    }
                }
            }
            if let Some(poll) = poll {
                sqlx::query(
                    "UPDATE feeds SET last_polled_at = $1, last_error = NULL, consecutive_failures = 0,
                            etag = COALESCE($2, etag), last_modified = COALESCE($3, last_modified),
                            next_poll_at = $4, lease_until = NULL, leased_by = NULL
                     WHERE id = $5",
                )
                .bind(now)
                .bind(poll.etag)
                .bind(poll.last_modified)
                .bind(poll.next_poll_at)
                .bind(feed_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(counts)
    }
}
