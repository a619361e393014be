//! The preference centre's reads and writes: one subscriber's lists, joining a list without a new
//! confirmation when the address is already proven, and the caps on preference-link emails.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::AssertSqlSafe;

use super::{List, NewOutboxMessage, RequestOrigin, Result, Store, SubscriptionStatus, now, on_pool, on_writer};

/// A subscriber as a preference link names them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkedSubscriber {
    pub id: i64,
    pub email: String,
    pub link_key: Option<i64>,
}

/// One list on the preference page, with the reader's subscription to it if they have one.
#[derive(Debug, Clone)]
pub struct PreferenceList {
    pub list: List,
    pub status: Option<SubscriptionStatus>,
    pub subscription_id: Option<i64>,
}

/// What joining a list did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Confirmed at once (the address is confirmed on another list); its welcome is queued.
    Confirmed,
    /// Already confirmed on this list: nothing changed.
    Already,
    /// The address is proven on no list: the normal double opt-in must start.
    NeedsOptIn,
}

/// Preference-link emails per address: one per 5 minutes, five per UTC day, counted apart from
/// confirmation emails.
const LINK_GAP: TimeDelta = TimeDelta::minutes(5);
const LINKS_PER_DAY: i32 = 5;
/// The email of a reader's data: one per day.
const DATA_GAP: TimeDelta = TimeDelta::hours(24);

/// The last preference-link email, the start of its day's count, and the count.
type LinkCaps = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, i32);

impl Store {
    pub async fn linked_subscriber(&self, id: i64) -> Result<Option<LinkedSubscriber>> {
        on_pool!(self, |pool, _d| {
            Ok(
                sqlx::query_as::<_, LinkedSubscriber>("SELECT id, email, link_key FROM subscribers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    pub async fn linked_subscriber_by_key(&self, email_key: &str) -> Result<Option<LinkedSubscriber>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, LinkedSubscriber>(
                "SELECT id, email, link_key FROM subscribers WHERE email_key = $1",
            )
            .bind(email_key)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Every list, with this subscriber's subscription to each.
    pub async fn preference_lists(&self, subscriber_id: i64) -> Result<Vec<PreferenceList>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            list: List,
            status: Option<String>,
            subscription_id: Option<i64>,
        }
        let rows: Vec<Row> = on_pool!(self, |pool, _d| {
            sqlx::query_as(
                "SELECT l.id, l.slug, l.name, l.description, l.created_at, s.status, s.id AS subscription_id
                 FROM lists l LEFT JOIN subscriptions s ON s.list_id = l.id AND s.subscriber_id = $1
                 ORDER BY l.name, l.id",
            )
            .bind(subscriber_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| PreferenceList {
                list: r.list,
                status: r.status.as_deref().and_then(SubscriptionStatus::parse),
                subscription_id: r.subscription_id,
            })
            .collect())
    }

    /// Joins `list` from the preference centre: confirmed at once with `origin` as its consent
    /// (and confirmation) record when the subscriber is confirmed on another list, with the
    /// welcome `welcome` builds from the subscription id and link key; else nothing is written.
    pub async fn join_from_preferences(
        &self,
        subscriber_id: i64,
        list: &List,
        origin: &RequestOrigin,
        welcome: impl FnOnce(i64, Option<i64>) -> NewOutboxMessage,
    ) -> Result<Joined> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let statuses: Vec<(i64, String)> =
                sqlx::query_as("SELECT list_id, status FROM subscriptions WHERE subscriber_id = $1")
                    .bind(subscriber_id)
                    .fetch_all(&mut *tx)
                    .await?;
            if statuses.iter().any(|(l, s)| *l == list.id && s == "confirmed") {
                return Ok(Joined::Already);
            }
            if !statuses.iter().any(|(_, s)| s == "confirmed") {
                return Ok(Joined::NeedsOptIn);
            }
            let (id, link_key): (i64, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
                "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, consent_at, consent_ip,
                                            consent_user_agent, consent_page, confirmed_at, confirm_ip,
                                            confirm_user_agent, changed_at, status_at_hour_start, link_key)
                 VALUES ($1, $2, 'confirmed', $3, $3, $4, $5, $6, $3, $4, $5, $3, 'none', {})
                 ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = 'confirmed',
                     consent_at = excluded.consent_at, consent_ip = excluded.consent_ip,
                     consent_user_agent = excluded.consent_user_agent, consent_page = excluded.consent_page,
                     consent_note = NULL, confirmed_at = excluded.confirmed_at, confirm_ip = excluded.confirm_ip,
                     confirm_user_agent = excluded.confirm_user_agent, unsubscribed_at = NULL, {}
                 RETURNING id, link_key",
                d.random_key,
                d.track_change("subscriptions.", "excluded.changed_at"),
            )))
            .bind(list.id)
            .bind(subscriber_id)
            .bind(now)
            .bind(origin.ip.as_deref())
            .bind(origin.user_agent.as_deref())
            .bind(origin.page.as_deref())
            .fetch_one(&mut *tx)
            .await?;
            Store::enqueue_in(&mut tx, &welcome(id, link_key), now).await?;
            tx.commit().await?;
            Ok(Joined::Confirmed)
        })
    }

    /// Counts one preference-link email to the subscriber if the caps allow it (and queues it, in
    /// the same write); `false`: capped, nothing queued.
    pub async fn queue_preference_link(&self, subscriber_id: i64, message: &NewOutboxMessage) -> Result<bool> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let caps: Option<LinkCaps> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT preference_mail_at, preference_day_start, preference_day_count FROM subscribers WHERE id = $1 {}",
                d.for_update
            )))
            .bind(subscriber_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((last, day_start, count)) = caps else {
                return Ok(false);
            };
            let same_day = day_start.is_some_and(|s| s.date_naive() == now.date_naive());
            let count = if same_day { count } else { 0 };
            if last.is_some_and(|l| now - l < LINK_GAP) || count >= LINKS_PER_DAY {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE subscribers SET preference_mail_at = $1, preference_day_start = $2, preference_day_count = $3
                 WHERE id = $4",
            )
            .bind(now)
            .bind(if same_day { day_start } else { Some(now) })
            .bind(count + 1)
            .bind(subscriber_id)
            .execute(&mut *tx)
            .await?;
            Store::enqueue_in(&mut tx, message, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Queues the email of a reader's data, at most one per `DATA_GAP`: `false` when one went
    /// out more recently (or the subscriber is gone).
    pub async fn queue_data_mail(&self, subscriber_id: i64, message: &NewOutboxMessage) -> Result<bool> {
        let now = now();
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let last: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT data_mail_at FROM subscribers WHERE id = $1 {}",
                d.for_update
            )))
            .bind(subscriber_id)
            .fetch_optional(&mut *tx)
            .await?;
            match last {
                None => return Ok(false),
                Some(Some(last)) if now - last < DATA_GAP => return Ok(false),
                Some(_) => {}
            }
            sqlx::query("UPDATE subscribers SET data_mail_at = $1 WHERE id = $2")
                .bind(now)
                .bind(subscriber_id)
                .execute(&mut *tx)
                .await?;
            Store::enqueue_in(&mut tx, message, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
