//! Leaving a list: from the visible link (a page with one button) or from the mail client's own
//! unsubscribe button (RFC 8058 one-click POST, no cookies, no redirect).

use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorBody};
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

/// The page of an emailed unsubscribe link: one button; changes nothing.
#[utoipa::path(
    get,
    path = "/unsubscribe",
    operation_id = "unsubscribePage",
    tag = "signup",
    security(()),
    params(("token" = String, Query, description = "The signed token of the emailed unsubscribe link.", pattern = "^[0-9]+\\.[A-Za-z0-9_-]{43}$")),
    responses(
        (status = 200, description = "A page with one button (or saying the address is unsubscribed already).", content_type = "text/html", body = String),
        (status = 400, description = "A malformed token.", content_type = "text/html", body = String),
        (status = 404, description = "A token not signed for any subscription.", content_type = "text/html", body = String),
    ),
)]
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

/// The RFC 8058 one-click body a mail client posts.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct OneClick {
    #[schema(rename = "List-Unsubscribe", example = "One-Click")]
    list_unsubscribe: String,
}

/// An unsubscribe's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Unsubscribed {
    #[schema(example = "unsubscribed")]
    status: &'static str,
}

/// Unsubscribes the subscription an emailed link names (RFC 8058 one-click).
///
/// At once, whatever the body (`List-Unsubscribe=One-Click` as a form or multipart, or the page's
/// button). Idempotent; `200`, never a redirect.
#[utoipa::path(
    post,
    path = "/unsubscribe",
    operation_id = "unsubscribe",
    tag = "signup",
    security(()),
    params(("token" = String, Query, description = "The signed token of the emailed unsubscribe link.", pattern = "^[0-9]+\\.[A-Za-z0-9_-]{43}$")),
    request_body(
        description = "Anything: RFC 8058's `List-Unsubscribe=One-Click` from a mail client, or nothing from the page's button.",
        content(
            (OneClick = "application/x-www-form-urlencoded"),
            (OneClick = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 200, description = "Unsubscribed (also when already so); mail still queued for the subscription is cancelled. JSON for `Accept: application/json`, else a page.",
         content((Unsubscribed = "application/json"), (String = "text/html"))),
        (status = 400, description = "A malformed token (`malformed_token`).",
         content((ErrorBody = "application/json"), (String = "text/html"))),
        (status = 404, description = "A token not signed for any subscription (`unknown_token`).",
         content((ErrorBody = "application/json"), (String = "text/html"))),
    ),
)]
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
        Format::Json => Json(Unsubscribed { status: "unsubscribed" }).into_response(),
        Format::Html => {
            let message = format!(
                "You're unsubscribed from {}. You won't receive it anymore.",
                info.list.name
            );
            super::pages::message(StatusCode::OK, "You're unsubscribed", &message, true)
        }
    }
}
