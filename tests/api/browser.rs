//! End-to-end journeys in headless Chromium, on a phone and on a desktop (SQLite only: the pages
//! are the same on both backends). Skipped without chromedriver unless `CI` is set.
//! Screenshots: target/tmp/screenshots/<test>/.

use serde_json::json;

use crate::support::app::{ADMIN_TOKEN, Backend, MAIL_WAIT, TestApp, find_link};
use crate::support::browser::{Browser, Session, Viewport};
use crate::support::feed_server::FeedServer;
use crate::support::fixtures::{import_confirmed, push_items, rss};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_a_newsletter_on_a_phone() {
    running_a_newsletter(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_a_newsletter_on_a_desktop() {
    running_a_newsletter(Viewport::Desktop).await
}

/// Signs in with the admin token: the overview.
async fn sign_in(page: &Session, app: &TestApp) {
    page.goto(&app.url("/admin/login")).await;
    page.fill("input[name=token]", ADMIN_TOKEN).await;
    page.click("form[action='/admin/login'] button[type=submit]").await;
    page.wait_for_path("/admin").await;
}

/// Scrolls the element into view, then takes the screenshot.
async fn shot_at(page: &Session, selector: &str, name: &str) {
    page.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
        vec![json!(selector)],
    )
    .await;
    page.shot(name).await;
}

/// The newsroom's operator, in the browser alone: sign in, create a list, add a feed, schedule
/// it, preview, send a test, send now through the confirmation step, watch the progress reach
/// done without a reload, cancel another digest, export the list, sign out.
async fn running_a_newsletter(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    import_confirmed(&app, "daily", &["early@news.example".to_owned()]).await;
    let feeds = FeedServer::start().await;
    feeds.set_custom(
        "application/rss+xml",
        rss(&[
            ("tram", "Council approves the new tram line"),
            ("floods", "Floods close the river road for a week"),
        ]),
    );
    let page = browser.session(viewport).await;

    // Sign in: the lists and a chart.
    sign_in(&page, &app).await;
    assert!(page.text("table.counts tbody").await.contains("Daily Briefing"));
    page.wait_for("svg.chart title").await;
    page.shot("overview").await;
    page.assert_no_sideways_scroll("the overview").await;
    shot_at(&page, "svg.chart", "overview-charts").await;

    // Create a list.
    page.fill("#name", "Weekly Explainer").await;
    page.fill("#slug", "weekly").await;
    page.fill("#description", "The week's big stories, explained").await;
    shot_at(&page, "form[action='/admin/lists']", "create-list").await;
    page.click("form[action='/admin/lists'] button[type=submit]").await;
    page.wait_for_path("/admin/lists/weekly?done=list_created").await;
    page.wait_for_text("The list was created.").await;
    page.shot("list-created").await;
    page.assert_no_sideways_scroll("a new list's page").await;

    // Add a feed, and poll it now.
    page.fill("#feed-url", &feeds.url("/custom")).await;
    page.fill("#feed-interval", "15m").await;
    page.click("form[action='/admin/lists/weekly/feeds'] button[type=submit]")
        .await;
    page.wait_for_text("The feed was added.").await;
    page.click("form[action$='/poll'] button[type=submit]").await;
    page.wait_for_text("The feed was polled.").await;
    page.wait_for_text("2 items").await;
    shot_at(&page, ".feeds", "feed-added").await;
    page.assert_no_sideways_scroll("the list with a feed").await;

    // Schedule it: the next slots appear.
    page.fill("#cron", "0 7 * * 1").await;
    page.fill("#timezone", "Europe/London").await;
    page.fill("#max-items", "10").await;
    page.click("form[action='/admin/lists/weekly/schedule'] button[type=submit]")
        .await;
    page.wait_for_text("The schedule was saved.").await;
    let slots = page
        .js("return document.querySelectorAll('ol.slots li').length;", vec![])
        .await;
    assert_eq!(slots, json!(5));
    assert!(page.text("ol.slots").await.starts_with("Mon "));
    shot_at(&page, "ol.slots", "scheduled").await;
    page.assert_no_sideways_scroll("the list with a schedule").await;

    // The preview, in its sandboxed frame.
    let frame = page.wait_for("iframe.preview").await;
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    page.js(
        "document.querySelector('iframe.preview').scrollIntoView({block: 'start'});",
        vec![],
    )
    .await;
    frame.enter_frame().await.expect("into the preview");
    page.wait_for_text("Council approves the new tram line").await;
    page.client().enter_parent_frame().await.expect("out of the preview");
    page.shot("preview").await;

    // Send a test.
    page.fill("#test-to", "editor@news.example").await;
    page.click("form[action='/admin/lists/weekly/test'] button[type=submit]")
        .await;
    page.wait_for_text("A test copy is on its way.").await;
    let test = app
        .smtp
        .wait_for(|m| m.to() == ["editor@news.example"], MAIL_WAIT)
        .await;
    assert!(test.subject().unwrap().starts_with("[TEST]"));

    // Send now, through the confirmation step.
    let readers: Vec<String> = (0..3).map(|i| format!("reader{i}@news.example")).collect();
    import_confirmed(&app, "weekly", &readers).await;
    page.click("a[href='/admin/lists/weekly/send']").await;
    page.wait_for_path("/admin/lists/weekly/send").await;
    page.wait_for_text("Send this digest now?").await;
    let facts = page.text("dl.facts").await;
    assert!(
        facts.contains("3 confirmed subscribers") && facts.contains('2'),
        "{facts}"
    );
    page.shot("send-confirm").await;
    page.assert_no_sideways_scroll("the send confirmation").await;
    // The SMTP server holds its replies until the page is there, so that it shows a send under
    // way, which then reaches done in place (a reload would lose the marker).
    app.smtp.hold();
    page.click("form[action='/admin/lists/weekly/send'] button[type=submit]")
        .await;
    page.wait_until("location.pathname.startsWith('/admin/digests/')", "the digest's page")
        .await;
    page.wait_for("[data-progress][data-active]").await;
    page.js("window.stillHere = true;", vec![]).await;
    page.shot("digest-sending").await;
    page.assert_no_sideways_scroll("a digest's page while it sends").await;
    app.smtp.release();
    page.wait_until(
        "document.querySelector('[data-progress][data-done]') && window.stillHere",
        "the progress to finish without a reload",
    )
    .await;
    assert_eq!(page.text("[data-field=status]").await, "done");
    assert_eq!(page.text("[data-field=sent]").await, "3");
    page.shot("digest-done").await;
    page.assert_no_sideways_scroll("a digest's page").await;
    app.smtp.wait_for_count(4, MAIL_WAIT).await;

    // Cancel another digest while it waits on a slow reader.
    push_items(&app, "weekly", &[("late", "Late news from the courts", 1)]).await;
    app.smtp.reject_rcpt("reader2@news.example", 451, None);
    page.goto(&app.url("/admin/lists/weekly/send")).await;
    page.click("form[action='/admin/lists/weekly/send'] button[type=submit]")
        .await;
    page.wait_until(
        "location.pathname.startsWith('/admin/digests/')",
        "the second digest's page",
    )
    .await;
    page.wait_until(
        "document.querySelector('[data-field=sent]').textContent === '2'",
        "two sent, one waiting",
    )
    .await;
    page.click("a[data-cancel]").await;
    page.wait_for_text("Cancel this digest?").await;
    page.shot("cancel-confirm").await;
    page.click("form[action$='/cancel'] button[type=submit]").await;
    page.wait_for_text("The digest was cancelled").await;
    assert_eq!(page.text("[data-field=status]").await, "cancelled");
    page.shot("cancelled").await;

    // Export the list, with the browser's session.
    page.goto(&app.url("/admin/lists/weekly")).await;
    page.wait_for("form[action='/admin/lists/weekly/export.csv'] select[name=status]")
        .await;
    page.js(
        "window.csv = null; fetch(document.querySelector('form[action$=\"export.csv\"]').action + '?status=confirmed')\
         .then(r => r.text()).then(t => { window.csv = t; });",
        vec![],
    )
    .await;
    page.wait_until("window.csv !== null", "the export").await;
    let csv = page.js("return window.csv;", vec![]).await;
    let csv = csv.as_str().unwrap();
    assert!(csv.starts_with("email,name,status,"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "a header and three readers: {csv}");
    shot_at(&page, "form[action$='export.csv']", "export").await;

    // Sign out: /admin is closed.
    page.click("form[action='/admin/logout'] button[type=submit]").await;
    page.wait_for_path("/admin/login").await;
    page.goto(&app.url("/admin/lists/weekly")).await;
    page.wait_for_path("/admin/login").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_a_reader_on_a_phone() {
    finding_a_reader(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_a_reader_on_a_desktop() {
    finding_a_reader(Viewport::Desktop).await
}

/// Search a reader by domain, open them, unsubscribe them from one list.
async fn finding_a_reader(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    let readers: Vec<String> = (0..8).map(|i| format!("reader{i}@news.example")).collect();
    import_confirmed(&app, "daily", &readers).await;
    import_confirmed(&app, "daily", &["maria.rossi@example.org".to_owned()]).await;
    import_confirmed(&app, "weekly", &["maria.rossi@example.org".to_owned()]).await;
    let page = browser.session(viewport).await;
    sign_in(&page, &app).await;

    page.click("nav a[href='/admin/subscribers']").await;
    page.wait_for_path("/admin/subscribers").await;
    page.fill("#q", "@example.org").await;
    page.click("form.search button[type=submit]").await;
    page.wait_until("location.search.includes('q=')", "the search").await;
    let results = page.text("table.readers tbody").await;
    assert!(
        results.contains("maria.rossi@example.org") && !results.contains("reader0"),
        "{results}"
    );
    page.shot("search").await;
    page.assert_no_sideways_scroll("the search results").await;

    page.click("table.readers a[href^='/admin/subscribers/']").await;
    page.wait_for_text("Weekly Explainer").await;
    page.wait_for_text("test fixture").await;
    page.shot("reader").await;
    page.assert_no_sideways_scroll("a reader's page").await;

    page.click("a[href$='/unsubscribe?list=weekly']").await;
    page.wait_for_text("Unsubscribe maria.rossi@example.org from Weekly Explainer?")
        .await;
    page.shot("unsubscribe-confirm").await;
    page.click("form[action$='/unsubscribe'] button[type=submit]").await;
    page.wait_for_text("Unsubscribed: mail queued for that list was cancelled.")
        .await;
    page.shot("unsubscribed").await;
    let statuses = app.subscribers("weekly").await;
    assert_eq!(
        statuses,
        [("maria.rossi@example.org".to_owned(), "unsubscribed".to_owned())]
    );
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_csv_on_a_phone() {
    importing_a_csv(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_a_csv_on_a_desktop() {
    importing_a_csv(Viewport::Desktop).await
}

/// Import a CSV with an error: the report names its line and nothing goes in; again with "skip
/// invalid rows": the rest goes in.
async fn importing_a_csv(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    let dir = tempfile::tempdir().expect("a directory");
    let csv = dir.path().join("readers.csv");
    std::fs::write(
        &csv,
        "email,name\nann@news.example,Ann\nnot-an-address,Bob\ncarl@news.example,Carl\n",
    )
    .expect("the CSV");
    let csv = csv.to_str().expect("a UTF-8 path");
    let page = browser.session(viewport).await;
    sign_in(&page, &app).await;

    page.click("nav a[href='/admin/import']").await;
    page.wait_for_path("/admin/import").await;
    page.wait_for("#file")
        .await
        .send_keys(csv)
        .await
        .expect("choosing the file");
    page.fill("#consent", "Signed up at the book fair").await;
    page.shot("import-form").await;
    page.assert_no_sideways_scroll("the import form").await;
    page.click("form[action='/admin/import'] button[type=submit]").await;
    page.wait_for_text("nothing was imported").await;
    assert!(page.text("#report table").await.contains("3"), "the bad row's line");
    page.shot("import-report").await;
    page.assert_no_sideways_scroll("the import report").await;
    assert!(app.subscribers("daily").await.is_empty());

    page.wait_for("#file")
        .await
        .send_keys(csv)
        .await
        .expect("choosing the file again");
    page.click("input[name=skip_invalid]").await;
    page.click("form[action='/admin/import'] button[type=submit]").await;
    page.wait_for_text("Imported 2 of 3 rows into Daily Briefing").await;
    page.shot("imported").await;
    assert_eq!(app.subscribers("daily").await.len(), 2);
    page.close().await;
}

/// A news site's article on another loopback origin, with the README's signup box under it.
struct Site {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the site");
        let origin = format!("http://{}", listener.local_addr().expect("address"));
        (listener, origin)
    }

    /// Serves `/story` with the snippet posting to `bulletin` (its base URL).
    fn serve(listener: tokio::net::TcpListener, origin: String, bulletin: &str) -> Site {
        let page = format!(
            r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>A story</title>
<style>body{{font-family:Georgia,serif;max-width:40rem;margin:0 auto;padding:1rem}}
.newsletter-signup{{border-top:3px solid #1a1a1a;padding:1rem 0;display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}}
.newsletter-signup label{{flex-basis:100%}} .newsletter-signup input[type=email]{{flex:1 1 12rem;padding:.6rem;font:inherit}}
.newsletter-signup button{{padding:.6rem 1rem;font:inherit}} [data-bulletin-message]{{flex-basis:100%;color:#b00020;margin:0}}</style>
</head><body><article><h1>The council votes on the new bridge</h1>
<p>The vote is on Thursday. Here is what is at stake, and who decides.</p></article>
<form data-bulletin class="newsletter-signup" method="post" action="{bulletin}/subscriptions">
  <label for="newsletter-email">Enter your email to subscribe</label>
  <input id="newsletter-email" type="email" name="email" required autocomplete="email" placeholder="you@example.org">
  <input type="hidden" name="lists" value="daily">
  <input type="hidden" name="return_to" value="{origin}/story">
  <div hidden><label>Leave this empty <input name="website" tabindex="-1" autocomplete="off"></label></div>
  <button type="submit">Subscribe</button>
  <p data-bulletin-message hidden></p>
</form>
<script src="{bulletin}/embed.js" defer></script>
</body></html>"#
        );
        let app = axum::Router::new().route(
            "/story",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Site { origin, task }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn app_with_site() -> (TestApp, Site) {
    let (listener, origin) = Site::bind().await;
    let app = TestApp::spawn_with(Backend::Sqlite, &[("BULLETIN_ALLOWED_ORIGINS", origin.as_str())])
        .await
        .expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    let site = Site::serve(listener, origin, &app.base);
    (app, site)
}

async fn status_in_daily(app: &TestApp, email: &str) -> Option<String> {
    app.subscribers("daily")
        .await
        .into_iter()
        .find(|(e, _)| e == email)
        .map(|(_, s)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_box_on_an_article_on_a_phone() {
    the_signup_box_on_an_article(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_box_on_an_article_on_a_desktop() {
    the_signup_box_on_an_article(Viewport::Desktop).await
}

/// With script: a bad address shows Bulletin's message beside the field, a good one the
/// thank-you in place of the form, and the reader never leaves the article.
async fn the_signup_box_on_an_article(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, site) = app_with_site().await;
    let page = browser.session(viewport).await;
    let story = format!("{}/story", site.origin);
    page.goto(&story).await;
    page.wait_for("form[data-bulletin] input[name=email]").await;
    page.shot("article").await;

    page.fill("input[name=email]", "reader@").await;
    page.click("form[data-bulletin] button[type=submit]").await;
    page.wait_until(
        "document.querySelector('[data-bulletin-message]') && !document.querySelector('[data-bulletin-message]').hidden",
        "the inline message",
    )
    .await;
    let message = page.text("[data-bulletin-message]").await;
    assert!(message.starts_with("Please enter a valid email address"), "{message}");
    let field = page.wait_for("input[name=email]").await;
    assert_eq!(field.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    assert_eq!(page.url().await.as_str(), story, "still on the article");
    page.shot("bad-address").await;
    page.assert_no_sideways_scroll("the article with the message").await;

    page.fill("input[name=email]", "box.reader@news.example").await;
    page.click("form[data-bulletin] button[type=submit]").await;
    let thanks = page.wait_for("[data-bulletin-thanks]").await;
    let text = thanks.text().await.expect("the thank-you");
    assert_eq!(text, "Thank you! We've sent you a confirmation email.");
    assert_eq!(page.url().await.as_str(), story, "still on the article");
    assert_eq!(
        status_in_daily(&app, "box.reader@news.example").await.as_deref(),
        Some("pending")
    );
    page.shot("thank-you").await;
    page.assert_no_sideways_scroll("the article with the thank-you").await;
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_box_without_script_on_a_phone() {
    the_signup_box_without_script(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_box_without_script_on_a_desktop() {
    the_signup_box_without_script(Viewport::Desktop).await
}

/// Without script the form posts to Bulletin's own page: the same messages, and a link back
/// to the article.
async fn the_signup_box_without_script(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (app, site) = app_with_site().await;
    let page = browser.session_without_script(viewport).await;
    let story = format!("{}/story", site.origin);
    page.goto(&story).await;
    // The browser's own check stops "reader@" before it is sent (`required`, `type=email`);
    // this one it lets through, and Bulletin answers it.
    page.fill("input[name=email]", "a..reader@news.example").await;
    page.click("form[data-bulletin] button[type=submit]").await;
    page.wait_for_path("/subscriptions").await;
    let error = page.wait_for("#email-error[role=alert]").await;
    let message = error.text().await.expect("the error");
    assert!(message.starts_with("Please enter a valid email address"), "{message}");
    page.shot("bad-address").await;
    page.assert_no_sideways_scroll("Bulletin's form with the error").await;

    page.fill("#email", "plain.reader@news.example").await;
    page.click("form[action='/subscriptions'] button[type=submit]").await;
    page.wait_for_text("Thank you! We've sent you a confirmation email.")
        .await;
    assert_eq!(
        status_in_daily(&app, "plain.reader@news.example").await.as_deref(),
        Some("pending")
    );
    page.shot("thank-you").await;
    page.assert_no_sideways_scroll("Bulletin's thank-you page").await;
    page.click("a[href$='/story']").await;
    page.wait_for("form[data-bulletin]").await;
    assert_eq!(page.url().await.as_str(), story, "back on the article");
    page.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managing_newsletters_on_a_phone() {
    managing_newsletters(Viewport::Phone).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managing_newsletters_on_a_desktop() {
    managing_newsletters(Viewport::Desktop).await
}

/// The preference centre from its link: join a list, leave one, leave them all.
async fn managing_newsletters(viewport: Viewport) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await.expect("the app on SQLite");
    app.create_list("daily", "Daily Briefing").await;
    app.create_list("weekly", "Weekly Explainer").await;
    app.create_list("breaking", "Breaking News").await;
    import_confirmed(&app, "daily", &["reader@news.example".to_owned()]).await;
    let reader = app
        .store
        .linked_subscriber_by_key("reader@news.example")
        .await
        .unwrap()
        .expect("the reader");
    let token = bulletin::domain::sign_link(
        &app.secret().await,
        bulletin::domain::LinkPurpose::Preferences,
        reader.id,
        reader.link_key,
    );
    let page = browser.session(viewport).await;
    page.goto(&app.url(&format!("/preferences?token={token}"))).await;
    page.wait_for("ul.preferences").await;
    assert_eq!(page.text("[data-status=daily]").await, "Subscribed");
    assert_eq!(page.text("[data-status=weekly]").await, "Not subscribed");
    page.shot("preferences").await;
    page.assert_no_sideways_scroll("the preference centre").await;

    page.click("form:has(input[name=list][value=weekly]) button[value=join]")
        .await;
    page.wait_for_text("joined Weekly Explainer").await;
    assert_eq!(page.text("[data-status=weekly]").await, "Subscribed");
    page.shot("joined").await;

    page.click("form:has(input[name=list][value=daily]) button[value=leave]")
        .await;
    page.wait_for_text("left Daily Briefing").await;
    assert_eq!(page.text("[data-status=daily]").await, "Not subscribed");
    page.shot("left-one").await;

    page.click("form.leave-all button[value=leave_all]").await;
    page.wait_for_text("left every newsletter").await;
    assert_eq!(page.text("[data-status=weekly]").await, "Not subscribed");
    assert_eq!(
        status_in_daily(&app, "reader@news.example").await.as_deref(),
        Some("unsubscribed")
    );
    page.shot("left-all").await;
    page.assert_no_sideways_scroll("the preference centre after leaving")
        .await;

    // Delete everything: a link by email, and its page's button.
    page.click("form.your-data button[value=erase]").await;
    page.wait_for_text("link to delete everything").await;
    let mail = app
        .smtp
        .wait_for(
            |m| m.subject().is_some_and(|s| s.contains("Delete your data")),
            MAIL_WAIT,
        )
        .await;
    let link = find_link(&mail.text_body(), &app.url("/preferences/erase?token=")).expect("an erasure link");
    page.goto(&link).await;
    page.wait_for("button.danger").await;
    page.shot("erase").await;
    page.assert_no_sideways_scroll("the erasure page").await;
    page.click("button.danger").await;
    page.wait_for_text("Your data is deleted").await;
    assert_eq!(status_in_daily(&app, "reader@news.example").await, None);
    page.shot("erased").await;

    // Without a link: the form that emails one.
    page.goto(&app.url("/preferences")).await;
    page.fill(
        "form[action='/preferences/link'] input[name=email]",
        "reader@news.example",
    )
    .await;
    page.click("form[action='/preferences/link'] button[type=submit]").await;
    page.wait_for_text("sent it a link to manage them").await;
    page.shot("link-requested").await;
    page.assert_no_sideways_scroll("the link request's answer").await;
    page.close().await;
}
