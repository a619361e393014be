//! Feeds: polled over real HTTP on loopback, parsed, cleaned, deduplicated; pushed items.

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, TestApp};
use crate::support::feed_server::{FIXTURES, FeedServer};

on_both_backends!(
    every_shared_feed_is_ingested,
    conditional_get_and_dedupe_across_polls,
    broken_feeds_record_the_error_and_keep_items,
    hostile_summaries_come_out_clean_and_links_resolve,
    slow_and_oversized_feeds_are_refused,
    feed_api_contract,
    pushed_items_are_validated_as_a_whole,
    a_new_feed_is_polled_within_seconds,
    cli_adds_polls_and_lists_feeds,
);

async fn add_feed(app: &TestApp, list: &str, url: &str) -> Value {
    let r = app
        .admin(Method::POST, &format!("/api/lists/{list}/feeds"))
        .json(&json!({"url": url, "poll_interval": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "add {url}");
    r.json().await.unwrap()
}

/// Adds a feed and waits for the background poller's first poll of it, so that the test's own
/// polls that follow are the only ones (the next background poll is an hour away).
async fn add_settled(app: &TestApp, list: &str, url: &str) -> Value {
    let feed = add_feed(app, list, url).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let feeds = feeds_of(app, list).await;
        let current = feeds.iter().find(|f| f["id"] == feed["id"]).expect("feed listed");
        if current["last_polled_at"].is_string() {
            return current.clone();
        }
        assert!(std::time::Instant::now() < deadline, "new feed not polled: {current}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn poll(app: &TestApp, id: &Value) -> (u16, Value) {
    let r = app
        .admin(Method::POST, &format!("/api/feeds/{id}/poll"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn feeds_of(app: &TestApp, list: &str) -> Vec<Value> {
    app.admin(Method::GET, &format!("/api/lists/{list}/feeds"))
        .send()
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

async fn item_rows(app: &TestApp) -> Vec<String> {
    app.sql_strings("SELECT title || ' | ' || COALESCE(url, '') || ' | ' || summary_html FROM items ORDER BY id")
        .await
}

const RSS_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Test</title><link>https://news.example/</link>"#;

fn rss(items: &[(&str, &str, &str)]) -> String {
    let mut body = RSS_HEAD.to_owned();
    for (guid, title, description) in items {
        body.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>/stories/{guid}</link><description><![CDATA[{description}]]></description><pubDate>Sat, 28 Nov 2026 06:00:00 GMT</pubDate></item>"
        ));
    }
    body.push_str("</channel></rss>");
    body
}

async fn every_shared_feed_is_ingested(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml") || n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let feed = add_settled(&app, "daily", &server.url(&format!("/fixtures/{name}"))).await;
        let (status, body) = poll(&app, &feed["id"]).await;
        if name.contains("invalid") {
            assert_eq!(status, 502, "{name}: {body}");
            assert_eq!(body["error"]["code"], "feed_unavailable");
        } else {
            assert_eq!(status, 200, "{name}: {body}");
            // ghost_1's only item has no title, guid or link: nothing to keep, and no error.
            let expected_some = name != "rss_2.0_ghost_1.xml";
            assert_eq!(body["items"].as_u64().unwrap() >= 1, expected_some, "{name}: {body}");
            assert_eq!(body["items"], feed["items"], "{name}: a second poll adds nothing");
        }
    }
    let feeds = feeds_of(&app, "daily").await;
    assert_eq!(feeds.len(), names.len());
    for feed in &feeds {
        assert!(feed["last_polled_at"].is_string(), "{feed}");
        let invalid = feed["url"].as_str().unwrap().contains("invalid");
        assert_eq!(feed["last_error"].is_string(), invalid, "{feed}");
        let empty = invalid || feed["url"].as_str().unwrap().ends_with("ghost_1.xml");
        assert_eq!(feed["items"].as_u64().unwrap() > 0, !empty, "{feed}");
    }
    // Titles are plain text; the ISO-8859-1 feed decodes.
    let titles = app.sql_strings("SELECT title FROM items").await;
    assert!(
        titles.iter().all(|t| !t.contains('<') && !t.trim().is_empty()),
        "{titles:?}"
    );
    assert!(
        titles.iter().all(|t| !t.contains('\u{FFFD}')),
        "mis-decoded text: {titles:?}"
    );
}

async fn conditional_get_and_dedupe_across_polls(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    server.set_custom(
        "application/rss+xml",
        rss(&[("a", "First", "<p>One</p>"), ("b", "Second", "<p>Two</p>")]),
    );
    let feed = add_settled(&app, "daily", &server.url("/custom")).await;
    assert_eq!(feed["items"], 2);
    assert_eq!(server.not_modified(), 0);
    // Unchanged: the server answers 304.
    assert_eq!(
        poll(&app, &feed["id"]).await.1,
        json!({"new": 0, "updated": 0, "items": 2})
    );
    assert_eq!(server.not_modified(), 1);
    // Same items under a new ETag: stored once.
    server.set_custom(
        "application/rss+xml",
        rss(&[("a", "First", "<p>One</p>"), ("b", "Second", "<p>Two</p>")]),
    );
    assert_eq!(
        poll(&app, &feed["id"]).await.1,
        json!({"new": 0, "updated": 0, "items": 2})
    );
    // A changed item is updated; a new one added.
    server.set_custom(
        "application/rss+xml",
        rss(&[
            ("a", "First, corrected", "<p>One</p>"),
            ("b", "Second", "<p>Two</p>"),
            ("c", "Third", ""),
        ]),
    );
    assert_eq!(
        poll(&app, &feed["id"]).await.1,
        json!({"new": 1, "updated": 1, "items": 3})
    );
    assert!(
        app.sql_strings("SELECT title FROM items")
            .await
            .contains(&"First, corrected".to_owned())
    );
}

async fn broken_feeds_record_the_error_and_keep_items(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    server.set_custom("application/rss+xml", rss(&[("a", "Kept", "<p>kept</p>")]));
    let feed = add_settled(&app, "daily", &server.url("/custom")).await;
    assert_eq!(feed["items"], 1);
    for (content_type, body) in [
        ("application/rss+xml", "<rss><channel><item><title>unclosed"),
        ("text/html", "<html>not a feed</html>"),
    ] {
        server.set_custom(content_type, body);
        let (status, error) = poll(&app, &feed["id"]).await;
        assert_eq!(status, 502, "{error}");
        assert_eq!(error["error"]["code"], "feed_unavailable");
    }
    let broken = add_settled(&app, "daily", &server.url("/broken")).await;
    let (status, error) = poll(&app, &broken["id"]).await;
    assert_eq!(status, 502);
    assert!(error["error"]["message"].as_str().unwrap().contains("500"), "{error}");

    let feeds = feeds_of(&app, "daily").await;
    let custom = feeds.iter().find(|f| f["id"] == feed["id"]).unwrap();
    assert_eq!(custom["items"], 1, "items already stored are kept");
    let message = custom["last_error"].as_str().unwrap();
    assert!(
        message.contains("failed 2 times in a row"),
        "backs off and says so: {message}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(custom["next_poll_at"].as_str().unwrap()).unwrap() > chrono::Utc::now(),
        "retried later"
    );
    assert_eq!(item_rows(&app).await.len(), 1);
    // Recovery clears the error.
    server.set_custom("application/rss+xml", rss(&[("a", "Kept", "<p>kept</p>")]));
    assert_eq!(poll(&app, &feed["id"]).await.0, 200);
    let feeds = feeds_of(&app, "daily").await;
    assert!(feeds.iter().find(|f| f["id"] == feed["id"]).unwrap()["last_error"].is_null());
}

async fn hostile_summaries_come_out_clean_and_links_resolve(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let hostile = r#"<p onclick="steal()">Read <a href="https://news.example/a">this</a> and <a href="/relative/b">that</a>.</p><script>alert(1)</script><img src=x onerror=alert(1)><a href="javascript:alert(2)">js</a><iframe src="https://evil.example"></iframe><form action="https://evil.example"><input name=x></form><style>body{display:none}</style><strong>bold</strong>"#;
    server.set_custom(
        "application/rss+xml",
        rss(&[("h", "Tom &amp; Jerry &lt;b&gt;live&lt;/b&gt;", hostile)]),
    );
    let feed = add_feed(&app, "daily", &server.url("/custom")).await;
    assert_eq!(poll(&app, &feed["id"]).await.0, 200);
    let html = app.sql_strings("SELECT summary_html FROM items").await.remove(0);
    for banned in [
        "<script",
        "onerror",
        "onclick",
        "javascript:",
        "<iframe",
        "<form",
        "<input",
        "<style",
        "alert(",
    ] {
        assert!(!html.contains(banned), "{banned} survived: {html}");
    }
    assert!(html.contains(r#"href="https://news.example/a""#), "{html}");
    assert!(html.contains("<strong>bold</strong>"), "{html}");
    let base = server.url("/relative/b");
    assert!(
        html.contains(&format!(r#"href="{base}""#)),
        "relative link resolved against the feed URL: {html}"
    );
    let (title, url): (String, String) = {
        let row = app.sql_strings("SELECT title || '|' || url FROM items").await.remove(0);
        let (t, u) = row.split_once('|').unwrap();
        (t.to_owned(), u.to_owned())
    };
    assert_eq!(title, "Tom & Jerry live");
    assert_eq!(url, server.url("/stories/h"));
    let text = app.sql_strings("SELECT summary_text FROM items").await.remove(0);
    assert!(text.contains("Read this") && !text.contains('<'), "{text}");

    // Atom with xml:base.
    server.set_custom(
        "application/atom+xml",
        r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://site.example/news/">
  <title>Atom</title><id>urn:x</id><updated>2026-11-28T06:00:00Z</updated>
  <entry><id>urn:e1</id><title>Based</title><link href="story-1"/><updated>2026-11-28T06:00:00Z</updated>
    <summary type="html">&lt;a href="more"&gt;more&lt;/a&gt;</summary></entry>
</feed>"#,
    );
    let atom = add_feed(&app, "daily", &format!("{}?atom", server.url("/custom"))).await;
    assert_eq!(poll(&app, &atom["id"]).await.0, 200);
    let rows = item_rows(&app).await;
    let based = rows.iter().find(|r| r.starts_with("Based")).unwrap();
    assert!(based.contains("https://site.example/news/story-1"), "{based}");
    assert!(based.contains(r#"href="https://site.example/news/more""#), "{based}");
}

async fn slow_and_oversized_feeds_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let slow = add_feed(&app, "daily", &server.url("/slow")).await;
    let huge = add_feed(&app, "daily", &server.url("/huge")).await;
    let (slow_result, huge_result) = tokio::join!(poll(&app, &slow["id"]), poll(&app, &huge["id"]));
    assert_eq!(slow_result.0, 502, "{}", slow_result.1);
    assert!(
        slow_result.1["error"]["message"].as_str().unwrap().contains("10 s"),
        "{}",
        slow_result.1
    );
    assert_eq!(huge_result.0, 502, "{}", huge_result.1);
    assert!(
        huge_result.1["error"]["message"].as_str().unwrap().contains("MiB"),
        "{}",
        huge_result.1
    );
    assert!(item_rows(&app).await.is_empty());
}

async fn feed_api_contract(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let url = server.url("/fixtures/rss_2.0_bbc.xml");
    let r = app
        .admin(Method::POST, "/api/lists/daily/feeds")
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let feed: Value = r.json().await.unwrap();
    assert_eq!(feed["poll_interval"], "10m", "default interval");
    assert_eq!(feed["url"], url);
    assert!(feed["id"].is_i64());
    let r = app
        .admin(Method::POST, "/api/lists/daily/feeds")
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "feed_exists", Some("url")).await;
    for (body, field) in [
        (json!({"url": "ftp://news.example/feed"}), "url"),
        (json!({"url": "file:///etc/passwd"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": server.url("/x"), "poll_interval": "soon"}),
            "poll_interval",
        ),
        (json!({"url": server.url("/x"), "poll_interval": "1s"}), "poll_interval"),
        (json!({"poll_interval": "10m"}), "url"),
    ] {
        let r = app
            .admin(Method::POST, "/api/lists/daily/feeds")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], field, "{body}");
    }
    let r = app
        .admin(Method::POST, "/api/lists/nope/feeds")
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;
    let r = app.client.get(app.url("/api/lists/daily/feeds")).send().await.unwrap();
    assert_error(r, 401, "unauthorized", None).await;

    let id = &feed["id"];
    assert_eq!(poll(&app, id).await.0, 200);
    let r = app
        .admin(Method::DELETE, &format!("/api/feeds/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(feeds_of(&app, "daily").await.is_empty());
    let r = app
        .admin(Method::DELETE, &format!("/api/feeds/{id}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_feed", None).await;
    let r = app
        .admin(Method::POST, &format!("/api/feeds/{id}/poll"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_feed", None).await;
    let r = app.admin(Method::POST, "/api/feeds/abc/poll").send().await.unwrap();
    assert_error(r, 404, "not_found", None).await;
}

async fn pushed_items_are_validated_as_a_whole(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let push = |body: Value| app.admin(Method::POST, "/api/lists/daily/items").json(&body).send();
    let good = |n: u32| {
        json!({"guid": format!("g{n}"), "title": format!("Story {n}"), "url": format!("https://news.example/{n}"),
               "summary": "<p>Hi<script>x()</script></p>", "published_at": "2026-11-28T06:00:00Z"})
    };
    for (bad, index) in [
        (json!({"guid": "x", "url": "https://news.example/x"}), 1),
        (json!({"guid": "x", "title": "No link"}), 1),
        (
            json!({"guid": "x", "title": "Bad date", "url": "https://news.example/x", "published_at": "yesterday"}),
            1,
        ),
        (json!("not an object"), 1),
    ] {
        let r = push(json!({"items": [good(1), bad, good(2)]})).await.unwrap();
        let body = assert_error(r, 422, "invalid_item", Some(&format!("items[{index}]"))).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("Item {index}")),
            "{body}"
        );
    }
    assert!(item_rows(&app).await.is_empty(), "nothing stored from a rejected push");
    let r = push(json!({"items": [good(1), good(2), good(3)]})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"new": 3, "updated": 0}));
    let r = push(json!({"items": [good(1), good(2), good(3)]})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"new": 0, "updated": 0}));
    let mut changed = good(2);
    changed["title"] = json!("Story 2, updated");
    let r = push(json!({"items": [changed]})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"new": 0, "updated": 1}));
    let rows = item_rows(&app).await;
    assert!(rows.iter().all(|r| !r.contains("<script")), "{rows:?}");
    let feeds = feeds_of(&app, "daily").await;
    assert_eq!(feeds.len(), 1);
    assert_eq!(feeds[0]["kind"], "push");
    assert_eq!(feeds[0]["items"], 3);
    // NUL and other control characters are dropped, not stored (PostgreSQL refuses NUL in text).
    let r = push(
        json!({"items": [{"guid": "\u{0}n\u{1}", "title": "\u{0}Nul\u{7}", "url": "https://news.example/n",
                                    "summary": "\u{c4}\u{0}<p>a\u{0}b</p>"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let stored = app
        .sql_strings("SELECT key || '|' || title || '|' || summary_text FROM items WHERE title = 'Nul'")
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].starts_with("n|Nul|") && !stored[0].contains('\0'),
        "{stored:?}"
    );
    // Larger than the public limit, within the push limit.
    let many: Vec<Value> = (0..2000).map(good).collect();
    let r = push(json!({"items": many})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = push(json!({"items": "nope"})).await.unwrap();
    assert_error(r, 422, "invalid_field", Some("items")).await;
}

async fn a_new_feed_is_polled_within_seconds(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    add_feed(&app, "daily", &server.url("/fixtures/rss_2.0_spiegel.xml")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let feeds = feeds_of(&app, "daily").await;
        if feeds[0]["items"].as_u64().unwrap_or(0) > 0 {
            assert!(feeds[0]["last_polled_at"].is_string());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not polled: {feeds:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(server.requests(), 1, "polled once, not by every worker");
}

async fn cli_adds_polls_and_lists_feeds(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let good = server.url("/fixtures/rss_2.0_nbcny.xml");
    let out = app.cli(&["feeds", "add", "daily", &good, "--every", "15m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("new"), "{stdout}");
    let bad = server.url("/broken");
    let out = app.cli(&["feeds", "add", "daily", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("500"));
    let out = app.cli(&["feeds"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&good) && table.contains(&bad) && table.contains("15m"),
        "{table}"
    );
    assert!(table.contains("error: HTTP 500"), "{table}");
    let out = app.cli(&["feeds", "poll", "daily"]);
    assert_eq!(out.status.code(), Some(1), "one feed fails");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 new"));
    let out = app.cli(&["feeds", "add", "daily", "gopher://x"]);
    assert_eq!(out.status.code(), Some(1));
    let out = app.cli(&["feeds", "add", "nope", &good]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no list"));
    // The API sees what the CLI did.
    let feeds = feeds_of(&app, "daily").await;
    assert_eq!(feeds.len(), 2);
}
