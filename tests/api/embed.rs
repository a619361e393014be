//! The signup box on a news site's own pages: CORS for the allowed origins only, the link back to
//! the article without script, and the script itself.

use reqwest::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, VARY,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::app::{Backend, TestApp};

on_both_backends!(
    allowed_origins_may_post_signups_from_the_browser,
    without_script_the_answer_links_back_to_an_allowed_article,
);

const SITE: &str = "https://news.example";

async fn app_for_site(backend: Backend) -> Option<TestApp> {
    let app = TestApp::spawn_with(
        backend,
        &[("BULLETIN_ALLOWED_ORIGINS", "https://news.example, http://127.0.0.1:9")],
    )
    .await?;
    app.create_list("daily", "Daily Briefing").await;
    Some(app)
}

fn header(r: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url("/subscriptions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

async fn post_from(app: &TestApp, origin: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/subscriptions"))
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn allowed_origins_may_post_signups_from_the_browser(backend: Backend) {
    let Some(app) = app_for_site(backend).await else {
        return;
    };
    let r = preflight(&app, SITE).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(), Some(SITE));
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_METHODS).as_deref(), Some("POST"));
    assert_eq!(
        header(&r, ACCESS_CONTROL_ALLOW_HEADERS).as_deref(),
        Some("content-type")
    );
    assert_eq!(header(&r, ACCESS_CONTROL_MAX_AGE).as_deref(), Some("86400"));
    assert_eq!(header(&r, VARY).as_deref(), Some("Origin"));
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_CREDENTIALS), None);

    let r = post_from(&app, SITE, json!({"email": "site@news.example", "lists": ["daily"]})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(), Some(SITE));
    assert_eq!(header(&r, VARY).as_deref(), Some("Origin"));
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Thank you! We've sent you a confirmation email.");
    // An error is readable by the allowed page too, with its field.
    let r = post_from(&app, SITE, json!({"email": "site@", "lists": ["daily"]})).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(), Some(SITE));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "email");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Please enter a valid email address")
    );

    // Any other origin, or a look-alike, gets no CORS header at all (but still Vary).
    for other in [
        "https://evil.test",
        "https://news.example.evil.test",
        "http://news.example",
        "null",
    ] {
        let r = preflight(&app, other).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{other}");
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
        ] {
            assert_eq!(header(&r, name.clone()), None, "{other} {name}");
        }
        assert_eq!(header(&r, VARY).as_deref(), Some("Origin"));
        let r = post_from(&app, other, json!({"email": "other@news.example", "lists": ["daily"]})).await;
        assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), None, "{other}");
        assert_eq!(header(&r, VARY).as_deref(), Some("Origin"));
    }
    // No Origin (a server posting): as before, and still Vary.
    let r = app.signup_json("server@news.example", &["daily"]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), None);
    assert_eq!(header(&r, VARY).as_deref(), Some("Origin"));
    // Other public routes are not CORS-enabled.
    let r = app
        .client
        .get(app.url("/"))
        .header("origin", SITE)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, ACCESS_CONTROL_ALLOW_ORIGIN), None);

    let r = app.get("/embed.js").await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, reqwest::header::CONTENT_TYPE)
            .unwrap()
            .starts_with("text/javascript")
    );
    let script = r.text().await.unwrap();
    assert!(
        script.contains("form[data-bulletin]") && script.contains("fetch("),
        "{script}"
    );
}

async fn without_script_the_answer_links_back_to_an_allowed_article(backend: Backend) {
    let Some(app) = app_for_site(backend).await else {
        return;
    };
    let story = "https://news.example/2026/12/03/the-story?ref=box";
    let r = app
        .post_form(
            "/subscriptions",
            &[("email", "box@news.example"), ("lists", "daily"), ("return_to", story)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Thank you! We&#39;ve sent you a confirmation email."),
        "{html}"
    );
    assert!(
        html.contains(r#"href="https://news.example/2026/12/03/the-story?ref&#x3d;box">Back to the article"#)
            || html.contains(r#"href="https://news.example/2026/12/03/the-story?ref=box">Back to the article"#),
        "{html}"
    );

    // A bad address: the form again, with the message, the article kept for the next try.
    let r = app
        .post_form(
            "/subscriptions",
            &[("email", "box@"), ("lists", "daily"), ("return_to", story)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains("Please enter a valid email address"), "{html}");
    assert!(
        html.contains(r#"name="return_to""#) && html.contains("Back to the article"),
        "{html}"
    );

    // Anywhere else is ignored: no link, no redirect.
    for elsewhere in [
        "https://evil.test/phish",
        "https://news.example.evil.test/",
        "javascript:alert(1)",
        "//evil.test/x",
    ] {
        let r = app
            .post_form(
                "/subscriptions",
                &[
                    ("email", "box2@news.example"),
                    ("lists", "daily"),
                    ("return_to", elsewhere),
                ],
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{elsewhere}");
        assert!(r.headers().get("location").is_none());
        let html = r.text().await.unwrap();
        assert!(
            !html.contains("Back to the article") && !html.contains("evil"),
            "{elsewhere}: {html}"
        );
    }
}
