//! Digest schedules and their runs. Slots are claimed with a compare-and-set on `next_slot`, and
//! each slot is recorded once (`schedule_runs`' primary key): one slot, one digest, whatever the
//! number of processes.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{List, Result, Store, on_pool, on_writer};

/// A schedule as stored (its pattern and zone were validated when it was set).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub list_id: i64,
    pub cron: String,
    pub timezone: String,
    pub max_items: i32,
    pub min_items: i32,
    pub created_at: DateTime<Utc>,
    pub covered_until: DateTime<Utc>,
    pub next_slot: DateTime<Utc>,
}

/// What one slot came to.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq, utoipa::ToSchema)]
pub struct ScheduleRun {
    pub slot: DateTime<Utc>,
    pub outcome: String,
    pub digest_id: Option<i64>,
}

/// A slot claimed by some process whose digest is not queued yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedRun {
    #[sqlx(flatten)]
    pub list: List,
    pub slot: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub max_items: i32,
    pub min_items: i32,
}

/// What a process decided for the slots of one schedule that are due.
pub struct SlotClaim<'a> {
    pub list_id: i64,
    /// `next_slot` as read: the claim holds only if no one moved it since.
    pub expected_next: DateTime<Utc>,
    pub new_next: DateTime<Utc>,
    pub missed: &'a [DateTime<Utc>],
    pub send: Option<DateTime<Utc>>,
}

/// A schedule to set, already validated, with its first slot.
pub struct NewSchedule<'a> {
    pub list_id: i64,
    pub cron: &'a str,
    pub timezone: &'a str,
    pub max_items: i32,
    pub min_items: i32,
    pub next_slot: DateTime<Utc>,
}

const SCHEDULE_COLUMNS: &str = "list_id, cron, timezone, max_items, min_items, created_at, covered_until, next_slot";

impl Store {
    /// Sets a list's schedule (a new one, or a change of one): the next slot starts afresh, and
    /// where the next digest's items start is kept (a new schedule starts now).
    pub async fn put_schedule(&self, new: &NewSchedule<'_>, now: DateTime<Utc>) -> Result<ScheduleRow> {
        on_writer!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "INSERT INTO schedules (list_id, cron, timezone, max_items, min_items, created_at, updated_at,
                                        covered_until, next_slot)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7)
                 ON CONFLICT (list_id) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
                     max_items = excluded.max_items, min_items = excluded.min_items,
                     updated_at = excluded.updated_at, next_slot = excluded.next_slot
                 RETURNING {SCHEDULE_COLUMNS}"
            )))
            .bind(new.list_id)
            .bind(new.cron)
            .bind(new.timezone)
            .bind(new.max_items)
            .bind(new.min_items)
            .bind(now)
            .bind(new.next_slot)
            .fetch_one(pool)
            .await?)
        })
    }

    pub async fn schedule(&self, list_id: i64) -> Result<Option<ScheduleRow>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE list_id = $1"
            )))
            .bind(list_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Whether there was a schedule to delete. Its runs stay: a slot once decided is never sent
    /// again, even by a schedule set anew.
    pub async fn delete_schedule(&self, list_id: i64) -> Result<bool> {
        on_writer!(self, |pool, _d| {
            let done = sqlx::query("DELETE FROM schedules WHERE list_id = $1")
                .bind(list_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// The newest decided runs of a list's schedule, newest first.
    pub async fn schedule_runs(&self, list_id: i64, limit: i64) -> Result<Vec<ScheduleRun>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ScheduleRun>(
                "SELECT slot, outcome, digest_id FROM schedule_runs
                 WHERE list_id = $1 AND outcome <> 'claimed' ORDER BY slot DESC LIMIT $2",
            )
            .bind(list_id)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Schedules with a slot at or before `now` still undecided.
    pub async fn due_schedules(&self, now: DateTime<Utc>) -> Result<Vec<ScheduleRow>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ScheduleRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_slot <= $1 ORDER BY next_slot"
            )))
            .bind(now)
            .fetch_all(pool)
            .await?)
        })
    }

    /// The earliest undecided slot of any schedule.
    pub async fn earliest_slot(&self) -> Result<Option<DateTime<Utc>>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_scalar("SELECT MIN(next_slot) FROM schedules")
                .fetch_one(pool)
                .await?)
        })
    }

    /// Claims the due slots of one schedule: moves `next_slot` past them if no other process
    /// did first, records the missed ones, and the one to send as `claimed` with the `since` of
    /// its digest. `false` when another process had claimed them.
    pub async fn claim_slots(&self, claim: &SlotClaim<'_>, now: DateTime<Utc>) -> Result<bool> {
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            let moved = sqlx::query("UPDATE schedules SET next_slot = $1 WHERE list_id = $2 AND next_slot = $3")
                .bind(claim.new_next)
                .bind(claim.list_id)
                .bind(claim.expected_next)
                .execute(&mut *tx)
                .await?;
            if moved.rows_affected() == 0 {
                return Ok(false);
            }
            let runs = claim
                .missed
                .iter()
                .map(|s| (*s, "missed"))
                .chain(claim.send.map(|s| (s, "claimed")));
            for (slot, outcome) in runs {
                sqlx::query(
                    "INSERT INTO schedule_runs (list_id, slot, outcome, since, decided_at)
                     SELECT list_id, $2, $3, covered_until, $4 FROM schedules WHERE list_id = $1
                     ON CONFLICT (list_id, slot) DO NOTHING",
                )
                .bind(claim.list_id)
                .bind(slot)
                .bind(outcome)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Claimed slots whose digest is not queued yet, with what their digest needs (the list's
    /// schedule still set).
    pub async fn claimed_runs(&self) -> Result<Vec<ClaimedRun>> {
        on_pool!(self, |pool, _d| {
            Ok(sqlx::query_as::<_, ClaimedRun>(
                "SELECT l.id, l.slug, l.name, l.description, l.created_at, r.slot, r.since,
                        s.max_items, s.min_items
                 FROM schedule_runs r JOIN lists l ON l.id = r.list_id
                 JOIN schedules s ON s.list_id = r.list_id
                 WHERE r.outcome = 'claimed' ORDER BY r.slot",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Records what a claimed slot came to (once: a slot already decided stays as it is). A
    /// queued digest moves the start of the next one's items to this slot.
    pub async fn decide_run(
        &self,
        list_id: i64,
        slot: DateTime<Utc>,
        outcome: &str,
        digest_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_writer!(self, |pool, d| {
            let mut tx = super::begin(pool, d.begin_write).await?;
            sqlx::query(
                "UPDATE schedule_runs SET outcome = $1, digest_id = $2, decided_at = $3
                 WHERE list_id = $4 AND slot = $5 AND outcome = 'claimed'",
            )
            .bind(outcome)
            .bind(digest_id)
            .bind(now)
            .bind(list_id)
            .bind(slot)
            .execute(&mut *tx)
            .await?;
            if outcome == "queued" {
                sqlx::query("UPDATE schedules SET covered_until = $1 WHERE list_id = $2 AND covered_until < $1")
                    .bind(slot)
                    .bind(list_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
