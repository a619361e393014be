//! Suppressions: hard bounces and manual entries get nothing more.

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};

on_both_backends!(
    hard_bounce_suppresses_until_a_new_confirmed_opt_in,
    manual_suppression_blocks_everything_until_removed,
    a_rejected_recipient_does_not_cost_the_session,
    suppression_api_contract,
);

async fn suppression_of(app: &TestApp, email: &str) -> (u16, Value) {
    let r = app
        .admin(Method::GET, &format!("/api/suppressions/{email}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn wait_suppressed(app: &TestApp, email: &str) -> Value {
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    loop {
        let (status, body) = suppression_of(app, email).await;
        if status == 200 {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{email} never suppressed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn hard_bounce_suppresses_until_a_new_confirmed_opt_in(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.reject_rcpt("gone@news.example", 550, Some(1));
    app.signup_json("gone@news.example", &["daily"]).await;
    let suppression = wait_suppressed(&app, "gone@news.example").await;
    assert_eq!(suppression["reason"], "bounce");
    assert!(suppression["detail"].as_str().unwrap().contains("550"), "{suppression}");

    // The reader signs up again (the mailbox works now): the confirmation still goes out.
    let past = chrono::Utc::now() - chrono::TimeDelta::minutes(6);
    app.sql_exec_with(
        "UPDATE subscribers SET last_confirmation_at = $1 WHERE email = $2",
        past,
        "gone@news.example",
    )
    .await;
    app.signup_json("gone@news.example", &["daily"]).await;
    let mail = app
        .smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("gone@")), MAIL_WAIT)
        .await;
    let link = find_link(&mail.text_body(), &app.url("/subscriptions/confirm?token=")).unwrap();
    let token = link.rsplit("token=").next().unwrap();
    assert_eq!(
        app.post_form("/subscriptions/confirm", &[("token", token)])
            .await
            .status(),
        200
    );
    // Confirmed: the bounce is lifted and the welcome arrives.
    assert_eq!(suppression_of(&app, "gone@news.example").await.0, 404);
    app.smtp
        .wait_for(
            |m| m.to().iter().any(|t| t.contains("gone@")) && m.subject().unwrap().contains("Welcome"),
            MAIL_WAIT,
        )
        .await;
}

async fn manual_suppression_blocks_everything_until_removed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("quiet@news.example", &["daily"]).await;
    let mail = app
        .smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("quiet@")), MAIL_WAIT)
        .await;
    let link = find_link(&mail.text_body(), &app.url("/subscriptions/confirm?token=")).unwrap();
    let r = app
        .admin(Method::POST, "/api/suppressions")
        .json(&json!({"email": "Quiet@NEWS.example", "note": "asked by phone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["reason"].as_str(), body["detail"].as_str()),
        (Some("manual"), Some("asked by phone"))
    );

    // Confirming works, but the welcome is not sent; a confirmed opt-in does not lift it.
    let token = link.rsplit("token=").next().unwrap();
    assert_eq!(
        app.post_form("/subscriptions/confirm", &[("token", token)])
            .await
            .status(),
        200
    );
    assert_eq!(suppression_of(&app, "quiet@news.example").await.0, 200);
    app.signup_json("other@news.example", &["daily"]).await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("other@")), MAIL_WAIT)
        .await;
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    while app
        .sql_strings("SELECT status FROM outbox WHERE kind = 'welcome'")
        .await
        != ["cancelled"]
    {
        assert!(std::time::Instant::now() < deadline, "the welcome was not dropped");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.smtp.messages_to("quiet@news.example").len(),
        1,
        "only the confirmation sent before"
    );

    let r = app
        .admin(Method::DELETE, "/api/suppressions/quiet@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(suppression_of(&app, "quiet@news.example").await.0, 404);
}

async fn a_rejected_recipient_does_not_cost_the_session(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "1")]).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.smtp.reject_rcpt("nobody@news.example", 550, None);
    app.signup_json("nobody@news.example", &["daily"]).await;
    wait_suppressed(&app, "nobody@news.example").await;
    app.signup_json("somebody@news.example", &["daily"]).await;
    app.smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("somebody@")), MAIL_WAIT)
        .await;
    assert_eq!(app.smtp.connections(), 1, "the transaction was reset, the session kept");
}

async fn suppression_api_contract(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .admin(Method::POST, "/api/suppressions")
        .json(&json!({"email": "not an address"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 422, "invalid_email", Some("email")).await;
    let r = app
        .admin(Method::GET, "/api/suppressions/nobody@news.example")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_suppressed", None).await;
    let r = app
        .admin(Method::DELETE, "/api/suppressions/nobody@news.example")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_suppressed", None).await;
    let r = app
        .client
        .get(app.url("/api/suppressions/nobody@news.example"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
}
