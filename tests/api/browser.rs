//! End-to-end journeys in headless Chromium, on a phone and on a desktop (SQLite only: the pages
//! are the same on both backends). Skipped without chromedriver unless `CI` is set.
//! Screenshots: target/tmp/screenshots/<test>/.

use crate::support::app::{ADMIN_TOKEN, Backend, TestApp};
use crate::support::browser::{Browser, Viewport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_out_on_a_phone() {
    signing_in_and_out(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_out_on_a_desktop() {
    signing_in_and_out(Viewport::Desktop).await
}

/// Wrong token → the form again with the message; right token → the overview with the lists;
/// Sign out → the login, and /admin sends there again.
async fn signing_in_and_out(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    let page = browser.session(viewport).await;

    page.goto(&app.url("/admin/login")).await;
    page.wait_for("form[action='/admin/login'] input[name=token]").await;
    page.shot("login").await;
    page.assert_no_sideways_scroll("the login page").await;

    page.fill("input[name=token]", "not-the-token").await;
    page.click("form[action='/admin/login'] button[type=submit]").await;
    let error = page.wait_for("#token-error[role=alert]").await;
    let message = error.text().await.expect("the error's text");
    assert!(message.contains("That is not an admin token"), "{message}");
    assert_eq!(page.path().await, "/admin/login");
    let field = page.wait_for("input[name=token]").await;
    assert_eq!(field.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    page.shot("wrong-token").await;
    page.assert_no_sideways_scroll("the login page with its error").await;

    page.fill("input[name=token]", ADMIN_TOKEN).await;
    page.click("form[action='/admin/login'] button[type=submit]").await;
    page.wait_for_path("/admin").await;
    let lists = page.text("table.counts tbody").await;
    assert!(lists.contains("Daily Briefing"), "the overview's table: {lists}");
    page.shot("overview").await;
    page.assert_no_sideways_scroll("the overview").await;

    page.click("form[action='/admin/logout'] button[type=submit]").await;
    page.wait_for_path("/admin/login").await;
    page.wait_for("input[name=token]").await;
    page.shot("signed-out").await;

    // The session is gone: the dashboard sends to the login again.
    page.goto(&app.url("/admin")).await;
    page.wait_for_path("/admin/login").await;
    page.wait_for("form[action='/admin/login'] input[name=token]").await;

    page.close().await;
}
