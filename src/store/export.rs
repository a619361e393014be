//! Reading a list's subscribers for an export, one short query per page (keyset on the
//! subscription id), so that an export of any size holds one page in memory and no transaction.

use chrono::{DateTime, Utc};

use super::{Result, Store, SubscriptionStatus, on_pool};

/// A subscription as exported: the subscriber's address and name, its state and consent record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExportRow {
    /// The subscription's id: the keyset of the pages.
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub consent_at: DateTime<Utc>,
    pub consent_ip: Option<String>,
}

/// One status: a range of `subscriptions_list_status (list_id, status, id)`, already in id order.
const ONE_STATUS: &str = "SELECT s.id, sub.email, sub.name, s.status, s.created_at, s.confirmed_at, s.unsubscribed_at,
        s.consent_at, s.consent_ip
 FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id
 WHERE s.list_id = $1 AND s.status = $2 AND s.id > $3
 ORDER BY s.id LIMIT $4";

/// Every status, still in id order and still through `subscriptions_list_status`: the page is the
/// first `$3` rows of the three ranges (one per status) merged. No other index starts with
/// `list_id` on both backends, and paging by id over the whole table would read other lists'
/// rows (or sort the whole list) on every page. The ranges carry every column the page needs, so
/// nothing joins `subscriptions` again (which PostgreSQL would merge-join from its first row).
const ALL_STATUSES: &str = "SELECT s.id, sub.email, sub.name, s.status, s.created_at, s.confirmed_at, s.unsubscribed_at,
        s.consent_at, s.consent_ip
 FROM (SELECT * FROM (SELECT id, subscriber_id, status, created_at, confirmed_at, unsubscribed_at, consent_at, consent_ip
                      FROM subscriptions WHERE list_id = $1 AND status = 'pending' AND id > $2
                      ORDER BY id LIMIT $3) AS p
       UNION ALL
       SELECT * FROM (SELECT id, subscriber_id, status, created_at, confirmed_at, unsubscribed_at, consent_at, consent_ip
                      FROM subscriptions WHERE list_id = $1 AND status = 'confirmed' AND id > $2
                      ORDER BY id LIMIT $3) AS c
       UNION ALL
       SELECT * FROM (SELECT id, subscriber_id, status, created_at, confirmed_at, unsubscribed_at, consent_at, consent_ip
                      FROM subscriptions WHERE list_id = $1 AND status = 'unsubscribed' AND id > $2
                      ORDER BY id LIMIT $3) AS u
       ORDER BY id LIMIT $3) AS s
 JOIN subscribers sub ON sub.id = s.subscriber_id
 ORDER BY s.id";

impl Store {
    /// Up to `limit` subscriptions of a list with an id above `after`, in id order, of one
    /// status or (`None`) of every status. Each page is its own statement: a subscription that
    /// changes status during an export appears as it was when its page was read (once at most).
    pub async fn export_page(
        &self,
        list_id: i64,
        status: Option<SubscriptionStatus>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ExportRow>> {
        on_pool!(self, |pool, _d| {
            let rows = match status {
                Some(status) => {
                    sqlx::query_as::<_, ExportRow>(ONE_STATUS)
                        .bind(list_id)
                        .bind(status.as_str())
                        .bind(after)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
                None => {
                    sqlx::query_as::<_, ExportRow>(ALL_STATUSES)
                        .bind(list_id)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
            };
            Ok(rows)
        })
    }
}
