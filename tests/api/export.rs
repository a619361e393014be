//! Exporting a list's subscribers as CSV, over the API and the CLI.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, TestApp};

on_both_backends!(
    export_filters_by_status_with_confirmed_by_default,
    export_quotes_and_defuses_cells,
    export_pages_through_a_large_list_past_the_request_deadline,
    export_refuses_bad_requests,
    cli_exports_to_stdout_and_to_a_file,
);

const HEADER: &str = "email,name,status,created_at,confirmed_at,unsubscribed_at,consent_at,consent_ip";

/// One exported row, by column.
#[derive(Debug, Clone)]
struct Row {
    email: String,
    name: String,
    status: String,
    created_at: String,
    confirmed_at: String,
    unsubscribed_at: String,
    consent_at: String,
    consent_ip: String,
}

/// Parses an export, checking its header row.
fn rows(csv_text: &str) -> Vec<Row> {
    assert_eq!(csv_text.lines().next(), Some(HEADER), "header row of {csv_text:?}");
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    reader
        .records()
        .map(|r| {
            let r = r.expect("a well-formed CSV row");
            assert_eq!(r.len(), 8, "{r:?}");
            Row {
                email: r[0].to_owned(),
                name: r[1].to_owned(),
                status: r[2].to_owned(),
                created_at: r[3].to_owned(),
                confirmed_at: r[4].to_owned(),
                unsubscribed_at: r[5].to_owned(),
                consent_at: r[6].to_owned(),
                consent_ip: r[7].to_owned(),
            }
        })
        .collect()
}

fn emails(rows: &[Row]) -> Vec<String> {
    let mut emails: Vec<String> = rows.iter().map(|r| r.email.clone()).collect();
    emails.sort();
    emails
}

/// RFC 3339, UTC, milliseconds: `2026-12-03T06:15:03.123Z`.
fn assert_time(t: &str) {
    assert!(
        t.len() == 24 && t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
        "not an RFC 3339 UTC time with milliseconds: {t:?}"
    );
}

async fn import(app: &TestApp, list: &str, query: &str, csv_text: &str) {
    let r = app
        .admin(Method::POST, &format!("/api/lists/{list}/import?{query}"))
        .header("content-type", "text/csv")
        .body(csv_text.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

/// GET the export; asserts a 200 with the export's headers, returns the body.
async fn export(app: &TestApp, list: &str, query: &str, filename: &str) -> String {
    let r = app
        .admin(Method::GET, &format!("/api/lists/{list}/subscribers.csv{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        header("content-disposition"),
        format!("attachment; filename=\"{filename}\"")
    );
    assert_eq!(header("cache-control"), "no-store");
    r.text().await.unwrap()
}

async fn counts(app: &TestApp, list: &str) -> Value {
    let lists: Value = app
        .admin(Method::GET, "/api/lists")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lists.as_array().unwrap().iter().find(|l| l["slug"] == list).unwrap()["counts"].clone()
}

/// `daily`: two confirmed (imported), one pending (signed up), one unsubscribed; `weekly`: one
/// confirmed that no export of `daily` may show.
async fn three_states(app: &TestApp) {
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    import(
        app,
        "daily",
        "confirmed=true&consent=print%20form",
        "email,name\nann@news.example,Ann\nbob@news.example,\nleft@news.example,Left\n",
    )
    .await;
    import(
        app,
        "weekly",
        "confirmed=true&consent=print%20form",
        "email\nother@news.example\n",
    )
    .await;
    assert_eq!(app.signup_json("pat@news.example", &["daily"]).await.status(), 202);
    let left_at = chrono::DateTime::parse_from_rfc3339("2026-12-03T06:15:03.123Z")
        .unwrap()
        .to_utc();
    app.sql_exec_with(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $1
         WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2)",
        left_at,
        "left@news.example",
    )
    .await;
}

async fn export_filters_by_status_with_confirmed_by_default(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    three_states(&app).await;

    let default = export(&app, "daily", "", "daily-confirmed.csv").await;
    let confirmed = rows(&default);
    assert_eq!(emails(&confirmed), ["ann@news.example", "bob@news.example"]);
    for r in &confirmed {
        assert_eq!(r.status, "confirmed");
        assert_time(&r.created_at);
        assert_time(&r.confirmed_at);
        assert_time(&r.consent_at);
        assert_eq!((r.unsubscribed_at.as_str(), r.consent_ip.as_str()), ("", ""), "{r:?}");
    }
    let names: Vec<&str> = confirmed.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"Ann") && names.contains(&""), "{names:?}");
    assert_eq!(
        export(&app, "daily", "?status=confirmed", "daily-confirmed.csv").await,
        default,
        "confirmed is the default"
    );

    let pending = rows(&export(&app, "daily", "?status=pending", "daily-pending.csv").await);
    assert_eq!(emails(&pending), ["pat@news.example"]);
    let pat = &pending[0];
    assert_eq!(pat.status, "pending");
    assert_eq!(pat.consent_ip, "127.0.0.1", "the signup's consent record");
    assert_time(&pat.created_at);
    assert_time(&pat.consent_at);
    assert_eq!((pat.confirmed_at.as_str(), pat.unsubscribed_at.as_str()), ("", ""));

    let unsubscribed = rows(&export(&app, "daily", "?status=unsubscribed", "daily-unsubscribed.csv").await);
    assert_eq!(emails(&unsubscribed), ["left@news.example"]);
    assert_eq!(unsubscribed[0].status, "unsubscribed");
    assert_eq!(unsubscribed[0].name, "Left");
    assert_eq!(unsubscribed[0].unsubscribed_at, "2026-12-03T06:15:03.123Z");

    let all = rows(&export(&app, "daily", "?status=all", "daily-all.csv").await);
    assert_eq!(
        emails(&all),
        [
            "ann@news.example",
            "bob@news.example",
            "left@news.example",
            "pat@news.example"
        ]
    );
    // In subscription order: the import's three, then the signup.
    assert_eq!(all.last().unwrap().email, "pat@news.example");
    let statuses: HashSet<&str> = all.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, HashSet::from(["confirmed", "pending", "unsubscribed"]));

    // A list with nobody in that state: the header alone.
    assert_eq!(
        export(&app, "weekly", "?status=pending", "weekly-pending.csv").await,
        format!("{HEADER}\n")
    );
}

async fn export_quotes_and_defuses_cells(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    // Names as an import (or a signup form) may bring them; one address is itself a formula.
    let csv_text = concat!(
        "email,name\n",
        "quote@news.example,\"Smith, \"\"Bob\"\"\"\n",
        "formula@news.example,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\"\n",
        "plus@news.example,+1 555 0100\n",
        "minus@news.example,-2+3\n",
        "at@news.example,@SUM(A1)\n",
        "inner@news.example,Ann = Bob\n",
        "=1+1@news.example,Eq\n",
    );
    import(&app, "daily", "confirmed=true&consent=form", csv_text).await;
    let body = export(&app, "daily", "", "daily-confirmed.csv").await;
    for line in [
        "quote@news.example,\"Smith, \"\"Bob\"\"\",confirmed,",
        "formula@news.example,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\",confirmed,",
        "plus@news.example,'+1 555 0100,confirmed,",
        "minus@news.example,'-2+3,confirmed,",
        "at@news.example,'@SUM(A1),confirmed,",
        "inner@news.example,Ann = Bob,confirmed,",
        "'=1+1@news.example,Eq,confirmed,",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in:\n{body}"
        );
    }
    let parsed = rows(&body);
    assert_eq!(parsed.len(), 7);
    let name_of = |email: &str| parsed.iter().find(|r| r.email == email).unwrap().name.clone();
    assert_eq!(name_of("quote@news.example"), "Smith, \"Bob\"");
    assert_eq!(
        name_of("formula@news.example"),
        "'=HYPERLINK(\"http://evil.example\",\"x\")"
    );
    assert!(
        parsed
            .iter()
            .all(|r| !r.name.starts_with(['=', '+', '-', '@']) && !r.email.starts_with('=')),
        "{parsed:?}"
    );
}

/// Three pages and more, through every status at once, read by a client slower than the request
/// deadline (1 s): the body streams on until the end.
async fn export_pages_through_a_large_list_past_the_request_deadline(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_REQUEST_TIMEOUT", "1s")]).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    const N: usize = 30_000;
    // Long names: several MB, more than the sockets buffer while the client waits.
    let filler = "x".repeat(180);
    let csv_text = "email,name\n".to_owned()
        + &(0..N)
            .map(|n| format!("r{n}@news.example,Reader {n} {filler}\n"))
            .collect::<String>();
    import(&app, "daily", "confirmed=true&consent=form", &csv_text).await;
    app.sql_exec("UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = consent_at WHERE id % 3 = 0")
        .await;
    app.sql_exec("UPDATE subscriptions SET status = 'pending', confirmed_at = NULL WHERE id % 7 = 0 AND id % 3 <> 0")
        .await;
    let counts = counts(&app, "daily").await;
    let count = |status: &str| counts[status].as_u64().unwrap() as usize;
    assert!(count("pending") > 0 && count("unsubscribed") > 0, "{counts}");

    let mut response = app
        .admin(Method::GET, "/api/lists/daily/subscribers.csv?status=all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    body.extend(response.chunk().await.unwrap().expect("a first chunk"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    while let Some(chunk) = response.chunk().await.expect("the body streams to its end") {
        body.extend(chunk);
    }
    let body = String::from_utf8(body).unwrap();
    assert!(body.len() > 6_000_000, "{} bytes", body.len());
    let all = rows(&body);
    assert_eq!(all.len(), N);
    let unique: HashSet<&str> = all.iter().map(|r| r.email.as_str()).collect();
    assert_eq!(unique.len(), N, "every subscription exactly once");
    for status in ["pending", "confirmed", "unsubscribed"] {
        assert_eq!(
            all.iter().filter(|r| r.status == status).count(),
            count(status),
            "{status}"
        );
    }
    // Subscription order (the order of their ids: not the file's on PostgreSQL, which writes two
    // of an import's chunks at once).
    let in_order = app
        .sql_strings("SELECT r.email FROM subscriptions s JOIN subscribers r ON r.id = s.subscriber_id ORDER BY s.id")
        .await;
    let exported: Vec<&str> = all.iter().map(|r| r.email.as_str()).collect();
    assert!(exported == in_order, "the export is not in subscription order");

    for status in ["confirmed", "unsubscribed", "pending"] {
        let one = rows(
            &export(
                &app,
                "daily",
                &format!("?status={status}"),
                &format!("daily-{status}.csv"),
            )
            .await,
        );
        assert_eq!(one.len(), count(status), "{status}");
        assert!(one.iter().all(|r| r.status == status), "{status}");
    }
}

async fn export_refuses_bad_requests(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    for status in ["bounced", "Confirmed", "all,pending"] {
        let r = app
            .admin(
                Method::GET,
                &format!("/api/lists/daily/subscribers.csv?status={status}"),
            )
            .send()
            .await
            .unwrap();
        let body = assert_error(r, 422, "invalid_status", Some("status")).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("pending, confirmed, unsubscribed or all"),
            "{body}"
        );
    }
    let r = app
        .admin(Method::GET, "/api/lists/nope/subscribers.csv")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;
    let r = app
        .client
        .get(app.url("/api/lists/daily/subscribers.csv"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = app
        .client
        .get(app.url("/api/lists/daily/subscribers.csv"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
}

async fn cli_exports_to_stdout_and_to_a_file(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    three_states(&app).await;
    let stdout = |out: &std::process::Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // stdout: the very bytes the API answers.
    let out = app.cli(&["subscribers", "export", "daily"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), export(&app, "daily", "", "daily-confirmed.csv").await);
    assert_eq!(emails(&rows(&stdout(&out))), ["ann@news.example", "bob@news.example"]);
    let out = app.cli(&["subscribers", "export", "daily", "--status", "pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emails(&rows(&stdout(&out))), ["pat@news.example"]);

    // --output: the file, replacing what was there, and no temporary file left beside it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("daily.csv");
    std::fs::write(&file, "old contents").unwrap();
    let out = app.cli(&[
        "subscribers",
        "export",
        "daily",
        "--status",
        "all",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Exported 4 subscribers of daily (all)"),
        "{}",
        stdout(&out)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, export(&app, "daily", "?status=all", "daily-all.csv").await);
    assert_eq!(rows(&written).len(), 4);
    let entries = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(entries(), ["daily.csv"]);

    // Errors: a clear message, exit code 1, and no file.
    let missing = dir.path().join("nope.csv");
    let out = app.cli(&["subscribers", "export", "nope", "-o", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("there is no list nope"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(!missing.exists());
    let out = app.cli(&["subscribers", "export", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    // A target that cannot be replaced (a directory): the export fails and leaves nothing.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    let out = app.cli(&["subscribers", "export", "daily", "-o", occupied.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("was not written"), "{}", stderr(&out));
    let mut left = entries();
    left.sort();
    assert_eq!(left, ["daily.csv", "occupied"]);
    let out = app.cli(&[
        "subscribers",
        "export",
        "daily",
        "-o",
        dir.path().join("no/such/dir.csv").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("was not written"), "{}", stderr(&out));
    // A status the command does not know: refused by the argument parser, naming the choices.
    let out = app.cli(&["subscribers", "export", "daily", "--status", "bounced"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unsubscribed"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}
