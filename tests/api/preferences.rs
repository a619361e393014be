//! The preference centre: every list with the reader's status, join (at once when the address is
//! proven, else by double opt-in), leave, leave all; forms bound to their token; links emailed on
//! request without saying whether an address is known.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::on_both_backends;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};
use crate::support::fixtures::signup_and_confirm;
use crate::support::smtp::Received;

on_both_backends!(
    the_preference_centre_joins_and_leaves,
    forms_are_bound_to_their_token,
    joining_without_a_proven_address_starts_a_double_opt_in,
    preference_links_by_email_reveal_nothing_and_are_capped,
    every_digest_carries_a_working_preferences_link,
    a_reader_gets_their_data_by_email_once_a_day,
    delete_everything_works_only_from_the_emailed_link,
);

async fn mail_to(app: &TestApp, to: &str, subject_part: &str) -> Received {
    app.smtp
        .wait_for(
            |m| m.to().iter().any(|t| t == to) && m.subject().is_some_and(|s| s.contains(subject_part)),
            MAIL_WAIT,
        )
        .await
}

/// The "Manage your newsletters" link of the welcome email to `to`.
async fn preferences_link(app: &TestApp, to: &str) -> String {
    let welcome = mail_to(app, to, "Welcome").await;
    let link = find_link(&welcome.text_body(), &app.url("/preferences?token=")).expect("a preferences link");
    assert!(
        welcome.html_body().contains("Manage your newsletters"),
        "{}",
        welcome.raw_str()
    );
    link
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in {html}")) + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

struct Page {
    token: String,
    csrf: String,
    html: String,
}

async fn open(app: &TestApp, link: &str) -> Page {
    let r = app.client.get(link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    Page {
        token: hidden(&html, "token"),
        csrf: hidden(&html, "csrf"),
        html,
    }
}

/// Posts a form of the page and follows its `303` back to the page.
async fn act(app: &TestApp, page: &Page, action: &str, list: &str) -> reqwest::Response {
    let r = app
        .client
        .post(app.url("/preferences"))
        .form(&[
            ("token", page.token.as_str()),
            ("csrf", page.csrf.as_str()),
            ("action", action),
            ("list", list),
        ])
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::SEE_OTHER {
        return r;
    }
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    app.client.get(app.url(&back)).send().await.unwrap()
}

async fn status_of(app: &TestApp, list: &str, email: &str) -> Option<String> {
    app.subscribers(list)
        .await
        .into_iter()
        .find(|(e, _)| e == email)
        .map(|(_, s)| s)
}

async fn the_preference_centre_joins_and_leaves(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    app.create_list("breaking", "Breaking News").await;
    signup_and_confirm(&app, "prefs@news.example", &["daily"]).await;
    let link = preferences_link(&app, "prefs@news.example").await;

    let page = open(&app, &link).await;
    for name in ["Daily Briefing", "Weekly Explainer", "Breaking News"] {
        assert!(page.html.contains(name), "{}", page.html);
    }
    assert!(page.html.contains(r#"data-status="daily">Subscribed"#), "{}", page.html);
    assert!(
        page.html.contains(r#"data-status="weekly">Not subscribed"#),
        "{}",
        page.html
    );
    assert!(
        page.html.contains("p•••@news.example") && !page.html.contains("prefs@"),
        "the address is masked"
    );
    assert_eq!(
        status_of(&app, "weekly", "prefs@news.example").await,
        None,
        "GET changes nothing"
    );

    // Join: the address is proven on another list, so at once, with its consent recorded.
    let r = app
        .client
        .post(app.url("/preferences"))
        .form(&[
            ("token", page.token.as_str()),
            ("csrf", page.csrf.as_str()),
            ("action", "join"),
            ("list", "weekly"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        back.starts_with("/preferences?token=") && back.contains("done=joined"),
        "{back}"
    );
    assert_eq!(
        status_of(&app, "weekly", "prefs@news.example").await.as_deref(),
        Some("confirmed")
    );
    let consent = app
        .sql_strings(
            "SELECT s.consent_page || ' ' || s.consent_ip || ' ' || CAST(s.confirmed_at IS NOT NULL AS TEXT)
             FROM subscriptions s JOIN lists l ON l.id = s.list_id WHERE l.slug = 'weekly'",
        )
        .await;
    assert!(consent[0].starts_with("preference centre 127.0.0.1 "), "{consent:?}");
    mail_to(&app, "prefs@news.example", "Welcome to Weekly Explainer").await;
    let html = app
        .client
        .get(app.url(&back))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("joined Weekly Explainer."), "{html}");
    assert!(html.contains(r#"data-status="weekly">Subscribed"#), "{html}");

    // Leave one, then all.
    let r = act(&app, &page, "leave", "daily").await;
    assert_eq!(r.status(), 200, "followed back to the page");
    assert!(r.text().await.unwrap().contains("left Daily Briefing."));
    assert_eq!(
        status_of(&app, "daily", "prefs@news.example").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(
        status_of(&app, "weekly", "prefs@news.example").await.as_deref(),
        Some("confirmed")
    );
    let r = act(&app, &page, "leave_all", "").await;
    assert!(r.text().await.unwrap().contains("left every newsletter."));
    for list in ["daily", "weekly"] {
        assert_eq!(
            status_of(&app, list, "prefs@news.example").await.as_deref(),
            Some("unsubscribed"),
            "{list}"
        );
    }
    // Joining again after leaving: the address is confirmed nowhere now, so a double opt-in.
    let r = act(&app, &page, "join", "breaking").await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("sent you an email to confirm Breaking News.")
    );
    assert_eq!(
        status_of(&app, "breaking", "prefs@news.example").await.as_deref(),
        Some("pending")
    );

    let r = act(&app, &page, "join", "nonexistent").await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn forms_are_bound_to_their_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    signup_and_confirm(&app, "one@news.example", &["daily"]).await;
    signup_and_confirm(&app, "two@news.example", &["daily"]).await;
    let one = open(&app, &preferences_link(&app, "one@news.example").await).await;
    let two = open(&app, &preferences_link(&app, "two@news.example").await).await;
    assert_ne!(one.csrf, two.csrf);

    for (csrf, why) in [
        ("", "missing"),
        ("nonsense", "wrong"),
        (two.csrf.as_str(), "another reader's"),
    ] {
        let forged = Page {
            token: one.token.clone(),
            csrf: csrf.to_owned(),
            html: String::new(),
        };
        let r = act(&app, &forged, "leave", "daily").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{why} csrf");
    }
    assert_eq!(
        status_of(&app, "daily", "one@news.example").await.as_deref(),
        Some("confirmed")
    );

    // A token that is not one: 404, or 400 when malformed; never another reader's page.
    let (id, signature) = one.token.split_once('.').unwrap();
    let other = format!("{}.{signature}", id.parse::<i64>().unwrap() + 1);
    let r = app.get(&format!("/preferences?token={other}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!r.text().await.unwrap().contains("t•••@"));
    assert_eq!(app.get("/preferences?token=12").await.status(), StatusCode::BAD_REQUEST);
    // An unsubscribe token is not a preference token.
    let subscription = app.sql_strings("SELECT CAST(MIN(id) AS TEXT) FROM subscriptions").await;
    let unsubscribe = app.unsubscribe_token(&subscription[0]).await;
    assert_eq!(
        app.get(&format!("/preferences?token={unsubscribe}")).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn joining_without_a_proven_address_starts_a_double_opt_in(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    assert_eq!(app.signup_json("new@news.example", &["daily"]).await.status(), 202);
    mail_to(&app, "new@news.example", "confirm").await;
    let r = app
        .post_form("/preferences/link", &[("email", "new@news.example")])
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mail = mail_to(&app, "new@news.example", "Manage your newsletters").await;
    let link = find_link(&mail.text_body(), &app.url("/preferences?token=")).expect("link");
    let page = open(&app, &link).await;
    assert!(
        page.html
            .contains(r#"data-status="daily">Waiting for your confirmation"#),
        "{}",
        page.html
    );
    let r = act(&app, &page, "join", "weekly").await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("sent you an email to confirm Weekly Explainer.")
    );
    assert_eq!(
        status_of(&app, "weekly", "new@news.example").await.as_deref(),
        Some("pending")
    );
    let consent = app
        .sql_strings(
            "SELECT s.consent_page FROM subscriptions s JOIN lists l ON l.id = s.list_id WHERE l.slug = 'weekly'",
        )
        .await;
    assert_eq!(consent, ["preference centre"]);
}

async fn preference_links_by_email_reveal_nothing_and_are_capped(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    crate::support::fixtures::import_confirmed(&app, "daily", &["known@news.example".to_owned()]).await;
    let form = app.get("/preferences").await;
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains(r#"action="/preferences/link""#));

    let known = app
        .post_form("/preferences/link", &[("email", "known@news.example")])
        .await;
    let (known_status, known_body) = (known.status(), known.bytes().await.unwrap());
    let unknown = app
        .post_form("/preferences/link", &[("email", "unknown@news.example")])
        .await;
    let (unknown_status, unknown_body) = (unknown.status(), unknown.bytes().await.unwrap());
    assert_eq!(known_status, StatusCode::ACCEPTED);
    assert_eq!(
        (known_status, &known_body),
        (unknown_status, &unknown_body),
        "byte-identical"
    );
    mail_to(&app, "known@news.example", "Manage your newsletters").await;

    let sent = || async {
        app.sql_strings("SELECT recipient FROM outbox WHERE kind = 'preference'")
            .await
    };
    assert_eq!(sent().await, ["known@news.example"], "an unknown address gets nothing");
    // Within 5 minutes: the same answer, no second email.
    let again = app
        .post_form("/preferences/link", &[("email", "known@news.example")])
        .await;
    assert_eq!(again.bytes().await.unwrap(), known_body);
    assert_eq!(sent().await.len(), 1);
    // Five a day: each 6 minutes after the last, until the fifth.
    for n in 2..=6 {
        app.sql_exec_with(
            "UPDATE subscribers SET preference_mail_at = $1 WHERE email = $2",
            chrono::Utc::now() - chrono::TimeDelta::minutes(6),
            "known@news.example",
        )
        .await;
        let r = app
            .post_form("/preferences/link", &[("email", "known@news.example")])
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(sent().await.len(), n.min(5), "request {n}");
    }
    // Counted apart from confirmations: a signup still gets its confirmation email.
    assert_eq!(app.signup_json("known@news.example", &["weekly"]).await.status(), 202);
    mail_to(&app, "known@news.example", "confirm").await;
    let bad = app.post_form("/preferences/link", &[("email", "not an address")]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("Please enter a valid email address"));
}

async fn every_digest_carries_a_working_preferences_link(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    crate::support::fixtures::import_confirmed(&app, "daily", &["digest@news.example".to_owned()]).await;
    crate::support::fixtures::push_items(&app, "daily", &[("a", "Story A", 5)]).await;
    let r = app
        .admin(reqwest::Method::POST, "/api/lists/daily/digests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let digest = mail_to(&app, "digest@news.example", "Daily Briefing").await;
    assert!(
        digest.html_body().contains("Manage your newsletters"),
        "{}",
        digest.raw_str()
    );
    let link = find_link(&digest.text_body(), &app.url("/preferences?token=")).expect("a preferences link");
    assert!(
        digest.html_body().contains(&link.replace('&', "&amp;")),
        "the same link in both parts"
    );
    let page = open(&app, &link).await;
    assert!(page.html.contains(r#"data-status="daily">Subscribed"#), "{}", page.html);
}

async fn stored(app: &TestApp, email: &str) -> StatusCode {
    app.admin(Method::GET, &format!("/api/subscribers/{email}"))
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_reader_gets_their_data_by_email_once_a_day(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let reader = "mydata@news.example";
    signup_and_confirm(&app, reader, &["daily"]).await;
    let page = open(&app, &preferences_link(&app, reader).await).await;
    assert!(page.html.contains("Email me my data"), "{}", page.html);

    let r = act(&app, &page, "send_data", "").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("sent your data to your address"), "{html}");
    // The page shows nothing of the data: it goes to the address only.
    assert!(!html.contains("consent_at") && !html.contains(reader), "{html}");
    let mail = mail_to(&app, reader, "Your data").await;
    let attached = mail.attachment("bulletin-data.json").expect("the data attached");
    let data: Value = serde_json::from_slice(&attached).unwrap();
    assert_eq!(data["subscriber"]["email"], reader, "{data}");
    let subscriptions = data["subscriptions"].as_array().unwrap();
    assert_eq!(subscriptions.len(), 1, "{data}");
    assert_eq!(subscriptions[0]["list_slug"], "daily", "{data}");
    assert!(subscriptions[0]["consent_at"].is_string(), "{data}");
    assert!(
        data["deliveries"].as_array().is_some_and(|d| !d.is_empty()),
        "the welcome email is on record: {data}"
    );

    // Once a day: the second request is told so and queues nothing.
    let again = act(&app, &page, "send_data", "").await;
    let html = again.text().await.unwrap();
    assert!(html.contains("less than a day ago"), "{html}");
    let queued = app
        .sql_strings("SELECT CAST(COUNT(*) AS TEXT) FROM outbox WHERE subject = 'Your data'")
        .await;
    assert_eq!(queued, ["1"]);
}

async fn delete_everything_works_only_from_the_emailed_link(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let reader = "forget@news.example";
    signup_and_confirm(&app, reader, &["daily"]).await;
    let preferences = preferences_link(&app, reader).await;
    let page = open(&app, &preferences).await;

    let r = act(&app, &page, "erase", "").await;
    let html = r.text().await.unwrap();
    assert!(html.contains("link to delete everything"), "{html}");
    assert_eq!(stored(&app, reader).await, 200, "asking erases nothing");
    let mail = mail_to(&app, reader, "Delete your data").await;
    let link = find_link(&mail.text_body(), &app.url("/preferences/erase?token=")).expect("an erasure link");
    assert!(mail.text_body().contains("one hour"), "{}", mail.text_body());

    // Opening the link only shows the button (mail scanners open links).
    let r = app.client.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Delete everything") && html.contains("f•••@news.example"),
        "{html}"
    );
    assert_eq!(stored(&app, reader).await, 200);
    let erase_form = Page {
        token: hidden(&html, "token"),
        csrf: hidden(&html, "csrf"),
        html,
    };
    let post = |token: &str, csrf: &str| {
        app.client
            .post(app.url("/preferences/erase"))
            .form(&[("token", token.to_owned()), ("csrf", csrf.to_owned())])
            .send()
    };

    // The preference token (in forwarded mail) erases nothing; nor does a moved expiry, or the
    // erasure token with another form's csrf.
    assert_eq!(post(&page.token, &page.csrf).await.unwrap().status(), 400);
    let (id, rest) = erase_form.token.split_once('.').unwrap();
    let (expires, signature) = rest.split_once('.').unwrap();
    let later = format!("{id}.{}.{signature}", expires.parse::<i64>().unwrap() + 86_400);
    assert_eq!(post(&later, &erase_form.csrf).await.unwrap().status(), 404);
    assert_eq!(post(&erase_form.token, &page.csrf).await.unwrap().status(), 403);
    assert_eq!(stored(&app, reader).await, 200, "nothing erased yet");

    let r = post(&erase_form.token, &erase_form.csrf).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Your data is deleted"));
    assert_eq!(stored(&app, reader).await, 404);
    assert!(app.subscribers("daily").await.is_empty());
    // The link, and the preference link, are dead with the row.
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 404);
    assert_eq!(app.client.get(&preferences).send().await.unwrap().status(), 404);
}
