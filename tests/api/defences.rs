//! Public-facing defences on a real socket: rate limits, per-address caps, the honeypot, size
//! limits, slow clients, security headers, and logs without secrets.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{ADMIN_TOKEN, Backend, ChildApp, MAIL_WAIT, TestApp, TestDb, find_link};
use crate::support::smtp::SmtpServer;

on_both_backends!(confirmation_emails_are_capped_per_address);

async fn sqlite_app(vars: &[(&str, &str)]) -> TestApp {
    let app = TestApp::spawn_with(Backend::Sqlite, vars).await.expect("SQLite app");
    app.create_list("daily", "Daily Briefing").await;
    app
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    app.sql_strings(sql).await[0].parse().expect("a count")
}

async fn signup_from(app: &TestApp, email: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/subscriptions"))
        .json(&json!({"email": email, "lists": ["daily"]}));
    if let Some(ip) = forwarded_for {
        request = request.header("X-Forwarded-For", ip);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signups_are_rate_limited_per_client() {
    let app = sqlite_app(&[("BULLETIN_RATE_LIMIT", "3")]).await;
    for n in 0..3 {
        let r = signup_from(&app, &format!("r{n}@news.example"), None).await;
        assert_eq!(r.status(), 202);
    }
    // Claiming another address in X-Forwarded-For does not help: the peer is no trusted proxy.
    let r = signup_from(&app, "r3@news.example", Some("203.0.113.9")).await;
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "one signup comes back every 20 s at 3/min: {retry_after}"
    );
    assert_error(r, 429, "rate_limited", None).await;
    // Browsers get a page, with the same status and header.
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("Accept", "text/html")
        .form(&[("email", "r4@news.example"), ("lists", "daily")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.text().await.unwrap().contains("Too many requests"));
    // Resends send email too; reading pages does not.
    let r = app
        .client
        .post(app.url("/subscriptions/resend"))
        .json(&json!({"token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(app.client.get(app.url("/")).send().await.unwrap().status(), 200);
    assert_eq!(
        count(&app, "SELECT CAST(COUNT(*) AS TEXT) FROM subscribers").await,
        3,
        "nothing stored when limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let app = sqlite_app(&[
        ("BULLETIN_RATE_LIMIT", "2"),
        ("BULLETIN_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1/32"),
    ])
    .await;
    for n in 0..2 {
        let r = signup_from(&app, &format!("a{n}@news.example"), Some("198.51.100.1, 10.1.1.1")).await;
        assert_eq!(r.status(), 202);
    }
    let r = signup_from(&app, "a2@news.example", Some("198.51.100.1")).await;
    assert_eq!(r.status(), 429, "the same client through another proxy hop");
    // A client spoofing the left of the header is still counted by the hop our proxy saw.
    let r = signup_from(&app, "a3@news.example", Some("1.2.3.4, 198.51.100.1")).await;
    assert_eq!(r.status(), 429);
    let r = signup_from(&app, "b0@news.example", Some("198.51.100.2")).await;
    assert_eq!(r.status(), 202, "another client has its own budget");
    let ips = app
        .sql_strings("SELECT consent_ip FROM subscriptions ORDER BY id")
        .await;
    assert_eq!(
        ips,
        ["198.51.100.1", "198.51.100.1", "198.51.100.2"],
        "the consent record names the client"
    );
}

/// List bombing: whatever the source, one address gets at most one confirmation email per
/// 5 minutes and 5 per day, and the answer never changes.
async fn confirmation_emails_are_capped_per_address(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let queued = || {
        count(
            &app,
            "SELECT CAST(COUNT(*) AS TEXT) FROM outbox WHERE kind = 'confirmation'",
        )
    };
    // Moves the last email out of the 5-minute window, as if the attacker waited.
    let wait_out_window = || {
        app.sql_exec_with(
            "UPDATE subscribers SET last_confirmation_at = $1 WHERE email <> $2",
            chrono::Utc::now() - chrono::TimeDelta::minutes(6),
            "",
        )
    };
    let victim = "victim@news.example";
    assert_eq!(app.signup_json(victim, &["daily"]).await.status(), 202);
    assert_eq!(app.signup_json(victim, &["daily"]).await.status(), 202);
    assert_eq!(queued().await, 1, "one email per 5 minutes");
    for expected in 2..=5 {
        wait_out_window().await;
        assert_eq!(app.signup_json(victim, &["daily"]).await.status(), 202);
        assert_eq!(queued().await, expected);
    }
    wait_out_window().await;
    let r = app.signup_json(victim, &["daily"]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "confirmation_sent", "message": "Thank you! We've sent you a confirmation email."}),
        "the same answer"
    );
    assert_eq!(queued().await, 5, "no sixth email in a day");
    assert_eq!(app.smtp.wait_for_count(5, MAIL_WAIT).await.len(), 5);
    // A day later the address can be sent a confirmation again.
    app.sql_exec_with(
        "UPDATE subscribers SET confirmations_day_start = $1, last_confirmation_at = $1 WHERE email <> $2",
        chrono::Utc::now() - chrono::TimeDelta::hours(25),
        "",
    )
    .await;
    assert_eq!(app.signup_json(victim, &["daily"]).await.status(), 202);
    assert_eq!(queued().await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_honeypot_catches_bots_silently() {
    let app = sqlite_app(&[]).await;
    let form = app.client.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(
        form.contains(r#"name="website""#) && form.contains(r#"tabindex="-1""#),
        "{form}"
    );
    let post = |fields: Vec<(&'static str, &'static str)>| {
        app.client
            .post(app.url("/subscriptions"))
            .header("Accept", "text/html")
            .form(&fields)
            .send()
    };
    let person = post(vec![
        ("email", "person@news.example"),
        ("lists", "daily"),
        ("website", ""),
    ])
    .await
    .unwrap();
    let bot = post(vec![
        ("email", "bot@news.example"),
        ("lists", "daily"),
        ("website", "https://spam.example"),
    ])
    .await
    .unwrap();
    assert_eq!(
        (person.status(), bot.status()),
        (reqwest::StatusCode::ACCEPTED, reqwest::StatusCode::ACCEPTED)
    );
    assert_eq!(
        person.text().await.unwrap(),
        bot.text().await.unwrap(),
        "the bot cannot tell"
    );
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .json(&json!({"email": "bot2@news.example", "lists": ["daily"], "website": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let stored = app.sql_strings("SELECT email FROM subscribers").await;
    assert_eq!(stored, ["person@news.example"], "nothing stored for bots");
    assert_eq!(
        count(&app, "SELECT CAST(COUNT(*) AS TEXT) FROM outbox").await,
        1,
        "nothing sent to bots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_fields_nesting_and_headers_are_limited() {
    let app = sqlite_app(&[]).await;
    let big = format!("email=a%40news.example&lists=daily&pad={}", "x".repeat(17 * 1024));
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large", None).await;
    let many: Vec<(&str, String)> = std::iter::once(("email", "a@news.example".to_owned()))
        .chain((0..70).map(|n| ("lists", format!("l{n}"))))
        .collect();
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("Accept", "application/json")
        .form(&many)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "too_many_fields", None).await;
    let deep = format!(
        "{{\"email\":\"a@news.example\",\"x\":{}1{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let r = app
        .client
        .post(app.url("/subscriptions"))
        .header("Content-Type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "too_deeply_nested", None).await;
    // Admin item pushes may be larger than the public limit.
    let items: Vec<Value> = (0..40)
        .map(|n| {
            json!({"guid": format!("g{n}"), "title": format!("Story {n}"), "url": format!("https://news.example/{n}"),
                   "summary": "y".repeat(1000), "published_at": chrono::Utc::now().to_rfc3339()})
        })
        .collect();
    let r = app
        .admin(reqwest::Method::POST, "/api/lists/daily/items")
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a 40 KiB push is accepted: {}",
        r.text().await.unwrap()
    );
    // Oversized or too many headers: refused before any handler runs.
    let r = app
        .client
        .get(app.url("/"))
        .header("X-Big", "z".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let mut request = app.client.get(app.url("/"));
    for n in 0..80 {
        request = request.header(format!("x-h{n}"), "1");
    }
    assert_eq!(request.send().await.unwrap().status(), 431);
    assert_eq!(
        count(&app, "SELECT CAST(COUNT(*) AS TEXT) FROM subscribers").await,
        0,
        "nothing stored"
    );
}

/// Reads what the server sends until it closes the connection or `limit` passes.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_service() {
    let app = sqlite_app(&[("BULLETIN_HEADER_TIMEOUT", "1s"), ("BULLETIN_REQUEST_TIMEOUT", "2s")]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    // Headers at one byte per 100 ms: cut off after the header timeout, long before they end.
    let (mut from_server, mut to_server) = TcpStream::connect(&addr).await.unwrap().into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let head = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n", "s".repeat(100));
    let started = Instant::now();
    let mut sent = 0;
    for byte in head.bytes() {
        if reader.is_finished() || to_server.write_all(&[byte]).await.is_err() {
            break;
        }
        sent += 1;
        if sent == 5 {
            // Meanwhile the service answers others.
            assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent < head.len(), "the slow client was allowed to send its whole head");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );
    let answer = reader.await.unwrap();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A connection that never sends a byte is closed too.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let idle_since = Instant::now();
    let answer = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "a silent connection was kept open past 5 s");
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );

    // A body that never arrives: 408 in the error shape when the request timeout passes.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /subscriptions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("the server answered within the request timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let app = sqlite_app(&[]).await;
    assert_eq!(app.signup_json("reader@news.example", &["daily"]).await.status(), 202);
    let mail = app
        .smtp
        .wait_for(|m| m.to().iter().any(|t| t.contains("reader@")), MAIL_WAIT)
        .await;
    let link = find_link(&mail.text_body(), &app.url("/subscriptions/confirm?token=")).expect("link");

    let confirm_page = app.client.get(&link).send().await.unwrap();
    let csp = confirm_page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = confirm_page.text().await.unwrap();
    let start = html.find("<script>").expect("script") + "<script>".len();
    let script = &html[start..start + html[start..].find("</script>").unwrap()];
    let digest = <sha2::Sha256 as sha2::Digest>::digest(script.as_bytes());
    let hash = format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest));
    assert!(
        csp.contains(&format!("script-src {hash}")),
        "{csp} does not allow {hash}"
    );
    assert!(
        !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    let pages = [
        app.client.get(app.url("/")).send().await.unwrap(),
        app.client
            .get(app.url("/subscriptions/confirm?token=nonsense"))
            .send()
            .await
            .unwrap(),
        app.client
            .get(app.url("/no/such/page"))
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap(),
        app.client.get(app.url("/api/lists")).send().await.unwrap(),
        app.client.get(app.url("/unsubscribe?token=bad")).send().await.unwrap(),
    ];
    let statuses: Vec<u16> = pages.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 400, 404, 401, 400], "pages and errors alike");
    for r in pages {
        let h = r.headers();
        assert_eq!(h["content-security-policy"], csp.as_str());
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = r.text().await.unwrap();
        // The policy blocks inline styles and handlers: pages must not rely on them.
        assert!(!body.contains(" style=") && !body.contains("<style") && !body.contains(" onclick="));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log() {
    let db = TestDb::create(Backend::Sqlite).await.expect("SQLite");
    let smtp = SmtpServer::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let app = ChildApp::serve_logging_to(&db, &smtp, &[("RUST_LOG", "debug")], log.reopen().unwrap()).await;
    let client = reqwest::Client::new();
    let admin = |method, path: &str| {
        client
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(ADMIN_TOKEN)
    };
    let r = admin(reqwest::Method::POST, "/api/lists")
        .json(&json!({"slug": "daily", "name": "Daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{}/subscriptions", app.base))
        .json(&json!({"email": "reader@news.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mail = smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("confirm")), MAIL_WAIT)
        .await;
    let link = find_link(&mail.text_body(), &format!("{}/subscriptions/confirm?token=", app.base)).unwrap();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    assert_eq!(client.get(&link).send().await.unwrap().status(), 200);
    let r = client
        .post(format!("{}/subscriptions/confirm", app.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let welcome = smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("Welcome")), MAIL_WAIT)
        .await;
    let unsubscribe = find_link(&welcome.text_body(), &format!("{}/unsubscribe?token=", app.base)).unwrap();
    let unsubscribe_token = unsubscribe.split("token=").nth(1).unwrap().to_owned();
    assert_eq!(client.get(&unsubscribe).send().await.unwrap().status(), 200);
    // A digest's web version: its address works like a password.
    let r = admin(
        reqwest::Method::POST,
        "/api/lists/daily/import?confirmed=true&consent=test",
    )
    .body("email\nreader2@news.example\n")
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(reqwest::Method::POST, "/api/lists/daily/items")
        .json(&json!({"items": [{"title": "Story", "url": "https://news.example/s"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(reqwest::Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let digest = smtp
        .wait_for(|m| m.to().iter().any(|t| t == "reader2@news.example"), MAIL_WAIT)
        .await;
    let web = find_link(&digest.text_body(), &format!("{}/digests/", app.base)).unwrap();
    let public_id = web.rsplit('/').next().unwrap().to_owned();
    assert_eq!(client.get(&web).send().await.unwrap().status(), 200);
    // A reader's data and erasure: their address is in the path.
    let r = admin(reqwest::Method::GET, "/api/subscribers/reader2@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(reqwest::Method::DELETE, "/api/subscribers/reader2@news.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(app.terminate().await.code(), Some(0));

    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logged.contains("/subscriptions/confirm") && logged.contains("/unsubscribe"),
        "requests are logged: {logged}"
    );
    assert!(
        logged.contains("/digests/{public_id}") && logged.contains("/api/subscribers/{email}"),
        "by their route template: {logged}"
    );
    let line = logged
        .lines()
        .find(|l| l.contains("/api/subscribers") && l.contains("reader2"));
    assert!(line.is_none(), "an address reached a request line: {line:?}");
    for secret in [
        token.as_str(),
        unsubscribe_token.as_str(),
        ADMIN_TOKEN,
        public_id.as_str(),
    ] {
        let line = logged.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "a secret reached the log: {line:?}");
    }
}
