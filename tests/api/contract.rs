//! The API contract: `/api/openapi.json` is served without a token, every JSON route the router
//! serves is in it method by method (and nothing else is), and every error it describes has the
//! one shared shape. Pages, the dashboard, static files, metrics and health are left out by name,
//! in one list. `.ci/contract` runs schemathesis against the same document.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::support::app::{ADMIN_TOKEN, Backend, TestApp};

/// Routes outside the contract, by name: HTML pages and static files, metrics and health. Every
/// dashboard route (`/admin` and below) is left out too.
const NOT_IN_THE_CONTRACT: &[&str] = &[
    "/",
    "/static/style.css",
    "/static/admin.js",
    "/embed.js",
    "/subscriptions/resend",
    "/preferences",
    "/preferences/link",
    "/preferences/erase",
    "/digests/{public_id}",
    "/lists/{slug}/archive",
    "/lists/{slug}/archive.atom",
    "/metrics",
    "/healthz",
    "/readyz",
];

fn in_the_contract(path: &str) -> bool {
    !(NOT_IN_THE_CONTRACT.contains(&path) || path == "/admin" || path.starts_with("/admin/"))
}

/// A request path for a route template, each parameter given a plausible value.
fn concrete(template: &str) -> String {
    template
        .replace("{slug}", "daily")
        .replace("{id}", "1")
        .replace("{email}", "reader@example.org")
}

const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Every `(path, method)` the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            METHODS
                .iter()
                .map(|m| m.as_str().to_ascii_lowercase())
                .filter(|m| item.contains_key(m))
                .map(|m| (path.clone(), m))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn every_json_route_is_in_the_document() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    app.create_list("daily", "Daily Briefing").await;

    // Public: the one `/api` route without a token.
    let r = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let documented = operations(&doc);

    // The list of exclusions names routes that exist, so it cannot hide a stale entry.
    for name in NOT_IN_THE_CONTRACT {
        assert!(app.routes.iter().any(|r| r == name), "{name} is not a route any more");
    }

    // Walk the router: a method a route serves answers anything but the router's 405.
    let mut served = BTreeSet::new();
    for path in app.routes.iter().filter(|p| in_the_contract(p)) {
        for method in METHODS {
            let r = app
                .client
                .request(method.clone(), app.url(&concrete(path)))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            if r.status() != 405 {
                served.insert((path.clone(), method.as_str().to_ascii_lowercase()));
            }
        }
    }
    assert!(served.len() > 25, "too few JSON routes found: {served:?}");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from /api/openapi.json: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
}

#[tokio::test]
async fn every_error_has_the_one_shared_shape() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Error"]["required"], serde_json::json!(["error"]));
    assert_eq!(
        schemas["Error"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    let mut errors = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
                    continue;
                };
                if !status.starts_with(['4', '5']) {
                    continue;
                }
                errors += 1;
                let reference = schema["$ref"].as_str().unwrap_or_default();
                // A refused import adds its report beside the same error member.
                let shared = reference == "#/components/schemas/Error"
                    || (reference == "#/components/schemas/ImportRefused"
                        && schemas["ImportRefused"]["properties"]["error"] == schemas["Error"]["properties"]["error"]);
                assert!(shared, "{method} {path} {status}: {reference}");
            }
            // Every admin operation needs the token, and says how it is refused.
            if path.starts_with("/api/") && path != "/api/openapi.json" {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{"admin_token": []}]),
                    "{path}"
                );
                assert!(operation["responses"]["401"].is_object(), "{method} {path}: no 401");
            }
        }
    }
    assert!(errors > 100, "only {errors} error responses described");

    // What the document says is what a client gets.
    let r = app.client.get(app.url("/api/lists")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}
