//! `GET /api/lists/{slug}/subscribers.csv?status=`: a list's subscribers as CSV, streamed (see
//! `crate::export` for the format). The dashboard serves the same through [`subscribers_csv`].
//!
//! The request deadline (`defences::deadline`) bounds the handler only, up to the response head:
//! the body streams afterwards for as long as the client reads, so a large export is never cut.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::Response;
use futures_util::StreamExt;

use super::AppState;
use super::admin::find_list;
use super::error::ApiError;
use crate::export::{ExportStatus, csv_chunks};

/// `GET /api/lists/{slug}/subscribers.csv?status=`
pub async fn subscribers(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    subscribers_csv(&state, &slug, query.get("status").map(String::as_str)).await
}

/// The export of list `slug` with `status` (`pending`, `confirmed` when absent, `unsubscribed`
/// or `all`) as a streamed `text/csv` attachment named `<slug>-<status>.csv`. A bad status is
/// `422 invalid_status` (as for `GET /api/lists/{slug}/subscribers`), an unknown list `404 unknown_list`. A database error after the head
/// was sent aborts the body (the client sees a truncated transfer, never a short valid file).
pub(super) async fn subscribers_csv(state: &AppState, slug: &str, status: Option<&str>) -> Result<Response, ApiError> {
    let status = ExportStatus::parse(status).ok_or_else(|| {
        ApiError::invalid(
            "invalid_status",
            "status",
            format!("status is one of {}.", ExportStatus::CHOICES),
        )
    })?;
    let list = find_list(state, slug).await?;
    let slug = list.slug.clone();
    let body = csv_chunks(state.store.clone(), list.id, status).map(move |chunk| match chunk {
        Ok(chunk) => Ok(chunk.bytes),
        Err(e) => {
            tracing::error!(error = %e, list = %slug, "subscriber export failed midway");
            Err(e)
        }
    });
    // The slug is `[a-z0-9-]` and the status a fixed word: nothing to escape in the name.
    let disposition = format!("attachment; filename=\"{}-{}.csv\"", list.slug, status.as_str());
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    headers.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
