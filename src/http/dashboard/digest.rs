//! `/admin/digests/{id}`: one digest's items and progress (live, from the progress JSON), its
//! cancellation, and its failed recipients with the servers' answers.

use askama::Template;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Session, admin_page, check_csrf, finish, form_fields, notice, when};
use crate::http::AppState;
use crate::http::digests::{cancel_digest, digest_not_found};
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, RawBody};
use crate::store::{DigestView, FailedDelivery, StoreError};

/// Failed recipients shown on the page.
const FAILED_SHOWN: i64 = 100;

/// How far a digest has come, as the page shows it and its script reads it.
#[derive(Debug, Serialize)]
pub(super) struct Progress {
    status: String,
    recipients: i64,
    sent: i64,
    failed: i64,
    pending: i64,
    /// Of the recipients, how many are done (sent or failed), in percent.
    percent: i64,
    /// Messages a second since the digest started.
    rate: Option<f64>,
    rate_text: String,
    eta_seconds: Option<i64>,
    eta_text: String,
    active: bool,
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => "under a minute".to_owned(),
        s if s < 3600 => format!("about {} min", (s + 59) / 60),
        s => format!("about {} h {} min", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    fn of(d: &DigestView, now: DateTime<Utc>) -> Progress {
        let processed = d.sent + d.failed;
        let active = matches!(d.status.as_str(), "queued" | "sending");
        let rate = d.started_at.and_then(|start| {
            let end = d.finished_at.unwrap_or(now);
            let secs = (end - start).num_milliseconds() as f64 / 1000.0;
            (secs > 0.0 && processed > 0).then(|| processed as f64 / secs)
        });
        let eta_seconds = rate
            .filter(|_| active && d.pending > 0)
            .map(|r| (d.pending as f64 / r).ceil() as i64);
        Progress {
            status: d.status.clone(),
            recipients: d.recipients,
            sent: d.sent,
            failed: d.failed,
            pending: d.pending,
            percent: if d.recipients > 0 {
                processed * 100 / d.recipients
            } else {
                100
            },
            rate,
            rate_text: rate.map_or_else(|| "–".to_owned(), |r| format!("{:.0} per second", r.max(1.0))),
            eta_seconds,
            eta_text: match (active, eta_seconds) {
                (false, _) => "finished".to_owned(),
                (true, Some(s)) => human_duration(s),
                (true, None) => "starting".to_owned(),
            },
            active,
        }
    }
}

#[derive(Template)]
#[template(path = "admin_digest.html")]
struct DigestPage<'a> {
    digest: &'a DigestView,
    progress: &'a Progress,
    items: &'a [crate::store::DigestItem],
    failed: &'a [FailedDelivery],
    created: String,
    csrf: &'a str,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "admin_cancel.html")]
struct CancelPage<'a> {
    digest: &'a DigestView,
    progress: &'a Progress,
    csrf: &'a str,
}

async fn find_digest(state: &AppState, id: i64) -> Result<DigestView, ApiError> {
    match state.store.digest(id).await {
        Err(StoreError::NotFound) => Err(digest_not_found(id)),
        other => Ok(other?),
    }
}

/// `GET /admin/digests/{id}`
pub async fn digest_page(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let digest = find_digest(&state, id).await?;
    let progress = Progress::of(&digest, crate::store::now());
    let items = state.store.digest_items(id).await?;
    let failed = state.store.failed_deliveries(id, FAILED_SHOWN).await?;
    Ok(admin_page(
        StatusCode::OK,
        &DigestPage {
            created: when(state.config.timezone, digest.created_at),
            digest: &digest,
            progress: &progress,
            items: &items,
            failed: &failed,
            csrf: &session.csrf,
            notice: notice(query.as_deref()),
        },
    ))
}

/// `GET /admin/digests/{id}/progress`: what the page's script polls.
pub async fn progress(State(state): State<AppState>, IdPath(id): IdPath) -> Result<Response, ApiError> {
    let digest = find_digest(&state, id).await?;
    let mut response = Json(Progress::of(&digest, crate::store::now())).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `GET /admin/digests/{id}/cancel`: the confirmation step. Changes nothing.
pub async fn cancel_form(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let digest = find_digest(&state, id).await?;
    let progress = Progress::of(&digest, crate::store::now());
    Ok(admin_page(
        StatusCode::OK,
        &CancelPage {
            digest: &digest,
            progress: &progress,
            csrf: &session.csrf,
        },
    ))
}

/// `POST /admin/digests/{id}/cancel`
pub async fn cancel(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form_fields(&bytes))?;
    let back = format!("/admin/digests/{id}");
    Ok(finish(cancel_digest(&state, id).await, back, "cancelled"))
}
