//! Leaving a list: from the visible link (a page with one button) or from the mail client's own
//! unsubscribe button (RFC 8058 one-click POST, no cookies, no redirect).

use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::{Format, query_param};
use crate::domain::UnsubscribeTokenError;
use crate::store::SubscriptionStatus;

#[derive(Template)]
#[template(path = "unsubscribe.html")]
struct UnsubscribePage<'a> {
    token: &'a str,
    list: &'a str,
    email: &'a str,
}

fn token_error(format: Format, e: UnsubscribeTokenError) -> Response {
    let err = match e {
        UnsubscribeTokenError::Malformed => ApiError::new(StatusCode::BAD_REQUEST, "malformed_token", e.to_string()),
        UnsubscribeTokenError::BadSignature => ApiError::new(StatusCode::NOT_FOUND, "unknown_token", e.to_string()),
    };
    err.for_client(format)
}

/// `GET /unsubscribe?token=…`: a page with one button; changes nothing.
pub async fn unsubscribe_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let raw = query_param(query.as_deref(), "token").unwrap_or_default();
    let id = match state.links.verify_unsubscribe(&raw) {
        Ok(id) => id,
        Err(e) => return token_error(Format::Html, e),
    };
    let info = match state.store.subscription_info(id).await {
        Ok(info) => info,
        Err(e) => return ApiError::from(e).into_html(),
    };
    match &info {
        Some(info) if info.status != SubscriptionStatus::Unsubscribed => super::pages::page(
            StatusCode::OK,
            &UnsubscribePage {
                token: &raw,
                list: &info.list.name,
                email: &info.email,
            },
        ),
        _ => super::pages::message(
            StatusCode::OK,
            "You're unsubscribed",
            "This address no longer receives this newsletter.",
            true,
        ),
    }
}

/// `POST /unsubscribe?token=…`: unsubscribes at once, whatever the body (`List-Unsubscribe=One-Click`
/// as a form or multipart, or the page's button). Idempotent; `200`, never a redirect.
pub async fn unsubscribe(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let format = Format::of(&headers);
    let raw = query_param(query.as_deref(), "token").unwrap_or_default();
    let id = match state.links.verify_unsubscribe(&raw) {
        Ok(id) => id,
        Err(e) => return token_error(format, e),
    };
    let result = async {
        state.store.unsubscribe(id).await?;
        Ok::<_, ApiError>(state.store.subscription_info(id).await?)
    }
    .await;
    let info = match result {
        Ok(info) => info,
        Err(e) if format == Format::Json => return e.into_response(),
        Err(e) => return e.into_html(),
    };
    tracing::info!(subscription = id, "unsubscribed");
    match format {
        Format::Json => Json(serde_json::json!({"status": "unsubscribed"})).into_response(),
        Format::Html => {
            let message = match &info {
                Some(info) => format!(
                    "You're unsubscribed from {}. You won't receive it anymore.",
                    info.list.name
                ),
                None => "You're unsubscribed. You won't receive this newsletter anymore.".to_owned(),
            };
            super::pages::message(StatusCode::OK, "You're unsubscribed", &message, true)
        }
    }
}
