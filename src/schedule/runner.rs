//! The task that runs schedules: at each slot, the list's digest is queued exactly as
//! `POST /api/lists/{slug}/digests` would queue it, under an idempotency key made of the slot.
//!
//! A tick, given the time (injected, so that tests need no wall clock):
//! 1. claims the due slots of each schedule (a compare-and-set in the database): the newest one
//!    younger than the grace is to be sent, every older one is recorded `missed`;
//! 2. queues the digest of each claimed slot still younger than the grace. A slot claimed by a
//!    process that died before queuing is finished by whichever process ticks next; the
//!    idempotency key makes two processes finishing it at once queue one digest.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, watch};

use super::Schedule;
use crate::config::Config;
use crate::digest::{DigestError, DigestRequest};
use crate::store::{ScheduleRow, SlotClaim, Store, StoreError};

/// Missed slots recorded per schedule at most (the newest).
pub const MISSED_KEPT: usize = 20;
/// Slots walked per schedule and tick at most before skipping ahead (a per-minute schedule after
/// weeks of downtime).
const WALK_LIMIT: usize = 50_000;
/// The longest a sleeping scheduler waits before looking again (another process may have set a
/// schedule).
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// After a failed tick (the database did not answer).
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub queued: usize,
    pub skipped: usize,
    pub missed: usize,
}

/// The idempotency key of a slot's digest (digests' keys are per list already).
fn slot_key(slot: DateTime<Utc>) -> String {
    format!("schedule:{}", slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The due slots of `schedule` from `from` up to `now`, the newest `keep` of them, and the first
/// slot after `now`.
fn due_slots(
    schedule: &Schedule,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    keep: usize,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut slots = VecDeque::with_capacity(keep + 1);
    let mut slot = Some(from);
    let mut walked = 0;
    while let Some(s) = slot.filter(|s| *s <= now) {
        if walked == WALK_LIMIT {
            // Only the newest slots matter: start again at the first slot of the last two days
            // (at most 2,880 of them, a slot being a minute at the finest).
            return match schedule.next_slot(now - TimeDelta::days(2)) {
                Some(first) => due_slots(schedule, first, now, keep),
                None => (Vec::new(), None),
            };
        }
        if slots.len() == keep {
            slots.pop_front();
        }
        slots.push_back(s);
        slot = schedule.next_slot(s);
        walked += 1;
    }
    (slots.into(), slot)
}

/// Runs what is due at `now`.
pub async fn tick(store: &Store, config: &Config, now: DateTime<Utc>) -> Result<RunReport, StoreError> {
    let grace = TimeDelta::from_std(config.schedule_grace).unwrap_or(TimeDelta::hours(2));
    let started = std::time::Instant::now();
    let mut report = RunReport::default();
    for row in store.due_schedules(now).await? {
        let missed = claim(store, config, &row, now, grace).await?;
        for _ in 0..missed {
            crate::telemetry::schedule_run("missed");
        }
        report.missed += missed;
    }
    for run in store.claimed_runs().await? {
        let decided = crate::store::now();
        // Checked just before queuing, on the tick's clock: a slot that became too old while
        // waiting (a busy process, a database that stopped answering) is not sent late.
        let at = now + TimeDelta::from_std(started.elapsed()).unwrap_or_default();
        if at - run.slot >= grace {
            store.decide_run(run.list.id, run.slot, "missed", None, decided).await?;
            crate::telemetry::schedule_run("missed");
            report.missed += 1;
            continue;
        }
        let available = store
            .eligible_items(
                run.list.id,
                crate::store::ItemWindow::after(run.since),
                i64::from(run.max_items),
            )
            .await?;
        let outcome = if available.len() < run.min_items as usize {
            Err(DigestError::NoItems)
        } else {
            let request = DigestRequest {
                since: Some(run.since),
                max_items: Some(i64::from(run.max_items)),
                subject: None,
            };
            crate::digest::queue(store, config, &run.list, &request, Some(&slot_key(run.slot))).await
        };
        let (name, digest) = match outcome {
            Ok((digest, _)) => ("queued", Some(digest.id)),
            Err(DigestError::NoItems) => ("skipped_no_items", None),
            Err(DigestError::NoRecipients) => ("skipped_no_recipients", None),
            Err(DigestError::Store(e)) => return Err(e),
            Err(e) => {
                // Not the database's fault (a template that fails to render): tried again at
                // the next tick, and recorded `missed` once the grace has passed.
                tracing::warn!(list = %run.list.slug, slot = %run.slot, error = %e, "scheduled digest not queued");
                continue;
            }
        };
        store.decide_run(run.list.id, run.slot, name, digest, decided).await?;
        crate::telemetry::schedule_run(name);
        tracing::info!(list = %run.list.slug, slot = %run.slot, outcome = name, digest, "scheduled slot");
        match name {
            "queued" => report.queued += 1,
            _ => report.skipped += 1,
        }
    }
    Ok(report)
}

/// Claims the due slots of one schedule; how many it recorded as missed.
async fn claim(
    store: &Store,
    config: &Config,
    row: &ScheduleRow,
    now: DateTime<Utc>,
    grace: TimeDelta,
) -> Result<usize, StoreError> {
    let schedule = match super::parse_row(row, config.timezone) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(list = row.list_id, error = %e, "a stored schedule does not parse: skipped");
            return Ok(0);
        }
    };
    let (slots, next) = due_slots(&schedule, row.next_slot, now, MISSED_KEPT + 1);
    let Some(next) = next else {
        tracing::warn!(list = row.list_id, "a schedule has no slot after now: skipped");
        return Ok(0);
    };
    let send = slots.last().copied().filter(|s| now - *s < grace);
    let missed: Vec<DateTime<Utc>> = slots
        .iter()
        .copied()
        .filter(|s| Some(*s) != send)
        .rev()
        .take(MISSED_KEPT)
        .collect();
    let claim = SlotClaim {
        list_id: row.list_id,
        expected_next: row.next_slot,
        new_next: next,
        missed: &missed,
        send,
    };
    if store.claim_slots(&claim, crate::store::now()).await? {
        for slot in &missed {
            tracing::warn!(list = row.list_id, slot = %slot, "a scheduled slot was missed (older than the grace): not sent");
        }
        Ok(missed.len())
    } else {
        Ok(0)
    }
}

/// The scheduler of a `serve` process: ticks at each slot, and when woken (a schedule set here).
pub struct Scheduler {
    pub store: Store,
    pub config: Config,
    /// Wakes this scheduler when a schedule changes.
    pub wake: Arc<Notify>,
    /// Wakes the senders when a digest is queued.
    pub sender_wake: Arc<Notify>,
}

impl Scheduler {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = match tick(&self.store, &self.config, crate::store::now()).await {
                Ok(report) => {
                    if report.queued > 0 {
                        self.sender_wake.notify_waiters();
                        self.sender_wake.notify_one();
                    }
                    match self.store.earliest_slot().await {
                        Ok(Some(t)) => (t - crate::store::now()).to_std().unwrap_or_default().min(IDLE),
                        Ok(None) => IDLE,
                        Err(_) => RETRY,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: the database did not answer; trying again");
                    RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_slots_after_a_long_outage_keep_the_newest_real_slots() {
        let every_minute = Schedule::new("* * * * *", None, chrono_tz::Tz::UTC, None, None).unwrap();
        let from: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
        let now: DateTime<Utc> = "2026-12-01T12:00:30Z".parse().unwrap();
        // 87,000 slots due: more than are walked; the newest 21 come back all the same.
        let (slots, next) = due_slots(&every_minute, from, now, MISSED_KEPT + 1);
        assert_eq!(slots.len(), MISSED_KEPT + 1);
        assert_eq!(slots.last(), Some(&"2026-12-01T12:00:00Z".parse().unwrap()));
        assert_eq!(slots[0], "2026-12-01T11:40:00Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(next, Some("2026-12-01T12:01:00Z".parse().unwrap()));
        // A daily schedule a week late: every missed day.
        let daily = Schedule::new("0 7 * * *", None, chrono_tz::Tz::UTC, None, None).unwrap();
        let (slots, _) = due_slots(&daily, "2026-11-24T07:00:00Z".parse().unwrap(), now, MISSED_KEPT + 1);
        assert_eq!(slots.len(), 8);
    }
}
