//! `bulletin lists schedule <slug> ["<cron>" [--timezone Z] [--max-items N] [--min-items N] | --off]`

use std::process::ExitCode;

use super::{fail, find_list};
use crate::config::Config;
use crate::schedule::{Schedule, parse_row};
use crate::store::{List, ScheduleRow, Store};

/// Slots shown with a schedule.
const UPCOMING: usize = 5;

pub enum Change {
    Show,
    Off,
    Set {
        cron: String,
        timezone: Option<String>,
        max_items: Option<i64>,
        min_items: Option<i64>,
    },
}

pub async fn run(config: &Config, store: &Store, slug: &str, change: Change) -> ExitCode {
    let list = match find_list(store, slug).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    match change {
        Change::Show => match store.schedule(list.id).await {
            Ok(Some(row)) => show(config, &list, &row),
            Ok(None) => fail(format_args!("the list {slug} has no schedule")),
            Err(e) => fail(e),
        },
        Change::Off => match store.delete_schedule(list.id).await {
            Ok(true) => {
                println!("Removed the schedule of {slug}.");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(format_args!("the list {slug} has no schedule")),
            Err(e) => fail(e),
        },
        Change::Set {
            cron,
            timezone,
            max_items,
            min_items,
        } => {
            let schedule = match Schedule::new(&cron, timezone.as_deref(), config.timezone, max_items, min_items) {
                Ok(s) => s,
                Err(e) => return fail(format_args!("{}: {e}", e.field())),
            };
            match crate::schedule::set(store, &list, &schedule, crate::store::now()).await {
                Ok(row) => {
                    println!(
                        "Scheduled {slug}. A `serve` process sends each slot (one at a time, whatever their number)."
                    );
                    show(config, &list, &row)
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn show(config: &Config, list: &List, row: &ScheduleRow) -> ExitCode {
    let schedule = match parse_row(row, config.timezone) {
        Ok(s) => s,
        Err(e) => return fail(format_args!("the stored schedule does not parse: {e}")),
    };
    println!(
        "{}: \"{}\" in {}, {}–{} items per digest",
        list.slug, row.cron, row.timezone, row.min_items, row.max_items
    );
    println!("Next {UPCOMING} slots:");
    let first = std::iter::once(row.next_slot);
    let rest = schedule.upcoming(row.next_slot, UPCOMING - 1);
    for slot in first.chain(rest) {
        println!(
            "  {}  ({})",
            schedule.local(slot),
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    ExitCode::SUCCESS
}
