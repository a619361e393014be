//! Delivery through crashes and across processes: real `bulletin serve` child processes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, TestDb};
use crate::support::smtp::SmtpServer;

on_both_backends!(sigkill_three_times_mid_digest_serves_everyone);

/// Creates a list with `n` confirmed readers (CSV import), one item, and queues a digest.
async fn queue_digest(base: &str, n: usize) -> Value {
    let client = reqwest::Client::new();
    let post = |path: &str| client.post(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    let r = post("/api/lists")
        .json(&json!({"slug": "daily", "name": "Daily Briefing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let csv = "email\n".to_owned() + &(0..n).map(|i| format!("reader{i}@news.example\n")).collect::<String>();
    let r = post("/api/lists/daily/import?confirmed=true&consent=test")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let item = json!({"items": [{"guid": "a", "title": "Story A", "url": "https://news.example/a",
                                 "published_at": chrono::Utc::now().to_rfc3339()}]});
    assert_eq!(
        post("/api/lists/daily/items")
            .json(&item)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post("/api/lists/daily/digests").send().await.unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn wait_done(base: &str, id: &Value, timeout: Duration) -> Value {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = client
            .get(format!("{base}/api/digests/{id}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            && let Ok(d) = r.json::<Value>().await
            && d["status"] == "done"
        {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "digest {id} not done in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sigkill_three_times_mid_digest_serves_everyone(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    // Slow enough that each kill lands mid-send.
    smtp.stall(Duration::from_millis(2));
    let total = 2_000;
    let mut app = ChildApp::serve(&db, &smtp, &[]).await;
    let digest = queue_digest(&app.base, total).await;
    for kill_at in [300, 900, 1500] {
        smtp.wait_for_at_least(kill_at, Duration::from_secs(120)).await;
        app.child.kill().expect("SIGKILL");
        let _ = app.child.wait();
        app = ChildApp::serve(&db, &smtp, &[]).await;
    }
    let done = wait_done(&app.base, &digest["id"], Duration::from_secs(180)).await;
    assert_eq!(done["sent"], total as u64, "{done}");
    let counts = smtp.recipient_counts();
    let served = (0..total)
        .filter(|i| counts.contains_key(&format!("reader{i}@news.example")))
        .count();
    assert_eq!(served, total, "every recipient served");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("SIGKILL x3 during a {total}-recipient digest ({backend:?}): {duplicates} duplicates");
    // Per kill at most what was accepted but not yet recorded: one flush window (50 ms) of
    // each of the 8 workers, plus the message each had in flight.
    assert!(duplicates <= 3 * 8 * 10, "{duplicates} duplicates");
}

/// Two servers on one PostgreSQL database share a digest: each recipient exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_digest_on_postgres() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    let first = ChildApp::serve(&db, &smtp, &[]).await;
    let second = ChildApp::serve(&db, &smtp, &[]).await;
    let total = 5_000;
    let digest = queue_digest(&first.base, total).await;
    let done = wait_done(&second.base, &digest["id"], Duration::from_secs(180)).await;
    assert_eq!(done["sent"], total as u64, "{done}");
    let counts = smtp.recipient_counts();
    assert_eq!(counts.len(), total);
    assert!(counts.values().all(|c| *c == 1), "a recipient got the digest twice");
    let by_process = smtp.connections();
    assert!(by_process >= 2, "both processes sent ({by_process} connections)");
    drop((first, second));
}

on_both_backends!(a_digest_survives_smtp_faults);

async fn a_digest_survives_smtp_faults(backend: Backend) {
    use crate::support::app::TestApp;
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_SMTP_POOL", "2")]).await else {
        return;
    };
    let total = 30;
    app.smtp.reject_rcpt("reader3@news.example", 451, Some(1));
    app.smtp.reject_rcpt("reader7@news.example", 451, Some(2));
    app.smtp.reject_rcpt("reader11@news.example", 550, None);
    app.smtp.drop_connection_after_data(Some(2));
    app.smtp.stall(Duration::from_millis(5));
    let digest = queue_digest(&app.base, total).await;
    // Mid-send, the server goes away for a while: open sessions are cut and new ones get 421.
    app.smtp.wait_for_at_least(10, Duration::from_secs(30)).await;
    let before = app.smtp.connections();
    app.smtp.greeting(421);
    app.smtp.set_down(true);
    app.smtp.set_down(false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.smtp.connections() < before + 2 {
        assert!(std::time::Instant::now() < deadline, "the sender never met the outage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.smtp.greeting(220);
    let done = wait_done(&app.base, &digest["id"], Duration::from_secs(120)).await;
    assert_eq!(
        (done["sent"].as_u64(), done["failed"].as_u64()),
        (Some(total as u64 - 1), Some(1)),
        "{done}"
    );
    let counts = app.smtp.recipient_counts();
    for i in (0..total).filter(|i| *i != 11) {
        assert!(
            counts.contains_key(&format!("reader{i}@news.example")),
            "reader{i} served"
        );
    }
    // A session cut mid-DATA can lose the server's reply to a message it stored: that message
    // (one per connection at most) is sent again. Nothing else is duplicated.
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert!(duplicates <= 2, "{duplicates} duplicates with 2 connections");
    assert!(!counts.contains_key("reader11@news.example"));
    let suppressed = app
        .admin(reqwest::Method::GET, "/api/suppressions/reader11@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(suppressed.status(), 200, "the 550 is recorded and suppressed");
}

on_both_backends!(a_100k_digest_is_delivered_with_flat_memory);

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn a_100k_digest_is_delivered_with_flat_memory(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let smtp = SmtpServer::start().await;
    smtp.keep_envelopes_only();
    let app = ChildApp::serve(&db, &smtp, &[]).await;
    let total = 100_000;
    let started = std::time::Instant::now();
    let digest = queue_digest(&app.base, total).await;
    let queued = started.elapsed();
    let done = wait_done(&app.base, &digest["id"], Duration::from_secs(900)).await;
    let elapsed = started.elapsed();
    assert_eq!(done["sent"], total as u64, "{done}");
    assert_eq!(smtp.recipient_counts().len(), total);
    // Recorded, not asserted: speed and memory targets live in BENCHMARKS.md.
    let report = format!(
        "100,000-recipient digest ({backend:?}, debug build): import and queue {:.1} s, total {:.1} s, \
         server peak RSS {} KiB\n",
        queued.as_secs_f64(),
        elapsed.as_secs_f64(),
        peak_rss_kib(app.child.id()).map_or("?".to_owned(), |k| k.to_string())
    );
    eprint!("{report}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("digest-100k-{backend:?}.txt")), report);
}
