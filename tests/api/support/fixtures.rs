//! Readers and items that many tests start from, made through the admin API.

use reqwest::Method;
use serde_json::{Value, json};

use std::time::{Duration, Instant};

use super::app::{MAIL_WAIT, TestApp, find_link};

/// Imports `emails` into `list` as confirmed readers (no email is sent) and answers the report,
/// whatever was imported.
pub async fn import_report(app: &TestApp, list: &str, emails: &[String]) -> Value {
    let csv = format!("email\n{}\n", emails.join("\n"));
    let r = app
        .admin(
            Method::POST,
            &format!("/api/lists/{list}/import?confirmed=true&consent=test%20fixture"),
        )
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let report: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    report
}

/// Imports `emails` into `list` as confirmed readers (no email is sent); every one is imported.
pub async fn import_confirmed(app: &TestApp, list: &str, emails: &[String]) {
    let report = import_report(app, list, emails).await;
    assert_eq!(report["imported"].as_u64(), Some(emails.len() as u64), "{report}");
}

/// Pushes items `(guid, title, minutes ago)` to `list`.
pub async fn push_items(app: &TestApp, list: &str, items: &[(&str, &str, i64)]) {
    let items: Vec<Value> = items
        .iter()
        .map(|(guid, title, minutes_ago)| {
            json!({"guid": guid, "title": title, "url": format!("https://news.example/{guid}"),
                   "summary": format!("<p>About {title}</p>"),
                   "published_at": (chrono::Utc::now() - chrono::TimeDelta::minutes(*minutes_ago)).to_rfc3339()})
        })
        .collect();
    let r = app
        .admin(Method::POST, &format!("/api/lists/{list}/items"))
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An RSS 2.0 feed of items `(guid, title)`, published now.
pub fn rss(items: &[(&str, &str)]) -> String {
    let now = chrono::Utc::now().to_rfc2822();
    let items: String = items
        .iter()
        .map(|(guid, title)| {
            format!(
                "<item><guid>{guid}</guid><title>{title}</title><link>https://news.example/{guid}</link>\
                 <description>What happened, and why it matters.</description><pubDate>{now}</pubDate></item>"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?><rss version="2.0"><channel><title>News</title><link>https://news.example/</link><description>News</description>{items}</channel></rss>"#
    )
}

/// Signs `to` up to `lists` and confirms through the emailed link, as the reader would.
pub async fn signup_and_confirm(app: &TestApp, to: &str, lists: &[&str]) {
    assert_eq!(app.signup_json(to, lists).await.status(), 202);
    let mail = app
        .smtp
        .wait_for(
            |m| m.to().iter().any(|t| t == to) && m.subject().is_some_and(|s| s.contains("confirm")),
            MAIL_WAIT,
        )
        .await;
    let link = find_link(&mail.text_body(), &app.url("/subscriptions/confirm?token=")).expect("link");
    let token = link.split("token=").nth(1).expect("token").to_owned();
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 200);
    let r = app.post_form("/subscriptions/confirm", &[("token", &token)]).await;
    assert_eq!(r.status(), 200);
}

/// Polls `condition` every 20 ms until it holds; fails after `MAIL_WAIT`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + MAIL_WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A list `daily` of `readers` confirmed readers on `app` and a digest to them under way (at least
/// `under_way` sent), the SMTP server's replies slowed by `stall` to keep it in flight; the readers.
pub async fn digest_in_flight(
    app: &super::app::ChildApp,
    smtp: &super::smtp::SmtpServer,
    readers: usize,
    stall: Duration,
    under_way: usize,
) -> Vec<String> {
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..readers).map(|i| format!("reader{i}@news.example")).collect();
    let r = app
        .admin(Method::POST, "/api/lists/daily/import?confirmed=true&consent=test")
        .header("content-type", "text/csv")
        .body(format!("email\n{}\n", readers.join("\n")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .admin(Method::POST, "/api/lists/daily/items")
        .json(
            &json!({"items": [{"guid": "a", "title": "Story A", "url": "https://news.example/a",
                                 "summary": "<p>A</p>", "published_at": chrono::Utc::now().to_rfc3339()}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    smtp.stall(stall);
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    smtp.wait_for_at_least(under_way, MAIL_WAIT).await;
    readers
}
