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
use crate::domain::{LinkPurpose, LinkToken, LinkTokenError};
use crate::store::{SubscriptionInfo, SubscriptionStatus};

#[derive(Template)]
#[template(path = "unsubscribe.html")]
struct UnsubscribePage<'a> {
    token: &'a str,
    list: &'a str,
    email: &'a str,
}

/// The subscription a link names, if the link was signed for it: for the row with that id and
/// link key, never for a row that took the id since (which answers as a forgery does).
async fn linked(state: &AppState, raw: &str) -> Result<(i64, SubscriptionInfo), ApiError> {
    let token = LinkToken::parse(raw)?;
    let info = state.store.subscription_info(token.id).await?;
    let Some(info) = info else {
        return Err(ApiError::from(LinkTokenError::BadSignature));
    };
    let id = state.links.verify(&token, LinkPurpose::Unsubscribe, info.link_key)?;
    Ok((id, info))
}

/// `GET /unsubscribe?token=…`: a page with one button; changes nothing.
pub async fn unsubscribe_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let raw = query_param(query.as_deref(), "token").unwrap_or_default();
    let info = match linked(&state, &raw).await {
        Ok((_, info)) => info,
        Err(e) => return e.into_html(),
    };
    if info.status != SubscriptionStatus::Unsubscribed {
        super::pages::page(
            StatusCode::OK,
            &UnsubscribePage {
                token: &raw,
                list: &info.list.name,
                email: &info.email,
            },
        )
    } else {
        super::pages::message(
            StatusCode::OK,
            "You're unsubscribed",
            "This address no longer receives this newsletter.",
            true,
        )
    }
}

/// `POST /unsubscribe?token=…`: unsubscribes at once, whatever the body (`List-Unsubscribe=One-Click`
/// as a form or multipart, or the page's button). Idempotent; `200`, never a redirect.
pub async fn unsubscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let format = Format::of(&headers);
    let raw = query_param(query.as_deref(), "token").unwrap_or_default();
    // A mail client's one-click POST names `List-Unsubscribe=One-Click` (as a form or multipart);
    // the page's button does not.
    let via = if body.windows(b"One-Click".len()).any(|w| w == b"One-Click") {
        crate::telemetry::Via::OneClick
    } else {
        crate::telemetry::Via::Page
    };
    let result = async {
        let (id, info) = linked(&state, &raw).await?;
        if state.store.unsubscribe_linked(id, info.link_key).await? {
            crate::telemetry::unsubscribe(via);
        }
        tracing::info!(subscription = id, "unsubscribed");
        Ok::<_, ApiError>(info)
    }
    .await;
    let info = match result {
        Ok(info) => info,
        Err(e) if format == Format::Json => return e.into_response(),
        Err(e) => return e.into_html(),
    };
    match format {
        Format::Json => Json(serde_json::json!({"status": "unsubscribed"})).into_response(),
        Format::Html => {
            let message = format!(
                "You're unsubscribed from {}. You won't receive it anymore.",
                info.list.name
            );
            super::pages::message(StatusCode::OK, "You're unsubscribed", &message, true)
        }
    }
}
