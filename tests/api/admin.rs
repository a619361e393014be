//! The admin API and the command line.

use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::signup::assert_error;
use crate::support::app::{ADMIN_TOKEN, Backend, TestApp};

on_both_backends!(
    admin_api_needs_a_valid_token,
    admin_tokens_rotate,
    admin_api_without_configured_token_is_disabled,
    lists_are_created_validated_and_counted,
    subscribers_are_paged_and_filtered,
    cli_creates_and_shows_lists_next_to_a_running_server,
);

async fn admin_api_needs_a_valid_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.client.get(app.url("/api/lists")).send().await.unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = app
        .client
        .get(app.url("/api/lists"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = app
        .client
        .get(app.url("/api/lists"))
        .header("authorization", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    // A prefix of the right token is not the right token.
    let r = app
        .client
        .get(app.url("/api/lists"))
        .bearer_auth(&ADMIN_TOKEN[..10])
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = app
        .client
        .post(app.url("/api/lists"))
        .json(&json!({"slug": "x", "name": "X"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    assert_eq!(app.admin(Method::GET, "/api/lists").send().await.unwrap().status(), 200);
    // The rejected create did not happen.
    let lists: Value = app
        .admin(Method::GET, "/api/lists")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lists, json!([]));
}

async fn admin_tokens_rotate(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_ADMIN_TOKEN", "old-token-aaaa, new-token-bbbb")]).await
    else {
        return;
    };
    for token in ["old-token-aaaa", "new-token-bbbb"] {
        let r = app
            .client
            .get(app.url("/api/lists"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{token}");
    }
    let r = app
        .client
        .get(app.url("/api/lists"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
}

async fn admin_api_without_configured_token_is_disabled(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("BULLETIN_ADMIN_TOKEN", "")]).await else {
        return;
    };
    let r = app
        .client
        .get(app.url("/api/lists"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    let body = assert_error(r, 401, "unauthorized", None).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BULLETIN_ADMIN_TOKEN")
    );
}

async fn lists_are_created_validated_and_counted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .admin(Method::POST, "/api/lists")
        .json(&json!({"slug": "daily", "name": "Daily Briefing", "description": "Every morning"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["slug"], "daily");
    assert_eq!(created["name"], "Daily Briefing");
    assert_eq!(created["description"], "Every morning");

    let r = app
        .admin(Method::POST, "/api/lists")
        .json(&json!({"slug": "daily", "name": "Again"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "list_exists", Some("slug")).await;
    for (body, field) in [
        (json!({"slug": "Daily News", "name": "X"}), "slug"),
        (json!({"slug": "", "name": "X"}), "slug"),
        (json!({"slug": "x".repeat(65), "name": "X"}), "slug"),
        (json!({"slug": "ok", "name": ""}), "name"),
        (json!({"slug": "ok", "name": "Evil\r\nBcc: x@y.org"}), "name"),
        (json!({"name": "No slug"}), "slug"),
        (json!({"slug": "ok", "name": 5}), "name"),
    ] {
        let r = app.admin(Method::POST, "/api/lists").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], field, "{body}");
    }
    let r = app
        .admin(Method::POST, "/api/lists")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "unsupported_media_type", None).await;

    app.create_list("weekly", "Weekly Explainer").await;
    app.signup_json("one@news.example", &["daily", "weekly"]).await;
    app.signup_json("two@news.example", &["daily"]).await;
    crate::signup::mark_all_confirmed(&app).await;
    app.signup_json("three@news.example", &["daily"]).await;
    let lists: Value = app
        .admin(Method::GET, "/api/lists")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lists[0]["slug"], "daily");
    assert_eq!(
        lists[0]["counts"],
        json!({"pending": 1, "confirmed": 2, "unsubscribed": 0})
    );
    assert_eq!(
        lists[1]["counts"],
        json!({"pending": 0, "confirmed": 1, "unsubscribed": 0})
    );
}

async fn subscribers_are_paged_and_filtered(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;
    for n in 0..5 {
        assert_eq!(
            app.signup_json(&format!("r{n}@news.example"), &["daily"])
                .await
                .status(),
            202
        );
    }
    let mut seen = Vec::new();
    let mut path = "/api/lists/daily/subscribers?limit=2".to_owned();
    loop {
        let page: Value = app
            .admin(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let subscribers = page["subscribers"].as_array().unwrap();
        assert!(subscribers.len() <= 2);
        for s in subscribers {
            assert_eq!(s["status"], "pending");
            let created = s["created_at"].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(created).is_ok() && created.ends_with('Z'),
                "{created}"
            );
            assert!(s["confirmed_at"].is_null() && s["unsubscribed_at"].is_null());
            seen.push(s["email"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(cursor) => path = format!("/api/lists/daily/subscribers?limit=2&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..5).map(|n| format!("r{n}@news.example")).collect::<Vec<_>>());

    let confirmed: Value = app
        .admin(Method::GET, "/api/lists/daily/subscribers?status=confirmed")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(confirmed, json!({"subscribers": [], "next": null}));

    let r = app
        .admin(Method::GET, "/api/lists/nope/subscribers")
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "unknown_list", None).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("status=gone", "status"),
        ("after=-1", "after"),
    ] {
        let r = app
            .admin(Method::GET, &format!("/api/lists/daily/subscribers?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{query}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], field, "{query}");
    }
}

async fn cli_creates_and_shows_lists_next_to_a_running_server(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let out = app.cli(&[
        "lists",
        "create",
        "weekly",
        "--name",
        "Weekly Explainer",
        "--description",
        "Sundays",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The running server reads lists from the database: the new list is on the form at once.
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("Weekly Explainer") && page.contains("Sundays"));

    app.signup_json("cli@news.example", &["weekly"]).await;
    let out = app.cli(&["lists"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().find(|l| l.starts_with("weekly")).expect(&table);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["weekly", "1", "0", "0"], "{table}");

    let out = app.cli(&["lists", "create", "weekly", "--name", "Again"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = app.cli(&["lists", "create", "Bad Slug", "--name", "X"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("slug"));
}

#[test]
fn bad_configuration_stops_start_up_with_exit_code_2() {
    for (var, value) in [
        ("DATABASE_URL", "mysql://nowhere"),
        ("BULLETIN_PUBLIC_URL", "::not a url::"),
        ("BULLETIN_SMTP_URL", "gopher://mail"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulletin"))
            .arg("migrate")
            .env_clear()
            .env(var, value)
            .current_dir(std::env::temp_dir())
            .output()
            .expect("run bulletin");
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "names {var}: {stderr}");
    }
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["lists", "--help"],
        &["lists", "create", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulletin"))
            .args(args)
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}
