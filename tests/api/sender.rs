//! The sender against SMTP faults: outages, session errors, 5xx, 4xx, shutdown.

use std::time::Duration;

use crate::on_both_backends;
use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestApp, TestDb};
use crate::support::smtp::SmtpServer;

on_both_backends!(
    smtp_down_at_signup_then_up_delivers,
    session_errors_fail_nothing_and_count_no_attempt,
    permanent_rejection_fails_only_that_message,
    temporary_rejection_is_retried,
    dropped_connection_after_data_is_resent,
    shutdown_mid_send_loses_nothing,
    sigterm_mid_send_loses_nothing,
    sigterm_mid_digest_exits_within_10_s_and_a_restart_finishes_it,
    a_misbehaving_smtp_server_delays_mail_but_never_signups,
    expired_leases_are_taken_over_and_live_ones_are_not,
    confirmations_go_first,
);

async fn outbox(app: &TestApp, email: &str) -> (String, i64, String) {
    let rows = app
        .sql_strings(
            "SELECT status || '|' || CAST(attempts AS TEXT) || '|' || COALESCE(last_error, '') || '|' || recipient FROM outbox",
        )
        .await;
    let row = rows
        .iter()
        .find(|r| r.ends_with(&format!("|{email}")))
        .expect("outbox row");
    let parts: Vec<&str> = row.splitn(4, '|').collect();
    (parts[0].to_owned(), parts[1].parse().unwrap(), parts[2].to_owned())
}

/// Polls the database until `email`'s outbox row reaches `status` (the sender records
/// asynchronously after the SMTP server has the message).
async fn wait_status(app: &TestApp, email: &str, status: &str) -> (String, i64, String) {
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    loop {
        let row = outbox(app, email).await;
        if row.0 == status {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{email}: outbox row stuck at {row:?}, wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn smtp_down_at_signup_then_up_delivers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.set_down(true);
    // Signups do not wait for SMTP.
    for n in 0..3 {
        assert_eq!(
            app.signup_json(&format!("down{n}@news.example"), &["daily"])
                .await
                .status(),
            202
        );
    }
    assert_eq!(outbox(&app, "down0@news.example").await.0, "queued");
    app.smtp.set_down(false);
    app.smtp.wait_for_count(3, Duration::from_secs(30)).await;
    for n in 0..3 {
        let (status, attempts, _) = wait_status(&app, &format!("down{n}@news.example"), "sent").await;
        assert_eq!((status.as_str(), attempts), ("sent", 1));
    }
}

async fn session_errors_fail_nothing_and_count_no_attempt(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.greeting(421);
    app.signup_json("busy@news.example", &["daily"]).await;
    // Wait until the sender has met the 421 at least twice (it backs off and retries by itself).
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    while app.smtp.connections() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sender never retried the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(outbox(&app, "busy@news.example").await.0, "queued");
    app.smtp.reset_faults();
    app.smtp.wait_for_count(1, Duration::from_secs(30)).await;
    let (_, attempts, _) = wait_status(&app, "busy@news.example", "sent").await;
    assert_eq!(attempts, 1, "session failures count no attempt");
}

async fn permanent_rejection_fails_only_that_message(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.reject_rcpt("nobody@news.example", 550, None);
    app.signup_json("nobody@news.example", &["daily"]).await;
    app.signup_json("somebody@news.example", &["daily"]).await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("somebody@")), MAIL_WAIT)
        .await;
    let (_, attempts, error) = wait_status(&app, "nobody@news.example", "failed").await;
    assert_eq!(attempts, 1);
    assert!(error.contains("550"), "the reply is recorded: {error}");
    assert!(app.smtp.messages_to("nobody@news.example").is_empty());
}

async fn temporary_rejection_is_retried(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.reject_rcpt("later@news.example", 451, Some(1));
    app.signup_json("later@news.example", &["daily"]).await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("later@")), Duration::from_secs(30))
        .await;
    let (_, attempts, _) = wait_status(&app, "later@news.example", "sent").await;
    assert_eq!(attempts, 2, "one deferred attempt, then success");
    assert_eq!(app.smtp.messages_to("later@news.example").len(), 1);
}

async fn dropped_connection_after_data_is_resent(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.drop_connection_after_data(Some(1));
    app.signup_json("dropped@news.example", &["daily"]).await;
    let mail = app
        .smtp
        .wait_for(
            |m| m.to().iter().any(|t| t.contains("dropped@")),
            Duration::from_secs(30),
        )
        .await;
    let (_, attempts, _) = wait_status(&app, "dropped@news.example", "sent").await;
    assert_eq!(attempts, 1);
    let id = app.sql_strings("SELECT CAST(id AS TEXT) FROM outbox").await;
    let message_id = mail.header("Message-ID").unwrap();
    assert!(
        message_id.starts_with(&format!("<confirmation.{}.", id[0])),
        "derived from the outbox id: {message_id}"
    );
}

async fn shutdown_mid_send_loses_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.stall(Duration::from_millis(30));
    let total = 12;
    for n in 0..total {
        app.signup_json(&format!("s{n}@news.example"), &["daily"]).await;
    }
    app.smtp.wait_for_count(1, MAIL_WAIT).await;
    app.stop().await;
    // After a graceful stop: what the server accepted is recorded as sent, the rest is queued
    // and free for the next process (no lease left behind).
    let received = app.smtp.messages().len();
    let sent = app
        .sql_strings("SELECT CAST(id AS TEXT) FROM outbox WHERE status = 'sent'")
        .await
        .len();
    let leased = app
        .sql_strings("SELECT CAST(id AS TEXT) FROM outbox WHERE lease_until IS NOT NULL")
        .await;
    assert_eq!(sent, received, "every accepted message is recorded");
    assert!(leased.is_empty(), "leases released: {leased:?}");
    assert!(received < total, "the stop came mid-send");

    app.smtp.reset_faults();
    app.restart().await;
    app.smtp.wait_for_count(total, Duration::from_secs(30)).await;
    for n in 0..total {
        assert_eq!(
            app.smtp.messages_to(&format!("s{n}@news.example")).len(),
            1,
            "s{n} exactly once"
        );
    }
}

async fn sigterm_mid_send_loses_nothing(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    smtp.stall(Duration::from_millis(30));
    let app = ChildApp::serve(&db, &smtp, &[("BULLETIN_SMTP_POOL", "1")]).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/lists", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"slug": "daily", "name": "Daily Briefing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let total = 10;
    for n in 0..total {
        let r = client
            .post(format!("{}/subscriptions", app.base))
            .json(&serde_json::json!({"email": format!("t{n}@news.example"), "lists": ["daily"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    smtp.wait_for_count(1, MAIL_WAIT).await;
    let status = app.terminate().await;
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");

    let store = bulletin::store::Store::connect(db.url()).await.unwrap();
    let rows = match &store {
        bulletin::store::Store::Sqlite(db) => {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, leased_by FROM outbox WHERE lease_until IS NOT NULL OR status = 'sent'",
            )
            .fetch_all(&db.read)
            .await
        }
        bulletin::store::Store::Postgres(db) => {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT status, leased_by FROM outbox WHERE lease_until IS NOT NULL OR status = 'sent'",
            )
            .fetch_all(&db.pool)
            .await
        }
    }
    .unwrap();
    let received = smtp.messages().len();
    assert!(received < total, "SIGTERM came mid-send");
    assert!(rows.iter().all(|(s, _)| s == "sent"), "no lease left behind: {rows:?}");
    assert_eq!(
        rows.len(),
        received,
        "every message the server accepted is recorded as sent"
    );
    store.close().await;
}

/// An SMTP server that answers 1 s per command, that greets with `421` and closes, or that goes
/// away in the middle of DATA: the queue waits and resumes, signups keep being taken at once, and
/// every confirmation arrives once.
async fn a_misbehaving_smtp_server_delays_mail_but_never_signups(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let smtp = &app.smtp;
    let mut readers = Vec::new();
    for phase in ["middata", "greeting", "slow"] {
        let (connections, received) = (smtp.connections(), smtp.count());
        match phase {
            "middata" => smtp.drop_connection_mid_data(Some(2)),
            "greeting" => {
                // The server restarts into its 421: sessions the sender keeps open from the phase
                // before (a retry may have opened one) are cut, so every message meets the 421.
                smtp.greeting(421);
                smtp.set_down(true);
                smtp.set_down(false);
            }
            _ => smtp.stall(Duration::from_secs(1)),
        }
        let mut these = Vec::new();
        for n in 0..4 {
            let email = format!("{phase}{n}@news.example");
            let asked = std::time::Instant::now();
            assert_eq!(app.signup_json(&email, &["daily"]).await.status(), 202, "{phase}");
            let took = asked.elapsed();
            assert!(took < Duration::from_millis(900), "{phase}: a signup took {took:?}");
            these.push(email);
        }
        // The fault lasts until the sender has met it.
        crate::support::fixtures::wait_until(phase, || async {
            match phase {
                "middata" => smtp.mid_data_drops_done(),
                "greeting" => smtp.connections() >= connections + 2,
                _ => smtp.count() > received,
            }
        })
        .await;
        if phase == "greeting" {
            let through: usize = these.iter().map(|r| smtp.messages_to(r).len()).sum();
            assert_eq!(through, 0, "nothing passes a server that greets with 421");
        }
        smtp.reset_faults();
        readers.extend(these);
    }
    smtp.wait_for_count(readers.len(), MAIL_WAIT).await;
    let counts = smtp.recipient_counts();
    for reader in &readers {
        assert_eq!(counts.get(reader), Some(&1), "{reader}: {counts:?}");
    }
}

/// SIGTERM while a digest goes out: the messages in flight complete and are recorded, the process
/// exits within 10 s with nothing leased, and the next process sends the rest, each once.
async fn sigterm_mid_digest_exits_within_10_s_and_a_restart_finishes_it(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = ChildApp::serve(&db, &smtp, &[]).await;
    // Slow replies (five per message): eight sessions send about 25 messages a second.
    let readers = crate::support::fixtures::digest_in_flight(&app, &smtp, 200, Duration::from_millis(60), 10).await;

    let asked = std::time::Instant::now();
    let status = app.terminate().await;
    let took = asked.elapsed();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    let received = smtp.count();
    assert!(received < readers.len(), "SIGTERM came mid-digest");
    let store = bulletin::store::Store::connect(db.url()).await.unwrap();
    let rows: Vec<(String, Option<String>)> = match &store {
        bulletin::store::Store::Sqlite(db) => {
            sqlx::query_as("SELECT status, leased_by FROM deliveries WHERE lease_until IS NOT NULL OR status = 'sent'")
                .fetch_all(&db.read)
                .await
        }
        bulletin::store::Store::Postgres(db) => {
            sqlx::query_as("SELECT status, leased_by FROM deliveries WHERE lease_until IS NOT NULL OR status = 'sent'")
                .fetch_all(&db.pool)
                .await
        }
    }
    .unwrap();
    store.close().await;
    assert!(rows.iter().all(|(s, _)| s == "sent"), "no lease left behind: {rows:?}");
    assert_eq!(
        rows.len(),
        received,
        "every message the server accepted is recorded as sent"
    );

    smtp.stall(Duration::ZERO);
    let next = ChildApp::serve(&db, &smtp, &[]).await;
    smtp.wait_for_count(readers.len(), MAIL_WAIT).await;
    let counts = smtp.recipient_counts();
    assert_eq!(counts.len(), readers.len());
    assert!(counts.values().all(|n| *n == 1), "each reader once");
    drop(next);
}

async fn expired_leases_are_taken_over_and_live_ones_are_not(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let now = chrono::Utc::now();
    for (who, lease) in [
        ("orphan@news.example", now - chrono::TimeDelta::seconds(1)),
        ("held@news.example", now + chrono::TimeDelta::hours(1)),
    ] {
        let sql =
            "INSERT INTO outbox (kind, priority, recipient, subject, text_body, html_body, headers, next_attempt_at,
                                       created_at, lease_until, leased_by)
                   VALUES ('confirmation', 0, $2, 'Test', 'text', '<p>html</p>', '[]', $1, $1, $3, 'a-dead-process')";
        match &app.store {
            bulletin::store::Store::Sqlite(db) => sqlx::query(sql)
                .bind(now)
                .bind(who)
                .bind(lease)
                .execute(&db.write)
                .await
                .map(|_| ()),
            bulletin::store::Store::Postgres(db) => sqlx::query(sql)
                .bind(now)
                .bind(who)
                .bind(lease)
                .execute(&db.pool)
                .await
                .map(|_| ()),
        }
        .unwrap();
    }
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("fresh@news.example", &["daily"]).await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("orphan@")), MAIL_WAIT)
        .await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("fresh@")), MAIL_WAIT)
        .await;
    wait_status(&app, "fresh@news.example", "sent").await;
    assert!(
        app.smtp.messages_to("held@news.example").is_empty(),
        "a live lease is respected"
    );
    assert_eq!(outbox(&app, "held@news.example").await.0, "queued");
}

async fn confirmations_go_first(backend: Backend) {
    let Some(mut app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "1")]).await else {
        return;
    };
    // Queue while no sender runs: a welcome, then a confirmation.
    app.stop().await;
    let message = |kind: &'static str, priority: i32, to: &str| bulletin::store::NewOutboxMessage {
        kind,
        priority,
        recipient: to.to_owned(),
        subject: format!("{kind} for {to}"),
        text_body: Some("text".into()),
        html_body: Some("<p>html</p>".into()),
        params: None,
        headers: Vec::new(),
        subscription_id: None,
    };
    app.store
        .enqueue(&message("welcome", 10, "w@news.example"))
        .await
        .unwrap();
    app.store
        .enqueue(&message("confirmation", 0, "c@news.example"))
        .await
        .unwrap();
    app.restart().await;
    let all = app.smtp.wait_for_count(2, MAIL_WAIT).await;
    let order: Vec<String> = all.iter().map(|m| m.subject().unwrap_or_default()).collect();
    assert_eq!(order, ["confirmation for c@news.example", "welcome for w@news.example"]);
}

on_both_backends!(return_path_sets_the_envelope_sender);

async fn return_path_sets_the_envelope_sender(backend: Backend) {
    for (return_path, expected) in [
        (None, "news@bulletin.test"),
        (Some("bounces@bulletin.test"), "bounces@bulletin.test"),
    ] {
        let vars: Vec<(&str, &str)> = return_path.map(|r| ("BULLETIN_RETURN_PATH", r)).into_iter().collect();
        let Some(app) = TestApp::spawn_with(backend, &vars).await else {
            return;
        };
        app.create_list("daily", "Daily Briefing").await;
        app.signup_json("reader@news.example", &["daily"]).await;
        let mail = app.smtp.wait_for_count(1, MAIL_WAIT).await.remove(0);
        assert_eq!(mail.mail_from, expected);
        assert!(
            mail.header("From").unwrap().contains("news@bulletin.test"),
            "From stays the configured sender"
        );
    }
}
