//! The dashboard's access rules: login, server-side sessions, CSRF, logout, token rotation, and
//! redirects to fixed paths only.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, Response};

use crate::on_both_backends;
use crate::support::app::{ADMIN_TOKEN, Backend, TestApp};

on_both_backends!(the_dashboard_needs_a_session_opened_with_an_admin_token);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'";

async fn login(app: &TestApp, token: &str) -> Response {
    app.post_form(
        "/admin/login?next=https://evil.example/",
        &[("token", token), ("next", "https://evil.example/")],
    )
    .await
}

/// The cookie a login set, as `name=value`.
fn session_cookie(r: &Response) -> String {
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn get_with(app: &TestApp, path: &str, cookie: &str) -> Response {
    app.client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn post_with(app: &TestApp, path: &str, cookie: &str, form: &[(&str, &str)]) -> Response {
    app.client
        .request(Method::POST, app.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
    page[at..at + 32].to_owned()
}

async fn the_dashboard_needs_a_session_opened_with_an_admin_token(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    // Without a session, every /admin page sends to the login, and only there.
    for path in [
        "/admin",
        "/admin/lists/daily",
        "/admin/digests/1/progress",
        "/admin/anything?next=//evil.example",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()[LOCATION], "/admin/login", "{path}");
    }
    let r = app.get("/admin/login?next=https://evil.example/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-security-policy"], CSP);
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<form method="post" action="/admin/login">"#), "{page}");
    assert!(!page.contains("<script") && !page.contains(" style="));

    // A wrong token: the form again, with a message, and no session.
    let r = login(&app, "not-the-token").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("That is not an admin token"));
    assert_eq!(login(&app, "").await.status(), 401);

    // The right one: a session cookie, and a redirect to /admin whatever the request asked.
    let r = login(&app, ADMIN_TOKEN).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/admin");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "the test app is plain http: {set}");
    let cookie = session_cookie(&r);
    let id = cookie.split_once('=').unwrap().1.to_owned();
    assert_eq!(id.len(), 64, "256 random bits");
    // Stored hashed: the id itself is nowhere in the database.
    let stored = app.sql_strings("SELECT id_hash FROM admin_sessions").await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], id);

    let r = get_with(&app, "/admin", &cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-security-policy"], CSP);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let page = r.text().await.unwrap();
    assert!(page.contains("Daily Briefing"), "{page}");
    let csrf = csrf_of(&page);
    assert_eq!(get_with(&app, "/admin/nothing-here", &cookie).await.status(), 404);

    // Every login is a new session id (no fixation).
    let second = session_cookie(&login(&app, ADMIN_TOKEN).await);
    assert_ne!(second, cookie);

    // Logout needs the session's CSRF token; without it, or with another, nothing changes.
    assert_eq!(post_with(&app, "/admin/logout", &cookie, &[]).await.status(), 403);
    assert_eq!(
        post_with(&app, "/admin/logout", &cookie, &[("csrf", &"0".repeat(32))])
            .await
            .status(),
        403
    );
    let other_csrf = csrf_of(&get_with(&app, "/admin", &second).await.text().await.unwrap());
    assert_ne!(other_csrf, csrf);
    assert_eq!(
        post_with(&app, "/admin/logout", &cookie, &[("csrf", &other_csrf)])
            .await
            .status(),
        403
    );
    assert_eq!(get_with(&app, "/admin", &cookie).await.status(), 200, "still signed in");
    let r = post_with(&app, "/admin/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/admin/login");
    let r = get_with(&app, "/admin", &cookie).await;
    assert_eq!(
        (r.status().as_u16(), r.headers()[LOCATION].to_str().unwrap()),
        (303, "/admin/login")
    );
    assert_eq!(
        get_with(&app, "/admin", &second).await.status(),
        200,
        "the other session stays"
    );

    // Rotating the admin token ends the sessions opened with the removed one.
    app.restart_with(&[("BULLETIN_ADMIN_TOKEN", "a-new-admin-token-9876543210")])
        .await;
    let r = get_with(&app, "/admin", &second).await;
    assert_eq!(r.status(), 303);
    let fresh = session_cookie(&login(&app, "a-new-admin-token-9876543210").await);
    assert_eq!(get_with(&app, "/admin", &fresh).await.status(), 200);
}

/// With an https public URL, the session cookie is `Secure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_over_https() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, &[("BULLETIN_PUBLIC_URL", "https://news.example")]).await
    else {
        return;
    };
    let r = login(&app, ADMIN_TOKEN).await;
    assert_eq!(r.status(), 303);
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("; Secure"));
}
