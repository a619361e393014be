//! Signups, many in one write transaction (group commit): the subscribers, a `pending`
//! subscription with its consent record per list, and (within the per-address caps) the
//! confirmation token, the lists it confirms and its email in the outbox.
//!
//! A batch costs a fixed number of statements whatever its size: PostgreSQL binds whole columns
//! as arrays (`UNNEST`), SQLite one JSON array per table (`json_each`), so each statement text is
//! prepared once per connection. The decisions (which lists still need confirming, which
//! addresses are within their caps) are taken in Rust, in the batch's order, exactly as if the
//! signups had been written one by one.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::{List, NewOutboxMessage, RequestOrigin, Result, Store};
use crate::domain::EmailAddress;

/// A signup request, already validated.
pub struct NewSignup<'a> {
    pub email: &'a EmailAddress,
    pub lists: &'a [List],
    pub origin: &'a RequestOrigin,
    /// SHA-256 of the confirmation token that the email will carry.
    pub token_hash: &'a str,
}

/// The rules a batch applies: the token's lifetime and the per-address caps.
#[derive(Debug, Clone, Copy)]
pub struct SignupRules {
    pub token_ttl: TimeDelta,
    /// At most one confirmation email per address within this window.
    pub resend_after: TimeDelta,
    /// At most this many confirmation emails per address per day.
    pub daily_cap: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupOutcome {
    /// A confirmation email for these lists was queued.
    ConfirmationQueued,
    /// Every requested list is already confirmed: nothing to do.
    AlreadyConfirmed,
    /// Subscriptions are pending, but an email went to this address moments ago (or the day's
    /// cap is reached).
    Throttled,
}

/// A subscriber as the batch found it, and as the batch leaves it.
#[derive(Debug, sqlx::FromRow)]
struct Subscriber {
    id: i64,
    email_key: String,
    last_confirmation_at: Option<DateTime<Utc>>,
    confirmations_day_start: Option<DateTime<Utc>>,
    confirmations_day_count: i32,
}

struct State {
    row: Subscriber,
    /// Lists this subscriber has confirmed.
    confirmed: Vec<i64>,
    /// Whether the batch sent this subscriber a confirmation, restarting the day's count.
    sent: Option<bool>,
}

/// What a batch writes, decided before anything is written.
#[derive(Default)]
struct Plan<'a> {
    /// (list, subscriber) → the signup whose consent record the pending subscription gets (the
    /// batch's last for that pair, as if written in order).
    subscriptions: HashMap<(i64, i64), usize>,
    /// (subscriber, token hash, the lists it confirms as a JSON array) of each confirmation.
    confirmations: Vec<(i64, &'a str, String)>,
    outbox: Vec<NewOutboxMessage>,
    outcomes: Vec<SignupOutcome>,
}

fn plan<'a>(
    signups: &'a [NewSignup<'a>],
    states: &mut HashMap<String, State>,
    rules: &SignupRules,
    now: DateTime<Utc>,
    mut render: impl FnMut(usize, &[&List]) -> NewOutboxMessage,
) -> Plan<'a> {
    let mut plan = Plan::default();
    for (i, signup) in signups.iter().enumerate() {
        let Some(state) = states.get_mut(&signup.email.key()) else {
            // Every address of the batch was upserted; a missing one is a bug, not a signup.
            plan.outcomes.push(SignupOutcome::Throttled);
            continue;
        };
        let needed: Vec<&List> = signup
            .lists
            .iter()
            .filter(|l| !state.confirmed.contains(&l.id))
            .collect();
        if needed.is_empty() {
            plan.outcomes.push(SignupOutcome::AlreadyConfirmed);
            continue;
        }
        // New, pending and unsubscribed subscriptions all (re)start double opt-in.
        for list in &needed {
            plan.subscriptions.insert((list.id, state.row.id), i);
        }
        // Whatever the source (form, API, resend, import), an address gets at most one
        // confirmation email per window and `daily_cap` per day; the caller answers the same.
        let row = &mut state.row;
        let (day_start, day_count, restarted) = match row.confirmations_day_start {
            Some(start) if now - start < TimeDelta::days(1) => (start, row.confirmations_day_count, false),
            _ => (now, 0, true),
        };
        let recent = row.last_confirmation_at.is_some_and(|t| now - t < rules.resend_after);
        if recent || day_count >= rules.daily_cap {
            plan.outcomes.push(SignupOutcome::Throttled);
            continue;
        }
        row.last_confirmation_at = Some(now);
        row.confirmations_day_start = Some(day_start);
        row.confirmations_day_count = day_count + 1;
        state.sent = Some(state.sent.unwrap_or(false) || restarted);
        let list_ids = json!(needed.iter().map(|l| l.id).collect::<Vec<_>>()).to_string();
        plan.confirmations.push((row.id, signup.token_hash, list_ids));
        plan.outbox.push(render(i, &needed));
        plan.outcomes.push(SignupOutcome::ConfirmationQueued);
    }
    plan
}

/// Distinct addresses of a batch as (email, key), sorted by key so that concurrent batches lock
/// subscriber rows in one order (no deadlock on PostgreSQL).
fn distinct_addresses<'a>(signups: &'a [NewSignup<'a>]) -> Vec<(&'a str, String)> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for s in signups {
        seen.entry(s.email.key()).or_insert(s.email.as_str());
    }
    let mut addresses: Vec<(&str, String)> = seen.into_iter().map(|(k, e)| (e, k)).collect();
    addresses.sort_by(|a, b| a.1.cmp(&b.1));
    addresses
}

/// The pending subscriptions of a plan in (list, subscriber) order, each with its consent record.
fn subscription_rows<'a>(plan: &Plan<'_>, signups: &'a [NewSignup<'a>]) -> Vec<(i64, i64, &'a RequestOrigin)> {
    let mut rows: Vec<(i64, i64, &RequestOrigin)> = plan
        .subscriptions
        .iter()
        .map(|(&(list, subscriber), &i)| (list, subscriber, signups[i].origin))
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    rows
}

/// The caps of a subscriber the batch sent a confirmation to.
#[derive(serde::Serialize)]
struct Caps<'a> {
    id: i64,
    key: &'a str,
    /// Whether this email started a new day's count.
    restarted: bool,
    count: i32,
}

/// The caps of every subscriber the batch sent to, in key order (the order rows are locked in).
fn cap_rows(states: &HashMap<String, State>) -> Vec<Caps<'_>> {
    let mut rows: Vec<Caps<'_>> = states
        .values()
        .filter_map(|s| {
            s.sent.map(|restarted| Caps {
                id: s.row.id,
                key: &s.row.email_key,
                restarted,
                count: s.row.confirmations_day_count,
            })
        })
        .collect();
    rows.sort_by(|a, b| a.key.cmp(b.key));
    rows
}

/// What a signup does to a subscription that exists: pending again, with the new consent.
fn upsert_conflict(d: &super::Dialect) -> String {
    format!(
        "ON CONFLICT (list_id, subscriber_id) DO UPDATE SET
        status = 'pending', consent_at = excluded.consent_at,
        consent_ip = excluded.consent_ip,
        consent_user_agent = excluded.consent_user_agent,
        consent_page = excluded.consent_page,
        confirmed_at = NULL, confirm_ip = NULL, confirm_user_agent = NULL,
        unsubscribed_at = NULL, {}",
        d.track_change("subscriptions.", "excluded.consent_at")
    )
}

impl Store {
    /// Records a batch of signups in one write transaction and answers each, in order. `render`
    /// builds the confirmation email of signup `i` for the lists it still needs confirmed (the
    /// batch keeps only its kind, priority, recipient, subject, parameters and headers).
    pub async fn signup_batch(
        &self,
        signups: &[NewSignup<'_>],
        rules: &SignupRules,
        render: impl FnMut(usize, &[&List]) -> NewOutboxMessage,
    ) -> Result<Vec<SignupOutcome>> {
        if signups.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(db) => sqlite_batch(&db.write, signups, rules, render).await,
            Store::Postgres(db) => postgres_batch(&db.signups, signups, rules, render).await,
        }
    }
}

async fn postgres_batch(
    pool: &sqlx::PgPool,
    signups: &[NewSignup<'_>],
    rules: &SignupRules,
    render: impl FnMut(usize, &[&List]) -> NewOutboxMessage,
) -> Result<Vec<SignupOutcome>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        subscriber: Subscriber,
        inserted: bool,
        confirmed: Vec<i64>,
    }
    let now = super::now();
    let addresses = distinct_addresses(signups);
    let mut tx = super::begin(pool, "BEGIN").await?;
    // A new subscriber is inserted with the caps of its first confirmation (every new address's
    // first signup queues one): no second write of the row. Existing ones keep theirs here.
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH s AS (
             INSERT INTO subscribers (email, email_key, created_at, last_confirmation_at,
                                      confirmations_day_start, confirmations_day_count, link_key)
             SELECT e, k, $3, $3, $3, 1, {}
             FROM UNNEST($1::text[], $2::text[]) AS t(e, k)
             ON CONFLICT (email_key) DO UPDATE SET email_key = excluded.email_key
             RETURNING id, email_key, last_confirmation_at, confirmations_day_start, confirmations_day_count,
                       xmax = 0 AS inserted)
         -- A subscriber inserted just now has no subscriptions: only the others are looked up.
         SELECT s.id, s.email_key, s.last_confirmation_at, s.confirmations_day_start, s.confirmations_day_count,
                s.inserted, CASE WHEN s.inserted THEN '{{}}'::bigint[]
                     ELSE ARRAY(SELECT x.list_id FROM subscriptions x
                                WHERE x.subscriber_id = s.id AND x.status = 'confirmed') END AS confirmed
         FROM s",
        super::POSTGRES.random_key
    )))
    .bind(addresses.iter().map(|a| a.0).collect::<Vec<_>>())
    .bind(addresses.iter().map(|a| a.1.as_str()).collect::<Vec<_>>())
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut inserted = std::collections::HashSet::new();
    let mut states: HashMap<String, State> = rows
        .into_iter()
        .map(|mut r| {
            if r.inserted {
                // Planned from the state before this batch (none), already written as after it.
                inserted.insert(r.subscriber.id);
                r.subscriber.last_confirmation_at = None;
                r.subscriber.confirmations_day_start = None;
                r.subscriber.confirmations_day_count = 0;
            }
            let state = State {
                confirmed: r.confirmed,
                row: r.subscriber,
                sent: None,
            };
            (state.row.email_key.clone(), state)
        })
        .collect();
    let plan = plan(signups, &mut states, rules, now, render);
    if plan.subscriptions.is_empty() {
        tx.commit().await?;
        return Ok(plan.outcomes);
    }
    let subscriptions = subscription_rows(&plan, signups);
    let caps: Vec<Caps<'_>> = cap_rows(&states)
        .into_iter()
        .filter(|c| !inserted.contains(&c.id))
        .collect();
    let conflict = upsert_conflict(&super::POSTGRES);
    let random = super::POSTGRES.random_key;
    let mail = &plan.outbox;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH subscribed AS (
             INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, consent_at, consent_ip,
                                        consent_user_agent, consent_page, link_key)
             SELECT l, s, 'pending', $1, $1, ip, ua, page, {random}
             FROM UNNEST($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS t(l, s, ip, ua, page)
             {conflict}
             RETURNING 1),
         confirmation AS (
             INSERT INTO confirmations (subscriber_id, token_hash, created_at, expires_at, list_ids)
             SELECT s, h, $1, $7, l FROM UNNEST($8::bigint[], $9::text[], $10::text[]) AS t(s, h, l)
             RETURNING 1),
         capped AS (
             INSERT INTO subscribers (email, email_key, created_at, last_confirmation_at,
                                      confirmations_day_start, confirmations_day_count)
             SELECT k, k, $1, $1, CASE WHEN t.restarted THEN $1 END, t.n
             FROM UNNEST($11::text[], $12::bool[], $13::int[]) AS t(k, restarted, n)
             ON CONFLICT (email_key) DO UPDATE SET last_confirmation_at = excluded.last_confirmation_at,
                 confirmations_day_start = COALESCE(excluded.confirmations_day_start,
                                                    subscribers.confirmations_day_start),
                 confirmations_day_count = excluded.confirmations_day_count
             RETURNING 1),
         queued AS (
             INSERT INTO outbox (kind, priority, recipient, subject, params, headers, next_attempt_at, created_at)
             SELECT k, p, r, sub, pa, h, $1, $1
             FROM UNNEST($14::text[], $15::int[], $16::text[], $17::text[], $18::text[], $19::text[])
                 AS t(k, p, r, sub, pa, h)
             RETURNING 1)
         SELECT (SELECT COUNT(*) FROM subscribed) + (SELECT COUNT(*) FROM confirmation)
              + (SELECT COUNT(*) FROM capped) + (SELECT COUNT(*) FROM queued)"
    )))
    .bind(now)
    .bind(subscriptions.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(subscriptions.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(subscriptions.iter().map(|r| r.2.ip.as_deref()).collect::<Vec<_>>())
    .bind(
        subscriptions
            .iter()
            .map(|r| r.2.user_agent.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(subscriptions.iter().map(|r| r.2.page.as_deref()).collect::<Vec<_>>())
    .bind(now + rules.token_ttl)
    .bind(plan.confirmations.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(plan.confirmations.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(plan.confirmations.iter().map(|c| c.2.as_str()).collect::<Vec<_>>())
    .bind(caps.iter().map(|c| c.key).collect::<Vec<_>>())
    .bind(caps.iter().map(|c| c.restarted).collect::<Vec<_>>())
    .bind(caps.iter().map(|c| c.count).collect::<Vec<_>>())
    .bind(mail.iter().map(|m| m.kind).collect::<Vec<_>>())
    .bind(mail.iter().map(|m| m.priority).collect::<Vec<_>>())
    .bind(mail.iter().map(|m| m.recipient.as_str()).collect::<Vec<_>>())
    .bind(mail.iter().map(|m| m.subject.as_str()).collect::<Vec<_>>())
    .bind(mail.iter().map(|m| m.params.as_deref()).collect::<Vec<_>>())
    .bind(mail.iter().map(NewOutboxMessage::headers_json).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(plan.outcomes)
}

async fn sqlite_batch(
    pool: &sqlx::SqlitePool,
    signups: &[NewSignup<'_>],
    rules: &SignupRules,
    render: impl FnMut(usize, &[&List]) -> NewOutboxMessage,
) -> Result<Vec<SignupOutcome>> {
    use sqlx::Row;
    let now = super::now();
    let addresses = json!(distinct_addresses(signups)).to_string();
    let mut tx = super::begin(pool, super::SQLITE.begin_write).await?;
    // Several statements per query: each query is one hand-off to SQLite's thread, so a batch
    // is four (BEGIN, this, the writes, COMMIT) whatever its size.
    let rows = sqlx::query(
        "INSERT INTO subscribers (email, email_key, created_at, link_key)
         SELECT value ->> 0, value ->> 1, $1, random() FROM json_each($2) WHERE true
         ON CONFLICT (email_key) DO UPDATE SET email_key = excluded.email_key
         RETURNING id, email_key, last_confirmation_at, confirmations_day_start, confirmations_day_count;
         SELECT x.subscriber_id, x.list_id FROM subscribers s JOIN subscriptions x ON x.subscriber_id = s.id
         WHERE s.email_key IN (SELECT value ->> 1 FROM json_each($2)) AND x.status = 'confirmed';",
    )
    .bind(now)
    .bind(&addresses)
    .fetch_all(&mut *tx)
    .await?;
    let mut subscribers = Vec::new();
    let mut confirmed: Vec<(i64, i64)> = Vec::new();
    for row in &rows {
        if row.len() == 2 {
            confirmed.push((row.try_get(0)?, row.try_get(1)?));
        } else {
            subscribers.push(<Subscriber as sqlx::FromRow<'_, _>>::from_row(row)?);
        }
    }
    let mut states: HashMap<String, State> = subscribers
        .into_iter()
        .map(|row| {
            let state = State {
                confirmed: confirmed.iter().filter(|c| c.0 == row.id).map(|c| c.1).collect(),
                row,
                sent: None,
            };
            (state.row.email_key.clone(), state)
        })
        .collect();
    let plan = plan(signups, &mut states, rules, now, render);
    if plan.subscriptions.is_empty() {
        tx.commit().await?;
        return Ok(plan.outcomes);
    }
    let subscriptions: Vec<_> = subscription_rows(&plan, signups)
        .into_iter()
        .map(|(l, s, o)| json!([l, s, o.ip, o.user_agent, o.page]))
        .collect();
    let mail: Vec<_> = plan
        .outbox
        .iter()
        .map(|m| json!([m.kind, m.priority, m.recipient, m.subject, m.params, m.headers_json()]))
        .collect();
    let conflict = upsert_conflict(&super::SQLITE);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO subscriptions (list_id, subscriber_id, status, created_at, consent_at, consent_ip,
                                    consent_user_agent, consent_page, link_key)
         SELECT value ->> 0, value ->> 1, 'pending', $1, $1, value ->> 2, value ->> 3, value ->> 4, random()
         FROM json_each($2) WHERE true
         {conflict};
         INSERT INTO confirmations (subscriber_id, token_hash, created_at, expires_at, list_ids)
         SELECT value ->> 0, value ->> 1, $1, $3, value ->> 2 FROM json_each($4);
         UPDATE subscribers SET last_confirmation_at = $1,
             confirmations_day_start = CASE WHEN j.value ->> 1 THEN $1 ELSE confirmations_day_start END,
             confirmations_day_count = j.value ->> 2
         FROM json_each($5) j WHERE subscribers.id = j.value ->> 0;
         INSERT INTO outbox (kind, priority, recipient, subject, params, headers, next_attempt_at, created_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, $1, $1
         FROM json_each($6);"
    )))
    .bind(now)
    .bind(json!(subscriptions).to_string())
    .bind(now + rules.token_ttl)
    .bind(json!(plan.confirmations).to_string())
    .bind(
        json!(
            cap_rows(&states)
                .iter()
                .map(|c| json!([c.id, c.restarted, c.count]))
                .collect::<Vec<_>>()
        )
        .to_string(),
    )
    .bind(json!(mail).to_string())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(plan.outcomes)
}
