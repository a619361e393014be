//! `/metrics`: behind the admin token, in the Prometheus text format. On a process of its own
//! (counters count the events of one process): signups, confirmations, unsubscribes, sends,
//! the queue's depth and the HTTP requests move with what the process does.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestDb};
use crate::support::smtp::SmtpServer;

on_both_backends!(metrics_move_with_signups_sends_and_unsubscribes);

/// The value of the series `name` whose labels include every one of `labels`; `None` if absent.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, number) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        (series_name == name && all).then(|| number.parse().ok()).flatten()
    })
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"),
        "{:?}",
        r.headers()
    );
    r.text().await.unwrap()
}

/// Scrapes until the series reads `expected` (counters move just after the event they count).
async fn wait_for_value(client: &reqwest::Client, base: &str, name: &str, labels: &[(&str, &str)], expected: f64) {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let text = scrape(client, base).await;
        if value(&text, name, labels) == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} never read {expected}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_move_with_signups_sends_and_unsubscribes(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = ChildApp::serve(&db, &smtp, &[]).await;
    let base = app.base.as_str();
    let client = reqwest::Client::new();

    let r = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "behind the admin token");
    app.create_list("daily", "Daily Briefing").await;

    // The SMTP server away: the confirmation waits in the queue, and the gauge shows it.
    smtp.set_down(true);
    let reader = "metrics.reader@news.example";
    for (email, status) in [(reader, 202), ("not-an-address", 422)] {
        let r = client
            .post(format!("{base}/subscriptions"))
            .json(&json!({"email": email, "lists": ["daily"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{email}");
    }
    let text = scrape(&client, base).await;
    assert_eq!(
        value(&text, "bulletin_signups_total", &[("outcome", "accepted")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "bulletin_signups_total", &[("outcome", "invalid")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "bulletin_queue_depth", &[("kind", "confirmation")]),
        Some(1.0)
    );
    assert_eq!(value(&text, "bulletin_queue_depth", &[("kind", "digest")]), Some(0.0));
    let signups = [("route", "/subscriptions"), ("status", "202")];
    assert_eq!(value(&text, "bulletin_http_requests_total", &signups), Some(1.0));
    let refused = [("route", "/subscriptions"), ("status", "422")];
    assert_eq!(value(&text, "bulletin_http_requests_total", &refused), Some(1.0));
    assert!(
        text.contains("# TYPE bulletin_http_request_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# HELP bulletin_signups_total"), "{text}");

    // Back: the confirmation goes, the reader confirms, then leaves from the mail client.
    smtp.set_down(false);
    let mail = smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("confirm")), MAIL_WAIT)
        .await;
    let confirmation = [("kind", "confirmation"), ("outcome", "sent")];
    wait_for_value(&client, base, "bulletin_deliveries_total", &confirmation, 1.0).await;
    app.confirm(&mail).await;
    let welcome = smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("Welcome")), MAIL_WAIT)
        .await;
    wait_for_value(
        &client,
        base,
        "bulletin_deliveries_total",
        &[("kind", "welcome"), ("outcome", "sent")],
        1.0,
    )
    .await;
    let unsubscribe = welcome.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = unsubscribe.trim_start_matches('<').trim_end_matches('>');
    let r = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = scrape(&client, base).await;
    assert_eq!(value(&text, "bulletin_confirmations_total", &[]), Some(1.0));
    assert_eq!(
        value(&text, "bulletin_unsubscribes_total", &[("via", "one_click")]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "bulletin_queue_depth", &[("kind", "confirmation")]),
        Some(0.0)
    );
    assert!(
        value(&text, "bulletin_smtp_send_seconds_count", &[]).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // Routes by their template only: no token, no address in any label.
    let confirms = [("route", "/subscriptions/confirm"), ("status", "200")];
    assert_eq!(value(&text, "bulletin_http_requests_total", &confirms), Some(1.0));
    assert!(!text.contains("token=") && !text.contains("metrics.reader"), "{text}");
    drop(app);
}
