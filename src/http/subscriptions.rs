//! `POST /subscriptions`: a reader signs up for one or several lists.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Format, Origin, RawBody, parse_body};
use super::pages::SignupPage;
use crate::domain::EmailAddress;
use crate::store::List;

/// A signup: an address and the lists it joins (repeat `lists` in a form).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
struct SignupRequest {
    /// The reader's address.
    #[serde(default)]
    #[schema(required = true, value_type = String, format = Email, example = "reader@example.org")]
    email: Option<String>,
    /// Slugs of the lists to join; may be left out when exactly one list exists.
    #[serde(default)]
    #[schema(example = json!(["daily", "weekly"]))]
    lists: Vec<String>,
    /// The honeypot: hidden from people on the form, so only a bot fills it in. A signup with
    /// it filled is answered as any other and dropped.
    #[serde(default)]
    website: Option<String>,
    /// The article a signup box was on: linked back to from Bulletin's answer page when it lies
    /// under `BULLETIN_ALLOWED_ORIGINS`, ignored otherwise (never a redirect).
    #[serde(default)]
    return_to: Option<String>,
}

/// The answer to a recorded signup: the same whether the address was new, pending or
/// confirmed.
#[derive(Serialize, utoipa::ToSchema)]
struct SignupAccepted {
    #[schema(example = "confirmation_sent")]
    status: &'static str,
    #[schema(example = "Thank you! We've sent you a confirmation email.")]
    message: &'static str,
}

/// What the reader is told once the signup is recorded (the signup box shows the same).
pub const THANKS: &str = "Thank you! We've sent you a confirmation email.";

impl SignupRequest {
    fn return_to(&self, state: &AppState) -> Option<String> {
        let raw = self.return_to.as_deref()?;
        crate::domain::allowed_url(raw, &state.config.allowed_origins).map(String::from)
    }
}

/// Signs an address up for one or several lists.
///
/// Validates the address and lists, records the signup and queues its confirmation email (double
/// opt-in). Rate-limited per client.
#[utoipa::path(
    post,
    path = "/subscriptions",
    operation_id = "subscribe",
    tag = "signup",
    security(()),
    request_body(content(
        (SignupRequest = "application/json"),
        (SignupRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "Recorded; a confirmation email is on its way (JSON, or a page for a form post).",
         content((SignupAccepted = "application/json"), (String = "text/html"))),
        (status = 422, description = "An invalid address (`invalid_email`), no list named where several exist (`no_list`), or an unknown list (`unknown_list`). A form post gets the form again with the message beside the field.",
         content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 429, description = "Too many requests from this client (`rate_limited`).",
         headers(("Retry-After" = u64, description = "Seconds to wait.")),
         content((ErrorBody = "application/json"), (String = "text/html"))),
    ),
)]
pub async fn subscribe(
    State(state): State<AppState>,
    Origin(origin): Origin,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Response {
    let format = Format::of(&headers);
    let mut request = SignupRequest::default();
    let result = async {
        let RawBody(bytes) = body?;
        request = parse_body(&headers, &bytes)?;
        signup(&state, &request, &origin).await
    }
    .await;

    crate::telemetry::signup(match &result {
        Ok(true) => "accepted",
        Ok(false) => "dropped",
        Err(e) => e.outcome(),
    });
    match (result.map(|_| ()), format) {
        (Ok(()), Format::Json) => (
            StatusCode::ACCEPTED,
            Json(SignupAccepted {
                status: "confirmation_sent",
                message: THANKS,
            }),
        )
            .into_response(),
        (Ok(()), Format::Html) => {
            let back = request.return_to(&state);
            super::pages::page(
                StatusCode::ACCEPTED,
                &super::pages::MessagePage {
                    title: "Thank you for signing up",
                    message: THANKS,
                    show_signup_link: false,
                    back: back.as_deref(),
                },
            )
        }
        (Err(err), Format::Json) => err.into_response(),
        (Err(err), Format::Html) => form_with_error(&state, &request, err).await,
    }
}

/// What a signup body (form or JSON, by `headers`) holds, its address parsed, with nothing
/// stored: the fuzz target's way in.
pub(crate) fn parse_signup(headers: &HeaderMap, bytes: &[u8]) -> Result<(EmailAddress, usize), ApiError> {
    let request: SignupRequest = parse_body(headers, bytes)?;
    let email = EmailAddress::parse(request.email.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))?;
    Ok((email, request.lists.len()))
}

/// Validates, records the signup and queues its confirmation email (never sends it here).
async fn signup(
    state: &AppState,
    request: &SignupRequest,
    origin: &crate::store::RequestOrigin,
) -> Result<bool, ApiError> {
    let email = match request.email.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(ApiError::invalid(
                "invalid_email",
                "email",
                "Please enter your email address.",
            ));
        }
        Some(raw) => {
            EmailAddress::parse(raw).map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))?
        }
    };
    let lists = resolve_lists(state, &request.lists).await?;
    if request.website.as_deref().is_some_and(|v| !v.trim().is_empty()) {
        // A bot: the answer a person would get for the same input, so it learns nothing;
        // nothing stored or sent.
        tracing::info!("signup dropped: the honeypot field was filled");
        return Ok(false);
    }
    start_opt_in(state, email, lists, origin.clone()).await?;
    Ok(true)
}

/// Records a signup for `lists` with the next batch and queues its confirmation email (subject
/// to the caps); answers once it is committed.
pub async fn start_opt_in(
    state: &AppState,
    email: EmailAddress,
    lists: Vec<List>,
    origin: crate::store::RequestOrigin,
) -> Result<(), ApiError> {
    let signup = crate::signup::Signup::new(email, lists, origin);
    state.signups.submit(signup).await?;
    Ok(())
}

/// The requested lists, de-duplicated in order; or the only list when none is named.
async fn resolve_lists(state: &AppState, requested: &[String]) -> Result<Vec<List>, ApiError> {
    let (all, found) = state.lists.lookup(&state.store, requested).await?;
    if requested.is_empty() {
        return match &*all {
            [only] => Ok(vec![only.clone()]),
            _ => Err(ApiError::invalid(
                "no_list",
                "lists",
                "Please choose at least one newsletter.",
            )),
        };
    }
    let mut chosen: Vec<List> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (slug, list) in requested.iter().zip(found) {
        let slug = slug.trim();
        match list {
            Some(list) if !chosen.iter().any(|c| c.id == list.id) => chosen.push(list),
            Some(_) => {}
            None if !unknown.contains(&slug) => unknown.push(slug),
            None => {}
        }
    }
    if !unknown.is_empty() {
        let names: Vec<String> = unknown
            .iter()
            .map(|s| format!("“{}”", s.chars().take(64).collect::<String>()))
            .collect();
        return Err(ApiError::invalid(
            "unknown_list",
            "lists",
            format!(
                "There is no newsletter called {}.",
                crate::mail::join_names(&names.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        ));
    }
    Ok(chosen)
}

/// The signup form again, with the message beside the field at fault and the input kept.
async fn form_with_error(state: &AppState, request: &SignupRequest, err: ApiError) -> Response {
    let field = err.field.as_deref();
    if !matches!(field, Some("email" | "lists")) || err.status != StatusCode::UNPROCESSABLE_ENTITY {
        return err.into_html();
    }
    let lists = match state.store.lists().await {
        Ok(lists) => lists,
        Err(e) => return ApiError::from(e).into_html(),
    };
    let back = request.return_to(state);
    let page = SignupPage {
        lists: &lists,
        email: request.email.as_deref().unwrap_or(""),
        checked: &request.lists,
        email_error: (field == Some("email")).then_some(err.message.as_str()),
        lists_error: (field == Some("lists")).then_some(err.message.as_str()),
        return_to: back.as_deref(),
    };
    super::pages::page(err.status, &page)
}
