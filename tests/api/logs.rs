//! The log in JSON (`BULLETIN_LOG_FORMAT=json`): one object per line, addresses masked, tokens
//! never written, requests named by their route template.

use serde_json::{Value, json};

use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestDb, find_link};
use crate::support::fixtures::wait_until;
use crate::support::smtp::SmtpServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_mask_addresses_and_never_hold_tokens() {
    let db = TestDb::create(Backend::Sqlite).await.expect("SQLite");
    let smtp = SmtpServer::start().await;
    smtp.reject_rcpt("bounce.reader@news.example", 550, None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulletin.log");
    let file = std::fs::File::create(&path).unwrap();
    let vars = [
        ("BULLETIN_LOG_FORMAT", "json"),
        // Request lines are debug events: on, as an operator chasing a fault turns them on.
        (
            "RUST_LOG",
            "debug,hyper=info,h2=info,rustls=info,reqwest=info,sqlx=info",
        ),
    ];
    let app = ChildApp::serve_logging_to(&db, &smtp, &vars, file).await;
    let (base, client) = (app.base.as_str(), reqwest::Client::new());
    app.create_list("daily", "Daily Briefing").await;

    // A reader signs up, confirms and leaves; another's address is refused by the SMTP server,
    // whose answer (quoted in the log) names it.
    for email in ["log.reader@news.example", "bounce.reader@news.example"] {
        let r = client
            .post(format!("{base}/subscriptions"))
            .json(&json!({"email": email, "lists": ["daily"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let mail = smtp
        .wait_for(|m| m.to() == ["log.reader@news.example"], MAIL_WAIT)
        .await;
    let link = find_link(&mail.text_body(), &format!("{base}/subscriptions/confirm?token=")).unwrap();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 200);
    let confirm_token = app.confirm(&mail).await;
    let welcome = smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("Welcome")), MAIL_WAIT)
        .await;
    let unsubscribe = welcome.header("List-Unsubscribe").unwrap();
    let unsubscribe = unsubscribe.trim_start_matches('<').trim_end_matches('>').to_owned();
    let unsubscribe_token = unsubscribe.split("token=").nth(1).unwrap().to_owned();
    let r = client
        .post(&unsubscribe)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the refusal is logged", || async {
        std::fs::read_to_string(&path).is_ok_and(|log| log.contains("recipient rejected"))
    })
    .await;
    drop(app);

    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{log}");
    for secret in [
        "log.reader@",
        "bounce.reader@",
        confirm_token.as_str(),
        unsubscribe_token.as_str(),
        ADMIN_TOKEN,
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
    let refused = lines
        .iter()
        .find(|l| l["message"] == "recipient rejected: suppressing the address")
        .expect("the refusal");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("b•••@news.example")),
        "{refused}"
    );
    // Requests by their route template, never their path and query.
    assert!(lines.iter().any(|l| l["span"]["route"] == "/unsubscribe"), "{log}");
    assert!(!log.contains("/unsubscribe?"), "{log}");
}
