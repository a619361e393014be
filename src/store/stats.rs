//! The dashboard's figures, read as ranges of indexes on the time columns. A finished UTC day (or,
//! for today and for the last 24 hours, a finished hour, and within the hour still open, its
//! settled minutes as a running total) is counted once and kept in `daily_stats`; only the last
//! minute or two is counted live. Nothing on the signup or send path writes a counter, so nothing
//! there waits on one.

use std::collections::HashMap;

use chrono::{DateTime, Days, DurationRound, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{Dialect, Result, Store, on_pool, on_writer};

/// Two figures of one UTC day: confirmed and unsubscribed, or sent and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayFigures {
    pub day: NaiveDate,
    pub a: i64,
    pub b: i64,
}

/// A list's last 24 hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ListActivity {
    pub signups: i64,
    pub unsubscribes: i64,
}

/// Messages waiting to be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Confirmation, welcome and test emails.
    pub outbox: i64,
    /// Digest deliveries.
    pub deliveries: i64,
}

/// What a chart counts.
#[derive(Debug, Clone, Copy)]
enum Series {
    /// A list's new confirmed subscriptions and unsubscribes.
    List(i64),
    /// Every message sent and failed.
    Messages,
}

impl Series {
    fn scope(self) -> String {
        match self {
            Series::List(id) => format!("list:{id}"),
            Series::Messages => "messages".to_owned(),
        }
    }

    /// Counts per day in `[$1, $2)` (of list `$3`), as `(day, a, b)`.
    fn count_sql(self, d: &Dialect) -> String {
        let parts = match self {
            Series::List(_) => format!(
                "SELECT {} AS day, 1 AS k FROM subscriptions
                  WHERE list_id = $3 AND confirmed_at >= $1 AND confirmed_at < $2
                 UNION ALL
                 SELECT {}, 2 FROM subscriptions
                  WHERE list_id = $3 AND unsubscribed_at >= $1 AND unsubscribed_at < $2",
                (d.day)("confirmed_at"),
                (d.day)("unsubscribed_at"),
            ),
            Series::Messages => {
                let mut parts = Vec::new();
                for table in ["deliveries", "outbox"] {
                    for (column, k) in [("sent_at", 1), ("failed_at", 2)] {
                        parts.push(format!(
                            "SELECT {} AS day, {k} AS k FROM {table} WHERE {column} >= $1 AND {column} < $2",
                            (d.day)(column)
                        ));
                    }
                }
                parts.join(" UNION ALL ")
            }
        };
        format!(
            "SELECT day, COUNT(*) FILTER (WHERE k = 1) AS a, COUNT(*) FILTER (WHERE k = 2) AS b
             FROM ({parts}) t GROUP BY day"
        )
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_hour(t);
    if floor == t { t } else { floor + TimeDelta::hours(1) }
}

/// An hour as `daily_stats` keeps it: `2026-12-03T15` (sorts as the time does).
fn hour_key(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H").to_string()
}

/// A minute as a running total's key holds it: `2026-12-03T15:04` (sorts as the time does).
fn minute_key(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M").to_string()
}

fn parse_minute_key(key: &str) -> Option<DateTime<Utc>> {
    Some(
        chrono::NaiveDateTime::parse_from_str(key, "%Y-%m-%dT%H:%M")
            .ok()?
            .and_utc(),
    )
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// A minute is over this long after it ends: a write stamped in it may still be in flight
/// until then (a write waits at most the request timeout). As the list counts' `SETTLE`.
const SETTLE_MINUTE: TimeDelta = TimeDelta::minutes(1);

/// Two figures by list id (0 for a series that is not per list).
type Tally = HashMap<i64, (i64, i64)>;

/// Figures by id as `daily_stats` rows under `key`: a marker row `<key>` (they were counted, even
/// when there are none) and `<key>|<id>` for each.
fn marked_rows(key: &str, figures: impl Iterator<Item = (i64, (i64, i64))>) -> Vec<(String, i64, i64)> {
    let mut rows = vec![(key.to_owned(), 0, 0)];
    rows.extend(figures.map(|(id, (a, b))| (format!("{key}|{id}"), a, b)));
    rows
}

fn add_tally(tally: &mut Tally, more: Tally) {
    for (id, (a, b)) in more {
        let t = tally.entry(id).or_default();
        *t = (t.0 + a, t.1 + b);
    }
}

/// What a running total counts: a chart's series, or every list's last-24-hours activity.
#[derive(Debug, Clone, Copy)]
enum Tallied {
    Series(Series),
    Activity,
}

impl Tallied {
    fn scope(self) -> String {
        match self {
            Tallied::Series(series) => format!("{}@minutes", series.scope()),
            Tallied::Activity => "activity@minutes".to_owned(),
        }
    }
}

fn add(totals: &mut HashMap<i64, ListActivity>, more: &HashMap<i64, ListActivity>) {
    for (list, a) in more {
        let t = totals.entry(*list).or_default();
        t.signups += a.signups;
        t.unsubscribes += a.unsubscribes;
    }
}

impl Store {
    /// A list's new confirmed subscriptions (`a`) and unsubscribes (`b`) per day, over the `days`
    /// days up to today, oldest first.
    pub async fn subscription_days(&self, list_id: i64, days: u64, now: DateTime<Utc>) -> Result<Vec<DayFigures>> {
        self.days(Series::List(list_id), days, now).await
    }

    /// Messages sent (`a`) and failed (`b`) per day, digests and single emails together.
    pub async fn message_days(&self, days: u64, now: DateTime<Utc>) -> Result<Vec<DayFigures>> {
        self.days(Series::Messages, days, now).await
    }

    async fn days(&self, series: Series, days: u64, now: DateTime<Utc>) -> Result<Vec<DayFigures>> {
        let today = now.date_naive();
        let first = today - Days::new(days.max(1) - 1);
        // A day is over some minutes after midnight: a write in flight then may still land in it.
        let closed_before = (now - TimeDelta::minutes(10)).date_naive();
        let mut figures = self.cached_days(series, first).await?;
        if let Some(missing) = first
            .iter_days()
            .take_while(|d| *d < closed_before)
            .find(|d| !figures.contains_key(d))
        {
            let counted = self.count_days(series, missing, closed_before).await?;
            let finished: Vec<(NaiveDate, (i64, i64))> = missing
                .iter_days()
                .take_while(|d| *d < closed_before)
                .map(|d| (d, counted.get(&d).copied().unwrap_or((0, 0))))
                .collect();
            self.keep_days(series, &finished).await?;
            figures.extend(finished);
        }
        figures.extend(self.count_days(series, closed_before, today).await?);
        figures.insert(today, self.today_so_far(series, now).await?);
        Ok(first
            .iter_days()
            .take_while(|d| *d <= today)
            .map(|day| {
                let (a, b) = figures.get(&day).copied().unwrap_or((0, 0));
                DayFigures { day, a, b }
            })
            .collect())
    }

    async fn cached_days(&self, series: Series, first: NaiveDate) -> Result<HashMap<NaiveDate, (i64, i64)>> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, |pool, _d| {
            sqlx::query_as("SELECT day, a, b FROM daily_stats WHERE scope = $1 AND day >= $2")
                .bind(series.scope())
                .bind(first.to_string())
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(day, a, b)| Some((day.parse().ok()?, (a, b))))
            .collect())
    }

    /// Today's figures: its finished hours from `daily_stats` (each counted once, the first time
    /// it is shown, under the series' scope with `@hour`), the rest live. Counting the whole day
    /// per view costs more with every message of the day: a million on a digest day.
    async fn today_so_far(&self, series: Series, now: DateTime<Utc>) -> Result<(i64, i64)> {
        let today = start_of(now.date_naive());
        // An hour is over some minutes after it ends: a write in flight then may still land in it.
        let closed = floor_hour(now - TimeDelta::minutes(10)).max(today);
        let scope = format!("{}@hour", series.scope());
        let cached: HashMap<String, (i64, i64)> = on_pool!(self, |pool, _d| {
            sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT day, a, b FROM daily_stats WHERE scope = $1 AND day >= $2 AND day < $3",
            )
            .bind(&scope)
            .bind(hour_key(today))
            .bind(hour_key(closed))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(hour, a, b)| (hour, (a, b)))
            .collect()
        });
        let (mut a, mut b) = self
            .tally_recent(Tallied::Series(series), closed, now)
            .await?
            .values()
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
        let mut hour = today;
        while hour < closed {
            let key = hour_key(hour);
            let (ha, hb) = match cached.get(&key) {
                Some(counted) => *counted,
                None => {
                    let counted = self.count_between(series, hour, hour + TimeDelta::hours(1)).await?;
                    self.keep_today_hour(&scope, &key, counted, today).await?;
                    counted
                }
            };
            (a, b) = (a + ha, b + hb);
            hour += TimeDelta::hours(1);
        }
        Ok((a, b))
    }

    /// The figures of `[from, until)`, within one day, from the rows themselves.
    async fn count_between(&self, series: Series, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<(i64, i64)> {
        let counted = self.count_range(series, from, until).await?;
        Ok(counted.values().fold((0, 0), |(a, b), (x, y)| (a + x, b + y)))
    }

    /// Keeps one finished hour of today, and forgets the hours of the days before.
    async fn keep_today_hour(&self, scope: &str, key: &str, (a, b): (i64, i64), today: DateTime<Utc>) -> Result<()> {
        self.keep_stats(scope, &[(key.to_owned(), a, b)], Some(&hour_key(today)))
            .await
    }

    /// Keeps figures in `daily_stats` under `scope` (one already kept stays as it was), then
    /// forgets the scope's rows before `forget_before`.
    async fn keep_stats(&self, scope: &str, values: &[(String, i64, i64)], forget_before: Option<&str>) -> Result<()> {
        let values = serde_json::to_string(values).unwrap_or_default();
        on_writer!(self, |pool, d| {
            let sql = format!(
                "INSERT INTO daily_stats (scope, day, a, b)
                 SELECT $1, t.value ->> 0, CAST(t.value ->> 1 AS BIGINT), CAST(t.value ->> 2 AS BIGINT)
                 FROM {} WHERE true
                 ON CONFLICT (scope, day) DO NOTHING",
                (d.json_rows)("$2")
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(scope)
                .bind(&values)
                .execute(pool)
                .await?;
            if let Some(before) = forget_before {
                sqlx::query("DELETE FROM daily_stats WHERE scope = $1 AND day < $2")
                    .bind(scope)
                    .bind(before)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// Counts the days in `[from, until)` from the rows themselves.
    async fn count_days(
        &self,
        series: Series,
        from: NaiveDate,
        until: NaiveDate,
    ) -> Result<HashMap<NaiveDate, (i64, i64)>> {
        self.count_range(series, start_of(from), start_of(until)).await
    }

    /// Counts per day in `[from, until)` from the rows themselves.
    async fn count_range(
        &self,
        series: Series,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<NaiveDate, (i64, i64)>> {
        if from >= until {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, i64, i64)> = on_pool!(self, |pool, d| {
            let query = sqlx::query_as(AssertSqlSafe(series.count_sql(d)))
                .bind(from)
                .bind(until);
            match series {
                Series::List(id) => query.bind(id),
                Series::Messages => query,
            }
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(day, a, b)| Some((day.parse().ok()?, (a, b))))
            .collect())
    }

    async fn keep_days(&self, series: Series, days: &[(NaiveDate, (i64, i64))]) -> Result<()> {
        let values: Vec<(String, i64, i64)> = days.iter().map(|(d, (a, b))| (d.to_string(), *a, *b)).collect();
        self.keep_stats(&series.scope(), &values, None).await
    }

    /// Each list's signups and unsubscribes of the 24 hours before `now`, by list id: the finished
    /// hours from `daily_stats` (each counted once, the first time it is shown), the hour at
    /// each end of the window live. Counting the whole window per view reads some 25,000 index
    /// entries a day on a million readers, and their heap pages where rows have changed since the
    /// last vacuum.
    pub async fn last_day_activity(&self, now: DateTime<Utc>) -> Result<HashMap<i64, ListActivity>> {
        let from = now - TimeDelta::hours(24);
        let first_full = ceil_hour(from);
        // An hour is over some minutes after it ends: a write in flight then may still land in it.
        let closed = floor_hour(now - TimeDelta::minutes(10)).max(first_full);
        let mut totals = self.activity_between(from, first_full).await?;
        let mut cached = self.cached_hours(first_full, closed).await?;
        let mut hour = first_full;
        while hour < closed {
            let key = hour_key(hour);
            let counted = match cached.remove(&key) {
                Some(counted) => counted,
                None => {
                    let counted = self.activity_between(hour, hour + TimeDelta::hours(1)).await?;
                    self.keep_hour(&key, &counted, first_full).await?;
                    counted
                }
            };
            add(&mut totals, &counted);
            hour += TimeDelta::hours(1);
        }
        let recent = self.tally_recent(Tallied::Activity, closed, now).await?;
        let recent = recent
            .into_iter()
            .map(|(list, (signups, unsubscribes))| (list, ListActivity { signups, unsubscribes }));
        add(&mut totals, &recent.collect());
        Ok(totals)
    }

    /// What `what` counts in `[from, now)`, `from` the start of an hour not yet kept: the
    /// minutes that have settled counted once and kept as a running total (scope
    /// `<what>@minutes`, day `<from>..<until>` and `<from>..<until>|<id>`), only the last minute
    /// or two counted live. Otherwise a view would count the whole hour so far, costing more with
    /// each minute of it: a soak at 20 requests per second saw the overview's p99 double.
    async fn tally_recent(&self, what: Tallied, from: DateTime<Utc>, now: DateTime<Utc>) -> Result<Tally> {
        let settled = floor_minute(now - SETTLE_MINUTE).max(from);
        let scope = what.scope();
        let prefix = format!("{}..", minute_key(from));
        let rows: Vec<(String, i64, i64)> = on_pool!(self, |pool, _d| {
            // `~` sorts after `|`: the figures of a total up to `settled` are in the range.
            sqlx::query_as("SELECT day, a, b FROM daily_stats WHERE scope = $1 AND day >= $2 AND day < $3")
                .bind(&scope)
                .bind(&prefix)
                .bind(format!("{prefix}{}~", minute_key(settled)))
                .fetch_all(pool)
                .await?
        });
        // The latest running total from `from`: its marker row, then its figures.
        let mut tally = Tally::new();
        let mut end = from;
        if let Some(kept) = rows
            .iter()
            .filter(|(day, ..)| !day.contains('|'))
            .map(|(day, ..)| day)
            .max()
        {
            end = kept.strip_prefix(&prefix).and_then(parse_minute_key).unwrap_or(from);
            let figures = rows
                .iter()
                .filter_map(|(day, a, b)| Some((day.strip_prefix(kept.as_str())?.strip_prefix('|')?, a, b)));
            tally.extend(figures.filter_map(|(id, a, b)| Some((id.parse().ok()?, (*a, *b)))));
        }
        if end < settled {
            add_tally(&mut tally, self.tally(what, end, settled).await?);
            self.keep_tally(&scope, &format!("{prefix}{}", minute_key(settled)), &tally)
                .await?;
            end = settled;
        }
        add_tally(&mut tally, self.tally(what, end, now).await?);
        Ok(tally)
    }

    /// The figures of `[from, until)`, by list id (0 for a series).
    async fn tally(&self, what: Tallied, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Tally> {
        Ok(match what {
            Tallied::Series(series) => HashMap::from([(0, self.count_between(series, from, until).await?)]),
            Tallied::Activity => self
                .activity_between(from, until)
                .await?
                .into_iter()
                .map(|(list, a)| (list, (a.signups, a.unsubscribes)))
                .collect(),
        })
    }

    /// Keeps a running total under `key`, and forgets the ones before it.
    async fn keep_tally(&self, scope: &str, key: &str, tally: &Tally) -> Result<()> {
        let values = marked_rows(key, tally.iter().map(|(id, figures)| (*id, *figures)));
        self.keep_stats(scope, &values, Some(key)).await
    }

    /// Each list's signups and unsubscribes in `[from, until)`.
    async fn activity_between(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<HashMap<i64, ListActivity>> {
        if from >= until {
            return Ok(HashMap::new());
        }
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            #[sqlx(flatten)]
            activity: ListActivity,
        }
        let rows: Vec<Row> = on_pool!(self, |pool, _d| {
            sqlx::query_as(
                "SELECT l.id,
                        (SELECT COUNT(*) FROM subscriptions s
                          WHERE s.list_id = l.id AND s.consent_at >= $1 AND s.consent_at < $2) AS signups,
                        (SELECT COUNT(*) FROM subscriptions s
                          WHERE s.list_id = l.id AND s.unsubscribed_at >= $1 AND s.unsubscribed_at < $2) AS unsubscribes
                 FROM lists l",
            )
            .bind(from)
            .bind(until)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|r| (r.id, r.activity)).collect())
    }

    /// The finished hours in `[from, until)` already counted: by hour key, each list's figures.
    /// Rows are scope `hour`, day `<hour key>` (a marker: the hour is counted) and
    /// `<hour key>|<list id>` (signups, unsubscribes).
    async fn cached_hours(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HashMap<String, HashMap<i64, ListActivity>>> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, |pool, _d| {
            sqlx::query_as("SELECT day, a, b FROM daily_stats WHERE scope = 'hour' AND day >= $1 AND day < $2")
                .bind(hour_key(from))
                .bind(hour_key(until))
                .fetch_all(pool)
                .await?
        });
        let mut hours: HashMap<String, HashMap<i64, ListActivity>> = HashMap::new();
        for (key, a, b) in rows {
            match key.split_once('|') {
                None => {
                    hours.entry(key).or_default();
                }
                Some((hour, list)) => {
                    if let Ok(list) = list.parse() {
                        hours.entry(hour.to_owned()).or_default().insert(
                            list,
                            ListActivity {
                                signups: a,
                                unsubscribes: b,
                            },
                        );
                    }
                }
            }
        }
        Ok(hours)
    }

    /// Keeps one finished hour's figures, and forgets hours that left every window.
    async fn keep_hour(&self, key: &str, counted: &HashMap<i64, ListActivity>, oldest: DateTime<Utc>) -> Result<()> {
        let values = marked_rows(
            key,
            counted.iter().map(|(list, a)| (*list, (a.signups, a.unsubscribes))),
        );
        self.keep_stats("hour", &values, Some(&hour_key(oldest - TimeDelta::hours(1))))
            .await
    }

    /// How many messages wait to be sent.
    pub async fn queue_depth(&self) -> Result<QueueDepth> {
        let mut depth = QueueDepth::default();
        for (kind, n) in self.queue_depths().await? {
            match kind.as_str() {
                "digest" => depth.deliveries += n,
                _ => depth.outbox += n,
            }
        }
        Ok(depth)
    }

    /// Each scheduled list's next slot, by list id.
    pub async fn next_slots(&self) -> Result<HashMap<i64, DateTime<Utc>>> {
        let rows: Vec<(i64, DateTime<Utc>)> = on_pool!(self, |pool, _d| {
            sqlx::query_as("SELECT list_id, next_slot FROM schedules")
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().collect())
    }
}
