//! The dashboard's readers: search by address prefix or domain (each an index range), and what
//! Bulletin holds about one reader.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, SubscriptionStatus, on_pool};

/// What to look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderSearch {
    /// Every reader, newest first.
    All,
    /// Addresses starting with this (lowercased), in address order.
    Prefix(String),
    /// Addresses at this domain (lowercased), newest first.
    Domain(String),
}

impl ReaderSearch {
    /// `@example.org` is a domain; anything else a prefix of the address; nothing, everyone.
    pub fn parse(q: &str) -> ReaderSearch {
        let q = q.trim().to_lowercase();
        match q.strip_prefix('@') {
            _ if q.is_empty() => ReaderSearch::All,
            Some(domain) if !domain.is_empty() => ReaderSearch::Domain(domain.to_owned()),
            _ => ReaderSearch::Prefix(q),
        }
    }
}

/// A search with its filters and where the page starts (the last row of the one before).
#[derive(Debug, Clone)]
pub struct ReaderQuery {
    pub search: ReaderSearch,
    pub list_id: Option<i64>,
    pub status: Option<SubscriptionStatus>,
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReaderRow {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The page key of this row (the address, or an id).
    #[serde(skip)]
    pub key: String,
}

/// A page of readers, and the key of the next page when there is one.
#[derive(Debug, Clone)]
pub struct ReaderPage {
    pub readers: Vec<ReaderRow>,
    pub next: Option<String>,
}

/// One subscription as the reader's page shows it: its consent and confirmation records.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReaderSubscription {
    pub id: i64,
    pub subscriber_id: i64,
    pub list_slug: String,
    pub list_name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub consent_at: DateTime<Utc>,
    pub consent_ip: Option<String>,
    pub consent_user_agent: Option<String>,
    pub consent_page: Option<String>,
    pub consent_note: Option<String>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub confirm_ip: Option<String>,
    pub confirm_user_agent: Option<String>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// One message to a reader: a digest delivery or a single email.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReaderDelivery {
    pub kind: String,
    pub digest_id: Option<i64>,
    pub subject: String,
    pub status: String,
    pub at: DateTime<Utc>,
    pub answer: Option<String>,
}

/// The reader's row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Reader {
    pub id: i64,
    pub email: String,
    pub email_key: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_confirmation_at: Option<DateTime<Utc>>,
}

const READER_COLUMNS: &str = "sub.id, sub.email, sub.name, sub.created_at";

impl Store {
    /// A page of readers matching `query`. Each search walks one index: the addresses' (prefix),
    /// the domains' (domain), the subscribers' ids, or, for everyone on one list in one state,
    /// that list's subscriptions.
    pub async fn search_readers(&self, query: &ReaderQuery) -> Result<ReaderPage> {
        let limit = query.limit.clamp(1, 500);
        let rows: Vec<ReaderRow> = on_pool!(self, |pool, _d| {
            // Addresses compare as bytes on both (PostgreSQL: migration 0017).
            let domain = match self {
                Store::Sqlite(_) => "substr(sub.email_key, instr(sub.email_key, '@') + 1)",
                Store::Postgres(_) => "split_part(sub.email_key, '@', 2)",
            };
            let mut binds: Vec<Bind> = Vec::new();
            let mut wheres: Vec<String> = Vec::new();
            let param = |b: Bind, binds: &mut Vec<Bind>| {
                binds.push(b);
                format!("${}", binds.len())
            };
            let (from, key, order) = match (&query.search, query.list_id, query.status) {
                (ReaderSearch::All, Some(list_id), Some(status)) => {
                    let l = param(Bind::Int(list_id), &mut binds);
                    let s = param(Bind::Text(status.as_str().to_owned()), &mut binds);
                    wheres.push(format!("s.list_id = {l} AND s.status = {s}"));
                    if let Some(after) = query.after.as_deref().and_then(|a| a.parse::<i64>().ok()) {
                        let a = param(Bind::Int(after), &mut binds);
                        wheres.push(format!("s.id < {a}"));
                    }
                    (
                        "subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id",
                        "CAST(s.id AS TEXT)",
                        "s.id DESC".to_owned(),
                    )
                }
                (search, list_id, status) => {
                    let (key, order) = match search {
                        ReaderSearch::Prefix(prefix) => {
                            let lo = param(Bind::Text(prefix.clone()), &mut binds);
                            let hi = param(Bind::Text(format!("{prefix}\u{10FFFF}")), &mut binds);
                            wheres.push(format!("sub.email_key >= {lo} AND sub.email_key < {hi}"));
                            if let Some(after) = &query.after {
                                let a = param(Bind::Text(after.clone()), &mut binds);
                                wheres.push(format!("sub.email_key > {a}"));
                            }
                            ("sub.email_key", "sub.email_key".to_owned())
                        }
                        ReaderSearch::Domain(domain_name) => {
                            let v = param(Bind::Text(domain_name.clone()), &mut binds);
                            wheres.push(format!("{domain} = {v}"));
                            ("CAST(sub.id AS TEXT)", "sub.id DESC".to_owned())
                        }
                        ReaderSearch::All => ("CAST(sub.id AS TEXT)", "sub.id DESC".to_owned()),
                    };
                    if !matches!(search, ReaderSearch::Prefix(_))
                        && let Some(after) = query.after.as_deref().and_then(|a| a.parse::<i64>().ok())
                    {
                        let a = param(Bind::Int(after), &mut binds);
                        wheres.push(format!("sub.id < {a}"));
                    }
                    if list_id.is_some() || status.is_some() {
                        let mut inner = vec!["s.subscriber_id = sub.id".to_owned()];
                        if let Some(list_id) = list_id {
                            inner.push(format!("s.list_id = {}", param(Bind::Int(list_id), &mut binds)));
                        }
                        if let Some(status) = status {
                            inner.push(format!(
                                "s.status = {}",
                                param(Bind::Text(status.as_str().to_owned()), &mut binds)
                            ));
                        }
                        wheres.push(format!(
                            "EXISTS (SELECT 1 FROM subscriptions s WHERE {})",
                            inner.join(" AND ")
                        ));
                    }
                    ("subscribers sub", key, order)
                }
            };
            let l = param(Bind::Int(limit + 1), &mut binds);
            let sql = format!(
                "SELECT {READER_COLUMNS}, {key} AS key FROM {from} WHERE {} ORDER BY {order} LIMIT {l}",
                if wheres.is_empty() {
                    "true".to_owned()
                } else {
                    wheres.join(" AND ")
                }
            );
            let mut q = sqlx::query_as::<_, ReaderRow>(AssertSqlSafe(sql));
            for b in binds {
                q = match b {
                    Bind::Int(v) => q.bind(v),
                    Bind::Text(v) => q.bind(v),
                };
            }
            q.fetch_all(pool).await?
        });
        let mut readers = rows;
        let next = (readers.len() as i64 > limit).then(|| {
            readers.truncate(limit as usize);
            readers.last().map(|r| r.key.clone()).unwrap_or_default()
        });
        Ok(ReaderPage { readers, next })
    }

    /// The subscriptions of these readers, by list.
    pub async fn readers_subscriptions(&self, subscriber_ids: &[i64]) -> Result<Vec<ReaderSubscription>> {
        if subscriber_ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, |pool, d| {
            let sql = format!(
                "SELECT s.id, s.subscriber_id, l.slug AS list_slug, l.name AS list_name, s.status, s.created_at,
                        s.consent_at, s.consent_ip, s.consent_user_agent, s.consent_page, s.consent_note,
                        s.confirmed_at, s.confirm_ip, s.confirm_user_agent, s.unsubscribed_at
                 FROM subscriptions s JOIN lists l ON l.id = s.list_id
                 WHERE s.subscriber_id IN (SELECT CAST(t.value AS BIGINT) FROM {})
                 ORDER BY s.subscriber_id, l.id",
                (d.json_values)("$1")
            );
            Ok(sqlx::query_as::<_, ReaderSubscription>(AssertSqlSafe(sql))
                .bind(serde_json::to_string(subscriber_ids).unwrap_or_default())
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn reader(&self, id: i64) -> Result<Reader> {
        on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, Reader>(
                "SELECT id, email, email_key, name, created_at, last_confirmation_at FROM subscribers WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or(StoreError::NotFound)
        })
    }

    /// The reader's last `limit` messages: digest deliveries of their subscriptions and the
    /// single emails to their address, newest first.
    pub async fn reader_deliveries(&self, reader: &Reader, limit: i64) -> Result<Vec<ReaderDelivery>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ReaderDelivery>(
                "SELECT kind, digest_id, subject, status, at, answer FROM (
                   SELECT * FROM (
                     SELECT 'digest' AS kind, x.digest_id, g.subject, x.status,
                            COALESCE(x.sent_at, x.failed_at, x.next_attempt_at) AS at, x.last_error AS answer
                     FROM deliveries x JOIN digests g ON g.id = x.digest_id
                     WHERE x.subscription_id IN (SELECT id FROM subscriptions WHERE subscriber_id = $1)
                     ORDER BY x.id DESC LIMIT $3) d
                   UNION ALL
                   SELECT * FROM (
                     SELECT o.kind, CAST(NULL AS BIGINT) AS digest_id, o.subject, o.status,
                            COALESCE(o.sent_at, o.failed_at, o.next_attempt_at) AS at, o.last_error AS answer
                     FROM outbox o WHERE o.recipient = $2 ORDER BY o.id DESC LIMIT $3) o
                 ) m ORDER BY at DESC LIMIT $3",
            )
            .bind(reader.id)
            .bind(&reader.email)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }
}

enum Bind {
    Int(i64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_a_domain_a_prefix_or_everyone() {
        assert_eq!(ReaderSearch::parse("  "), ReaderSearch::All);
        assert_eq!(
            ReaderSearch::parse("@Example.ORG"),
            ReaderSearch::Domain("example.org".into())
        );
        assert_eq!(ReaderSearch::parse("Ann"), ReaderSearch::Prefix("ann".into()));
        assert_eq!(ReaderSearch::parse("@"), ReaderSearch::Prefix("@".into()));
    }
}
