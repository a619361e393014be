//! What a digest looks like: item pictures from real feeds, the web version at its unguessable
//! address (with nothing of any reader), and a list's archive as a page and an Atom feed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};
use crate::support::feed_server::FeedServer;

on_both_backends!(
    digests_show_item_pictures_and_link_a_web_version,
    the_archive_lists_sent_digests_when_it_is_on,
);

/// The start tags named `name` of an HTML document, each as its attributes, read by html5ever's
/// tokenizer (the parser browsers' algorithm is written from).
fn tags(html: &str, name: &str) -> Vec<HashMap<String, String>> {
    struct Sink(RefCell<Vec<(String, HashMap<String, String>)>>);
    impl TokenSink for Sink {
        type Handle = ();
        fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
            if let Token::TagToken(tag) = token
                && tag.kind == TagKind::StartTag
            {
                let attrs = tag
                    .attrs
                    .iter()
                    .map(|a| (a.name.local.to_string(), a.value.to_string()))
                    .collect();
                self.0.borrow_mut().push((tag.name.to_string(), attrs));
            }
            TokenSinkResult::Continue
        }
    }
    let queue = BufferQueue::default();
    queue.push_back(StrTendril::from_slice(html));
    let tokenizer = Tokenizer::new(Sink(RefCell::new(Vec::new())), TokenizerOpts::default());
    let _ = tokenizer.feed(&queue);
    tokenizer.end();
    tokenizer
        .sink
        .0
        .take()
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, a)| a)
        .collect()
}

async fn confirmed_reader(app: &TestApp, email: &str) {
    let r = app
        .admin(Method::POST, "/api/lists/daily/import?confirmed=true&consent=test")
        .body(format!("email\n{email}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn send_digest(app: &TestApp, since: &str) -> Value {
    let r = app
        .admin(Method::POST, "/api/lists/daily/digests")
        .json(&json!({"since": since}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let queued: Value = r.json().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d: Value = app
            .admin(Method::GET, &format!("/api/digests/{}", queued["id"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["status"] == "done" {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "digest not done: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn digests_show_item_pictures_and_link_a_web_version(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let server = FeedServer::start().await;
    app.create_list("daily", "Daily Briefing").await;
    let reader = "ann@news.example";
    confirmed_reader(&app, reader).await;
    // Real feeds: a Media RSS thumbnail (newscred), an image media:content after an audio one
    // (Spiegel), an img in the description (il Giornale), and audio only, no picture (BBC).
    for name in [
        "atom_mediarss_newscred_1.xml",
        "rss_2.0_spiegel.xml",
        "rss_2.0_ilgiornale.xml",
        "rss_2.0_bbc.xml",
    ] {
        let r = app
            .admin(Method::POST, "/api/lists/daily/feeds")
            .json(&json!({"url": server.url(&format!("/fixtures/{name}")), "poll_interval": "1h"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{name}");
    }
    // And a pushed item with its own picture.
    let r = app
        .admin(Method::POST, "/api/lists/daily/items")
        .json(
            &json!({"items": [{"guid": "p", "title": "Pushed & pictured", "url": "https://news.example/p",
                                 "image_url": "https://img.news.example/p.jpg?w=1&h=2",
                                 "published_at": "2026-01-01T00:00:00Z"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .admin(Method::POST, "/api/lists/daily/items")
        .json(&json!({"items": [{"title": "Bad picture", "url": "https://news.example/b", "image_url": "javascript:alert(1)"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // Wait for the feeds' first polls: four polled feeds with an item each.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let feeds: Value = app
            .admin(Method::GET, "/api/lists/daily/feeds")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let polled = feeds
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["url"].as_str().is_some_and(|u| u.contains("/fixtures/")))
            .filter(|f| f["last_polled_at"].is_string() && f["items"].as_u64() >= Some(1))
            .count();
        if polled == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the feeds were not polled: {feeds}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let digest = send_digest(&app, "2000-01-01T00:00:00Z").await;
    assert_eq!(digest["items"], 5, "{digest}");
    app.smtp.wait_for_count(1, MAIL_WAIT).await;
    let mail = &app.smtp.messages_to(reader)[0];
    let html = mail.html_body();

    let images = tags(&html, "img");
    let srcs: Vec<&str> = images.iter().map(|i| i["src"].as_str()).collect();
    assert_eq!(srcs.len(), 4, "{srcs:?}");
    for expected in [
        "https://www.example.com/Zz1hNjRiMWFjMzdhYWIzNTEwNjk2YjIzYjc5NWQxNWFlMA==?width=75&height=75",
        "https://www.omnycontent.com/d/programs/5ac1e950-45c7-4eb7-87c0-aa0f018441b8/bb17ca27-51f4-4349-bc1e-abc00102c975/image.jpg?t=1589902935&size=Large",
        "https://img.ilgcdn.com/sites/default/files/styles/md/public/foto/2022/09/30/1664568527-schermata-2022-09-30-214250.jpg?_=1664568527",
        "https://img.news.example/p.jpg?w=1&h=2",
    ] {
        assert!(srcs.contains(&expected), "{expected} in {srcs:?}");
    }
    for image in &images {
        let src = url::Url::parse(&image["src"]).expect("absolute src");
        assert!(matches!(src.scheme(), "https" | "http"));
        assert!(!image["alt"].is_empty(), "{image:?}: alt is the story's title");
        let width: u32 = image["width"].parse().unwrap();
        assert!((1..=600).contains(&width), "{image:?}");
        let style = &image["style"];
        assert!(
            style.contains("max-width:100%") && style.contains("height:auto"),
            "{style}"
        );
    }
    // newscred's thumbnail says it is 2048 wide: shown at most as wide as the column.
    let width_of = |needle: &str| images.iter().find(|i| i["src"].contains(needle)).unwrap()["width"].clone();
    assert_eq!(width_of("Zz1h"), "560");
    // The pushed item's picture is linked to its story, with its title as alt.
    let pushed = images.iter().find(|i| i["src"].contains("p.jpg")).unwrap();
    assert_eq!(pushed["alt"], "Pushed & pictured");
    let linked = html.split("<a ").any(|a| {
        a.starts_with(r#"href="https://news.example/p""#) && a.contains("<img") && a.find("</a>") > a.find("<img")
    });
    assert!(linked, "{html}");
    // The text part has the web version, and no picture's alt text.
    let text = mail.text_body();
    assert!(!text.contains("<img") && !text.contains("p.jpg"), "{text}");

    // "View in your browser", at the top of both parts.
    let web = find_link(&html, &format!("{}/digests/", app.base)).expect("web version link in the HTML");
    assert!(html.find("View in your browser").unwrap() < html.find("<h1").unwrap());
    assert_eq!(
        find_link(&text, &format!("{}/digests/", app.base)).as_deref(),
        Some(web.as_str())
    );
    let public_id = web.rsplit('/').next().unwrap();
    assert_eq!(public_id.len(), 32, "128 random bits in hex");
    let page = app.client.get(&web).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-robots-tag"], "noindex");
    let body = page.text().await.unwrap();
    assert!(
        body.contains("Pushed &#38; pictured") && body.contains("img.ilgcdn.com"),
        "{body}"
    );
    assert_eq!(tags(&body, "img").len(), 4);
    assert!(
        tags(&body, "a").iter().any(|a| a["href"] == format!("{}/", app.base)),
        "links to the signup page"
    );
    // Nothing of the reader: no address, no unsubscribe link or token of theirs.
    let unsubscribe = find_link(&text, &format!("{}/unsubscribe?token=", app.base)).expect("reader's unsubscribe link");
    let token = unsubscribe.split("token=").nth(1).unwrap();
    assert!(
        !body.contains(reader) && !body.contains("ann%40") && !body.contains(token),
        "{body}"
    );
    assert!(!body.contains("unsubscribe") && !body.contains("token"), "{body}");
    assert!(tags(&body, "script").is_empty() && tags(&body, "form").is_empty());

    // Any other address is not a digest.
    for bad in [
        "0123456789abcdef0123456789abcdef",
        "short",
        "0123456789ABCDEF0123456789ABCDEF",
    ] {
        assert_eq!(app.get(&format!("/digests/{bad}")).await.status(), 404, "{bad}");
    }
}

async fn the_archive_lists_sent_digests_when_it_is_on(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    confirmed_reader(&app, "ann@news.example").await;
    assert_eq!(
        app.get("/lists/daily/archive").await.status(),
        404,
        "the archive is off by default"
    );
    assert_eq!(app.get("/lists/daily/archive.atom").await.status(), 404);

    let patch = |body: Value| app.admin(Method::PATCH, "/api/lists/daily").json(&body).send();
    assert_error(
        patch(json!({"archive": "yes"})).await.unwrap(),
        422,
        "invalid_field",
        Some("archive"),
    )
    .await;
    assert_error(
        patch(json!({"name": " "})).await.unwrap(),
        422,
        "invalid_name",
        Some("name"),
    )
    .await;
    let r = app
        .admin(Method::PATCH, "/api/lists/nope")
        .json(&json!({"archive": true}))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;
    let r = patch(json!({"archive": true, "description": "The news at 7"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(
        (list["archive"].as_bool(), list["name"].as_str()),
        (Some(true), Some("Daily Briefing"))
    );
    assert_eq!(list["description"], "The news at 7");

    let empty = app.get("/lists/daily/archive").await;
    assert_eq!(empty.status(), 200);
    assert!(empty.text().await.unwrap().contains("No issue has been sent yet"));

    // 21 digests, one story each.
    for n in 0..21 {
        let r = app
            .admin(Method::POST, "/api/lists/daily/items")
            .json(
                &json!({"items": [{"guid": format!("s{n}"), "title": format!("Story {n}"),
                                     "url": format!("https://news.example/{n}")}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        send_digest(&app, "2000-01-01T00:00:00Z").await;
    }
    let first = app.get("/lists/daily/archive").await.text().await.unwrap();
    let links: Vec<String> = tags(&first, "a").into_iter().map(|a| a["href"].clone()).collect();
    let web: Vec<&String> = links.iter().filter(|l| l.contains("/digests/")).collect();
    assert_eq!(web.len(), 20, "{links:?}");
    assert!(links.contains(&"/lists/daily/archive?page=2".to_owned()), "{links:?}");
    let second = app.get("/lists/daily/archive?page=2").await.text().await.unwrap();
    let older: Vec<String> = tags(&second, "a")
        .into_iter()
        .map(|a| a["href"].clone())
        .filter(|l| l.contains("/digests/"))
        .collect();
    assert_eq!(older.len(), 1);
    assert!(!web.contains(&&older[0]), "newest first, no repeats");
    let bad = app.get("/lists/daily/archive?page=0").await;
    assert_eq!(bad.status(), 422);
    assert!(
        bad.headers()["content-type"].to_str().unwrap().starts_with("text/html"),
        "a page's error is a page"
    );
    // Each entry opens its web version.
    let page = app.client.get(web[0]).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Story 20"), "the newest first");

    let atom = app.get("/lists/daily/archive.atom").await;
    assert_eq!(atom.status(), 200);
    assert!(
        atom.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let xml = atom.text().await.unwrap();
    assert_eq!(xml.matches("<entry>").count(), 20, "{xml}");
    assert!(
        xml.contains(&format!(
            "<link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>",
            web[0]
        )),
        "{xml}"
    );
    let parsed = feed_rs::parser::parse(xml.as_bytes()).expect("a valid Atom feed");
    assert_eq!(parsed.entries.len(), 20);

    assert_eq!(patch(json!({"archive": false})).await.unwrap().status(), 200);
    assert_eq!(app.get("/lists/daily/archive").await.status(), 404);
    assert_eq!(app.get("/lists/daily/archive.atom").await.status(), 404);
}
