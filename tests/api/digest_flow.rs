//! Digests end to end: queue, deliver once per reader, cancel, preview, test-send, CLI.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, MAIL_WAIT, TestApp};

on_both_backends!(
    a_digest_reaches_every_confirmed_reader_once,
    digest_conflicts_and_idempotency,
    concurrent_digest_requests_never_share_items,
    cancel_stops_a_digest_and_unsubscribing_stops_a_reader,
    preview_and_test_send_consume_nothing,
    cli_sends_a_digest_with_progress,
);

/// Signs `emails` up and marks them confirmed a minute ago (without the confirmation round trip,
/// which optin.rs covers).
async fn confirmed_readers(app: &TestApp, emails: &[&str]) {
    for email in emails {
        assert_eq!(app.signup_json(email, &["daily"]).await.status(), 202);
    }
    app.sql_exec_with(
        "UPDATE subscriptions SET status = 'confirmed', confirmed_at = $1 WHERE id > 0 OR $2 = ''",
        chrono::Utc::now() - chrono::TimeDelta::minutes(1),
        "",
    )
    .await;
}

async fn push_items(app: &TestApp, items: &[(&str, &str, i64)]) {
    crate::support::fixtures::push_items(app, "daily", items).await;
}

async fn create_digest(app: &TestApp, body: Option<Value>, key: Option<&str>) -> (u16, Value) {
    let mut request = app.admin(Method::POST, "/api/lists/daily/digests");
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn digest(app: &TestApp, id: &Value) -> Value {
    app.admin(Method::GET, &format!("/api/digests/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_digest(app: &TestApp, id: &Value, statuses: &[&str]) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = digest(app, id).await;
        if statuses.iter().any(|s| d["status"] == *s) {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "digest stuck: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn digests_to(app: &TestApp, email: &str) -> Vec<crate::support::smtp::Received> {
    app.smtp
        .messages_to(email)
        .into_iter()
        .filter(|m| m.subject().is_some_and(|s| s.starts_with("Daily Briefing — ")))
        .collect()
}

async fn a_digest_reaches_every_confirmed_reader_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers = ["r1@news.example", "r2@news.example", "r3@news.example"];
    confirmed_readers(&app, &readers).await;
    app.signup_json("pending@news.example", &["daily"]).await;
    app.sql_exec_with("UPDATE subscriptions SET status = 'unsubscribed' WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2) OR $1 < $1", chrono::Utc::now(), "r3@news.example").await;
    push_items(
        &app,
        &[
            ("old", "Older story", 90),
            ("new", "Newest story", 5),
            ("stale", "Yesterday's story", 30 * 60),
        ],
    )
    .await;

    let (status, created) = create_digest(&app, None, None).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(
        (
            created["status"].as_str(),
            created["items"].as_i64(),
            created["recipients"].as_i64()
        ),
        (Some("queued"), Some(2), Some(2))
    );
    let done = wait_digest(&app, &created["id"], &["done"]).await;
    assert_eq!(
        (done["sent"].as_i64(), done["failed"].as_i64(), done["pending"].as_i64()),
        (Some(2), Some(0), Some(0)),
        "{done}"
    );
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    let mut message_ids = Vec::new();
    for reader in &readers[..2] {
        let mails = digests_to(&app, reader);
        assert_eq!(mails.len(), 1, "{reader} gets the digest once");
        let mail = &mails[0];
        let text = mail.text_body();
        let html = mail.html_body();
        let newest = text.find("Newest story").expect("newest item");
        let older = text.find("Older story").expect("older item");
        assert!(newest < older, "newest first:\n{text}");
        assert!(!text.contains("Yesterday's story"), "only the last 24 h");
        assert!(html.contains(r#"href="https://news.example/new""#), "{html}");
        assert!(!text.contains('<'), "plain text part:\n{text}");
        assert!(text.contains(reader), "says why they get it");
        assert!(mail.header("List-Id").unwrap().contains("<daily.bulletin.test>"));
        assert_eq!(
            mail.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(mail.header("Date").is_some());
        message_ids.push(mail.header("Message-ID").unwrap());
        let url = mail
            .header("List-Unsubscribe")
            .unwrap()
            .trim_matches(|c| c == '<' || c == '>')
            .to_owned();
        assert!(
            text.contains(&url) && html.contains(&url),
            "visible personal unsubscribe link"
        );
    }
    assert_ne!(message_ids[0], message_ids[1]);
    assert!(digests_to(&app, "r3@news.example").is_empty() && digests_to(&app, "pending@news.example").is_empty());

    // r1's own link unsubscribes r1 only.
    let url = digests_to(&app, "r1@news.example")[0]
        .header("List-Unsubscribe")
        .unwrap();
    let url = url.trim_matches(|c| c == '<' || c == '>');
    assert_eq!(
        app.client
            .post(url)
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let statuses: Vec<(String, String)> = app.subscribers("daily").await;
    assert!(statuses.contains(&("r1@news.example".into(), "unsubscribed".into())));
    assert!(statuses.contains(&("r2@news.example".into(), "confirmed".into())));

    let listed: Vec<Value> = app
        .admin(Method::GET, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
}

async fn digest_conflicts_and_idempotency(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let (status, body) = create_digest(&app, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_items")));
    push_items(&app, &[("a", "Story A", 10)]).await;
    let (status, body) = create_digest(&app, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_recipients")));
    confirmed_readers(&app, &["one@news.example"]).await;
    for (bad, field) in [
        (json!({"max_items": 0}), "max_items"),
        (json!({"since": "yesterday"}), "since"),
    ] {
        let (status, body) = create_digest(&app, Some(bad), None).await;
        assert_eq!((status, body["error"]["field"].as_str()), (422, Some(field)), "{body}");
    }
    let (status, first) = create_digest(&app, Some(json!({"max_items": 5})), Some("k-1")).await;
    assert_eq!(status, 202);
    let (status, again) = create_digest(&app, Some(json!({"max_items": 5})), Some("k-1")).await;
    assert_eq!((status, &again["id"]), (202, &first["id"]), "same key, same digest");
    let (status, body) = create_digest(&app, Some(json!({"max_items": 6})), Some("k-1")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("idempotency_mismatch"))
    );
    wait_digest(&app, &first["id"], &["done"]).await;
    assert_eq!(digests_to(&app, "one@news.example").len(), 1, "queued once");
    // The items are used up; a new item makes a new digest possible, with only that item.
    let (status, body) = create_digest(&app, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_items")));
    push_items(&app, &[("b", "Story B", 1), ("old", "Old story", 30 * 60)]).await;
    let (status, second) = create_digest(&app, None, None).await;
    assert_eq!((status, second["items"].as_i64()), (202, Some(1)));
    // `since` reaches further back.
    wait_digest(&app, &second["id"], &["done"]).await;
    let since = (chrono::Utc::now() - chrono::TimeDelta::hours(48)).to_rfc3339();
    let (status, third) = create_digest(&app, Some(json!({"since": since, "subject": "Catch-up"})), None).await;
    assert_eq!((status, third["items"].as_i64()), (202, Some(1)));
    // An item that arrives after a digest although published before it still goes out, once.
    push_items(&app, &[("late", "Late story", 120)]).await;
    let (status, fourth) = create_digest(&app, None, None).await;
    assert_eq!((status, fourth["items"].as_i64()), (202, Some(1)), "{fourth}");
    let (status, body) = create_digest(&app, None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("no_items")));
    // So does one dated before `since` but first seen after it (a feed polled after a scheduled
    // slot); a backlog dated more than a day before `since` does not.
    let since = chrono::Utc::now().to_rfc3339();
    push_items(
        &app,
        &[("polled-late", "Polled late", 2), ("backlog", "Backlog", 26 * 60)],
    )
    .await;
    let (status, fifth) = create_digest(&app, Some(json!({"since": since})), None).await;
    assert_eq!((status, fifth["items"].as_i64()), (202, Some(1)), "{fifth}");
    let r = app.admin(Method::GET, "/api/digests/999999").send().await.unwrap();
    assert_error(r, 404, "unknown_digest", None).await;
}

/// Operators double-click and retry: concurrent requests for one list must neither carry an item
/// twice nor answer a retry with "no items" instead of the digest its twin made.
async fn concurrent_digest_requests_never_share_items(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    confirmed_readers(&app, &["one@news.example"]).await;
    push_items(&app, &[("a", "Story A", 10), ("b", "Story B", 20)]).await;
    let answers = futures_util::future::join_all((0..8).map(|_| create_digest(&app, None, None))).await;
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 202).map(|(_, b)| b).collect();
    assert_eq!(created.len(), 1, "one digest carries the items: {answers:?}");
    assert_eq!(created[0]["items"], 2);
    for (status, body) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(
            (*status, body["error"]["code"].as_str()),
            (409, Some("no_items")),
            "{body}"
        );
    }

    push_items(&app, &[("c", "Story C", 5)]).await;
    let body = json!({"subject": "Retry"});
    let answers =
        futures_util::future::join_all((0..8).map(|_| create_digest(&app, Some(body.clone()), Some("retry-1")))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "every retry answers the one digest: {body}");
            body["id"].to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let counts = app
        .sql_strings("SELECT CAST(COUNT(*) AS TEXT) || '/' || CAST(COUNT(DISTINCT item_id) AS TEXT) FROM digest_items")
        .await;
    assert_eq!(counts, ["3/3"], "each item in one digest");
}

async fn cancel_stops_a_digest_and_unsubscribing_stops_a_reader(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "1")]).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..8).map(|n| format!("c{n}@news.example")).collect();
    confirmed_readers(&app, &readers.iter().map(String::as_str).collect::<Vec<_>>()).await;
    push_items(&app, &[("a", "Story A", 10)]).await;
    app.smtp.stall(Duration::from_millis(40));
    let (_, created) = create_digest(&app, None, None).await;
    let id = created["id"].clone();
    app.smtp
        .wait_for(
            |m| m.subject().is_some_and(|s| s.starts_with("Daily Briefing")),
            MAIL_WAIT,
        )
        .await;
    // The last reader leaves mid-send.
    let last = app.sql_strings("SELECT CAST(MAX(id) AS TEXT) FROM subscriptions").await;
    let token = app.unsubscribe_token(&last[0]).await;
    assert_eq!(
        app.client
            .post(app.url(&format!("/unsubscribe?token={token}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = app
        .admin(Method::POST, &format!("/api/digests/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let sent_at_cancel = app
        .smtp
        .messages()
        .iter()
        .filter(|m| m.subject().unwrap().starts_with("Daily"))
        .count();
    app.smtp.stall(Duration::ZERO);
    // Everything still queued was cancelled; at most the message in flight went out.
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    while !app
        .sql_strings("SELECT status FROM deliveries WHERE status = 'queued' OR lease_until IS NOT NULL")
        .await
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "deliveries still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent_total = app
        .smtp
        .messages()
        .iter()
        .filter(|m| m.subject().unwrap().starts_with("Daily"))
        .count();
    assert!(sent_total <= sent_at_cancel + 1, "{sent_total} after {sent_at_cancel}");
    assert!(sent_total < readers.len());
    assert!(
        digests_to(&app, &readers[7]).is_empty(),
        "the reader who left got nothing more"
    );
    assert_eq!(digest(&app, &id).await["status"], "cancelled");
    let r = app
        .admin(Method::POST, &format!("/api/digests/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "idempotent");
}

async fn preview_and_test_send_consume_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let r = app
        .admin(Method::GET, "/api/lists/daily/digests/preview")
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "no_items", None).await;
    push_items(&app, &[("a", "Story A", 10), ("b", "Story B", 20)]).await;
    let r = app
        .admin(Method::GET, "/api/lists/daily/digests/preview")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    // Email HTML is styled inline: the preview's own policy lets it render, sandboxed.
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("style-src 'unsafe-inline'") && csp.contains("sandbox"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("Story A") && html.contains("Story B") && html.contains("/unsubscribe?token=preview"));
    let r = app
        .admin(Method::GET, "/api/lists/daily/digests/preview?format=text")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(r.text().await.unwrap().contains("Story A"));

    let r = app
        .admin(Method::POST, "/api/lists/daily/digests/test")
        .json(&json!({"to": "nope"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 422, "invalid_email", Some("to")).await;
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests/test")
        .json(&json!({"to": "editor@news.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let test = app
        .smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("editor@")), MAIL_WAIT)
        .await;
    assert!(test.subject().unwrap().starts_with("[TEST] Daily Briefing"));
    assert!(test.text_body().contains("Story A"));
    // Nothing consumed: the real digest still has both items.
    confirmed_readers(&app, &["reader@news.example"]).await;
    let (status, created) = create_digest(&app, None, None).await;
    assert_eq!((status, created["items"].as_i64()), (202, Some(2)));
}

async fn cli_sends_a_digest_with_progress(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..5).map(|n| format!("cli{n}@news.example")).collect();
    confirmed_readers(&app, &readers.iter().map(String::as_str).collect::<Vec<_>>()).await;
    push_items(&app, &[("a", "Story A", 10)]).await;
    let out = app.cli(&["digest", "send", "daily", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("Subject: Daily Briefing — ") && stdout.contains("Story A") && stdout.contains("Recipients: 5"),
        "{stdout}"
    );
    let listed: Vec<Value> = app
        .admin(Method::GET, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty(), "a dry run queues nothing");

    let out = app.cli(&["digest", "preview", "daily", "--text"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Story A"));
    let out = app.cli(&["digest", "test", "daily", "desk@news.example"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(app.smtp.messages_to("desk@news.example").len(), 1);

    let out = app.cli(&["digest", "send", "daily"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done") && stdout.contains("sent 5"), "{stdout}");
    for reader in &readers {
        assert_eq!(
            digests_to(&app, reader).len(),
            1,
            "{reader} once (the CLI and the running app share the queue)"
        );
    }
    let out = app.cli(&["digest", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let out = app.cli(&["digest", "send", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = app.cli(&["digest", "send", "daily"]);
    assert_eq!(out.status.code(), Some(1), "nothing left to send");
}
