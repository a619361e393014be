//! A reader's data on request and its erasure: everything stored comes out, then nothing of the
//! address stays but a keyed hash, which keeps imports from adding it back to lists it left and
//! keeps a manual suppression in force.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, TestDb};
use crate::support::fixtures::{import_confirmed, import_report, push_items, signup_and_confirm, wait_until};

on_both_backends!(
    a_readers_data_on_request,
    erasure_leaves_nothing_of_the_address,
    erasure_during_a_digest_send_leaves_nothing_and_stops_its_mail,
    after_erasure_imports_skip_left_lists_and_a_signup_starts_over,
    a_manual_suppression_outlives_erasure,
);

async fn data_of(app: &TestApp, email: &str) -> (StatusCode, Value) {
    let r = app
        .admin(Method::GET, &format!("/api/subscribers/{email}"))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn erase(app: &TestApp, email: &str) -> StatusCode {
    app.admin(Method::DELETE, &format!("/api/subscribers/{email}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_readers_data_on_request(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    // Imported into one list; signed up (not confirmed yet) to the other.
    import_confirmed(&app, "daily", &["data@news.example".to_owned()]).await;
    assert_eq!(app.signup_json("data@news.example", &["weekly"]).await.status(), 202);
    push_items(&app, "daily", &[("a", "Story A", 5)]).await;
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.smtp
        .wait_for(
            |m| m.to().iter().any(|t| t == "data@news.example") && m.subject().is_some_and(|s| s.contains("Daily")),
            MAIL_WAIT,
        )
        .await;
    // The digest's delivery is recorded just after the server accepted it.
    wait_until("the digest is recorded as sent", || async {
        app.sql_strings("SELECT status FROM deliveries").await == ["sent"]
    })
    .await;

    let (status, data) = data_of(&app, "Data@News.Example").await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["subscriber"]["email"], "data@news.example");
    let subscriptions = data["subscriptions"].as_array().unwrap();
    assert_eq!(subscriptions.len(), 2, "{data}");
    let daily = subscriptions.iter().find(|s| s["list_slug"] == "daily").unwrap();
    assert_eq!(daily["status"], "confirmed");
    assert!(
        daily["consent_at"].is_string() && daily["confirmed_at"].is_string(),
        "{daily}"
    );
    assert_eq!(daily["consent_note"], "test fixture");
    let weekly = subscriptions.iter().find(|s| s["list_slug"] == "weekly").unwrap();
    assert_eq!(weekly["status"], "pending");
    assert_eq!(weekly["consent_ip"], "127.0.0.1");
    let pending = data["pending_confirmations"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{data}");
    assert_eq!(pending[0]["lists"], json!(["weekly"]));
    let text = data.to_string();
    assert!(!text.contains("token"), "no token or token hash is shown: {text}");
    let deliveries = data["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| d["kind"] == "digest" && d["status"] == "sent" && d["digest_id"].is_i64()),
        "{data}"
    );
    assert!(deliveries.iter().any(|d| d["kind"] == "confirmation"), "{data}");
    assert_eq!(data["suppressions"], json!([]));

    // The command line shows the same.
    let out = app.cli(&["subscribers", "show", "data@news.example"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["subscriptions"], data["subscriptions"]);

    let (status, body) = data_of(&app, "nobody@news.example").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_subscriber"))
    );
    let (status, body) = data_of(&app, "not-an-address").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_email"))
    );
    let r = app
        .client
        .get(app.url("/api/subscribers/data@news.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let out = app.cli(&["subscribers", "show", "nobody@news.example"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is stored"));
}

/// On SQLite: not a byte of `erase@news` in the database file, free pages included, nor in its
/// WAL; `present`, another reader's address, is found by the same scan.
fn assert_no_bytes_of_erase(app: &TestApp, present: &str) {
    let TestDb::Sqlite { url, .. } = &app.db else {
        return;
    };
    let path = url.trim_start_matches("sqlite://");
    for file in [path.to_owned(), format!("{path}-wal")] {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let found = bytes.windows(b"erase@news".len()).any(|w| w == b"erase@news");
        assert!(!found, "{file} still holds the address");
    }
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.windows(present.len()).any(|w| w == present.as_bytes()),
        "the scan would see an address"
    );
}

async fn erasure_during_a_digest_send_leaves_nothing_and_stops_its_mail(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let mut readers: Vec<String> = (0..40).map(|i| format!("r{i}@news.example")).collect();
    readers.push("erase@news.example".to_owned());
    import_confirmed(&app, "daily", &readers).await;
    push_items(&app, "daily", &[("a", "Story A", 5)]).await;
    // Slow replies keep the send in flight while the address is erased.
    app.smtp.stall(std::time::Duration::from_millis(40));
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_until("the send has started", || async {
        !app.sql_strings("SELECT status FROM deliveries WHERE status = 'sent'")
            .await
            .is_empty()
    })
    .await;
    assert_eq!(erase(&app, "erase@news.example").await, StatusCode::NO_CONTENT);
    let sent_before = app.smtp.messages_to("erase@news.example").len();
    app.smtp.stall(std::time::Duration::ZERO);
    wait_until("the digest is done", || async {
        app.sql_strings("SELECT status FROM digests").await == ["done"]
    })
    .await;

    // At most the one message already on the wire; nothing of the address written back since.
    let to_erased = app.smtp.messages_to("erase@news.example").len();
    assert!(to_erased <= sent_before.max(1), "{to_erased} after {sent_before}");
    assert_eq!(rows_naming(&app).await, Vec::<String>::new());
    assert_eq!(data_of(&app, "erase@news.example").await.0, StatusCode::NOT_FOUND);
    for reader in &readers[..40] {
        assert_eq!(app.smtp.messages_to(reader).len(), 1, "{reader}");
    }
    assert_eq!(
        app.sql_strings("SELECT status FROM deliveries WHERE status <> 'sent'")
            .await,
        Vec::<String>::new()
    );
    assert_no_bytes_of_erase(&app, "r1@news");
}

/// Rows anywhere that still name `needle` (every text column a reader's address can be in).
async fn rows_naming(app: &TestApp) -> Vec<String> {
    app.sql_strings(
        "SELECT 'subscribers' FROM subscribers WHERE email LIKE '%erase@%' OR email_key LIKE '%erase@%'
         UNION ALL SELECT 'deliveries' FROM deliveries WHERE recipient LIKE '%erase@%'
         UNION ALL SELECT 'outbox' FROM outbox WHERE recipient LIKE '%erase@%'
            OR text_body LIKE '%erase@%' OR params LIKE '%erase@%'
         UNION ALL SELECT 'suppressions' FROM suppressions WHERE email LIKE '%erase@%' OR email_key LIKE '%erase@%'",
    )
    .await
}

async fn erasure_leaves_nothing_of_the_address(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    signup_and_confirm(&app, "erase@news.example", &["daily", "weekly"]).await;
    import_confirmed(&app, "daily", &["keep@news.example".to_owned()]).await;
    // They leave the weekly list, and get a daily digest.
    let weekly = app
        .sql_strings(
            "SELECT CAST(s.id AS TEXT) FROM subscriptions s JOIN lists l ON l.id = s.list_id
             JOIN subscribers r ON r.id = s.subscriber_id WHERE l.slug = 'weekly' AND r.email = 'erase@news.example'",
        )
        .await;
    let token = app.unsubscribe_token(&weekly[0]).await;
    let r = app
        .client
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    push_items(&app, "daily", &[("a", "Story A", 5)]).await;
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_until("the digest is done", || async {
        app.sql_strings("SELECT status FROM deliveries").await == ["sent", "sent"]
            && app.sql_strings("SELECT status FROM digests").await == ["done"]
    })
    .await;
    assert!(!rows_naming(&app).await.is_empty(), "the address is stored before");

    assert_eq!(erase(&app, "Erase@news.example").await, StatusCode::NO_CONTENT);
    assert_eq!(rows_naming(&app).await, Vec::<String>::new());
    assert_eq!(data_of(&app, "erase@news.example").await.0, StatusCode::NOT_FOUND);
    let (status, body) = {
        let r = app
            .admin(Method::DELETE, "/api/subscribers/erase@news.example")
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_subscriber"))
    );

    // What stays: one keyed hash with the list they had left; nothing of anyone else is touched.
    let kept = app
        .sql_strings("SELECT email_hash || ' ' || left_lists FROM erasures")
        .await;
    let weekly_id = app
        .sql_strings("SELECT CAST(id AS TEXT) FROM lists WHERE slug = 'weekly'")
        .await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].starts_with("erased:") && kept[0].ends_with(&format!(" [{}]", weekly_id[0])),
        "{kept:?}"
    );
    assert_eq!(
        app.subscribers("daily").await,
        [("keep@news.example".to_owned(), "confirmed".to_owned())]
    );
    assert_eq!(data_of(&app, "keep@news.example").await.0, StatusCode::OK);
    assert_eq!(app.sql_strings("SELECT status FROM deliveries").await, ["sent"]);
    // The digest's figures stay (a finished digest keeps its counts on its row).
    let r = app.admin(Method::GET, "/api/lists/daily/digests").send().await.unwrap();
    let digests: Value = r.json().await.unwrap();
    assert_eq!(digests[0]["sent"], 2, "{digests}");
    // The list counts follow.
    let lists: Value = app
        .admin(Method::GET, "/api/lists")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let daily = lists
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["slug"] == "daily")
        .unwrap()
        .clone();
    assert_eq!(daily["counts"]["confirmed"], 1, "{daily}");

    assert_no_bytes_of_erase(&app, "keep@news");
}

async fn after_erasure_imports_skip_left_lists_and_a_signup_starts_over(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    import_confirmed(&app, "daily", &["back@news.example".to_owned()]).await;
    import_confirmed(&app, "weekly", &["back@news.example".to_owned()]).await;
    let weekly = app
        .sql_strings(
            "SELECT CAST(s.id AS TEXT) FROM subscriptions s JOIN lists l ON l.id = s.list_id WHERE l.slug = 'weekly'",
        )
        .await;
    let token = app.unsubscribe_token(&weekly[0]).await;
    let r = app
        .client
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Erased from the command line.
    let out = app.cli(&["subscribers", "erase", "back@news.example"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(app.subscribers("daily").await.is_empty());

    // An import adds them back to the list they had not left, never to the one they had.
    let report = import_report(&app, "weekly", &["BACK@news.example".to_owned()]).await;
    assert_eq!(
        (report["imported"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
    let report = import_report(&app, "daily", &["back@news.example".to_owned()]).await;
    assert_eq!(report["imported"].as_u64(), Some(1), "{report}");
    assert!(app.subscribers("weekly").await.is_empty());

    // Signing up again themselves is a fresh double opt-in.
    assert_eq!(erase(&app, "back@news.example").await, StatusCode::NO_CONTENT);
    let out = app.cli(&["subscribers", "erase", "back@news.example"]);
    assert!(!out.status.success(), "nothing left to erase");
    signup_and_confirm(&app, "back@news.example", &["weekly"]).await;
    assert_eq!(
        app.subscribers("weekly").await,
        [("back@news.example".to_owned(), "confirmed".to_owned())]
    );
}

async fn a_manual_suppression_outlives_erasure(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    import_confirmed(&app, "daily", &["quiet@news.example".to_owned()]).await;
    let r = app
        .admin(Method::POST, "/api/suppressions")
        .json(&json!({"email": "quiet@news.example", "note": "asked by phone: quiet@news.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(erase(&app, "quiet@news.example").await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.sql_strings("SELECT email_key FROM suppressions WHERE email_key LIKE '%quiet%' OR detail LIKE '%quiet%'")
            .await,
        Vec::<String>::new()
    );
    let r = app
        .admin(Method::GET, "/api/suppressions/quiet@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the suppression is still found by its address");
    let shown: Value = r.json().await.unwrap();
    assert_eq!(shown["reason"], "manual");

    let report = import_report(&app, "daily", &["quiet@news.example".to_owned()]).await;
    assert_eq!(report["imported"].as_u64(), Some(0), "{report}");

    // A signup is answered as any other, and its confirmation email never leaves.
    assert_eq!(app.signup_json("quiet@news.example", &["daily"]).await.status(), 202);
    wait_until("the confirmation is cancelled as suppressed", || async {
        app.sql_strings("SELECT status FROM outbox WHERE recipient = 'quiet@news.example'")
            .await
            == ["cancelled"]
    })
    .await;
    assert!(
        app.smtp
            .messages()
            .iter()
            .all(|m| !m.to().iter().any(|t| t.contains("quiet"))),
        "nothing went to the suppressed address"
    );
    // Lifting it lifts it for the erased address too.
    let r = app
        .admin(Method::DELETE, "/api/suppressions/quiet@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.sql_strings("SELECT CAST(COUNT(*) AS TEXT) FROM suppressions").await,
        ["0"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_the_readers_eml_files() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let Some(app) = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("BULLETIN_SMTP_URL", ""),
            ("BULLETIN_OUTBOX_DIR", outbox.to_str().unwrap()),
        ],
    )
    .await
    else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    for to in ["gone@news.example", "stays@news.example"] {
        assert_eq!(app.signup_json(to, &["daily"]).await.status(), 202);
    }
    let files_to = |who: &'static str| {
        let outbox = outbox.clone();
        move || {
            std::fs::read_dir(&outbox)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
                        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|raw| raw.contains(who)))
                        .count()
                })
                .unwrap_or(0)
        }
    };
    let (gone, stays) = (files_to("gone@news.example"), files_to("stays@news.example"));
    wait_until("both confirmations are written", || {
        let n = (gone(), stays());
        async move { n == (1, 1) }
    })
    .await;
    assert_eq!(erase(&app, "gone@news.example").await, StatusCode::NO_CONTENT);
    assert_eq!((gone(), stays()), (0, 1));
}
