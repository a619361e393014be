//! The digests API: queue, inspect, cancel, preview and test-send a list's digest.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AppState;
use super::admin::find_list;
use super::error::ApiError;
use super::extract::{ApiJson, IdPath, RawBody, parse_json, query_param};
use crate::digest::{DigestError, DigestRequest, MAX_ITEMS_LIMIT};
use crate::domain::EmailAddress;
use crate::store::{List, NewOutboxMessage, StoreError};

#[derive(Deserialize, Default)]
struct RequestBody {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    max_items: Option<i64>,
    #[serde(default)]
    subject: Option<String>,
}

/// Parses the optional JSON body of a digest request.
fn digest_request(headers: &HeaderMap, bytes: &[u8]) -> Result<DigestRequest, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DigestRequest::default());
    }
    if super::extract::body_kind(headers)? != super::extract::BodyKind::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ));
    }
    let body: RequestBody = parse_json(bytes)?;
    let since = match body.since.as_deref() {
        None => None,
        Some(raw) => Some(
            DateTime::parse_from_rfc3339(raw.trim())
                .map_err(|_| {
                    ApiError::invalid(
                        "invalid_since",
                        "since",
                        "since is an RFC 3339 time like 2026-11-28T06:00:00Z.",
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    if body.max_items.is_some_and(|n| !(1..=MAX_ITEMS_LIMIT).contains(&n)) {
        return Err(ApiError::invalid(
            "invalid_max_items",
            "max_items",
            format!("max_items is a whole number from 1 to {MAX_ITEMS_LIMIT}."),
        ));
    }
    let subject = body.subject.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if subject
        .as_ref()
        .is_some_and(|s| s.chars().count() > 200 || s.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "invalid_subject",
            "subject",
            "A subject is at most 200 characters, without line breaks or control characters.",
        ));
    }
    Ok(DigestRequest {
        since,
        max_items: body.max_items,
        subject,
    })
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> Self {
        match e {
            DigestError::NoItems => ApiError::new(StatusCode::CONFLICT, "no_items", e.to_string()),
            DigestError::NoRecipients => ApiError::new(StatusCode::CONFLICT, "no_recipients", e.to_string()),
            DigestError::IdempotencyMismatch => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch", e.to_string())
                    .with_field("Idempotency-Key")
            }
            DigestError::Store(e) => e.into(),
            DigestError::Render(e) => ApiError::internal(e),
        }
    }
}

/// `POST /api/lists/{slug}/digests`
pub async fn create(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let request = digest_request(&headers, &bytes)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(str::trim)
                .filter(|k| (1..=200).contains(&k.len()))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_idempotency_key",
                        "Idempotency-Key",
                        "An Idempotency-Key is 1 to 200 visible characters.",
                    )
                })?,
        ),
    };
    let (digest, created) = queue(&state, &list, &request, key).await?;
    let status = if created { "queued" } else { digest.status.as_str() };
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"id": digest.id, "status": status, "items": digest.items, "recipients": digest.recipients})),
    )
        .into_response())
}

/// Queues a digest (the API's and the dashboard's): the digest, and whether it is new.
pub(super) async fn queue(
    state: &AppState,
    list: &List,
    request: &DigestRequest,
    key: Option<&str>,
) -> Result<(crate::store::DigestView, bool), ApiError> {
    let (digest, created) = crate::digest::queue(&state.store, &state.config, list, request, key).await?;
    if created {
        tracing::info!(digest = digest.id, list = %list.slug, recipients = digest.recipients, "digest queued");
        state.wake_all_senders();
    }
    Ok((digest, created))
}

pub(super) fn digest_not_found(id: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_digest",
        format!("There is no digest {id}."),
    )
}

/// `GET /api/digests/{id}`
pub async fn show(State(state): State<AppState>, IdPath(id): IdPath) -> Result<Response, ApiError> {
    match state.store.digest(id).await {
        Ok(d) => Ok(Json(d).into_response()),
        Err(StoreError::NotFound) => Err(digest_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/lists/{slug}/digests`: newest first.
pub async fn list(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    Ok(Json(state.store.digests(Some(list.id)).await?).into_response())
}

/// `POST /api/digests/{id}/cancel`
pub async fn cancel(State(state): State<AppState>, IdPath(id): IdPath) -> Result<Response, ApiError> {
    Ok(Json(cancel_digest(&state, id).await?).into_response())
}

/// Cancels a digest's unsent deliveries: the digest as it is then.
pub(super) async fn cancel_digest(state: &AppState, id: i64) -> Result<crate::store::DigestView, ApiError> {
    match state.store.cancel_digest(id).await {
        Ok(true) => {
            crate::telemetry::digest("cancelled");
            Ok(state.store.digest(id).await?)
        }
        Ok(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "digest_finished",
            "This digest has already been sent in full.",
        )),
        Err(StoreError::NotFound) => Err(digest_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

pub(super) const EMAIL_PREVIEW_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; sandbox";

/// `GET /api/lists/{slug}/digests/preview[?format=text]`: the next digest, with a placeholder
/// unsubscribe link; changes nothing.
pub async fn preview(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let text = query_param(query.as_deref(), "format").as_deref() == Some("text");
    preview_of(&state, &list, text).await
}

/// The next digest of `list` as HTML (sandboxed) or plain text.
pub(super) async fn preview_of(state: &AppState, list: &List, text: bool) -> Result<Response, ApiError> {
    let (_, rendered) = crate::digest::build_next(&state.store, &state.config, list, &DigestRequest::default()).await?;
    let (html, plain) = crate::digest::personalise(
        &rendered.html_body,
        &rendered.text_body,
        &rendered.placeholder,
        &crate::digest::Recipient {
            email: "subscriber@example.org",
            unsubscribe_url: &state.links.link("/unsubscribe?token=preview"),
            preferences_url: &state.links.link("/preferences"),
        },
    );
    Ok(if text {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], plain).into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Email HTML styles inline and shows remote images; it runs no script, and the
                // sandbox keeps the page from acting as our origin.
                (header::CONTENT_SECURITY_POLICY, EMAIL_PREVIEW_CSP),
            ],
            html,
        )
            .into_response()
    })
}

#[derive(Deserialize)]
pub struct TestBody {
    to: String,
}

/// `POST /api/lists/{slug}/digests/test`: the next digest to one address, marked as a test;
/// the items stay unsent.
pub async fn test_send(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    send_test(&state, &list, &body.to).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"status": "queued"}))).into_response())
}

/// Queues the test copy of the next digest for `to`.
pub(super) async fn send_test(state: &AppState, list: &List, to: &str) -> Result<(), ApiError> {
    let to = EmailAddress::parse(to).map_err(|e| ApiError::invalid("invalid_email", "to", e.to_string()))?;
    let message = test_message(state, list, &to).await?;
    state.store.enqueue(&message).await?;
    state.wake_sender();
    Ok(())
}

/// The test copy of the next digest for `to`, ready for the outbox.
pub async fn test_message(state: &AppState, list: &List, to: &EmailAddress) -> Result<NewOutboxMessage, DigestError> {
    let (_, rendered) = crate::digest::build_next(&state.store, &state.config, list, &DigestRequest::default()).await?;
    Ok(crate::digest::test_copy(&rendered, list, to.as_str(), &state.links))
}
