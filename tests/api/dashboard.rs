//! The dashboard's access rules: login, server-side sessions, CSRF, logout, token rotation, and
//! redirects to fixed paths only.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, Response};

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::on_both_backends;
use crate::support::app::{ADMIN_TOKEN, Backend, MAIL_WAIT, TestApp};
use crate::support::feed_server::FeedServer;
use crate::support::fixtures::{import_confirmed, push_items, rss};

on_both_backends!(
    the_dashboard_needs_a_session_opened_with_an_admin_token,
    an_operator_runs_a_newsletter_from_the_dashboard,
    a_digest_page_shows_failures_and_cancels,
    finished_days_are_counted_once,
    an_operator_finds_a_reader_and_acts_on_them,
    an_operator_imports_a_csv_from_the_dashboard,
    counts_stay_exact_through_every_change,
    the_last_day_is_read_from_finished_hours,
    today_is_read_from_its_finished_hours_and_minutes,
);

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
    // No inline code: the one script is a file of ours.
    assert!(!page.contains("<script>") && !page.contains(" style="));
    assert_eq!(
        page.matches("<script").count(),
        page.matches(r#"<script src="/static/"#).count()
    );

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

/// A session: its cookie and its CSRF token.
async fn signed_in(app: &TestApp) -> (String, String) {
    let cookie = session_cookie(&login(app, ADMIN_TOKEN).await);
    let csrf = csrf_of(&get_with(app, "/admin", &cookie).await.text().await.unwrap());
    (cookie, csrf)
}

/// A form posted with the session; the redirect it answers.
async fn submit(app: &TestApp, path: &str, cookie: &str, form: &[(&str, &str)]) -> String {
    let r = post_with(app, path, cookie, form).await;
    let status = r.status();
    let location = r.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
    assert_eq!(status, 303, "{path}: {}", r.text().await.unwrap());
    location.unwrap()
}

async fn page(app: &TestApp, path: &str, cookie: &str) -> String {
    let r = get_with(app, path, cookie).await;
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}

async fn api_json(app: &TestApp, path: &str) -> Value {
    app.admin(Method::GET, path).send().await.unwrap().json().await.unwrap()
}

/// Polls a digest's progress (as the page's script does) until `done` holds.
async fn progress_until(app: &TestApp, id: &str, cookie: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let r = get_with(app, &format!("/admin/digests/{id}/progress"), cookie).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let p: Value = r.json().await.unwrap();
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "progress never got there: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Create a list, add a feed, schedule it, preview, test, send through the confirmation step,
/// watch it finish: every step from the pages' forms, checked against the API.
async fn an_operator_runs_a_newsletter_from_the_dashboard(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (cookie, csrf) = signed_in(&app).await;

    // A list: not without the CSRF token, not with a bad slug, then made.
    let list_form = [
        ("slug", "weekly"),
        ("name", "Weekly Explainer"),
        ("description", "Why it matters"),
    ];
    assert_eq!(post_with(&app, "/admin/lists", &cookie, &list_form).await.status(), 403);
    let r = post_with(
        &app,
        "/admin/lists",
        &cookie,
        &[("csrf", &csrf), ("slug", "Not A Slug"), ("name", "X")],
    )
    .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Go back"));
    assert_eq!(
        api_json(&app, "/api/lists").await.as_array().unwrap().len(),
        0,
        "nothing was made"
    );
    let mut form = list_form.to_vec();
    form.push(("csrf", &csrf));
    assert_eq!(
        submit(&app, "/admin/lists", &cookie, &form).await,
        "/admin/lists/weekly?done=list_created"
    );
    let list_page = page(&app, "/admin/lists/weekly?done=list_created", &cookie).await;
    assert!(list_page.contains("Weekly Explainer") && list_page.contains("The list was created."));
    // A notice is one of a fixed set: anything else shows nothing.
    assert!(
        !page(&app, "/admin/lists/weekly?done=<b>hi</b>", &cookie)
            .await
            .contains("hi</b>")
    );

    // A feed, polled now.
    let feeds = FeedServer::start().await;
    feeds.set_custom(
        "application/rss+xml",
        rss(&[
            ("tram", "Council votes on the tram line"),
            ("floods", "Floods close the river road"),
        ]),
    );
    let url = feeds.url("/custom");
    assert_eq!(
        submit(
            &app,
            "/admin/lists/weekly/feeds",
            &cookie,
            &[("csrf", &csrf), ("url", &url), ("poll_interval", "1h")]
        )
        .await,
        "/admin/lists/weekly?done=feed_added"
    );
    let feed_id = api_json(&app, "/api/lists/weekly/feeds").await[0]["id"].to_string();
    assert_eq!(
        submit(
            &app,
            &format!("/admin/feeds/{feed_id}/poll"),
            &cookie,
            &[("csrf", &csrf)]
        )
        .await,
        "/admin/lists/weekly?done=feed_polled"
    );
    let list_page = page(&app, "/admin/lists/weekly", &cookie).await;
    assert!(list_page.contains(&url) && list_page.contains("2 items"), "{list_page}");
    assert!(list_page.contains("last poll "), "{list_page}");

    // A schedule with its next slots; a bad one is refused and changes nothing.
    assert_eq!(
        submit(
            &app,
            "/admin/lists/weekly/schedule",
            &cookie,
            &[
                ("csrf", &csrf),
                ("cron", "0 7 * * 1"),
                ("timezone", "Europe/London"),
                ("max_items", "10"),
                ("min_items", "")
            ]
        )
        .await,
        "/admin/lists/weekly?done=schedule_set"
    );
    let r = post_with(
        &app,
        "/admin/lists/weekly/schedule",
        &cookie,
        &[("csrf", &csrf), ("cron", "every tuesday")],
    )
    .await;
    assert_eq!(r.status(), 422);
    let schedule = api_json(&app, "/api/lists/weekly/schedule").await;
    assert_eq!(
        (schedule["cron"].as_str(), schedule["timezone"].as_str()),
        (Some("0 7 * * 1"), Some("Europe/London"))
    );
    let list_page = page(&app, "/admin/lists/weekly", &cookie).await;
    let slots = &list_page[list_page.find(r#"<ol class="slots">"#).unwrap()..];
    let slots = &slots[..slots.find("</ol>").unwrap()];
    assert_eq!(slots.matches("<li>Mon ").count(), 5, "{slots}");

    // The preview, framed by the list page alone.
    assert!(list_page.contains(r#"<iframe class="preview" src="/admin/lists/weekly/preview" sandbox="""#));
    let r = get_with(&app, "/admin/lists/weekly/preview", &cookie).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("frame-ancestors 'self'") && csp.contains("sandbox"),
        "{csp}"
    );
    assert!(r.text().await.unwrap().contains("Council votes on the tram line"));
    assert_eq!(
        get_with(&app, "/admin/lists/weekly", &cookie).await.headers()["x-frame-options"],
        "DENY"
    );

    // A test copy goes to one address; a bad address is refused.
    let r = post_with(
        &app,
        "/admin/lists/weekly/test",
        &cookie,
        &[("csrf", &csrf), ("to", "not an address")],
    )
    .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        submit(
            &app,
            "/admin/lists/weekly/test",
            &cookie,
            &[("csrf", &csrf), ("to", "editor@news.example")]
        )
        .await,
        "/admin/lists/weekly?done=test_queued"
    );
    let test = app
        .smtp
        .wait_for(|m| m.to() == ["editor@news.example"], MAIL_WAIT)
        .await;
    assert!(test.subject().unwrap().starts_with("[TEST]"));

    // Every state-changing form wants the session's CSRF token: without it, nothing changes.
    for path in [
        "/admin/lists".to_owned(),
        "/admin/lists/weekly/feeds".to_owned(),
        format!("/admin/feeds/{feed_id}/poll"),
        format!("/admin/feeds/{feed_id}/remove"),
        "/admin/lists/weekly/schedule".to_owned(),
        "/admin/lists/weekly/schedule/remove".to_owned(),
        "/admin/lists/weekly/test".to_owned(),
        "/admin/lists/weekly/send".to_owned(),
        "/admin/digests/1/cancel".to_owned(),
    ] {
        let r = post_with(
            &app,
            &path,
            &cookie,
            &[
                ("csrf", "0123456789abcdef0123456789abcdef"),
                ("to", "x@news.example"),
                ("url", "https://news.example/x.xml"),
                ("cron", "0 9 * * *"),
                ("key", "0123456789abcdef0123456789abcdef"),
                ("slug", "other"),
                ("name", "Other"),
            ],
        )
        .await;
        assert_eq!(r.status(), 403, "{path}");
    }
    assert_eq!(api_json(&app, "/api/lists").await.as_array().unwrap().len(), 1);
    assert_eq!(
        api_json(&app, "/api/lists/weekly/feeds")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api_json(&app, "/api/lists/weekly/schedule").await["cron"], "0 7 * * 1");
    assert_eq!(
        api_json(&app, "/api/lists/weekly/digests")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(app.smtp.count(), 1, "only the test copy");

    // Send now: a confirmation page that says what goes to whom, and changes nothing...
    let readers: Vec<String> = (0..3).map(|i| format!("reader{i}@news.example")).collect();
    import_confirmed(&app, "weekly", &readers).await;
    // The export, with the session.
    let r = get_with(&app, "/admin/lists/weekly/export.csv", &cookie).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("email,name,status,created_at,confirmed_at,unsubscribed_at,consent_at,consent_ip\n"));
    assert_eq!(csv.lines().filter(|l| l.contains(",confirmed,")).count(), 3, "{csv}");
    assert_eq!(
        get_with(&app, "/admin/lists/weekly/export.csv?status=bad", &cookie)
            .await
            .status(),
        422
    );
    assert_eq!(
        app.get("/admin/lists/weekly/export.csv").await.status(),
        303,
        "not without a session"
    );
    let confirm = page(&app, "/admin/lists/weekly/send", &cookie).await;
    assert!(confirm.contains("Send this digest now?"), "{confirm}");
    assert!(
        confirm.contains("<dt>Items</dt><dd>2</dd>") && confirm.contains("3 confirmed subscribers"),
        "{confirm}"
    );
    assert!(confirm.contains("Council votes on the tram line"));
    assert_eq!(
        api_json(&app, "/api/lists/weekly/digests")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let key_at = confirm.find(r#"name="key" value=""#).unwrap() + r#"name="key" value=""#.len();
    let key = confirm[key_at..key_at + 32].to_owned();
    // ...and one digest however often it is submitted (a double click).
    let form = [("csrf", csrf.as_str()), ("key", key.as_str())];
    let (first, second) = tokio::join!(
        submit(&app, "/admin/lists/weekly/send", &cookie, &form),
        submit(&app, "/admin/lists/weekly/send", &cookie, &form)
    );
    assert_eq!(first, second);
    let digests = api_json(&app, "/api/lists/weekly/digests").await;
    assert_eq!(digests.as_array().unwrap().len(), 1, "{digests}");
    let id = digests[0]["id"].to_string();
    assert_eq!(first, format!("/admin/digests/{id}"));

    // The digest page and its progress, until done.
    let digest_page = page(&app, &first, &cookie).await;
    assert!(digest_page.contains(&format!(r#"data-progress="/admin/digests/{id}/progress""#)));
    assert!(digest_page.contains("Floods close the river road"));
    let done = progress_until(&app, &id, &cookie, |p| p["status"] == "done").await;
    assert_eq!(
        (
            done["sent"].as_i64(),
            done["pending"].as_i64(),
            done["percent"].as_i64()
        ),
        (Some(3), Some(0), Some(100)),
        "{done}"
    );
    assert_eq!(done["active"], false);
    app.smtp.wait_for_count(4, MAIL_WAIT).await;
    let digest_page = page(&app, &first, &cookie).await;
    assert!(
        !digest_page.contains("Cancel this digest"),
        "a finished digest has nothing to cancel"
    );

    // The overview: the list's counts, its next digest, and the charts with their tables.
    let overview = page(&app, "/admin", &cookie).await;
    assert!(
        overview.contains(r#"<a href="/admin/lists/weekly">Weekly Explainer</a>"#),
        "{overview}"
    );
    assert!(overview.contains("<td>3</td>"), "three confirmed: {overview}");
    assert!(
        overview.contains("<td>Mon ") && !overview.contains("not scheduled"),
        "the next digest: {overview}"
    );
    assert_eq!(overview.matches(r#"<svg class="chart""#).count(), 2);
    assert!(
        overview.contains("confirmed: 3") && overview.contains("sent: 4"),
        "{overview}"
    );
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(
        overview.contains(&format!("<tr><th scope=\"row\">{today}</th><td>3</td><td>0</td></tr>")),
        "{overview}"
    );
    assert!(overview.contains("<strong>0</strong> digest messages"), "{overview}");
    // A second view reads the finished days from their stored counts: the same figures.
    assert_eq!(page(&app, "/admin", &cookie).await.matches("confirmed: 3").count(), 1);

    // Removing the feed and the schedule.
    assert_eq!(
        submit(
            &app,
            &format!("/admin/feeds/{feed_id}/remove"),
            &cookie,
            &[("csrf", &csrf)]
        )
        .await,
        "/admin/lists/weekly?done=feed_removed"
    );
    assert_eq!(
        api_json(&app, "/api/lists/weekly/feeds")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        submit(&app, "/admin/lists/weekly/schedule/remove", &cookie, &[("csrf", &csrf)]).await,
        "/admin/lists/weekly?done=schedule_removed"
    );
    assert!(
        page(&app, "/admin/lists/weekly", &cookie)
            .await
            .contains("Not scheduled")
    );
}

/// A finished day's figures are stored the first time a chart shows them, and read from there.
async fn finished_days_are_counted_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let app = &app;
    app.create_list("daily", "Daily Briefing").await;
    import_confirmed(app, "daily", &["early@news.example".to_owned()]).await;
    app.sql_exec_with(
        "UPDATE subscriptions SET confirmed_at = $1 WHERE consent_note <> $2",
        chrono::Utc::now() - chrono::TimeDelta::days(2),
        "",
    )
    .await;
    let (cookie, _) = signed_in(app).await;
    let day = (chrono::Utc::now() - chrono::TimeDelta::days(2)).date_naive();
    let row = format!("<tr><th scope=\"row\">{day}</th><td>1</td><td>0</td></tr>");
    assert!(page(app, "/admin", &cookie).await.contains(&row));
    app.sql_exec("DELETE FROM subscriptions").await;
    let overview = page(app, "/admin", &cookie).await;
    assert!(overview.contains(&row), "the stored count: {overview}");
    assert!(overview.contains("<td>0</td>"), "the live counts moved");
}

/// A digest that meets a bounce and a slow reader: the failure with the server's answer, then
/// a cancel through its confirmation step.
async fn a_digest_page_shows_failures_and_cancels(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers = ["fine@news.example", "bounce@news.example", "later@news.example"].map(String::from);
    import_confirmed(&app, "daily", &readers).await;
    push_items(&app, "daily", &[("a", "Morning news", 5)]).await;
    app.smtp.reject_rcpt("bounce@news.example", 550, None);
    // A temporary failure: the delivery waits for its retry, so the digest stays unfinished.
    app.smtp.reject_rcpt("later@news.example", 451, None);
    let (cookie, csrf) = signed_in(&app).await;
    let confirm = page(&app, "/admin/lists/daily/send", &cookie).await;
    let key_at = confirm.find(r#"name="key" value=""#).unwrap() + r#"name="key" value=""#.len();
    let location = submit(
        &app,
        "/admin/lists/daily/send",
        &cookie,
        &[("csrf", &csrf), ("key", &confirm[key_at..key_at + 32])],
    )
    .await;
    let id = location.rsplit('/').next().unwrap().to_owned();

    let p = progress_until(&app, &id, &cookie, |p| p["sent"] == 1 && p["failed"] == 1).await;
    assert_eq!(
        (p["pending"].as_i64(), p["active"].as_bool()),
        (Some(1), Some(true)),
        "{p}"
    );
    let digest_page = page(&app, &location, &cookie).await;
    let failed = &digest_page[digest_page.find("Failed recipients").unwrap()..];
    assert!(
        failed.contains("bounce@news.example") && failed.contains("550"),
        "{failed}"
    );
    assert!(!failed.contains("later@news.example"), "a retry is not a failure");
    assert!(digest_page.contains(&format!(r#"href="/admin/digests/{id}/cancel""#)));

    // Cancel: a confirmation that changes nothing, then the cancel itself.
    let confirm = page(&app, &format!("/admin/digests/{id}/cancel"), &cookie).await;
    assert!(
        confirm.contains("Cancel this digest?") && confirm.contains("1 still waiting"),
        "{confirm}"
    );
    assert_eq!(api_json(&app, &format!("/api/digests/{id}")).await["status"], "sending");
    assert_eq!(
        submit(
            &app,
            &format!("/admin/digests/{id}/cancel"),
            &cookie,
            &[("csrf", &csrf)]
        )
        .await,
        format!("/admin/digests/{id}?done=cancelled")
    );
    let p = progress_until(&app, &id, &cookie, |p| p["status"] == "cancelled").await;
    assert_eq!(
        (p["pending"].as_i64(), p["active"].as_bool()),
        (Some(0), Some(false)),
        "{p}"
    );
    // Cancelling again changes nothing.
    submit(
        &app,
        &format!("/admin/digests/{id}/cancel"),
        &cookie,
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(
        api_json(&app, &format!("/api/digests/{id}")).await["status"],
        "cancelled"
    );
    let r = get_with(&app, "/static/admin.js", "").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(get_with(&app, "/admin/digests/999999", &cookie).await.status(), 404);
}

/// The addresses a results page links to, in order.
fn found(page: &str) -> Vec<String> {
    page.split(r#"<a href="/admin/subscribers/"#)
        .skip(1)
        .filter_map(|rest| Some(rest.split_once("\">")?.1.split_once("</a>")?.0.to_owned()))
        .collect()
}

/// Search by prefix and by domain, with filters and pages; one reader's page with their
/// consent and deliveries; unsubscribe and suppress, each through a confirmation and CSRF.
async fn an_operator_finds_a_reader_and_acts_on_them(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let mut daily: Vec<String> = (0..60).map(|i| format!("reader{i:02}@news.example")).collect();
    daily.push("Ann.Lee@Example.org".to_owned()); // stored as Ann.Lee@example.org
    daily.push("annabel@other.example".to_owned());
    import_confirmed(&app, "daily", &daily).await;
    import_confirmed(&app, "weekly", &["ann.lee@example.org".to_owned()]).await;
    assert_eq!(app.signup_json("pending@example.org", &["weekly"]).await.status(), 202);
    let (cookie, csrf) = signed_in(&app).await;

    // A prefix of the address, whatever its case; a domain with '@'.
    let page_of = |q: &str| format!("/admin/subscribers?q={}", q.replace('@', "%40"));
    assert_eq!(
        found(&page(&app, &page_of("ANN"), &cookie).await),
        ["Ann.Lee@example.org", "annabel@other.example"]
    );
    assert_eq!(
        found(&page(&app, &page_of("ann."), &cookie).await),
        ["Ann.Lee@example.org"]
    );
    let at_domain = found(&page(&app, &page_of("@example.org"), &cookie).await);
    assert_eq!(
        at_domain,
        ["pending@example.org", "Ann.Lee@example.org"],
        "newest first"
    );
    assert!(
        found(&page(&app, &page_of("@example"), &cookie).await).is_empty(),
        "a domain is matched whole"
    );
    // Filters by list and status.
    let weekly_pending = page(&app, "/admin/subscribers?list=weekly&status=pending", &cookie).await;
    assert_eq!(found(&weekly_pending), ["pending@example.org"]);
    let filtered = page(
        &app,
        &format!("{}&list=weekly&status=confirmed", page_of("@example.org")),
        &cookie,
    )
    .await;
    assert_eq!(found(&filtered), ["Ann.Lee@example.org"]);
    assert!(
        filtered.contains("daily: confirmed") && filtered.contains("weekly: confirmed"),
        "{filtered}"
    );
    assert_eq!(
        get_with(&app, "/admin/subscribers?status=gone", &cookie).await.status(),
        422
    );
    // Pages of 50, each after the last of the one before, until all are seen.
    let mut seen = Vec::new();
    let mut next = Some(page_of("reader"));
    while let Some(path) = next {
        assert!(seen.len() <= 60, "the pages never end: {path}");
        let body = page(&app, &path, &cookie).await;
        seen.extend(found(&body));
        next = body
            .split_once(r#"<a class="button quiet" href=""#)
            .map(|(_, rest)| rest.split_once('"').unwrap().0.replace("&#38;", "&"));
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(seen, daily[..60], "in address order, each once");

    // One reader's page: both subscriptions with their consent, and what was sent to them.
    let id = app
        .sql_strings("SELECT CAST(id AS TEXT) FROM subscribers WHERE email_key = 'ann.lee@example.org'")
        .await[0]
        .clone();
    push_items(&app, "weekly", &[("a", "Morning news", 5)]).await;
    let r = app
        .admin(Method::POST, "/api/lists/weekly/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.smtp
        .wait_for(|m| m.to() == ["Ann.Lee@example.org"], MAIL_WAIT)
        .await;
    let reader = format!("/admin/subscribers/{id}");
    let deadline = Instant::now() + MAIL_WAIT;
    let body = loop {
        let body = page(&app, &reader, &cookie).await;
        if body.contains(r#"<span class="status status-sent">sent</span>"#) || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("Daily Briefing") && body.contains("Weekly Explainer"),
        "{body}"
    );
    assert!(body.contains("test fixture"), "the consent record: {body}");
    assert!(
        body.contains("Weekly Explainer —") && body.contains("status-sent"),
        "the digest delivery: {body}"
    );

    // Unsubscribe from one list: a confirmation that changes nothing, then CSRF, then done.
    let confirm = page(&app, &format!("{reader}/unsubscribe?list=weekly"), &cookie).await;
    assert!(
        confirm.contains("Unsubscribe Ann.Lee@example.org from Weekly Explainer?"),
        "{confirm}"
    );
    let status_of = |list: &'static str| {
        let app = &app;
        async move {
            app.subscribers(list)
                .await
                .into_iter()
                .find(|(e, _)| e.eq_ignore_ascii_case("ann.lee@example.org"))
                .map(|(_, s)| s)
        }
    };
    assert_eq!(status_of("weekly").await.as_deref(), Some("confirmed"));
    let no_csrf = post_with(&app, &format!("{reader}/unsubscribe"), &cookie, &[("list", "weekly")]).await;
    assert_eq!(no_csrf.status(), 403);
    assert_eq!(status_of("weekly").await.as_deref(), Some("confirmed"));
    assert_eq!(
        submit(
            &app,
            &format!("{reader}/unsubscribe"),
            &cookie,
            &[("csrf", &csrf), ("list", "weekly")]
        )
        .await,
        format!("{reader}?done=unsubscribed")
    );
    assert_eq!(status_of("weekly").await.as_deref(), Some("unsubscribed"));
    assert_eq!(
        status_of("daily").await.as_deref(),
        Some("confirmed"),
        "the other list stays"
    );

    // Suppress: the same steps; the API then sees the suppression.
    assert!(
        page(&app, &format!("{reader}/suppress"), &cookie)
            .await
            .contains("Suppress Ann.Lee@example.org?")
    );
    assert_eq!(
        post_with(&app, &format!("{reader}/suppress"), &cookie, &[])
            .await
            .status(),
        403
    );
    assert_eq!(
        app.admin(Method::GET, "/api/suppressions/ann.lee@example.org")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        submit(&app, &format!("{reader}/suppress"), &cookie, &[("csrf", &csrf)]).await,
        format!("{reader}?done=suppressed")
    );
    let suppression = api_json(&app, "/api/suppressions/ann.lee@example.org").await;
    assert_eq!(suppression["reason"], "manual", "{suppression}");
    assert!(page(&app, &reader, &cookie).await.contains("Suppressed since"));
    assert_eq!(get_with(&app, "/admin/subscribers/999999", &cookie).await.status(), 404);
    assert_eq!(get_with(&app, &format!("{reader}/delete"), &cookie).await.status(), 404);
}

/// The import form, as a browser sends it (multipart, the file last).
async fn upload(app: &TestApp, cookie: &str, csrf: &str, csv: &str, extra: &[(&str, &str)]) -> Response {
    let mut form = reqwest::multipart::Form::new().text("csrf", csrf.to_owned());
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    let file = reqwest::multipart::Part::bytes(csv.as_bytes().to_vec())
        .file_name("readers.csv")
        .mime_str("text/csv")
        .unwrap();
    app.client
        .post(app.url("/admin/import"))
        .header("cookie", cookie)
        .multipart(form.part("file", file))
        .send()
        .await
        .unwrap()
}

/// A file with an error imports nothing and shows the line; with "skip invalid rows" the rest
/// goes in. Without the CSRF token, nothing is read.
async fn an_operator_imports_a_csv_from_the_dashboard(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let (cookie, csrf) = signed_in(&app).await;
    let form = page(&app, "/admin/import", &cookie).await;
    assert!(form.contains(r#"enctype="multipart/form-data""#) && form.contains("Daily Briefing"));
    let csv = "email,name\nann@news.example,Ann\nnot-an-address,Bob\ncarl@news.example,Carl\n";
    let confirmed = [("list", "daily"), ("mode", "confirmed"), ("consent", "Book fair 2026")];

    assert_eq!(
        upload(&app, &cookie, "0123456789abcdef0123456789abcdef", csv, &confirmed)
            .await
            .status(),
        403
    );
    let r = upload(&app, &cookie, &csrf, csv, &confirmed).await;
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("nothing was imported"), "{body}");
    assert!(
        body.contains(r#"<tr><th scope="row">3</th>"#),
        "the bad row's line: {body}"
    );
    assert!(body.contains("Book fair 2026"), "the form comes back as it was");
    assert!(app.subscribers("daily").await.is_empty());

    // A confirmed import needs its consent record.
    let r = upload(&app, &cookie, &csrf, csv, &[("list", "daily"), ("mode", "confirmed")]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("consent"));

    let mut skipping = confirmed.to_vec();
    skipping.push(("skip_invalid", "on"));
    let r = upload(&app, &cookie, &csrf, csv, &skipping).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("Imported 2 of 3 rows into Daily Briefing"), "{body}");
    assert!(body.contains(r#"<tr><th scope="row">3</th>"#), "still reported: {body}");
    let mut readers = app.subscribers("daily").await;
    readers.sort();
    assert_eq!(
        readers,
        [
            ("ann@news.example".to_owned(), "confirmed".to_owned()),
            ("carl@news.example".to_owned(), "confirmed".to_owned())
        ]
    );

    // With double opt-in, each new address gets a confirmation email.
    let r = upload(
        &app,
        &cookie,
        &csrf,
        "email\ndora@news.example\n",
        &[("list", "daily"), ("mode", "opt_in")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let mail = app.smtp.wait_for(|m| m.to() == ["dora@news.example"], MAIL_WAIT).await;
    assert!(
        mail.text_body().contains("/subscriptions/confirm"),
        "a confirmation email"
    );
}

/// The counts as the API gives them, and as a full count of the rows gives them.
async fn counts_both_ways(app: &TestApp) -> (String, String) {
    let lists = api_json(app, "/api/lists").await;
    let c = &lists[0]["counts"];
    let api = format!("{}/{}/{}", c["pending"], c["confirmed"], c["unsubscribed"]);
    let full = app
        .sql_strings(
            "SELECT CAST(COUNT(*) FILTER (WHERE status = 'pending') AS TEXT) || '/' ||
                    CAST(COUNT(*) FILTER (WHERE status = 'confirmed') AS TEXT) || '/' ||
                    CAST(COUNT(*) FILTER (WHERE status = 'unsubscribed') AS TEXT) FROM subscriptions",
        )
        .await
        .remove(0);
    (api, full)
}

/// The counts are the hour's stored start plus what changed since: through signups, imports,
/// confirmations, unsubscribes, signing up again and the purge, they equal a full count.
async fn counts_stay_exact_through_every_change(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    import_confirmed(
        &app,
        "daily",
        &["x@news.example".to_owned(), "y@news.example".to_owned()],
    )
    .await;
    for email in ["a@news.example", "b@news.example", "old@news.example"] {
        assert_eq!(app.signup_json(email, &["daily"]).await.status(), 202);
    }
    // As if all this happened long ago: this hour's start is then what the rows hold now.
    app.sql_exec_with(
        "UPDATE subscriptions SET changed_at = $1, consent_at = $1 WHERE $2 = ''",
        chrono::Utc::now() - chrono::TimeDelta::days(40),
        "",
    )
    .await;
    let (api, full) = counts_both_ways(&app).await;
    assert_eq!((api.as_str(), full.as_str()), ("3/2/0", "3/2/0"));

    // Today: a confirmation, an unsubscribe, an unsubscribed reader signing up again, a new
    // signup, and the purge of a signup never confirmed.
    let id_of = |email: &'static str| {
        let app = &app;
        async move {
            app.sql_strings(match email {
                "a" => "SELECT CAST(s.id AS TEXT) FROM subscriptions s JOIN subscribers r ON r.id = s.subscriber_id WHERE r.email_key = 'a@news.example'",
                _ => "SELECT CAST(s.id AS TEXT) FROM subscriptions s JOIN subscribers r ON r.id = s.subscriber_id WHERE r.email_key = 'x@news.example'",
            })
            .await[0]
                .parse::<i64>()
                .unwrap()
        }
    };
    app.store.unsubscribe(id_of("x").await).await.unwrap();
    assert_eq!(counts_both_ways(&app).await.0, "3/1/1");
    assert_eq!(app.signup_json("x@news.example", &["daily"]).await.status(), 202);
    assert_eq!(app.signup_json("new@news.example", &["daily"]).await.status(), 202);
    let (api, full) = counts_both_ways(&app).await;
    assert_eq!((api.as_str(), full.as_str()), ("5/1/0", "5/1/0"));
    app.store.unsubscribe(id_of("a").await).await.unwrap();
    app.store.unsubscribe(id_of("a").await).await.unwrap();
    let (api, full) = counts_both_ways(&app).await;
    assert_eq!(api, full, "unsubscribing twice counts once");
    // The purge takes the signups older than 30 days that were never confirmed (b and old).
    let purged = app.store.purge_unconfirmed(chrono::TimeDelta::days(30)).await.unwrap();
    assert_eq!(purged, 2);
    let (api, full) = counts_both_ways(&app).await;
    assert_eq!((api.as_str(), full.as_str()), ("2/1/1", "2/1/1"));
    // The hour's start is stored once, a row per list (not in an hour's first minute, when the
    // counts are full counts).
    if chrono::Timelike::minute(&chrono::Utc::now()) >= 2 {
        assert_eq!(app.sql_strings("SELECT hour_start FROM count_snapshots").await.len(), 1);
    }
}

/// The overview's "last 24 hours": the finished hours are counted once and kept, the two ends of
/// the window live, and the sum equals a count over the whole window, before and after the cache.
async fn the_last_day_is_read_from_finished_hours(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..8).map(|n| format!("hour{n}@news.example")).collect();
    import_confirmed(&app, "daily", &readers).await;
    let now = chrono::Utc::now();
    // Consents 20 minutes to 25 hours ago (the last two outside the window); two unsubscribes.
    for (n, minutes) in [20, 95, 180, 600, 1_000, 1_430, 1_450, 1_500].into_iter().enumerate() {
        app.sql_exec_with(
            "UPDATE subscriptions SET consent_at = $1
             WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2)",
            now - chrono::TimeDelta::minutes(minutes),
            &readers[n],
        )
        .await;
    }
    for (n, minutes) in [(1, 30), (3, 1_460)] {
        app.sql_exec_with(
            "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $1
             WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2)",
            now - chrono::TimeDelta::minutes(minutes),
            &readers[n],
        )
        .await;
    }
    let list = app.sql_strings("SELECT CAST(id AS TEXT) FROM lists").await[0]
        .parse::<i64>()
        .unwrap();
    let expected = bulletin::store::ListActivity {
        signups: 6,
        unsubscribes: 1,
    };
    let first = app.store.last_day_activity(now).await.unwrap();
    assert_eq!(first.get(&list).copied(), Some(expected), "counted");
    let hours = app
        .sql_strings("SELECT day FROM daily_stats WHERE scope = 'hour' AND day NOT LIKE '%|%'")
        .await;
    assert!(
        (22..=24).contains(&hours.len()),
        "the finished hours are kept: {hours:?}"
    );
    let again = app.store.last_day_activity(now).await.unwrap();
    assert_eq!(again.get(&list).copied(), Some(expected), "from the kept hours");
    // An hour later, the oldest consent in the window has left it.
    let later = app
        .store
        .last_day_activity(now + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(
        later.get(&list).copied(),
        Some(bulletin::store::ListActivity {
            signups: 5,
            unsubscribes: 1
        })
    );
}

/// Today's figure of a chart: its finished hours counted once and kept, and so are the settled
/// minutes of the hour still open; only the last minute or two is live, so a busy day (a digest
/// to a million) does not make every view count the whole day, or the whole hour, again.
async fn today_is_read_from_its_finished_hours_and_minutes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let readers: Vec<String> = (0..4).map(|n| format!("today{n}@news.example")).collect();
    import_confirmed(&app, "daily", &readers).await;
    let day = chrono::Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let now = day + chrono::TimeDelta::minutes(20 * 60 + 30);
    let confirmed_at = async |reader: &String, at: Option<chrono::DateTime<chrono::Utc>>| match at {
        Some(at) => {
            app.sql_exec_with(
                "UPDATE subscriptions SET confirmed_at = $1
                 WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2)",
                at,
                reader,
            )
            .await
        }
        None => {
            app.sql_exec_with(
                "UPDATE subscriptions SET confirmed_at = NULL
                 WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = $2) AND $1 = $1",
                now,
                reader,
            )
            .await
        }
    };
    // Confirmed 15 minutes (in the live hour), 2 and 5 hours (finished hours of today) and 22
    // hours (the day before) before `now`.
    for (reader, minutes) in readers.iter().zip([15, 120, 300, 22 * 60]) {
        confirmed_at(reader, Some(now - chrono::TimeDelta::minutes(minutes))).await;
    }
    let list = app.sql_strings("SELECT CAST(id AS TEXT) FROM lists").await[0]
        .parse::<i64>()
        .unwrap();
    let figures = |days: Vec<bulletin::store::DayFigures>| days.iter().map(|d| d.a).collect::<Vec<_>>();
    let first = app.store.subscription_days(list, 2, now).await.unwrap();
    assert_eq!(figures(first), vec![1, 3], "the day before, then today");
    let hours: Vec<String> = app
        .sql_strings("SELECT day FROM daily_stats WHERE scope LIKE 'list:%@hour'")
        .await;
    assert_eq!(hours.len(), 20, "today's finished hours (00 to 19) are kept: {hours:?}");
    // A finished hour is read from what was kept; the live hours from the rows.
    confirmed_at(&readers[2], None).await;
    // The live hour's settled minutes (20:00 to 20:29) were kept as a running total too.
    let running = app
        .sql_strings("SELECT day FROM daily_stats WHERE scope LIKE 'list:%@minutes' AND day NOT LIKE '%|%'")
        .await;
    assert_eq!(running.len(), 1, "{running:?}");
    assert!(
        running[0].contains("T20:00..") && running[0].ends_with("T20:29"),
        "{running:?}"
    );
    confirmed_at(&readers[0], None).await;
    confirmed_at(&readers[3], Some(now - chrono::TimeDelta::seconds(30))).await;
    let again = app.store.subscription_days(list, 2, now).await.unwrap();
    assert_eq!(
        figures(again),
        vec![1, 4],
        "the kept day, hours and minutes, and the last minute counted again"
    );
}
