//! Digest schedules: the API and CLI, slots claimed once, the grace rule, roll-over, time zones.
//! The scheduler's clock is injected (`bulletin::schedule::tick` with a chosen time), except in
//! the one test that runs two processes on the wall clock.

use std::time::Duration;

use bulletin::schedule::{RunReport, Schedule, tick};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestApp, TestDb};
use crate::support::smtp::SmtpServer;

on_both_backends!(
    schedule_api_and_cli,
    a_slot_inside_the_grace_is_sent_once_and_one_past_it_is_missed,
    a_slot_while_the_database_is_unreachable_is_missed_past_the_grace,
    skipped_slots_roll_their_items_into_the_next_digest,
    slots_in_a_dst_gap_and_a_dst_overlap_fire_once,
);

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

async fn put_schedule(app: &TestApp, body: Value) -> reqwest::Response {
    app.admin(Method::PUT, "/api/lists/daily/schedule")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn schedule(app: &TestApp) -> Value {
    let r = app
        .admin(Method::GET, "/api/lists/daily/schedule")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn digests(app: &TestApp) -> Vec<Value> {
    let r = app.admin(Method::GET, "/api/lists/daily/digests").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body.as_array().cloned().unwrap()
}

/// Imports confirmed readers (the confirmation round trip is optin.rs's).
async fn confirmed_readers(base: &str, emails: &[&str]) {
    let csv = "email\n".to_owned() + &emails.join("\n");
    let r = reqwest::Client::new()
        .post(format!("{base}/api/lists/daily/import?confirmed=true&consent=test"))
        .bearer_auth(ADMIN_TOKEN)
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn push_item(base: &str, guid: &str, published_at: DateTime<Utc>) {
    let item = json!({"items": [{"guid": guid, "title": format!("Story {guid}"),
                                 "url": format!("https://news.example/{guid}"),
                                 "published_at": published_at.to_rfc3339()}]});
    let r = reqwest::Client::new()
        .post(format!("{base}/api/lists/daily/items"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&item)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn runs(schedule: &Value) -> Vec<(String, String)> {
    schedule["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["slot"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn slot_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn schedule_api_and_cli(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let r = app
        .admin(Method::GET, "/api/lists/daily/schedule")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "no_schedule", None).await;
    let r = app
        .admin(Method::PUT, "/api/lists/nope/schedule")
        .json(&json!({"cron": "0 7 * * *"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;

    for (body, code, field) in [
        (json!({"cron": "0 7 * *"}), "invalid_cron", "cron"),
        (json!({"cron": "0 25 * * *"}), "invalid_cron", "cron"),
        (json!({"cron": "0 0 7 * * *"}), "invalid_cron", "cron"),
        (
            json!({"cron": "0 7 * * *", "timezone": "Europe/Kiev2"}),
            "invalid_timezone",
            "timezone",
        ),
        (
            json!({"cron": "0 7 * * *", "max_items": 101}),
            "invalid_max_items",
            "max_items",
        ),
        (
            json!({"cron": "0 7 * * *", "min_items": 5, "max_items": 4}),
            "invalid_min_items",
            "min_items",
        ),
    ] {
        assert_error(put_schedule(&app, body).await, 422, code, Some(field)).await;
    }
    let r = app
        .admin(Method::GET, "/api/lists/daily/schedule")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "no_schedule", None).await;

    let before = Utc::now();
    let r = put_schedule(
        &app,
        json!({"cron": "0 7 * * *", "timezone": "Europe/Kyiv", "max_items": 10}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let set: Value = r.json().await.unwrap();
    assert_eq!(
        (set["cron"].as_str(), set["timezone"].as_str()),
        (Some("0 7 * * *"), Some("Europe/Kyiv"))
    );
    assert_eq!(
        (set["max_items"].as_i64(), set["min_items"].as_i64()),
        (Some(10), Some(1))
    );
    let next = utc(set["next_run_at"].as_str().unwrap());
    assert!(next > before && next - before <= TimeDelta::days(1), "{set}");
    let local = set["next_run_local"].as_str().unwrap();
    assert!(
        local.contains("T07:00:00+02:00") || local.contains("T07:00:00+03:00"),
        "{local}"
    );
    assert_eq!(chrono::DateTime::parse_from_rfc3339(local).unwrap(), next);

    let shown = schedule(&app).await;
    assert_eq!(shown["next_run_at"], set["next_run_at"]);
    assert_eq!(shown["runs"], json!([]));

    // The CLI shows the same schedule with its next five slots, and changes it.
    let out = app.cli(&["lists", "schedule", "daily"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"0 7 * * *\" in Europe/Kyiv"), "{text}");
    assert_eq!(text.matches("T07:00:00+0").count(), 5, "{text}");
    let out = app.cli(&[
        "lists",
        "schedule",
        "daily",
        "0 9 * * 1",
        "--max-items",
        "5",
        "--min-items",
        "2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let changed = schedule(&app).await;
    assert_eq!(
        (changed["cron"].as_str(), changed["min_items"].as_i64()),
        (Some("0 9 * * 1"), Some(2))
    );
    // The zone defaults to BULLETIN_TIMEZONE (UTC here): Monday 09:00 UTC.
    let next = utc(changed["next_run_at"].as_str().unwrap());
    assert_eq!((next.format("%a %H:%M").to_string()), "Mon 09:00");
    let out = app.cli(&["lists", "schedule", "daily", "0 9 * *"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cron"), "{out:?}");

    let r = app
        .admin(Method::DELETE, "/api/lists/daily/schedule")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = app
        .admin(Method::DELETE, "/api/lists/daily/schedule")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "no_schedule", None).await;
    let out = app.cli(&["lists", "schedule", "daily", "--off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schedule"), "{out:?}");
}

async fn a_slot_inside_the_grace_is_sent_once_and_one_past_it_is_missed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let config = app.config();
    app.create_list("daily", "Daily Briefing").await;
    confirmed_readers(&app.base, &["ann@news.example", "bob@news.example"]).await;
    let set: Value = put_schedule(&app, json!({"cron": "0 7 * * *", "timezone": "Europe/Kyiv"}))
        .await
        .json()
        .await
        .unwrap();
    let slot = utc(set["next_run_at"].as_str().unwrap());
    let kyiv = Schedule::new("0 7 * * *", Some("Europe/Kyiv"), chrono_tz::Tz::UTC, None, None).unwrap();
    let later = |t: DateTime<Utc>| kyiv.next_slot(t).unwrap();
    push_item(&app.base, "a", Utc::now()).await;

    // Nothing before the slot.
    assert_eq!(
        tick(&app.store, &config, slot - TimeDelta::minutes(1)).await.unwrap(),
        RunReport::default()
    );
    // Started 30 minutes late (a restart after downtime): the slot is sent, once.
    let report = tick(&app.store, &config, slot + TimeDelta::minutes(30)).await.unwrap();
    assert_eq!(
        report,
        RunReport {
            queued: 1,
            ..Default::default()
        }
    );
    let again = tick(&app.store, &config, slot + TimeDelta::minutes(31)).await.unwrap();
    assert_eq!(again, RunReport::default(), "a slot is sent once");
    app.smtp.wait_for_count(2, MAIL_WAIT).await;
    let shown = schedule(&app).await;
    assert_eq!(runs(&shown), vec![(slot_text(slot), "queued".to_owned())]);
    let digest_id = shown["runs"][0]["digest_id"].as_i64().unwrap();
    assert_eq!(digests(&app).await.len(), 1);
    assert_eq!(digests(&app).await[0]["id"].as_i64(), Some(digest_id));
    // The next slot starts where this one left off.
    assert_eq!(utc(shown["covers_since"].as_str().unwrap()), slot);
    assert_eq!(utc(shown["next_run_at"].as_str().unwrap()), later(slot));

    // The next slot is only reached three hours late (past the 2 h grace): recorded, not sent.
    // (Its story is dated after the first slot, which the injected clock has passed.)
    push_item(&app.base, "b", slot + TimeDelta::hours(1)).await;
    let next = later(slot);
    let report = tick(&app.store, &config, next + TimeDelta::hours(3)).await.unwrap();
    assert_eq!(
        report,
        RunReport {
            missed: 1,
            ..Default::default()
        }
    );
    let shown = schedule(&app).await;
    assert_eq!(
        runs(&shown),
        vec![
            (slot_text(next), "missed".to_owned()),
            (slot_text(slot), "queued".to_owned())
        ]
    );
    assert_eq!(shown["runs"][0]["digest_id"], Value::Null);
    assert_eq!(digests(&app).await.len(), 1, "a missed slot queues nothing");
    // After three days away, the newest slot inside the grace is sent and the older ones missed.
    let back = later(later(later(next))) + TimeDelta::minutes(10);
    let report = tick(&app.store, &config, back).await.unwrap();
    assert_eq!(
        report,
        RunReport {
            queued: 1,
            missed: 2,
            skipped: 0
        }
    );
    let shown = schedule(&app).await;
    let outcomes: Vec<String> = runs(&shown).into_iter().map(|r| r.1).collect();
    assert_eq!(outcomes, ["queued", "missed", "missed", "missed", "queued"]);
    app.smtp.wait_for_count(4, MAIL_WAIT).await;
    assert_eq!(app.smtp.messages_to("ann@news.example").len(), 2);
    assert_eq!(app.smtp.messages_to("bob@news.example").len(), 2);
}

async fn a_slot_while_the_database_is_unreachable_is_missed_past_the_grace(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let config = app.config();
    app.create_list("daily", "Daily Briefing").await;
    confirmed_readers(&app.base, &["ann@news.example"]).await;
    let set: Value = put_schedule(&app, json!({"cron": "30 6 * * *"}))
        .await
        .json()
        .await
        .unwrap();
    let slot = utc(set["next_run_at"].as_str().unwrap());
    push_item(&app.base, "a", Utc::now()).await;
    // At the slot, the scheduler's database does not answer: the tick fails and records nothing.
    let unreachable = match backend {
        Backend::Sqlite => "sqlite:///nonexistent-directory/bulletin.db",
        Backend::Postgres => "postgres://postgres@127.0.0.1:9/bulletin",
    };
    if let Ok(dead) = bulletin::store::Store::connect(unreachable).await {
        assert!(tick(&dead, &config, slot + TimeDelta::minutes(1)).await.is_err());
    }
    // It answers again two and a half hours later: the slot is past the grace.
    let report = tick(&app.store, &config, slot + TimeDelta::minutes(150)).await.unwrap();
    assert_eq!(
        report,
        RunReport {
            missed: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        runs(&schedule(&app).await),
        vec![(slot_text(slot), "missed".to_owned())]
    );
    assert!(digests(&app).await.is_empty());
    assert_eq!(app.smtp.count(), 0);
}

async fn skipped_slots_roll_their_items_into_the_next_digest(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let config = app.config();
    app.create_list("daily", "Daily Briefing").await;
    let set: Value = put_schedule(&app, json!({"cron": "0 * * * *", "min_items": 2}))
        .await
        .json()
        .await
        .unwrap();
    let first = utc(set["next_run_at"].as_str().unwrap());
    let hour = TimeDelta::hours(1);
    push_item(&app.base, "a", Utc::now()).await;
    let report = tick(&app.store, &config, first + TimeDelta::minutes(1)).await.unwrap();
    assert_eq!(
        report,
        RunReport {
            skipped: 1,
            ..Default::default()
        }
    );
    push_item(&app.base, "b", Utc::now()).await;
    // Two items now, but no confirmed reader yet.
    let report = tick(&app.store, &config, first + hour + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        report,
        RunReport {
            skipped: 1,
            ..Default::default()
        }
    );
    confirmed_readers(&app.base, &["ann@news.example"]).await;
    let report = tick(&app.store, &config, first + hour * 2 + TimeDelta::minutes(1))
        .await
        .unwrap();
    assert_eq!(
        report,
        RunReport {
            queued: 1,
            ..Default::default()
        }
    );
    let shown = schedule(&app).await;
    let outcomes: Vec<String> = runs(&shown).into_iter().map(|r| r.1).collect();
    assert_eq!(outcomes, ["queued", "skipped_no_recipients", "skipped_no_items"]);
    // Both items, the skipped slots' included, in the one digest.
    let sent = digests(&app).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["items"], 2);
    app.smtp.wait_for_count(1, MAIL_WAIT).await;
    let mail = &app.smtp.messages_to("ann@news.example")[0];
    assert!(mail.text_body().contains("Story a") && mail.text_body().contains("Story b"));
}

async fn slots_in_a_dst_gap_and_a_dst_overlap_fire_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let config = app.config();
    app.create_list("daily", "Daily Briefing").await;
    confirmed_readers(&app.base, &["ann@news.example"]).await;
    let list = app.store.list_by_slug("daily").await.unwrap();
    let kyiv = Schedule::new("30 3 * * *", Some("Europe/Kyiv"), chrono_tz::Tz::UTC, None, None).unwrap();

    // 2027-03-28: Kyiv skips from 03:00 to 04:00; 03:30 fires once, at 04:00 EEST (01:00 UTC).
    let row = bulletin::schedule::set(&app.store, &list, &kyiv, utc("2027-03-27T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(row.next_slot, utc("2027-03-28T01:00:00Z"));
    push_item(&app.base, "spring", utc("2027-03-27T20:00:00Z")).await;
    assert_eq!(
        tick(&app.store, &config, utc("2027-03-28T00:59:00Z")).await.unwrap(),
        RunReport::default()
    );
    let report = tick(&app.store, &config, utc("2027-03-28T01:00:20Z")).await.unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(
        tick(&app.store, &config, utc("2027-03-28T01:40:00Z")).await.unwrap(),
        RunReport::default()
    );
    let shown = schedule(&app).await;
    assert_eq!(shown["next_run_at"], "2027-03-29T00:30:00Z");
    assert_eq!(shown["next_run_local"], "2027-03-29T03:30:00+03:00");

    // 2027-10-31: Kyiv repeats 03:00–04:00; 03:30 fires at its first occurrence (00:30 UTC) only.
    let row = bulletin::schedule::set(&app.store, &list, &kyiv, utc("2027-10-30T12:00:00Z"))
        .await
        .unwrap();
    assert_eq!(row.next_slot, utc("2027-10-31T00:30:00Z"));
    push_item(&app.base, "autumn", utc("2027-10-30T20:00:00Z")).await;
    let report = tick(&app.store, &config, utc("2027-10-31T00:30:30Z")).await.unwrap();
    assert_eq!(report.queued, 1);
    // 01:30 UTC is 03:30 again on the wall clock: not a second slot.
    assert_eq!(
        tick(&app.store, &config, utc("2027-10-31T01:30:30Z")).await.unwrap(),
        RunReport::default()
    );
    let shown = schedule(&app).await;
    assert_eq!(shown["next_run_at"], "2027-11-01T01:30:00Z");
    assert_eq!(
        runs(&shown),
        vec![
            ("2027-10-31T00:30:00Z".to_owned(), "queued".to_owned()),
            ("2027-03-28T01:00:00Z".to_owned(), "queued".to_owned())
        ]
    );
    app.smtp.wait_for_count(2, MAIL_WAIT).await;
    assert_eq!(app.smtp.messages_to("ann@news.example").len(), 2);
}

/// The wall clock, two `serve` processes on one PostgreSQL database, a per-minute schedule: each
/// of two slots yields one digest, and each reader gets each digest once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_send_each_slot_of_a_per_minute_schedule_once() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let first = ChildApp::serve(&db, &smtp, &[]).await;
    let second = ChildApp::serve(&db, &smtp, &[]).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/lists", first.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "daily", "name": "Daily Briefing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let readers = ["ann@news.example", "bob@news.example", "cat@news.example"];
    confirmed_readers(&first.base, &readers).await;
    // Dated ahead, so that they count whenever the schedule starts.
    push_item(&first.base, "one", Utc::now() + TimeDelta::minutes(10)).await;
    let r = client
        .put(format!("{}/api/lists/daily/schedule", second.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"cron": "* * * * *"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let queued_runs = |n: usize| {
        let client = client.clone();
        let base = first.base.clone();
        async move {
            // A slot may pass unsent between seeing one queued and pushing the next item on a
            // loaded machine (skipped, no items); the next one then carries it: two slots' time.
            let deadline = std::time::Instant::now() + Duration::from_secs(200);
            loop {
                let shown: Value = client
                    .get(format!("{base}/api/lists/daily/schedule"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let queued = shown["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["outcome"] == "queued")
                    .count();
                if queued >= n {
                    return shown;
                }
                assert!(std::time::Instant::now() < deadline, "{n} slots not queued: {shown}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    queued_runs(1).await;
    push_item(&first.base, "two", Utc::now() + TimeDelta::minutes(10)).await;
    let shown = queued_runs(2).await;
    let queued: Vec<&Value> = shown["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "queued")
        .collect();
    assert_ne!(queued[0]["digest_id"], queued[1]["digest_id"]);
    smtp.wait_for_count(2 * readers.len(), MAIL_WAIT).await;
    let list: Value = client
        .get(format!("{}/api/lists/daily/digests", second.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "one digest per slot: {list}");
    for reader in readers {
        let subjects: Vec<String> = smtp.messages_to(reader).iter().filter_map(|m| m.subject()).collect();
        assert_eq!(subjects.len(), 2, "{reader}: {subjects:?}");
    }
    drop((first, second));
}
