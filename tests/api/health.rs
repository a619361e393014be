//! Readiness and outages: `/readyz` names what fails; while the database is unreachable, public
//! and admin requests answer `503` in the error shape within the request timeout (neither a hang
//! nor a `500`), and everything goes on when it returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestDb};
use crate::support::fixtures::digest_in_flight;
use crate::support::proxy::proxied_postgres;
use crate::support::smtp::SmtpServer;

async fn readyz(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until it answers `status` with `entry` in the state `ok`.
async fn wait_for_readiness(client: &reqwest::Client, base: &str, status: u16, entry: &str, ok: bool) -> Value {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let (code, body) = readyz(client, base).await;
        if code == status && body[entry]["ok"] == ok {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {status} with {entry} ok={ok}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn signup(client: &reqwest::Client, base: &str, email: &str) -> (u16, Value) {
    let r = client
        .post(format!("{base}/subscriptions"))
        .json(&json!({"email": email, "lists": ["daily"]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_what_fails_and_an_outage_answers_503() {
    let Some((db, proxy, url)) = proxied_postgres().await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let timeout = Duration::from_secs(3);
    let app = ChildApp::serve(
        &db,
        &smtp,
        &[("DATABASE_URL", url.as_str()), ("BULLETIN_REQUEST_TIMEOUT", "3s")],
    )
    .await;
    let (base, client) = (app.base.as_str(), reqwest::Client::new());

    let ready = wait_for_readiness(&client, base, 200, "sender", true).await;
    assert_eq!(
        ready,
        json!({"database": {"ok": true}, "migrations": {"ok": true}, "sender": {"ok": true}})
    );
    app.create_list("daily", "Daily Briefing").await;

    // The SMTP server away: signups are still taken; the sender entry says what fails.
    smtp.set_down(true);
    assert_eq!(signup(&client, base, "first@news.example").await.0, 202);
    let body = wait_for_readiness(&client, base, 503, "sender", false).await;
    assert_eq!(body["database"]["ok"], true, "{body}");
    assert!(
        body["sender"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("sending fails")),
        "{body}"
    );
    smtp.set_down(false);
    wait_for_readiness(&client, base, 200, "sender", true).await;

    // The database away: 503 in the error shape, in time.
    proxy.cut().await;
    let started = Instant::now();
    let (status, body) = signup(&client, base, "second@news.example").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        started.elapsed() < timeout,
        "the signup answered after {:?}",
        started.elapsed()
    );
    let r = client
        .get(format!("{base}/api/lists"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert_eq!(
        client.get(format!("{base}/healthz")).send().await.unwrap().status(),
        503
    );
    let (status, body) = readyz(&client, base).await;
    assert_eq!((status, &body["database"]["ok"]), (503, &json!(false)), "{body}");
    assert!(
        started.elapsed() < timeout * 4,
        "four answers took {:?}",
        started.elapsed()
    );

    // Back: signups are taken again, and the app is ready.
    proxy.restore().await;
    let deadline = Instant::now() + MAIL_WAIT;
    while signup(&client, base, "third@news.example").await.0 != 202 {
        assert!(Instant::now() < deadline, "signups never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_readiness(&client, base, 200, "database", true).await;
    smtp.wait_for(|m| m.to() == ["third@news.example"], MAIL_WAIT).await;
    drop(app);
}

/// A digest in flight when the database goes away: the sender keeps what it owes (the sent, the
/// leases of the rest) and writes it as soon as the database answers, so sending resumes at once,
/// not when the 30 s leases run out, and nothing accepted is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_database_outage_a_digest_resumes_at_once_and_sends_nothing_twice() {
    let Some((db, proxy, url)) = proxied_postgres().await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let app = ChildApp::serve(
        &db,
        &smtp,
        &[("DATABASE_URL", url.as_str()), ("BULLETIN_REQUEST_TIMEOUT", "3s")],
    )
    .await;
    let (base, client) = (app.base.as_str(), reqwest::Client::new());
    let readers = digest_in_flight(&app, &smtp, 300, Duration::from_millis(5), 30).await;

    proxy.cut().await;
    // The outage lasts until the process has seen it (its readiness says so).
    wait_for_readiness(&client, base, 503, "database", false).await;
    let stalled_at = smtp.count();
    assert!(
        stalled_at < readers.len(),
        "the digest was not in flight: {stalled_at} sent"
    );
    proxy.restore().await;
    let back = Instant::now();
    smtp.stall(Duration::ZERO);
    finish_and_count(&client, base, &smtp, &readers).await;
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "sending resumed only after {:?}, as if the leases had to run out",
        back.elapsed()
    );
    drop(app);
}

/// `.eml` files on a disk that fills: sending stops with a clear error, nothing is marked sent that
/// was not written (and no partial file stays), and it resumes by itself when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_disk_stops_sending_until_space_returns() {
    let Some(disk) = crate::support::tmpfs::Tmpfs::mount("256k") else {
        return;
    };
    let outbox = disk.path().to_str().unwrap().to_owned();
    let app = crate::support::app::TestApp::spawn_with(
        Backend::Sqlite,
        &[("BULLETIN_SMTP_URL", ""), ("BULLETIN_OUTBOX_DIR", &outbox)],
    )
    .await
    .expect("SQLite");
    app.create_list("daily", "Daily Briefing").await;
    let filler = disk.fill();

    assert_eq!(
        app.signup_json("disk.reader@news.example", &["daily"]).await.status(),
        202
    );
    let body = wait_for_readiness(&app.client, &app.base, 503, "sender", false).await;
    let error = body["sender"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("cannot write the email file") && error.contains("No space left"),
        "{body}"
    );
    let files = || -> Vec<String> {
        std::fs::read_dir(disk.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "filler")
            .collect()
    };
    assert_eq!(files(), Vec::<String>::new(), "no email file, whole or partial");
    assert_eq!(
        app.sql_strings("SELECT status FROM outbox").await,
        ["queued"],
        "nothing is marked sent that was not written"
    );

    std::fs::remove_file(filler).unwrap();
    crate::support::fixtures::wait_until("the confirmation is written", || async {
        app.sql_strings("SELECT status FROM outbox").await == ["sent"]
    })
    .await;
    let written = files();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].ends_with("-confirmation.eml"), "{written:?}");
    let raw = std::fs::read_to_string(disk.path().join(&written[0])).unwrap();
    assert!(raw.contains("To: disk.reader@news.example"), "{raw}");
    wait_for_readiness(&app.client, &app.base, 200, "sender", true).await;
}

/// Another process holds the SQLite file's write lock past the busy timeout (10 s): a signup
/// answers `503` once it passes, within the request timeout (neither a hang nor a `500`); when the
/// lock goes everything goes on, and the file is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_answers_503_then_goes_on() {
    use sqlx::Connection;
    let db = TestDb::create(Backend::Sqlite).await.expect("SQLite");
    let smtp = SmtpServer::start().await;
    let app = ChildApp::serve(&db, &smtp, &[]).await;
    let (base, client) = (app.base.as_str(), reqwest::Client::new());
    app.create_list("daily", "Daily Briefing").await;
    assert_eq!(signup(&client, base, "before@news.example").await.0, 202);

    // This test process is the other process: it takes the write lock and keeps it.
    let mut holder = sqlx::SqliteConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let started = Instant::now();
    let (status, body) = signup(&client, base, "during@news.example").await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(30),
        "answered after {took:?}: not before the busy timeout, within the request timeout"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    assert_eq!(signup(&client, base, "after@news.example").await.0, 202);
    for to in ["before@news.example", "after@news.example"] {
        smtp.wait_for(|m| m.to() == [to], MAIL_WAIT).await;
    }
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    drop(app);
}

/// Waits until digest 1 is done with every reader sent, and checks each got it once.
async fn finish_and_count(client: &reqwest::Client, base: &str, smtp: &SmtpServer, readers: &[String]) {
    smtp.wait_for_count(readers.len(), MAIL_WAIT).await;
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let digest: Value = client
            .get(format!("{base}/api/digests/1"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if digest["status"] == "done" {
            assert_eq!(digest["sent"], readers.len(), "{digest}");
            break;
        }
        assert!(Instant::now() < deadline, "the digest never finished: {digest}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = smtp.recipient_counts();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(counts.len(), readers.len());
}

/// PostgreSQL itself stopped and started in the middle of a digest, on a cluster of the test's
/// own: while it is down signups answer `503` and `/readyz` says why; sending resumes by itself
/// once it is back, nothing lost and nothing sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_mid_digest() {
    let Some(cluster) = crate::support::cluster::Cluster::start() else {
        return;
    };
    // The app's database is the cluster's; the SQLite placeholder only fills ChildApp's slot.
    let placeholder = TestDb::create(Backend::Sqlite).await.expect("SQLite");
    let smtp = SmtpServer::start().await;
    let url = cluster.url();
    let vars = [("DATABASE_URL", url.as_str()), ("BULLETIN_REQUEST_TIMEOUT", "3s")];
    let app = ChildApp::serve(&placeholder, &smtp, &vars).await;
    let (base, client) = (app.base.as_str(), reqwest::Client::new());
    let readers = digest_in_flight(&app, &smtp, 300, Duration::from_millis(5), 30).await;

    cluster.down();
    let (status, body) = signup(&client, base, "during@news.example").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
    let body = wait_for_readiness(&client, base, 503, "database", false).await;
    assert!(body["database"]["error"].is_string(), "{body}");
    assert!(smtp.count() < readers.len(), "the digest was not in flight");

    cluster.up();
    let back = Instant::now();
    smtp.stall(Duration::ZERO);
    finish_and_count(&client, base, &smtp, &readers).await;
    assert!(
        back.elapsed() < Duration::from_secs(20),
        "resumed after {:?}",
        back.elapsed()
    );
    wait_for_readiness(&client, base, 200, "database", true).await;
    drop(app);
}
