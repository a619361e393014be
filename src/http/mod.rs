//! The HTTP surface: public pages and signup, health, and the admin API.

mod admin;
mod archive;
mod chart;
mod confirm;
mod cors;
mod dashboard;
mod defences;
mod digests;
mod error;
mod export;
mod extract;
mod feeds;
mod health;
mod import;
mod openapi;
mod pages;
mod preferences;
mod privacy;
mod schedules;
pub mod server;
mod subscriptions;
mod suppressions;
mod unsubscribe;

pub use admin::parse_new_list;
pub use error::ApiError;
pub use feeds::parse_interval;

/// The signup body parser (form or JSON by `content_type`), for the fuzz target: `Ok` with the
/// parsed address and the number of lists named, or the error's code.
#[doc(hidden)]
pub fn parse_signup_body(content_type: &str, body: &[u8]) -> Result<(String, usize), &'static str> {
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(value) = axum::http::HeaderValue::from_str(content_type) {
        headers.insert(axum::http::header::CONTENT_TYPE, value);
    }
    subscriptions::parse_signup(&headers, body)
        .map(|(email, lists)| (email.as_str().to_owned(), lists))
        .map_err(|e| e.code)
}

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::config::Config;
use crate::store::Store;
use openapi::Routes;

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

pub struct StateInner {
    pub store: Store,
    pub config: Config,
    pub admin_tokens: Vec<[u8; 32]>,
    /// Signed links put in emails.
    pub links: crate::mail::Links,
    /// Wakes this process's idle sender when a message is queued.
    pub sender_wake: Arc<Notify>,
    /// Wakes this process's feed poller when a feed is added.
    pub feeds_wake: Arc<Notify>,
    /// Wakes this process's scheduler when a schedule is set.
    pub schedule_wake: Arc<Notify>,
    pub poller: crate::feeds::Poller,
    pub rate_limiter: defences::RateLimiter,
    /// Writes signups in batches (group commit).
    pub signups: crate::signup::SignupWriter,
    /// The lists, for the signup path.
    pub lists: crate::signup::ListCache,
    /// The Content-Security-Policy header, computed once.
    pub csp: axum::http::HeaderValue,
    /// What this process's sender reports, for `/readyz`.
    pub sender_health: Arc<crate::delivery::SenderHealth>,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, config: Config, links: crate::mail::Links, sender_wake: Arc<Notify>) -> Self {
        let feeds_wake = Arc::new(Notify::new());
        let poller = crate::feeds::Poller::new(store.clone(), feeds_wake.clone());
        let admin_tokens = admin::token_digests(&config.admin_tokens);
        let rate_limiter = defences::RateLimiter::new(config.rate_limit, defences::RateLimiter::MAX_KEYS);
        let signups = crate::signup::SignupWriter::spawn(store.clone(), config.clone(), sender_wake.clone());
        AppState(Arc::new(StateInner {
            rate_limiter,
            signups,
            lists: crate::signup::ListCache::default(),
            csp: defences::content_security_policy(),
            store,
            config,
            admin_tokens,
            links,
            sender_wake,
            feeds_wake,
            schedule_wake: Arc::new(Notify::new()),
            poller,
            sender_health: Arc::default(),
        }))
    }

    pub fn wake_sender(&self) {
        self.sender_wake.notify_one();
    }

    /// Wakes every idle worker of this process (a digest has work for all of them).
    pub fn wake_all_senders(&self) {
        self.sender_wake.notify_waiters();
        self.sender_wake.notify_one();
    }
}

pub fn router(state: AppState) -> Router {
    build(state).0
}

/// The path of every route the app serves, documented or not (the contract test walks them).
pub fn route_paths(state: AppState) -> Vec<String> {
    build(state).2
}

fn build(state: AppState) -> (Router, utoipa::openapi::OpenApi, Vec<String>) {
    use utoipa_axum::routes;
    let timeout = middleware::from_fn_with_state(state.clone(), defences::deadline);
    // Signups and resends send email: the rate limit guards them.
    let limited = middleware::from_fn_with_state(state.clone(), defences::rate_limit);
    // The routes a news site's own pages post to from the browser.
    let cors = middleware::from_fn_with_state(state.clone(), cors::cors);
    let public = Routes::new()
        .page("/", get(pages::signup_form))
        .page("/static/style.css", get(pages::stylesheet))
        .page("/static/admin.js", get(pages::admin_script))
        .doc_with(routes!(subscriptions::subscribe), |post| {
            post.route_layer(limited.clone())
                .options(|| async { StatusCode::NO_CONTENT })
                .layer(cors.clone())
        })
        .page("/embed.js", get(pages::embed_script))
        .doc(routes!(confirm::confirm_page, confirm::confirm))
        .page(
            "/subscriptions/resend",
            post(confirm::resend).route_layer(limited.clone()),
        )
        .doc(routes!(unsubscribe::unsubscribe_page, unsubscribe::unsubscribe))
        .page("/preferences", get(preferences::page_of).post(preferences::act))
        .page(
            "/preferences/link",
            post(preferences::send_link).route_layer(limited.clone()),
        )
        .page(
            "/preferences/erase",
            get(preferences::erase_page).post(preferences::erase),
        )
        .page("/digests/{public_id}", get(archive::web_version))
        .page("/lists/{slug}/archive", get(archive::page))
        .page("/lists/{slug}/archive.atom", get(archive::atom))
        .page("/healthz", get(health::healthz))
        .page("/readyz", get(health::readyz))
        .with(|r| {
            r.layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
                .layer(timeout.clone())
        });

    // The dashboard: every page behind a session, but the login (rate-limited like signups).
    let session = middleware::from_fn_with_state(state.clone(), dashboard::require_session);
    let dashboard = Routes::new()
        .page("/admin", get(dashboard::overview))
        .page("/admin/logout", post(dashboard::logout))
        .page("/admin/lists", post(dashboard::create_list))
        .page("/admin/lists/{slug}", get(dashboard::list_page))
        .page("/admin/lists/{slug}/feeds", post(dashboard::add_feed))
        .page("/admin/feeds/{id}/poll", post(dashboard::poll_feed))
        .page("/admin/feeds/{id}/remove", post(dashboard::remove_feed))
        .page("/admin/lists/{slug}/schedule", post(dashboard::set_schedule))
        .page("/admin/lists/{slug}/schedule/remove", post(dashboard::remove_schedule))
        .page("/admin/lists/{slug}/preview", get(dashboard::preview))
        .page("/admin/lists/{slug}/test", post(dashboard::send_test))
        .page(
            "/admin/lists/{slug}/send",
            get(dashboard::send_form).post(dashboard::send),
        )
        .page("/admin/lists/{slug}/export.csv", get(dashboard::export))
        .page("/admin/subscribers", get(dashboard::readers))
        .page("/admin/subscribers/{id}", get(dashboard::reader))
        .page(
            "/admin/subscribers/{id}/{action}",
            get(dashboard::reader_confirm).post(dashboard::reader_act),
        )
        .page("/admin/digests/{id}", get(dashboard::digest_page))
        .page("/admin/digests/{id}/progress", get(dashboard::progress))
        .page(
            "/admin/digests/{id}/cancel",
            get(dashboard::cancel_form).post(dashboard::cancel),
        )
        .page("/admin/import", get(dashboard::import_form))
        .page("/admin/{*rest}", get(not_found).post(not_found))
        .with(|r| r.route_layer(session.clone()))
        .page(
            "/admin/login",
            get(dashboard::login_form).merge(post(dashboard::login).route_layer(limited)),
        )
        .with(|r| {
            r.layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
                .layer(timeout.clone())
        })
        // An upload of up to 1 GiB streams for as long as the operator's link needs, like the
        // API's import: no body limit here, no timeout.
        .page(
            "/admin/import",
            post(dashboard::import)
                .layer(DefaultBodyLimit::disable())
                .route_layer(session),
        );

    let api = Routes::new()
        .doc(routes!(admin::lists, admin::create_list))
        .doc(routes!(admin::update_list))
        .doc(routes!(admin::subscribers))
        // Streams past the deadline: that bounds the handler only, not the body it returns.
        .doc(routes!(export::subscribers))
        .doc(routes!(feeds::list_feeds, feeds::add_feed))
        .doc(routes!(feeds::delete_feed))
        .doc(routes!(feeds::poll_feed))
        .doc(routes!(digests::list, digests::create))
        .doc(routes!(digests::preview))
        .doc(routes!(schedules::show, schedules::put, schedules::delete))
        .doc(routes!(digests::test_send))
        .doc(routes!(digests::show))
        .doc(routes!(digests::cancel))
        .doc(routes!(privacy::show, privacy::erase))
        .doc(routes!(suppressions::add))
        .doc(routes!(suppressions::show, suppressions::remove))
        .doc_with(routes!(feeds::push_items), |post| {
            post.layer(DefaultBodyLimit::max(feeds::PUSH_BODY_LIMIT))
        })
        .with(|r| {
            r.layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
                .layer(timeout)
        })
        // A CSV of up to 1 GiB streams for as long as the operator's link needs: no timeout.
        .doc_with(routes!(import::import), |post| post.layer(DefaultBodyLimit::disable()))
        .with(|r| r.route_layer(middleware::from_fn_with_state(state.clone(), admin::require_admin)));

    let metrics = Routes::new()
        .page("/metrics", get(health::metrics))
        .with(|r| r.route_layer(middleware::from_fn_with_state(state.clone(), admin::require_admin)));

    let (router, openapi, paths) = Routes::new()
        .merge(public)
        .merge(dashboard)
        .merge(metrics)
        .nest("/api", api)
        .finish();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(middleware::from_fn_with_state(state.clone(), defences::guard))
        .layer(middleware::from_fn(health::count_requests))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    // The route template only: query strings carry tokens, and a web version's address
                    // works like a password; neither may reach a log.
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("(no route)", |p| p.as_str());
                    tracing::info_span!("http", method = %req.method(), route = %route)
                })
                // A 5xx whose cause is ours (a bug, the database) is logged at ERROR where it happens;
                // a feed or SMTP server that is down answers 502/503 and is no error of this process.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .with_state(state);
    (router, openapi, paths)
}

async fn not_found(headers: axum::http::HeaderMap) -> Response {
    ApiError::not_found("There is nothing at this address.").for_client(extract::Format::of(&headers))
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed here.",
    )
    .into_response()
}
