//! Importing subscribers from CSV, over the API and the CLI.

use reqwest::Method;
use serde_json::Value;

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, MAIL_WAIT, TestApp};

on_both_backends!(
    confirmed_import_records_consent_and_is_idempotent,
    invalid_rows_import_nothing_unless_skipped,
    unsubscribed_and_suppressed_addresses_are_never_resubscribed,
    unconfirmed_import_starts_double_opt_in,
    import_api_refuses_bad_requests,
    cli_imports_a_file,
);

async fn import(app: &TestApp, query: &str, csv: &str) -> (u16, Value) {
    let r = app
        .admin(Method::POST, &format!("/api/lists/daily/import?{query}"))
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn confirmed_import_records_consent_and_is_idempotent(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let csv = "email,name\nann@news.example,Ann\n  Bob@NEWS.example , Bob \ncarl@news.example,\n";
    // Control characters in the record are dropped (PostgreSQL refuses NUL in text).
    let (status, report) = import(&app, "confirmed=true&consent=print%00%20subscribers%07%202025", csv).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["rows"].as_u64(), report["imported"].as_u64()),
        (Some(3), Some(3)),
        "{report}"
    );
    let mut subscribers = app.subscribers("daily").await;
    subscribers.sort();
    assert_eq!(
        subscribers,
        [
            ("Bob@news.example", "confirmed"),
            ("ann@news.example", "confirmed"),
            ("carl@news.example", "confirmed")
        ]
        .map(|(e, s)| (e.to_owned(), s.to_owned()))
    );
    let notes = app.sql_strings("SELECT consent_note FROM subscriptions").await;
    assert!(notes.iter().all(|n| n == "print subscribers 2025"), "{notes:?}");
    let names = app
        .sql_strings("SELECT name FROM subscribers WHERE name IS NOT NULL ORDER BY name")
        .await;
    assert_eq!(names, ["Ann", "Bob"]);
    // Again: nothing new.
    let (_, report) = import(&app, "confirmed=true&consent=again", csv).await;
    assert_eq!(
        (report["imported"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(3)),
        "{report}"
    );
    assert!(app.smtp.messages().is_empty(), "a confirmed import sends nothing");
}

async fn invalid_rows_import_nothing_unless_skipped(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let csv = "email\ngood@news.example\nnot-an-address\ndot..dot@news.example\nfine@news.example\n";
    let (status, body) = import(&app, "confirmed=true&consent=form", csv).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rows");
    let lines: Vec<u64> = body["report"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4], "{body}");
    assert!(app.subscribers("daily").await.is_empty(), "nothing imported");
    let (status, report) = import(&app, "confirmed=true&consent=form&skip_invalid=true", csv).await;
    assert_eq!(status, 200);
    assert_eq!(
        (report["imported"].as_u64(), report["invalid"].as_u64()),
        (Some(2), Some(2)),
        "{report}"
    );
    assert_eq!(app.subscribers("daily").await.len(), 2);
}

async fn unsubscribed_and_suppressed_addresses_are_never_resubscribed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    import(&app, "confirmed=true&consent=form", "email\nleft@news.example\n").await;
    app.sql_exec("UPDATE subscriptions SET status = 'unsubscribed'").await;
    let r = app
        .admin(Method::POST, "/api/suppressions")
        .json(&serde_json::json!({"email": "blocked@news.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for query in ["confirmed=true&consent=form", ""] {
        let (status, report) = import(&app, query, "email\nleft@news.example\nblocked@news.example\n").await;
        assert_eq!(status, 200);
        assert_eq!(
            (report["imported"].as_u64(), report["skipped"].as_u64()),
            (Some(0), Some(2)),
            "{query}: {report}"
        );
    }
    assert_eq!(
        app.subscribers("daily").await,
        [("left@news.example".to_owned(), "unsubscribed".to_owned())]
    );
    assert!(app.smtp.messages().is_empty());
}

async fn unconfirmed_import_starts_double_opt_in(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let (status, report) = import(&app, "", "email\nnew1@news.example\nnew2@news.example\n").await;
    assert_eq!(status, 200);
    assert_eq!(report["imported"], 2);
    assert!(app.subscribers("daily").await.iter().all(|(_, s)| s == "pending"));
    let mails = app.smtp.wait_for_count(2, MAIL_WAIT).await;
    assert!(mails.iter().all(|m| m.subject().unwrap().contains("confirm")));
}

async fn import_api_refuses_bad_requests(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let (status, body) = import(&app, "", "address,name\nx@news.example,X\n").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_csv")),
        "{body}"
    );
    let (status, body) = import(&app, "confirmed=true", "email\nx@news.example\n").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("consent")),
        "{body}"
    );
    let (status, body) = import(&app, "confirmed=maybe", "email\nx@news.example\n").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("confirmed")),
        "{body}"
    );
    let r = app
        .admin(Method::POST, "/api/lists/nope/import")
        .body("email\n")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;
    assert!(app.subscribers("daily").await.is_empty());
}

async fn cli_imports_a_file(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "email,name\n".to_owned()
            + &(0..500)
                .map(|n| format!("r{n}@news.example,R{n}\n"))
                .collect::<String>(),
    )
    .unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "email\nok@news.example\nbroken\n").unwrap();
    let out = app.cli(&[
        "subscribers",
        "import",
        "daily",
        good.to_str().unwrap(),
        "--confirmed",
        "--consent",
        "event",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Imported 500 of 500"));
    let out = app.cli(&[
        "subscribers",
        "import",
        "daily",
        bad.to_str().unwrap(),
        "--confirmed",
        "--consent",
        "event",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = app.cli(&["subscribers", "import", "daily", good.to_str().unwrap(), "--confirmed"]);
    assert_eq!(out.status.code(), Some(1), "consent required");
    assert_eq!(app.subscribers("daily").await.len(), 500);
}
