//! Signups: the form, the JSON API, validation, consent, the outbox.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};

on_both_backends!(
    signup_page_lists_every_list_from_the_database,
    json_signup_sends_a_confirmation_email_with_a_hashed_token,
    form_signup_takes_repeated_lists_once_each,
    answer_is_identical_for_new_pending_and_confirmed,
    lists_may_be_omitted_only_when_one_list_exists,
    unknown_or_empty_lists_are_named_in_a_422,
    invalid_addresses_are_never_stored,
    malformed_requests_get_the_error_shape,
    consent_record_is_kept,
    addresses_are_normalised_and_unique,
    without_smtp_emails_become_eml_files,
    unconfirmed_signups_are_purged_after_30_days,
    health_reports_the_database,
);

async fn signup_page_lists_every_list_from_the_database(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for needle in [
        "Daily Briefing",
        "About Daily Briefing",
        "Weekly Explainer",
        r#"type="checkbox" name="lists" value="daily""#,
        r#"type="email""#,
        "required",
        "indicates required",
        r#"<label for="email">"#,
    ] {
        assert!(html.contains(needle), "signup page lacks {needle:?}:\n{html}");
    }
    // A list created by another process (here: straight in the database) shows at once.
    let slug = bulletin::domain::ListSlug::parse("breaking").unwrap();
    app.store
        .create_list(&bulletin::store::NewList {
            slug,
            name: "Breaking News".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    assert!(app.get("/").await.text().await.unwrap().contains("Breaking News"));
}

async fn json_signup_sends_a_confirmation_email_with_a_hashed_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let response = app.signup_json("reader@news.example", &["daily"]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "confirmation_sent", "message": "Thank you! We've sent you a confirmation email."})
    );

    let mail = app
        .smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("reader@news.example")), MAIL_WAIT)
        .await;
    let subject = mail.subject().unwrap();
    assert!(subject.contains("Daily Briefing"), "{subject}");
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.contains("@bulletin.test"))
    );
    assert_eq!(
        mail.header("From").as_deref().map(|f| f.contains("news@bulletin.test")),
        Some(true)
    );
    let text = mail.text_body();
    let html = mail.html_body();
    let prefix = app.url("/subscriptions/confirm?token=");
    let link = find_link(&text, &prefix).expect("confirmation link in the text part");
    assert!(html.contains(&link), "the HTML part carries the same link");
    assert!(text.contains("48 hours"), "the link's lifetime is stated:\n{text}");
    assert!(
        text.contains("did not sign up"),
        "what to do if the reader did not sign up:\n{text}"
    );
    let token = link.strip_prefix(&prefix).unwrap();
    assert_eq!(token.len(), 43, "256-bit token, base64url");

    // Stored only as a hash; the outbox drops the bodies once sent.
    let tokens = stored_token_hashes(&app).await;
    assert_eq!(tokens.len(), 1);
    assert_ne!(tokens[0], token);
    assert_eq!(tokens[0].len(), 64);
    wait_until_outbox_cleared(&app).await;
}

async fn form_signup_takes_repeated_lists_once_each(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let response = app
        .post_form(
            "/subscriptions",
            &[
                ("email", "form@news.example"),
                ("lists", "daily"),
                ("lists", "weekly"),
                ("lists", "daily"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Thank you! We&#39;ve sent you a confirmation email.")
            || html.contains("Thank you! We've sent you a confirmation email."),
        "{html}"
    );
    assert_eq!(
        app.subscribers("daily").await,
        [("form@news.example".to_owned(), "pending".to_owned())]
    );
    assert_eq!(
        app.subscribers("weekly").await,
        [("form@news.example".to_owned(), "pending".to_owned())]
    );
    let mail = app.smtp.wait_for_count(1, MAIL_WAIT).await;
    let subject = mail[0].subject().unwrap();
    assert!(
        subject.contains("Daily Briefing") && subject.contains("Weekly Explainer"),
        "{subject}"
    );
}

async fn answer_is_identical_for_new_pending_and_confirmed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let mut json_bodies = Vec::new();
    let mut form_bodies = Vec::new();
    for round in 0..3 {
        if round == 2 {
            mark_all_confirmed(&app).await;
        }
        let r = app.signup_json("same@news.example", &["daily"]).await;
        json_bodies.push((r.status(), r.bytes().await.unwrap()));
        let r = app
            .post_form("/subscriptions", &[("email", "same@news.example"), ("lists", "daily")])
            .await;
        form_bodies.push((r.status(), r.bytes().await.unwrap()));
    }
    assert!(json_bodies.iter().all(|b| b == &json_bodies[0]), "{json_bodies:?}");
    assert!(form_bodies.iter().all(|b| b == &form_bodies[0]), "{form_bodies:?}");
    assert_eq!(json_bodies[0].0, StatusCode::ACCEPTED);
    // Still one subscriber, not a duplicate per request.
    assert_eq!(app.subscribers("daily").await.len(), 1);
}

async fn lists_may_be_omitted_only_when_one_list_exists(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let r = app
        .post_json("/subscriptions", &json!({"email": "solo@news.example"}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(app.subscribers("daily").await.len(), 1);

    app.create_list("weekly", "Weekly Explainer").await;
    let r = app
        .post_json("/subscriptions", &json!({"email": "two@news.example"}))
        .await;
    assert_error(r, 422, "no_list", Some("lists")).await;
}

async fn unknown_or_empty_lists_are_named_in_a_422(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let r = app.signup_json("x@news.example", &["daily", "sports", "culture"]).await;
    let body = assert_error(r, 422, "unknown_list", Some("lists")).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("sports") && message.contains("culture") && !message.contains("daily"),
        "{message}"
    );
    let r = app.signup_json("x@news.example", &[]).await;
    assert_error(r, 422, "no_list", Some("lists")).await;
    // Nothing was stored for either request.
    assert!(app.subscribers("daily").await.is_empty());
    assert!(app.smtp.messages().is_empty());
}

pub const INVALID_ADDRESSES: &[&str] = &[
    "",
    "   ",
    "no-at-sign.example.org",
    "two@@example.org",
    "a@b@example.org",
    "spa ce@example.org",
    "reader@example.org\r\nBcc: victim@example.org",
    "reader@example.org\nBcc: victim@example.org",
    "Jane Doe <jane@example.org>",
    "\"Jane\" <jane@example.org>",
    "a@b",
    "dot..dot@x.org",
    ".a@x.org",
    "a.@x.org",
];

async fn invalid_addresses_are_never_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let too_long = format!(
        "{}@{}.example.org",
        "a".repeat(64),
        "b".repeat(63) + "." + &"c".repeat(63) + "." + &"d".repeat(60)
    );
    assert!(too_long.len() > 254);
    let mut all: Vec<String> = INVALID_ADDRESSES.iter().map(|s| s.to_string()).collect();
    all.push(too_long);
    for address in &all {
        let r = app.signup_json(address, &["daily"]).await;
        let body = assert_error(r, 422, "invalid_email", Some("email")).await;
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());

        // The form comes back with the message beside the field and the input kept.
        let r = app
            .post_form("/subscriptions", &[("email", address), ("lists", "daily")])
            .await;
        assert_eq!(r.status(), 422, "{address:?}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains(r#"id="email-error""#),
            "no message beside the field for {address:?}"
        );
        assert!(html.contains(r#"aria-invalid="true""#));
        assert!(
            html.contains(r#"value="daily" id="list-daily" checked"#) || html.contains("checked"),
            "ticked lists kept"
        );
        let shown = address.trim();
        if !shown.is_empty() && !shown.contains(['<', '"', '\r', '\n']) {
            assert!(
                html.contains(&format!(r#"value="{shown}""#)),
                "input kept for {address:?}"
            );
        }
    }
    assert!(
        app.subscribers("daily").await.is_empty(),
        "an invalid address was stored"
    );
    assert!(app.smtp.messages().is_empty());
}

async fn malformed_requests_get_the_error_shape(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let post = |ct: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/subscriptions"))
            .header("content-type", ct)
            .header("accept", "application/json")
            .body(body)
            .send()
    };
    assert_error(
        post("application/json", b"{\"email\": ".to_vec()).await.unwrap(),
        400,
        "invalid_json",
        None,
    )
    .await;
    assert_error(
        post(
            "application/json",
            br#"{"email": "a@news.example", "lists": "daily"}"#.to_vec(),
        )
        .await
        .unwrap(),
        422,
        "invalid_field",
        Some("lists"),
    )
    .await;
    assert_error(
        post("application/json", br#"{"email": 42}"#.to_vec()).await.unwrap(),
        422,
        "invalid_field",
        Some("email"),
    )
    .await;
    assert_error(
        post("application/json", br#"{"lists": ["daily"]}"#.to_vec())
            .await
            .unwrap(),
        422,
        "invalid_email",
        Some("email"),
    )
    .await;
    assert_error(
        post("text/plain", b"email=a@news.example".to_vec()).await.unwrap(),
        415,
        "unsupported_media_type",
        None,
    )
    .await;
    let big = format!(
        r#"{{"email": "a@news.example", "lists": ["daily"], "pad": "{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large", None).await;
    // Unknown routes and methods too.
    let r = app
        .client
        .get(app.url("/nope"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found", None).await;
    let r = app.client.delete(app.url("/subscriptions")).send().await.unwrap();
    assert_error(r, 405, "method_not_allowed", None).await;
    assert!(app.subscribers("daily").await.is_empty());
}

async fn consent_record_is_kept(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("user-agent", "ReaderBrowser/1.0")
        .header("referer", "https://news.example/story/42")
        .form(&[("email", "consent@news.example"), ("lists", "daily")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let row = consent_of(&app, "consent@news.example").await;
    assert_eq!(row.0.as_deref(), Some("127.0.0.1"));
    assert_eq!(row.1.as_deref(), Some("ReaderBrowser/1.0"));
    assert_eq!(row.2.as_deref(), Some("https://news.example/story/42"));
}

async fn addresses_are_normalised_and_unique(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    assert_eq!(app.signup_json("  Reader@MÜNCHEN.de ", &["daily"]).await.status(), 202);
    assert_eq!(
        app.signup_json("reader@xn--mnchen-3ya.de", &["daily"]).await.status(),
        202
    );
    assert_eq!(app.signup_json("READER@München.DE", &["daily"]).await.status(), 202);
    let subscribers = app.subscribers("daily").await;
    assert_eq!(subscribers.len(), 1, "{subscribers:?}");
    assert_eq!(subscribers[0].0, "Reader@xn--mnchen-3ya.de");
}

async fn without_smtp_emails_become_eml_files(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let Some(app) = TestApp::spawn_with(
        backend,
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
    assert_eq!(app.signup_json("eml@news.example", &["daily"]).await.status(), 202);
    let file = wait_for_file(&outbox).await;
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains("To: eml@news.example"), "{raw}");
    assert!(raw.contains("multipart/alternative"));
    let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(
        find_link(&text, &app.url("/subscriptions/confirm?token=")).is_some(),
        "{text}"
    );
    assert!(app.smtp.messages().is_empty(), "nothing went to SMTP");
}

async fn unconfirmed_signups_are_purged_after_30_days(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("old@news.example", &["daily"]).await;
    app.signup_json("new@news.example", &["daily"]).await;
    let old = chrono::Utc::now() - chrono::TimeDelta::days(31);
    app.sql_exec_with(
        "UPDATE subscriptions SET consent_at = $1 WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2)",
        old,
        "old@news.example",
    )
    .await;
    let purged = app.store.purge_unconfirmed(chrono::TimeDelta::days(30)).await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        app.subscribers("daily").await,
        [("new@news.example".to_owned(), "pending".to_owned())]
    );
}

async fn health_reports_the_database(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    app.store.close().await;
    assert_eq!(app.get("/healthz").await.status(), 503);
}

// ----- helpers -------------------------------------------------------------------------------

/// Asserts the error shape and returns the body.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str, field: Option<&str>) -> Value {
    assert_eq!(r.status().as_u16(), status, "status");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = r.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    match field {
        Some(f) => assert_eq!(body["error"]["field"], f, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
    body
}

async fn wait_for_file(dir: &std::path::Path) -> std::path::PathBuf {
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    loop {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let found = entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "eml"));
            if let Some(path) = found {
                return path;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no .eml file in {}",
            dir.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub async fn stored_token_hashes(app: &TestApp) -> Vec<String> {
    app.sql_strings("SELECT token_hash FROM confirmations").await
}

pub async fn mark_all_confirmed(app: &TestApp) {
    app.sql_exec("UPDATE subscriptions SET status = 'confirmed'").await;
}

async fn consent_of(app: &TestApp, email: &str) -> (Option<String>, Option<String>, Option<String>) {
    let rows = app.sql_strings(
        "SELECT COALESCE(s.consent_ip, '') || '|' || COALESCE(s.consent_user_agent, '') || '|' || COALESCE(s.consent_page, '') || '|' || sub.email
         FROM subscriptions s JOIN subscribers sub ON sub.id = s.subscriber_id",
    )
    .await;
    let row = rows.iter().find(|r| r.ends_with(email)).expect("subscription row");
    let parts: Vec<&str> = row.split('|').collect();
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    (opt(parts[0]), opt(parts[1]), opt(parts[2]))
}

async fn wait_until_outbox_cleared(app: &TestApp) {
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    loop {
        let left = app.sql_strings(
            "SELECT CAST(id AS TEXT) FROM outbox WHERE status <> 'sent' OR text_body IS NOT NULL OR html_body IS NOT NULL",
        )
        .await;
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox rows not recorded as sent: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
