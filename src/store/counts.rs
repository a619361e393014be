//! Subscription counts per list and status, without counting every row per view and without a
//! counter row that signups update (migrations 0014 and 0022). The counts now are those at the
//! start of the UTC hour (stored once an hour, from one full count) plus the rows changed since
//! (each status change records the row's status at the start of its hour) plus the rows deleted
//! since. An hour, not a day: what a view counts stays an hour's changes however busy the day.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::AssertSqlSafe;

use super::{ListCounts, Result, Store, on_pool, on_writer};

/// After an hour begins, a change may still be in flight that was stamped in the hour before (a
/// write waits at most the request timeout): the hour's start is stored only once this much of
/// the hour has passed (until then, counts are full counts).
const SETTLE: TimeDelta = TimeDelta::minutes(1);

const FULL_COUNT: &str = "SELECT list_id, COUNT(*) FILTER (WHERE status = 'pending') AS pending,
        COUNT(*) FILTER (WHERE status = 'confirmed') AS confirmed,
        COUNT(*) FILTER (WHERE status = 'unsubscribed') AS unsubscribed
 FROM subscriptions GROUP BY list_id";

/// Rows changed since `$1`: their status now, and at the start of the hour (read from the
/// index alone, migration 0023). A signup's new row records no change (one index entry fewer on
/// the signup path): those are the pending rows written since, never changed, on the pending
/// rows' consent index. `+list_id` keeps SQLite, which plans without statistics, from reading
/// every subscription in the order of the (list, status) index to save itself a sort.
pub(super) const CHANGES: &str = "SELECT list_id, status, COALESCE(status_at_hour_start, 'none') AS was, COUNT(*) AS n
 FROM subscriptions WHERE changed_at >= $1 GROUP BY list_id, status, status_at_hour_start
 UNION ALL
 SELECT +list_id AS list_id, status, 'none' AS was, COUNT(*) AS n
 FROM subscriptions WHERE status = 'pending' AND consent_at >= $1 AND changed_at IS NULL AND created_at >= $1
 GROUP BY +list_id, status";

/// Rows deleted since `$1`, by their status at the start of the hour.
const ADJUSTMENTS: &str = "SELECT list_id, status, CAST(SUM(delta) AS BIGINT) AS n FROM count_adjustments
 WHERE at >= $1 GROUP BY list_id, status";

type ByList = HashMap<i64, ListCounts>;

fn slot<'a>(counts: &'a mut ByList, list_id: i64, status: &str) -> Option<&'a mut i64> {
    let c = counts.entry(list_id).or_default();
    match status {
        "pending" => Some(&mut c.pending),
        "confirmed" => Some(&mut c.confirmed),
        "unsubscribed" => Some(&mut c.unsubscribed),
        _ => None,
    }
}

/// `counts` moved by the changes and deletions since the hour began (`sign` 1), or back (−1).
fn apply(counts: &mut ByList, changes: &[(i64, String, String, i64)], adjustments: &[(i64, String, i64)], sign: i64) {
    for (list_id, status, was, n) in changes {
        if let Some(c) = slot(counts, *list_id, status) {
            *c += sign * n;
        }
        if let Some(c) = slot(counts, *list_id, was) {
            *c -= sign * n;
        }
    }
    for (list_id, status, n) in adjustments {
        if let Some(c) = slot(counts, *list_id, status) {
            *c += sign * n;
        }
    }
}

fn by_list(rows: Vec<(i64, i64, i64, i64)>) -> ByList {
    rows.into_iter()
        .map(|(id, pending, confirmed, unsubscribed)| {
            (
                id,
                ListCounts {
                    pending,
                    confirmed,
                    unsubscribed,
                },
            )
        })
        .collect()
}

impl Store {
    /// Every list's counts now, by list id (lists without subscriptions are absent).
    pub async fn counts_by_list(&self, now: DateTime<Utc>) -> Result<ByList> {
        let hour_start = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        if now - hour_start < SETTLE {
            let rows: Vec<(i64, i64, i64, i64)> =
                on_pool!(self, |pool, _d| sqlx::query_as(FULL_COUNT).fetch_all(pool).await?);
            return Ok(by_list(rows));
        }
        let key = hour_start.format("%Y-%m-%dT%H").to_string();
        let stored: Vec<(i64, i64, i64, i64)> = on_pool!(self, |pool, _d| {
            sqlx::query_as(
                "SELECT list_id, pending, confirmed, unsubscribed FROM count_snapshots WHERE hour_start = $1",
            )
            .bind(&key)
            .fetch_all(pool)
            .await?
        });
        if !stored.is_empty() {
            let (changes, adjustments) = self.changes_since(hour_start).await?;
            let mut counts = by_list(stored);
            apply(&mut counts, &changes, &adjustments, 1);
            return Ok(counts);
        }
        // The first view of the hour: one full count, and the hour's start worked out from it
        // and the changes since, all read at one instant.
        let (full, changes, adjustments) = self.full_count_and_changes(hour_start).await?;
        let mut start = full.clone();
        apply(&mut start, &changes, &adjustments, -1);
        let rows: Vec<(i64, i64, i64, i64)> = start
            .iter()
            .map(|(id, c)| (*id, c.pending, c.confirmed, c.unsubscribed))
            .collect();
        // A list without rows yet still gets a row, so that the hour counts as stored.
        let rows = if rows.is_empty() { vec![(0, 0, 0, 0)] } else { rows };
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let sql = format!(
                "INSERT INTO count_snapshots (hour_start, list_id, pending, confirmed, unsubscribed)
                 SELECT $1, CAST(t.value ->> 0 AS BIGINT), CAST(t.value ->> 1 AS BIGINT),
                        CAST(t.value ->> 2 AS BIGINT), CAST(t.value ->> 3 AS BIGINT)
                 FROM {} WHERE true
                 ON CONFLICT (hour_start, list_id) DO NOTHING",
                (d.json_rows)("$2")
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(&key)
                .bind(serde_json::to_string(&rows).unwrap_or_default())
                .execute(&mut *tx)
                .await?;
            // Only the current hour's start is ever read.
            sqlx::query("DELETE FROM count_snapshots WHERE hour_start < $1")
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(full)
    }

    async fn changes_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(Vec<(i64, String, String, i64)>, Vec<(i64, String, i64)>)> {
        on_pool!(self, |pool, _d| {
            let changes = sqlx::query_as(CHANGES).bind(since).fetch_all(pool).await?;
            let adjustments = sqlx::query_as(ADJUSTMENTS).bind(since).fetch_all(pool).await?;
            Ok((changes, adjustments))
        })
    }

    /// The full count and the changes since `since`, in one read transaction (one snapshot).
    async fn full_count_and_changes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(ByList, Vec<(i64, String, String, i64)>, Vec<(i64, String, i64)>)> {
        on_pool!(self, |pool, _d| {
            let begin = match self {
                Store::Sqlite(_) => "BEGIN",
                Store::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            };
            let mut tx = super::begin(pool, begin).await?;
            let full: Vec<(i64, i64, i64, i64)> = sqlx::query_as(FULL_COUNT).fetch_all(&mut *tx).await?;
            let changes = sqlx::query_as(CHANGES).bind(since).fetch_all(&mut *tx).await?;
            let adjustments = sqlx::query_as(ADJUSTMENTS).bind(since).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok((by_list(full), changes, adjustments))
        })
    }
}
