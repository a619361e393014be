//! The dashboard under `/admin`: a login that opens a server-side session (the browser cannot
//! send the bearer token), a CSRF token per session on every form, and the pages.

mod digest;
mod import;
mod list;
mod overview;
mod readers;

pub use digest::{cancel, cancel_form, digest_page, progress};
pub use import::{import, import_form};
pub use list::{
    add_feed, export, list_page, poll_feed, preview, remove_feed, remove_schedule, send, send_form, send_test,
    set_schedule,
};
pub use overview::{create_list, overview};
pub use readers::{act as reader_act, confirm_action as reader_confirm, reader, readers};

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::TimeDelta;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::extract::RawBody;
use crate::store::AdminSession;

const COOKIE: &str = "bulletin_admin";
/// A session lasts at most this long.
const SESSION_HOURS: i64 = 12;

/// The policy of every `/admin` page: only this origin's files, no inline code.
const ADMIN_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                         connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "admin_login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
}

fn hex_sha256(bytes: &[u8]) -> String {
    crate::domain::hex(&Sha256::digest(bytes))
}

/// The session of a request under `/admin` (put there by `require_session`): its id's hash and
/// the session.
type Session = axum::Extension<(String, AdminSession)>;

#[derive(Template)]
#[template(path = "admin_message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    back: &'a str,
}

/// What a form's failure says, on a page with a way back to where the form was.
fn form_error(e: ApiError, back: &str) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not done",
        s if s.is_server_error() => "Something went wrong",
        _ => "Please check the form",
    };
    admin_page(
        e.status,
        &MessagePage {
            title,
            message: &e.message,
            back,
        },
    )
}

/// The outcome of a form, as a redirect back with a notice: one of a fixed set, by key, so
/// nothing of the request is shown back.
fn done(path: String, notice: &'static str) -> Response {
    see_other_to(&format!("{path}?done={notice}"))
}

/// A form's outcome: back to `back` with the notice, or the failure with a way back there.
fn finish<T>(result: Result<T, ApiError>, back: String, notice: &'static str) -> Response {
    match result {
        Ok(_) => done(back, notice),
        Err(e) => form_error(e, &back),
    }
}

/// A redirect to a path of ours made of values we checked (a list's slug, a digest's id).
fn see_other_to(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => see_other("/admin"),
    }
}

/// The text of a notice named by `?done=`.
fn notice(query: Option<&str>) -> Option<&'static str> {
    let key = super::extract::query_param(query, "done")?;
    Some(match key.as_str() {
        "list_created" => "The list was created.",
        "feed_added" => "The feed was added. Its first poll runs now.",
        "feed_polled" => "The feed was polled.",
        "feed_removed" => "The feed was removed.",
        "schedule_set" => "The schedule was saved.",
        "schedule_removed" => "The schedule was removed.",
        "test_queued" => "A test copy is on its way.",
        "cancelled" => "The digest was cancelled: nothing more of it will be sent.",
        "unsubscribed" => "Unsubscribed: mail queued for that list was cancelled.",
        "suppressed" => "Suppressed: nothing more is sent to this address.",
        _ => return None,
    })
}

/// A time as the newsroom reads it: in its zone.
fn when(tz: chrono_tz::Tz, at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&tz).format("%a %-d %b %Y, %H:%M %Z").to_string()
}

pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// A page under `/admin` with its policy; never cached.
fn admin_page(status: StatusCode, template: &impl Template) -> Response {
    let mut response = super::pages::page(status, template);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ADMIN_CSP));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A redirect to a fixed path of ours: nothing of the request chooses where.
fn see_other(path: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response()
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && value.len() == 64)
        .map(|(_, value)| value.to_owned())
}

/// The digest of the admin token that matches `presented`, checking every token.
fn matching_token(state: &AppState, presented: &str) -> Option<[u8; 32]> {
    let p: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    let found = state
        .admin_tokens
        .iter()
        .fold(subtle::Choice::from(0), |ok, known| ok | known.ct_eq(&p));
    bool::from(found).then_some(p)
}

/// The live session of a request, opened with a token still configured.
async fn current_session(state: &AppState, headers: &HeaderMap) -> Result<Option<(String, AdminSession)>, ApiError> {
    let Some(id) = session_id(headers) else {
        return Ok(None);
    };
    let id_hash = hex_sha256(id.as_bytes());
    let Some(session) = state.store.admin_session(&id_hash, crate::store::now()).await? else {
        return Ok(None);
    };
    // A token removed from BULLETIN_ADMIN_TOKEN ends the sessions it opened.
    let still_configured = state.admin_tokens.iter().any(|t| {
        crate::domain::hex(t)
            .as_bytes()
            .ct_eq(session.token_digest.as_bytes())
            .into()
    });
    Ok(still_configured.then_some((id_hash, session)))
}

/// Every `/admin` page but the login needs a session; without one, the login page.
pub async fn require_session(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match current_session(&state, request.headers()).await {
        Ok(Some(session)) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        Ok(None) => see_other("/admin/login"),
        Err(e) => e.into_response(),
    }
}

/// The CSRF token of a form, checked against the session's; `403` when absent or wrong.
fn check_csrf(session: &AdminSession, form: &[(String, String)]) -> Result<(), ApiError> {
    if bool::from(field(form, "csrf").as_bytes().ct_eq(session.csrf.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "This form has expired or did not come from the dashboard. Reload the page and try again.",
        ))
    }
}

pub(super) fn form_fields(bytes: &[u8]) -> Vec<(String, String)> {
    serde_html_form::from_bytes(bytes).unwrap_or_default()
}

/// `GET /admin/login`
pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if current_session(&state, &headers).await?.is_some() {
        return Ok(see_other("/admin"));
    }
    Ok(admin_page(StatusCode::OK, &LoginPage { error: None }))
}

/// `POST /admin/login`: a right token opens a new session (a new id every time: no fixation).
pub async fn login(State(state): State<AppState>, RawBody(bytes): RawBody) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    let presented = field(&form, "token");
    let Some(token) = matching_token(&state, presented).filter(|_| !presented.trim().is_empty()) else {
        tracing::warn!("dashboard login refused: wrong token");
        return Ok(admin_page(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                error: Some("That is not an admin token. Check BULLETIN_ADMIN_TOKEN and try again."),
            },
        ));
    };
    let id = crate::domain::hex(&rand::random::<[u8; 32]>());
    let csrf = crate::domain::hex(&rand::random::<[u8; 16]>());
    let now = crate::store::now();
    state
        .store
        .create_admin_session(
            &hex_sha256(id.as_bytes()),
            &crate::domain::hex(&token),
            &csrf,
            now,
            now + TimeDelta::hours(SESSION_HOURS),
        )
        .await?;
    let secure = if state.config.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut response = see_other("/admin");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    tracing::info!("dashboard session opened");
    Ok(response)
}

/// `POST /admin/logout`: ends the session.
pub async fn logout(
    State(state): State<AppState>,
    axum::Extension((id_hash, session)): axum::Extension<(String, AdminSession)>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form_fields(&bytes))?;
    state.store.delete_admin_session(&id_hash).await?;
    let mut response = see_other("/admin/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("bulletin_admin=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0"),
    );
    Ok(response)
}
