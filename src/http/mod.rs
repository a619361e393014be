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
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::store::Store;

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
    let timeout = middleware::from_fn_with_state(state.clone(), defences::deadline);
    // Signups and resends send email: the rate limit guards them.
    let limited = middleware::from_fn_with_state(state.clone(), defences::rate_limit);
    // The routes a news site's own pages post to from the browser.
    let cors = middleware::from_fn_with_state(state.clone(), cors::cors);
    let public = Router::new()
        .route("/", get(pages::signup_form))
        .route("/static/style.css", get(pages::stylesheet))
        .route("/static/admin.js", get(pages::admin_script))
        .route(
            "/subscriptions",
            post(subscriptions::subscribe)
                .route_layer(limited.clone())
                .options(|| async { StatusCode::NO_CONTENT })
                .layer(cors.clone()),
        )
        .route("/embed.js", get(pages::embed_script))
        .route(
            "/subscriptions/confirm",
            get(confirm::confirm_page).post(confirm::confirm),
        )
        .route(
            "/subscriptions/resend",
            post(confirm::resend).route_layer(limited.clone()),
        )
        .route(
            "/unsubscribe",
            get(unsubscribe::unsubscribe_page).post(unsubscribe::unsubscribe),
        )
        .route("/preferences", get(preferences::page_of).post(preferences::act))
        .route(
            "/preferences/link",
            post(preferences::send_link).route_layer(limited.clone()),
        )
        .route(
            "/preferences/erase",
            get(preferences::erase_page).post(preferences::erase),
        )
        .route("/digests/{public_id}", get(archive::web_version))
        .route("/lists/{slug}/archive", get(archive::page))
        .route("/lists/{slug}/archive.atom", get(archive::atom))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
        .layer(timeout.clone());

    // The dashboard: every page behind a session, but the login (rate-limited like signups).
    let dashboard = Router::new()
        .route("/admin", get(dashboard::overview))
        .route("/admin/logout", post(dashboard::logout))
        .route("/admin/lists", post(dashboard::create_list))
        .route("/admin/lists/{slug}", get(dashboard::list_page))
        .route("/admin/lists/{slug}/feeds", post(dashboard::add_feed))
        .route("/admin/feeds/{id}/poll", post(dashboard::poll_feed))
        .route("/admin/feeds/{id}/remove", post(dashboard::remove_feed))
        .route("/admin/lists/{slug}/schedule", post(dashboard::set_schedule))
        .route("/admin/lists/{slug}/schedule/remove", post(dashboard::remove_schedule))
        .route("/admin/lists/{slug}/preview", get(dashboard::preview))
        .route("/admin/lists/{slug}/test", post(dashboard::send_test))
        .route(
            "/admin/lists/{slug}/send",
            get(dashboard::send_form).post(dashboard::send),
        )
        .route("/admin/lists/{slug}/export.csv", get(dashboard::export))
        .route("/admin/subscribers", get(dashboard::readers))
        .route("/admin/subscribers/{id}", get(dashboard::reader))
        .route(
            "/admin/subscribers/{id}/{action}",
            get(dashboard::reader_confirm).post(dashboard::reader_act),
        )
        .route("/admin/digests/{id}", get(dashboard::digest_page))
        .route("/admin/digests/{id}/progress", get(dashboard::progress))
        .route(
            "/admin/digests/{id}/cancel",
            get(dashboard::cancel_form).post(dashboard::cancel),
        )
        .route("/admin/import", get(dashboard::import_form))
        .route("/admin/{*rest}", get(not_found).post(not_found))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            dashboard::require_session,
        ))
        .route(
            "/admin/login",
            get(dashboard::login_form).merge(post(dashboard::login).route_layer(limited)),
        )
        .layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
        .layer(timeout.clone())
        // An upload of up to 1 GiB streams for as long as the operator's link needs, like the
        // API's import: no body limit here, no timeout.
        .route(
            "/admin/import",
            post(dashboard::import)
                .layer(DefaultBodyLimit::disable())
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    dashboard::require_session,
                )),
        );

    let api = Router::new()
        .route("/lists", get(admin::lists).post(admin::create_list))
        .route("/lists/{slug}", axum::routing::patch(admin::update_list))
        .route("/lists/{slug}/subscribers", get(admin::subscribers))
        // Streams past the deadline: that bounds the handler only, not the body it returns.
        .route("/lists/{slug}/subscribers.csv", get(export::subscribers))
        .route("/lists/{slug}/feeds", get(feeds::list_feeds).post(feeds::add_feed))
        .route("/feeds/{id}", axum::routing::delete(feeds::delete_feed))
        .route("/feeds/{id}/poll", post(feeds::poll_feed))
        .route("/lists/{slug}/digests", get(digests::list).post(digests::create))
        .route("/lists/{slug}/digests/preview", get(digests::preview))
        .route(
            "/lists/{slug}/schedule",
            get(schedules::show).put(schedules::put).delete(schedules::delete),
        )
        .route("/lists/{slug}/digests/test", post(digests::test_send))
        .route("/digests/{id}", get(digests::show))
        .route("/digests/{id}/cancel", post(digests::cancel))
        .route("/subscribers/{email}", get(privacy::show).delete(privacy::erase))
        .route("/suppressions", post(suppressions::add))
        .route(
            "/suppressions/{email}",
            get(suppressions::show).delete(suppressions::remove),
        )
        .route(
            "/lists/{slug}/items",
            post(feeds::push_items).layer(DefaultBodyLimit::max(feeds::PUSH_BODY_LIMIT)),
        )
        .layer(DefaultBodyLimit::max(extract::PUBLIC_BODY_LIMIT))
        .layer(timeout)
        // A CSV of up to 1 GiB streams for as long as the operator's link needs: no timeout.
        .route(
            "/lists/{slug}/import",
            post(import::import).layer(DefaultBodyLimit::disable()),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), admin::require_admin));

    let metrics = Router::new()
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin::require_admin));

    Router::new()
        .merge(public)
        .merge(dashboard)
        .merge(metrics)
        .nest("/api", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(middleware::from_fn_with_state(state.clone(), defences::guard))
        .layer(middleware::from_fn(health::count_requests))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            // The route template only: query strings carry tokens, and a web version's address
            // works like a password; neither may reach a log.
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("(no route)", |p| p.as_str());
            tracing::info_span!("http", method = %req.method(), route = %route)
        }))
        .with_state(state)
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
