//! The digests API: queue, inspect, cancel, preview and test-send a list's digest.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::AppState;
use super::admin::find_list;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, IdPath, RawBody, parse_json, query_param};
use crate::digest::{DigestError, DigestRequest, MAX_ITEMS_LIMIT};
use crate::domain::EmailAddress;
use crate::store::{DigestView, List, NewOutboxMessage, StoreError};

/// What a digest is made of; every field may be left out, and so may the body.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct DigestOptions {
    /// Items published since this time, or first seen since then and dated at most 24 h before
    /// it (default: the last 24 h).
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// At most this many items, newest first (default 20).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    max_items: Option<i64>,
    /// The subject (default: the list's name and the date); 200 characters at most.
    #[serde(default)]
    #[schema(max_length = 200)]
    subject: Option<String>,
}

/// A digest queued (or, for a repeated `Idempotency-Key`, the one queued before).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct DigestQueued {
    id: i64,
    /// `queued`, or the earlier digest's status.
    #[schema(example = "queued")]
    status: String,
    items: i64,
    recipients: i64,
}

/// A test copy queued.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct TestQueued {
    #[schema(example = "queued")]
    status: &'static str,
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
    let body: DigestOptions = parse_json(bytes)?;
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
    // The length counts what was sent (the API document's maxLength), then spaces are trimmed.
    let subject_too_long = body.subject.as_ref().is_some_and(|s| s.chars().count() > 200);
    let subject = body.subject.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if subject_too_long || subject.as_ref().is_some_and(|s| s.chars().any(char::is_control)) {
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

/// Queues a digest of the list's recent items to every confirmed subscriber.
///
/// The sender delivers it in the background; watch it with `GET /api/digests/{id}`.
#[utoipa::path(
    post,
    path = "/lists/{slug}/digests",
    operation_id = "createDigest",
    tag = "digests",
    params(
        ("slug" = String, Path, description = "The list's slug."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 200 characters: a retry with the same key and body answers the digest queued the first time."),
    ),
    request_body(content = Option<DigestOptions>, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued.", body = DigestQueued),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 409, description = "No new items (`no_items`) or no confirmed subscriber (`no_recipients`).", body = ErrorBody),
        (status = 422, description = "A bad `since`, `max_items`, `subject` or `Idempotency-Key`, or the key reused for another request (`idempotency_mismatch`).", body = ErrorBody),
    ),
)]
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
    let status = if created { "queued".to_owned() } else { digest.status };
    Ok((
        StatusCode::ACCEPTED,
        Json(DigestQueued {
            id: digest.id,
            status,
            items: digest.items,
            recipients: digest.recipients,
        }),
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

/// A digest and its progress.
#[utoipa::path(
    get,
    path = "/digests/{id}",
    operation_id = "getDigest",
    tag = "digests",
    params(("id" = i64, Path, description = "The digest's id.")),
    responses(
        (status = 200, description = "The digest.", body = DigestView),
        (status = 404, description = "No such digest (`unknown_digest`).", body = ErrorBody),
    ),
)]
pub async fn show(State(state): State<AppState>, IdPath(id): IdPath) -> Result<Response, ApiError> {
    match state.store.digest(id).await {
        Ok(d) => Ok(Json(d).into_response()),
        Err(StoreError::NotFound) => Err(digest_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// A list's digests, newest first.
#[utoipa::path(
    get,
    path = "/lists/{slug}/digests",
    operation_id = "listDigests",
    tag = "digests",
    params(("slug" = String, Path, description = "The list's slug.")),
    responses(
        (status = 200, description = "The list's digests, newest first.", body = Vec<DigestView>),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    Ok(Json(state.store.digests(Some(list.id)).await?).into_response())
}

/// Cancels a digest: its unsent deliveries are not sent.
#[utoipa::path(
    post,
    path = "/digests/{id}/cancel",
    operation_id = "cancelDigest",
    tag = "digests",
    params(("id" = i64, Path, description = "The digest's id.")),
    responses(
        (status = 200, description = "Cancelled: the digest as it is now.", body = DigestView),
        (status = 404, description = "No such digest (`unknown_digest`).", body = ErrorBody),
        (status = 409, description = "Already sent in full (`digest_finished`).", body = ErrorBody),
    ),
)]
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

/// The next digest as it would go out, with a placeholder unsubscribe link; changes nothing.
#[utoipa::path(
    get,
    path = "/lists/{slug}/digests/preview",
    operation_id = "previewDigest",
    tag = "digests",
    params(
        ("slug" = String, Path, description = "The list's slug."),
        ("format" = inline(Option<PreviewFormat>), Query, description = "`html` (the default) or `text`."),
    ),
    responses(
        (status = 200, description = "The next digest's HTML part (under its own sandboxing policy), or its text part.",
         content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 409, description = "No new items (`no_items`).", body = ErrorBody),
        (status = 422, description = "A format other than `html` or `text` (`invalid_format`).", body = ErrorBody),
    ),
)]
pub async fn preview(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let text = match query_param(query.as_deref(), "format").as_deref() {
        None | Some("html") => false,
        Some("text") => true,
        Some(_) => {
            return Err(ApiError::invalid("invalid_format", "format", "format is html or text."));
        }
    };
    let list = find_list(&state, &slug).await?;
    preview_of(&state, &list, text).await
}

/// The parts a preview shows.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum PreviewFormat {
    Html,
    Text,
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

/// Where a test copy goes.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TestBody {
    #[schema(format = Email, example = "editor@news.example")]
    to: String,
}

/// Sends the next digest to one address, marked as a test; the items stay unsent.
#[utoipa::path(
    post,
    path = "/lists/{slug}/digests/test",
    operation_id = "sendTestDigest",
    tag = "digests",
    params(("slug" = String, Path, description = "The list's slug.")),
    request_body = TestBody,
    responses(
        (status = 202, description = "The test copy is queued.", body = TestQueued),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 409, description = "No new items (`no_items`).", body = ErrorBody),
        (status = 422, description = "An invalid address (`invalid_email`, field `to`).", body = ErrorBody),
    ),
)]
pub async fn test_send(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    send_test(&state, &list, &body.to).await?;
    Ok((StatusCode::ACCEPTED, Json(TestQueued { status: "queued" })).into_response())
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
