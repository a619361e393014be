//! Double opt-in end to end: email → link → page → confirm → welcome → one-click unsubscribe.

use reqwest::StatusCode;
use serde_json::json;

use crate::on_both_backends;
use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};
use crate::support::smtp::Received;

on_both_backends!(
    form_signup_confirm_welcome_and_one_click_unsubscribe,
    json_signup_and_multipart_one_click,
    confirming_twice_shows_the_same_success,
    bad_confirmation_tokens_get_their_own_pages,
    expired_link_offers_a_fresh_one,
    unsubscribe_links_are_signed,
    an_old_link_does_nothing_to_a_row_that_took_its_id,
    resignup_rules_in_each_state,
    unsubscribed_reader_gets_nothing_already_queued,
);

/// The first email to `to`, waiting for it.
async fn mail_to(app: &TestApp, to: &str, subject_part: &str) -> Received {
    app.smtp
        .wait_for(
            |m| m.to().iter().any(|t| t.contains(to)) && m.subject().is_some_and(|s| s.contains(subject_part)),
            MAIL_WAIT,
        )
        .await
}

fn confirm_link(app: &TestApp, mail: &Received) -> String {
    find_link(&mail.text_body(), &app.url("/subscriptions/confirm?token=")).expect("confirmation link")
}

/// The hidden token field of the confirmation page.
fn token_in_page(html: &str) -> String {
    let marker = r#"name="token" value=""#;
    let start = html.find(marker).expect("token field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn status_of(app: &TestApp, list: &str, email: &str) -> String {
    app.subscribers(list)
        .await
        .into_iter()
        .find(|(e, _)| e == email)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "absent".into())
}

async fn confirm_via_page(app: &TestApp, link: &str) -> reqwest::Response {
    let page = app.client.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"action="/subscriptions/confirm""#), "{html}");
    assert!(html.contains("<script>"), "auto-submit script");
    let token = token_in_page(&html);
    app.client
        .post(app.url("/subscriptions/confirm"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
}

async fn form_signup_confirm_welcome_and_one_click_unsubscribe(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let r = app
        .post_form(
            "/subscriptions",
            &[
                ("email", "reader@news.example"),
                ("lists", "daily"),
                ("lists", "weekly"),
            ],
        )
        .await;
    assert_eq!(r.status(), 202);
    let mail = mail_to(&app, "reader@news.example", "confirm").await;
    let link = confirm_link(&app, &mail);

    // GET and HEAD (what scanners do) change nothing.
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(app.client.head(&link).send().await.unwrap().status(), 200);
    assert_eq!(status_of(&app, "daily", "reader@news.example").await, "pending");

    let r = app
        .client
        .post(app.url("/subscriptions/confirm"))
        .header("user-agent", "ReaderBrowser/2.0")
        .form(&[("token", token_in_page(&page.text().await.unwrap()).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("subscribed") && html.contains("Daily Briefing") && html.contains("Weekly Explainer"),
        "{html}"
    );
    assert_eq!(status_of(&app, "daily", "reader@news.example").await, "confirmed");
    assert_eq!(status_of(&app, "weekly", "reader@news.example").await, "confirmed");
    let confirm_facts = app
        .sql_strings("SELECT COALESCE(confirm_ip, '') || '|' || COALESCE(confirm_user_agent, '') FROM subscriptions")
        .await;
    assert!(
        confirm_facts.iter().all(|f| f == "127.0.0.1|ReaderBrowser/2.0"),
        "{confirm_facts:?}"
    );

    // One welcome per list, each with its own unsubscribe headers.
    let welcome = mail_to(&app, "reader@news.example", "Welcome to Daily Briefing").await;
    mail_to(&app, "reader@news.example", "Welcome to Weekly Explainer").await;
    let unsubscribe = welcome.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = unsubscribe
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert!(url.starts_with(&app.url("/unsubscribe?token=")), "{unsubscribe}");
    assert_eq!(
        welcome.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let list_id = welcome.header("List-Id").expect("List-Id");
    assert!(list_id.contains("<daily.bulletin.test>"), "{list_id}");
    assert!(
        welcome.text_body().contains(&url),
        "visible unsubscribe link in the text part"
    );
    assert!(
        welcome.html_body().contains(&url.replace('&', "&amp;")),
        "visible unsubscribe link in the HTML part"
    );

    // The mail client's one-click POST: no cookies, form body, 200 without redirect.
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(&app, "daily", "reader@news.example").await, "unsubscribed");
    assert_eq!(
        status_of(&app, "weekly", "reader@news.example").await,
        "confirmed",
        "one list only"
    );
}

async fn json_signup_and_multipart_one_click(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    assert_eq!(app.signup_json("json@news.example", &["daily"]).await.status(), 202);
    let mail = mail_to(&app, "json@news.example", "confirm").await;
    let link = confirm_link(&app, &mail);
    let token = link.rsplit("token=").next().unwrap();
    let r = app.post_json("/subscriptions/confirm", &json!({"token": token})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "subscribed", "lists": ["daily"]})
    );
    let welcome = mail_to(&app, "json@news.example", "Welcome").await;
    let url = welcome
        .header("List-Unsubscribe")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    let boundary = "----bulletin-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--{boundary}--\r\n"
    );
    let r = app
        .client
        .post(&url)
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(&app, "daily", "json@news.example").await, "unsubscribed");
}

async fn confirming_twice_shows_the_same_success(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("twice@news.example", &["daily"]).await;
    let link = confirm_link(&app, &mail_to(&app, "twice@news.example", "confirm").await);
    let first = confirm_via_page(&app, &link).await;
    let second = confirm_via_page(&app, &link).await;
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(first.text().await.unwrap(), second.text().await.unwrap());
    // One welcome only.
    mail_to(&app, "twice@news.example", "Welcome").await;
    let welcomes = app.sql_strings("SELECT kind FROM outbox WHERE kind = 'welcome'").await;
    assert_eq!(welcomes.len(), 1);
}

async fn bad_confirmation_tokens_get_their_own_pages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let unknown = "A".repeat(43);
    for (query, status) in [
        ("token=abc", 400),
        ("", 400),
        ("token=", 400),
        (&*format!("token={unknown}"), 404),
        ("token=%00%0d%0a", 400),
    ] {
        let r = app.get(&format!("/subscriptions/confirm?{query}")).await;
        assert_eq!(r.status().as_u16(), status, "GET {query}");
        let html = r.text().await.unwrap();
        assert!(html.contains(r#"href="/""#), "offers the signup form: {html}");
        let token = query.strip_prefix("token=").unwrap_or("");
        let r = app.post_form("/subscriptions/confirm", &[("token", token)]).await;
        assert_eq!(r.status().as_u16(), status, "POST {query}");
    }
}

async fn expired_link_offers_a_fresh_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("late@news.example", &["daily"]).await;
    let link = confirm_link(&app, &mail_to(&app, "late@news.example", "confirm").await);
    let past = chrono::Utc::now() - chrono::TimeDelta::minutes(10);
    app.sql_exec_with(
        "UPDATE confirmations SET expires_at = $1 WHERE id > 0 OR $2 = ''",
        past,
        "",
    )
    .await;
    app.sql_exec_with(
        "UPDATE subscribers SET last_confirmation_at = $1 WHERE email = $2",
        past,
        "late@news.example",
    )
    .await;

    let r = app.client.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("expired") && html.contains(r#"action="/subscriptions/resend""#),
        "{html}"
    );
    let token = token_in_page(&html);
    let r = app.post_form("/subscriptions/confirm", &[("token", &token)]).await;
    assert_eq!(r.status(), 410);
    assert_eq!(status_of(&app, "daily", "late@news.example").await, "pending");

    let r = app.post_form("/subscriptions/resend", &[("token", &token)]).await;
    assert_eq!(r.status(), 202);
    let fresh = app
        .smtp
        .wait_for(
            |m| m.to().iter().any(|t| t.contains("late@news.example")) && !m.text_body().contains(&link),
            MAIL_WAIT,
        )
        .await;
    let r = confirm_via_page(&app, &confirm_link(&app, &fresh)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(status_of(&app, "daily", "late@news.example").await, "confirmed");
}

/// The unsubscribe link of `to`'s welcome email.
async fn welcome_unsubscribe_link(app: &TestApp, to: &str) -> String {
    mail_to(app, to, "Welcome")
        .await
        .header("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned()
}

async fn signup_and_confirm(app: &TestApp, to: &str) {
    app.signup_json(to, &["daily"]).await;
    confirm_via_page(app, &confirm_link(app, &mail_to(app, to, "confirm").await)).await;
}

/// SQLite gives a deleted row's id to the next row (the 30-day purge and erasure delete rows).
/// PostgreSQL never reuses one, so there the new row is moved onto the old id, as SQLite would
/// have written it.
async fn an_old_link_does_nothing_to_a_row_that_took_its_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    signup_and_confirm(&app, "first@news.example").await;
    let old_link = welcome_unsubscribe_link(&app, "first@news.example").await;
    let old_id = app.sql_strings("SELECT CAST(MAX(id) AS TEXT) FROM subscriptions").await;

    app.sql_exec("DELETE FROM subscriptions").await;
    signup_and_confirm(&app, "stranger@news.example").await;
    let new_link = welcome_unsubscribe_link(&app, "stranger@news.example").await;
    if backend == Backend::Postgres {
        // The old id was the last one; the stranger's row has the next.
        app.sql_exec("UPDATE outbox SET subscription_id = NULL").await;
        app.sql_exec("ALTER TABLE subscriptions ALTER COLUMN id SET GENERATED BY DEFAULT")
            .await;
        app.sql_exec("UPDATE subscriptions SET id = id - 1").await;
    }
    assert_eq!(
        app.sql_strings("SELECT CAST(id AS TEXT) FROM subscriptions").await,
        old_id,
        "the stranger's subscription holds the old id"
    );
    assert_ne!(old_link, new_link, "a new row, a new link");

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = app.client.request(method.clone(), &old_link).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method}");
        let html = r.text().await.unwrap();
        assert!(!html.contains("stranger"), "{html}");
    }
    assert_eq!(status_of(&app, "daily", "stranger@news.example").await, "confirmed");
    if backend == Backend::Sqlite {
        // The stranger's own link works.
        let r = app.client.post(&new_link).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(status_of(&app, "daily", "stranger@news.example").await, "unsubscribed");
    }
}

async fn unsubscribe_links_are_signed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("leave@news.example", &["daily"]).await;
    confirm_via_page(
        &app,
        &confirm_link(&app, &mail_to(&app, "leave@news.example", "confirm").await),
    )
    .await;
    let welcome = mail_to(&app, "leave@news.example", "Welcome").await;
    let url = welcome
        .header("List-Unsubscribe")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    let token = url.rsplit("token=").next().unwrap().to_owned();
    let (id, signature) = token.split_once('.').unwrap();

    // Forged: another subscription's id with this signature, or a tampered signature.
    let other_id = id.parse::<i64>().unwrap() + 1;
    let mut tampered = signature.to_owned();
    tampered.replace_range(0..1, if signature.starts_with('A') { "B" } else { "A" });
    for forged in [format!("{other_id}.{signature}"), format!("{id}.{tampered}")] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let r = app
                .client
                .request(method.clone(), app.url(&format!("/unsubscribe?token={forged}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {forged}");
        }
    }
    for malformed in ["", "token=", "token=12", "token=x.y", "token=1.!!"] {
        let r = app
            .client
            .post(app.url(&format!("/unsubscribe?{malformed}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{malformed}");
    }
    assert_eq!(status_of(&app, "daily", "leave@news.example").await, "confirmed");

    // The page has one button and changes nothing; the button unsubscribes; again is fine.
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("<button").count(), 1, "{html}");
    assert_eq!(status_of(&app, "daily", "leave@news.example").await, "confirmed");
    for _ in 0..2 {
        let r = app
            .client
            .post(&url)
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("location").is_none());
    }
    assert_eq!(status_of(&app, "daily", "leave@news.example").await, "unsubscribed");
}

async fn resignup_rules_in_each_state(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    let who = "again@news.example";
    let confirmations = || app.sql_strings("SELECT token_hash FROM confirmations");

    // Pending: a second signup within 5 minutes sends nothing.
    app.signup_json(who, &["daily"]).await;
    mail_to(&app, who, "confirm").await;
    app.signup_json(who, &["daily"]).await;
    assert_eq!(confirmations().await.len(), 1);
    // Pending, 5 minutes later: a fresh link.
    let past = chrono::Utc::now() - chrono::TimeDelta::minutes(6);
    app.sql_exec_with(
        "UPDATE subscribers SET last_confirmation_at = $1 WHERE email = $2",
        past,
        who,
    )
    .await;
    app.signup_json(who, &["daily"]).await;
    assert_eq!(confirmations().await.len(), 2);
    app.smtp.wait_for_count(2, MAIL_WAIT).await;

    // Confirmed: nothing new.
    let latest = app.smtp.messages_to(who).last().cloned().unwrap();
    confirm_via_page(&app, &confirm_link(&app, &latest)).await;
    let welcome = mail_to(&app, who, "Welcome").await;
    app.sql_exec_with(
        "UPDATE subscribers SET last_confirmation_at = $1 WHERE email = $2",
        past,
        who,
    )
    .await;
    app.signup_json(who, &["daily"]).await;
    assert_eq!(confirmations().await.len(), 2);
    assert_eq!(status_of(&app, "daily", who).await, "confirmed");

    // Unsubscribed: a new double opt-in.
    let url = welcome
        .header("List-Unsubscribe")
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    app.client
        .post(&url)
        .form(&[("List-Unsubscribe", "One-Click")])
        .send()
        .await
        .unwrap();
    app.signup_json(who, &["daily"]).await;
    assert_eq!(status_of(&app, "daily", who).await, "pending");
    assert_eq!(confirmations().await.len(), 3);
    app.smtp.wait_for_count(4, MAIL_WAIT).await;
}

async fn unsubscribed_reader_gets_nothing_already_queued(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    app.signup_json("queued@news.example", &["daily"]).await;
    let link = confirm_link(&app, &mail_to(&app, "queued@news.example", "confirm").await);
    app.smtp.set_down(true);
    confirm_via_page(&app, &link).await;
    let subscription = app.sql_strings("SELECT CAST(id AS TEXT) FROM subscriptions").await;
    assert_eq!(subscription.len(), 1);
    // The welcome is queued while SMTP is down; the reader leaves before it goes out.
    let token = app.unsubscribe_token(&subscription[0]).await;
    let r = app
        .client
        .post(app.url(&format!("/unsubscribe?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.smtp.set_down(false);
    // Mail queued after it arrives, so the welcome was either sent or dropped by then.
    app.signup_json("later@news.example", &["daily"]).await;
    mail_to(&app, "later@news.example", "confirm").await;
    assert!(
        app.smtp
            .messages_to("queued@news.example")
            .iter()
            .all(|m| !m.subject().unwrap().contains("Welcome"))
    );
    assert_eq!(
        app.sql_strings("SELECT status FROM outbox WHERE kind = 'welcome'")
            .await,
        ["cancelled"]
    );
}
