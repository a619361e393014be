//! Subscribers, their subscriptions per list, consent records and confirmation tokens.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{List, NewOutboxMessage, Result, Store, on_pool, on_writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Pending,
    Confirmed,
    Unsubscribed,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "confirmed" => Some(Self::Confirmed),
            "unsubscribed" => Some(Self::Unsubscribed),
            _ => None,
        }
    }
}

/// Where and how a signup (or a confirmation) was requested: the consent record.
#[derive(Debug, Clone, Default)]
pub struct RequestOrigin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub page: Option<String>,
}

#[derive(Debug, Clone)]
pub enum ConfirmOutcome {
    /// The token is valid: these lists (of its email) are confirmed; `newly` were pending until now.
    Confirmed {
        lists: Vec<List>,
        newly: Vec<i64>,
    },
    Expired,
    Unknown,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SubscriberRow {
    #[serde(skip)]
    pub id: i64,
    pub email: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriberPage {
    pub subscribers: Vec<SubscriberRow>,
    /// Cursor for the next page (pass as `after`), or `None` on the last page.
    pub next: Option<String>,
}

/// The lists of `all` (a site has a handful) that a confirmation's `list_ids` (a JSON array of ids) names, oldest first.
/// A list deleted since the email was sent is skipped.
pub(super) fn named_lists(all: Vec<List>, list_ids: &str) -> Vec<List> {
    let ids: Vec<i64> = serde_json::from_str(list_ids).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a confirmation's list ids do not parse");
        Vec::new()
    });
    all.into_iter().filter(|l| ids.contains(&l.id)).collect()
}

impl Store {
    /// Looks a confirmation token up without changing anything (for the scanner-safe GET).
    pub async fn check_confirmation(&self, token_hash: &str) -> Result<ConfirmOutcome> {
        let now = super::now();
        on_pool!(self, |pool, _d| {
            let row: Option<(DateTime<Utc>, String)> =
                sqlx::query_as("SELECT expires_at, list_ids FROM confirmations WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(pool)
                    .await?;
            Ok(match row {
                None => ConfirmOutcome::Unknown,
                Some((expires_at, _)) if expires_at <= now => ConfirmOutcome::Expired,
                Some((_, list_ids)) => ConfirmOutcome::Confirmed {
                    lists: named_lists(
                        sqlx::query_as(super::lists::ALL_LISTS).fetch_all(pool).await?,
                        &list_ids,
                    ),
                    newly: Vec::new(),
                },
            })
        })
    }

    /// A page of a list's subscribers in id order, optionally of one status.
    pub async fn subscribers_page(
        &self,
        list_id: i64,
        status: Option<SubscriptionStatus>,
        after: i64,
        limit: i64,
    ) -> Result<SubscriberPage> {
        on_pool!(self, |pool, _d| {
            let mut rows = sqlx::query_as::<_, SubscriberRow>(
                "SELECT s.id, sub.email, s.status, s.created_at, s.confirmed_at, s.unsubscribed_at
                 FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id
                 WHERE s.list_id = $1 AND (CAST($2 AS TEXT) IS NULL OR s.status = $2) AND s.id > $3
                 ORDER BY s.id LIMIT $4",
            )
            .bind(list_id)
            .bind(status.map(SubscriptionStatus::as_str))
            .bind(after)
            .bind(limit + 1)
            .fetch_all(pool)
            .await?;
            let next = if rows.len() as i64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| r.id.to_string())
            } else {
                None
            };
            Ok(SubscriberPage {
                subscribers: rows,
                next,
            })
        })
    }

    /// Deletes signups never confirmed within `max_age`, then subscribers left with nothing.
    /// Returns how many pending subscriptions were removed.
    pub async fn purge_unconfirmed(&self, max_age: TimeDelta) -> Result<u64> {
        let cutoff = super::now() - max_age;
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            // What leaves the counts (migration 0014): each row as it stood when this hour began.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO count_adjustments (list_id, status, delta, at)
                 SELECT list_id, was, -COUNT(*), $2 FROM (
                     SELECT list_id, {} AS was
                     FROM subscriptions WHERE status = 'pending' AND consent_at < $1) t
                 WHERE was <> 'none' GROUP BY list_id, was",
                d.status_at_start_of("", "$2"),
            )))
            .bind(cutoff)
            .bind(super::now())
            .execute(&mut *tx)
            .await?;
            let purged = sqlx::query("DELETE FROM subscriptions WHERE status = 'pending' AND consent_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM confirmations WHERE expires_at < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM subscribers WHERE created_at < $1
                 AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.subscriber_id = subscribers.id)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(purged)
        })
    }
}

/// A subscription as seen from an unsubscribe link.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub list: List,
    pub email: String,
    pub status: SubscriptionStatus,
    /// What its links sign with its id (migration 0016).
    pub link_key: Option<i64>,
}

impl Store {
    /// Confirms the lists a token's email named, in one write transaction: each still-pending
    /// subscription becomes `confirmed` with the confirming request's consent facts, and its
    /// welcome email (built by `welcome` from the list, the address, and the subscription's and the
    /// subscriber's ids and link keys) is queued. Confirming
    /// again changes nothing and answers the same.
    pub async fn confirm(
        &self,
        token_hash: &str,
        origin: &RequestOrigin,
        mut welcome: impl FnMut(&List, &str, (i64, Option<i64>), (i64, Option<i64>)) -> NewOutboxMessage,
        erased_key: impl Fn(&str) -> String,
    ) -> Result<ConfirmOutcome> {
        let now = super::now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            #[derive(sqlx::FromRow)]
            struct Row {
                list_ids: String,
                subscriber_id: i64,
                expires_at: DateTime<Utc>,
                email: String,
                link_key: Option<i64>,
            }
            let row: Option<Row> = sqlx::query_as(
                "SELECT c.list_ids, c.subscriber_id, c.expires_at, s.email, s.link_key
                 FROM confirmations c JOIN subscribers s ON s.id = c.subscriber_id
                 WHERE c.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let (list_ids, subscriber_id, email, subscriber_key) = match row {
                None => return Ok(ConfirmOutcome::Unknown),
                Some(r) if r.expires_at <= now => return Ok(ConfirmOutcome::Expired),
                Some(r) => (r.list_ids, r.subscriber_id, r.email, r.link_key),
            };
            let lists = named_lists(
                sqlx::query_as(super::lists::ALL_LISTS).fetch_all(&mut *tx).await?,
                &list_ids,
            );
            let mut newly = Vec::new();
            for list in &lists {
                let confirmed: Option<(i64, Option<i64>)> = sqlx::query_as(AssertSqlSafe(format!(
                    "UPDATE subscriptions SET status = 'confirmed', confirmed_at = $1, confirm_ip = $2,
                            confirm_user_agent = $3, {}
                     WHERE subscriber_id = $4 AND list_id = $5 AND status = 'pending'
                     RETURNING id, link_key",
                    d.track_change("", "$1")
                )))
                .bind(now)
                .bind(origin.ip.as_deref())
                .bind(origin.user_agent.as_deref())
                .bind(subscriber_id)
                .bind(list.id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((subscription_id, link_key)) = confirmed {
                    let message = welcome(
                        list,
                        &email,
                        (subscription_id, link_key),
                        (subscriber_id, subscriber_key),
                    );
                    Store::enqueue_in(&mut tx, &message, now).await?;
                    newly.push(subscription_id);
                }
            }
            if !newly.is_empty() {
                // A new confirmed opt-in shows the mailbox works again: lift a bounce suppression
                // (never a manual one), also where an erasure of the address kept it.
                let key = email.to_lowercase();
                sqlx::query("DELETE FROM suppressions WHERE email_key IN ($1, $2) AND reason = 'bounce'")
                    .bind(&key)
                    .bind(erased_key(&key))
                    .execute(&mut *tx)
                    .await?;
            }
            // Name only what is confirmed now: a list left since stays left.
            let confirmed_ids: Vec<i64> = sqlx::query_scalar(
                "SELECT list_id FROM subscriptions WHERE subscriber_id = $1 AND status = 'confirmed'",
            )
            .bind(subscriber_id)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let lists = lists.into_iter().filter(|l| confirmed_ids.contains(&l.id)).collect();
            Ok(ConfirmOutcome::Confirmed { lists, newly })
        })
    }

    /// The address and lists of a confirmation token, expired or not (to send a fresh link).
    pub async fn confirmation_request(&self, token_hash: &str) -> Result<Option<(String, Vec<List>)>> {
        on_pool!(self, |pool, _d| {
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT c.list_ids, s.email FROM confirmations c JOIN subscribers s ON s.id = c.subscriber_id
                 WHERE c.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?;
            let Some((list_ids, email)) = row else { return Ok(None) };
            let lists = named_lists(
                sqlx::query_as(super::lists::ALL_LISTS).fetch_all(pool).await?,
                &list_ids,
            );
            Ok(Some((email, lists)))
        })
    }

    pub async fn subscription_info(&self, subscription_id: i64) -> Result<Option<SubscriptionInfo>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            list: List,
            email: String,
            status: String,
            link_key: Option<i64>,
        }
        on_pool!(self, |pool, _d| {
            let row = sqlx::query_as::<_, Row>(
                "SELECT l.id, l.slug, l.name, l.description, l.created_at, sub.email, s.status, s.link_key
                 FROM subscriptions s JOIN lists l ON l.id = s.list_id
                 JOIN subscribers sub ON sub.id = s.subscriber_id
                 WHERE s.id = $1",
            )
            .bind(subscription_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| SubscriptionInfo {
                list: r.list,
                email: r.email,
                status: SubscriptionStatus::parse(&r.status).unwrap_or(SubscriptionStatus::Unsubscribed),
                link_key: r.link_key,
            }))
        })
    }

    /// Unsubscribes at once and cancels mail still queued for the subscription. Idempotent.
    pub async fn unsubscribe(&self, subscription_id: i64) -> Result<bool> {
        self.unsubscribe_where(subscription_id, None).await
    }

    /// The same from a signed link: only while the row still holds the link key the link was
    /// signed with (on SQLite a new row can take a deleted row's id between the check and this).
    pub async fn unsubscribe_linked(&self, subscription_id: i64, link_key: Option<i64>) -> Result<bool> {
        self.unsubscribe_where(subscription_id, Some(link_key)).await
    }

    /// `true`: the subscription was left now (not already, not a row that took its id since).
    async fn unsubscribe_where(&self, subscription_id: i64, link_key: Option<Option<i64>>) -> Result<bool> {
        let now = super::now();
        let any_key = link_key.is_none();
        let link_key = link_key.flatten();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let left = sqlx::query(AssertSqlSafe(format!(
                "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $1, {}
                 WHERE id = $2 AND status <> 'unsubscribed' AND ($3 OR link_key IS NOT DISTINCT FROM $4)",
                d.track_change("", "$1")
            )))
            .bind(now)
            .bind(subscription_id)
            .bind(any_key)
            .bind(link_key)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            sqlx::query(
                "UPDATE outbox SET status = 'cancelled', last_error = 'unsubscribed', text_body = NULL,
                        html_body = NULL, params = NULL
                 WHERE subscription_id = $1 AND status = 'queued'
                   AND EXISTS (SELECT 1 FROM subscriptions s
                               WHERE s.id = $1 AND ($2 OR s.link_key IS NOT DISTINCT FROM $3))",
            )
            .bind(subscription_id)
            .bind(any_key)
            .bind(link_key)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(left)
        })
    }
}

impl Store {
    /// The status of an address's subscription to a list, if it has one.
    pub async fn subscription_status(&self, list_id: i64, email_key: &str) -> Result<Option<SubscriptionStatus>> {
        on_pool!(self, |pool, _d| {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT s.status FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id
                 WHERE s.list_id = $1 AND sub.email_key = $2",
            )
            .bind(list_id)
            .bind(email_key)
            .fetch_optional(pool)
            .await?;
            Ok(status.as_deref().and_then(SubscriptionStatus::parse))
        })
    }
}
