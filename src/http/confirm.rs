//! Confirming a signup: a scanner-safe GET that only shows a page, and the POST that confirms.

use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Format, Origin, RawBody, parse_body, query_param};
use crate::domain::{ConfirmationToken, EmailAddress};
use crate::store::{ConfirmOutcome, List};

/// Submits the confirmation form as soon as the page loads, so one click on the emailed link
/// confirms. It must stay byte-for-byte what the page's Content-Security-Policy hash covers.
pub const AUTO_SUBMIT_SCRIPT: &str = "document.getElementById('confirm').submit();";

#[derive(Template)]
#[template(path = "confirm_page.html")]
struct ConfirmPage<'a> {
    token: &'a str,
    lists: &'a str,
    script: &'a str,
}

#[derive(Template)]
#[template(path = "link_problem.html")]
struct LinkProblemPage<'a> {
    title: &'a str,
    message: &'a str,
    /// For an expired link: the token, to ask for a fresh one.
    resend_token: Option<&'a str>,
}

/// Why a confirmation link does not work, as a page with the matching status.
enum LinkProblem {
    Malformed,
    Unknown,
    Expired(String),
}

impl IntoResponse for LinkProblem {
    fn into_response(self) -> Response {
        let (status, title, message, resend) = match &self {
            LinkProblem::Malformed => (
                StatusCode::BAD_REQUEST,
                "This link is incomplete",
                "The confirmation link is malformed. Please copy the whole link from the email, or sign up again.",
                None,
            ),
            LinkProblem::Unknown => (
                StatusCode::NOT_FOUND,
                "This link is not valid",
                "We do not know this confirmation link. It may be from an old email: please sign up again.",
                None,
            ),
            LinkProblem::Expired(token) => (
                StatusCode::GONE,
                "This link has expired",
                "Confirmation links work for a limited time. Ask for a fresh link, or sign up again.",
                Some(token.as_str()),
            ),
        };
        let page = LinkProblemPage {
            title,
            message,
            resend_token: resend,
        };
        super::pages::page(status, &page)
    }
}

fn names(lists: &[List]) -> String {
    crate::mail::join_names(&lists.iter().map(|l| l.name.as_str()).collect::<Vec<_>>())
}

/// The page of an emailed confirmation link; changes nothing.
///
/// Checks the token read-only and answers a page whose form confirms (submitted at once by a
/// line of script). Mail scanners that fetch links change nothing.
#[utoipa::path(
    get,
    path = "/subscriptions/confirm",
    operation_id = "confirmationPage",
    tag = "signup",
    security(()),
    params(("token" = String, Query, description = "The token of the emailed link.", pattern = "^[A-Za-z0-9_-]{43}$")),
    responses(
        (status = 200, description = "A page whose form confirms.", content_type = "text/html", body = String),
        (status = 400, description = "A malformed token.", content_type = "text/html", body = String),
        (status = 404, description = "An unknown token.", content_type = "text/html", body = String),
        (status = 410, description = "An expired link, with a button for a fresh one.", content_type = "text/html", body = String),
    ),
)]
pub async fn confirm_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let Ok(token) = ConfirmationToken::parse(&query_param(query.as_deref(), "token").unwrap_or_default()) else {
        return LinkProblem::Malformed.into_response();
    };
    let lists = match state.store.check_confirmation(&token.hash()).await {
        Ok(ConfirmOutcome::Confirmed { lists, .. }) => lists,
        Ok(ConfirmOutcome::Expired) => return LinkProblem::Expired(token.as_str().to_owned()).into_response(),
        Ok(ConfirmOutcome::Unknown) => return LinkProblem::Unknown.into_response(),
        Err(e) => return ApiError::from(e).into_html(),
    };
    let page = ConfirmPage {
        token: token.as_str(),
        lists: &names(&lists),
        script: AUTO_SUBMIT_SCRIPT,
    };
    super::pages::page(StatusCode::OK, &page)
}

/// The token of a confirmation link.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct TokenForm {
    /// The `token` of the emailed link.
    #[serde(default)]
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]{43}$")]
    token: String,
}

/// A confirmed signup: the lists it confirmed, by slug.
#[derive(Serialize, utoipa::ToSchema)]
struct Subscribed<'a> {
    #[schema(example = "subscribed")]
    status: &'static str,
    #[schema(example = json!(["daily"]))]
    lists: Vec<&'a str>,
}

fn token_from_body(headers: &HeaderMap, body: Result<RawBody, ApiError>) -> Result<TokenForm, ApiError> {
    parse_body(headers, &body?.0)
}

/// Confirms a signup.
///
/// Confirms every list of the signup (the form the emailed link's page posts), records the
/// confirming request, and queues a welcome email per list. Confirming again answers the same
/// until the link expires.
#[utoipa::path(
    post,
    path = "/subscriptions/confirm",
    operation_id = "confirmSubscription",
    tag = "signup",
    security(()),
    request_body(content(
        (TokenForm = "application/json"),
        (TokenForm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Subscribed (JSON, or a page for a form post).",
         content((Subscribed = "application/json"), (String = "text/html"))),
        (status = 400, description = "A malformed token (`malformed_token`), or a body that does not parse.",
         content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 404, description = "An unknown token (`unknown_token`).",
         content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 410, description = "An expired link (`expired_token`); the page offers a fresh one.",
         content((ErrorBody = "application/json"), (String = "text/html"))),
    ),
)]
pub async fn confirm(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let format = Format::of(&headers);
    let form = match token_from_body(&headers, body) {
        Ok(form) => form,
        Err(e) if format == Format::Json => return e.into_response(),
        Err(e) => return e.into_html(),
    };
    let Ok(token) = ConfirmationToken::parse(form.token.trim()) else {
        return match format {
            Format::Json => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_token",
                "The confirmation token is malformed.",
            )
            .into_response(),
            Format::Html => LinkProblem::Malformed.into_response(),
        };
    };
    let outcome = state
        .store
        .confirm(
            &token.hash(),
            &origin,
            |list, email, (subscription_id, link_key), (subscriber_id, subscriber_key)| {
                let url = state.links.unsubscribe_url(subscription_id, link_key);
                let preferences = state.links.preferences_url(subscriber_id, subscriber_key);
                crate::mail::welcome_email(
                    email,
                    list,
                    subscription_id,
                    &url,
                    &preferences,
                    state.links.namespace(),
                )
            },
            |key| state.links.erased_key(key),
        )
        .await;
    let lists = match outcome {
        Ok(ConfirmOutcome::Confirmed { lists, newly }) => {
            if !newly.is_empty() {
                tracing::info!(confirmed = newly.len(), "subscriptions confirmed");
                for _ in &newly {
                    crate::telemetry::confirmation();
                }
                state.wake_sender();
            }
            lists
        }
        Ok(ConfirmOutcome::Expired) if format == Format::Json => {
            return ApiError::new(StatusCode::GONE, "expired_token", "This confirmation link has expired.")
                .into_response();
        }
        Ok(ConfirmOutcome::Unknown) if format == Format::Json => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_token",
                "This confirmation link is not valid.",
            )
            .into_response();
        }
        Ok(ConfirmOutcome::Expired) => return LinkProblem::Expired(token.as_str().to_owned()).into_response(),
        Ok(ConfirmOutcome::Unknown) => return LinkProblem::Unknown.into_response(),
        Err(e) if format == Format::Json => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::from(e).into_html(),
    };
    let slugs: Vec<&str> = lists.iter().map(|l| l.slug.as_str()).collect();
    match format {
        Format::Json => Json(Subscribed {
            status: "subscribed",
            lists: slugs,
        })
        .into_response(),
        Format::Html => {
            let message = format!("You're subscribed to {}. Welcome!", names(&lists));
            super::pages::message(StatusCode::OK, "You're subscribed", &message, false)
        }
    }
}

/// `POST /subscriptions/resend` (form field `token`, from the expired-link page): a fresh link for
/// the same address and lists, under the same rules as a new signup.
pub async fn resend(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let form = match token_from_body(&headers, body) {
        Ok(form) => form,
        Err(e) => return e.into_html(),
    };
    let Ok(token) = ConfirmationToken::parse(form.token.trim()) else {
        return LinkProblem::Malformed.into_response();
    };
    let (email, lists) = match state.store.confirmation_request(&token.hash()).await {
        Ok(Some(found)) => found,
        Ok(None) => return LinkProblem::Unknown.into_response(),
        Err(e) => return ApiError::from(e).into_html(),
    };
    let started = match EmailAddress::parse(&email) {
        Ok(email) => super::subscriptions::start_opt_in(&state, email, lists, origin).await,
        Err(e) => Err(ApiError::internal(e)),
    };
    if let Err(e) = started {
        return e.into_html();
    }
    super::pages::message(
        StatusCode::ACCEPTED,
        "Check your inbox",
        "We've sent you a new confirmation email.",
        false,
    )
}
