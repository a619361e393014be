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
use super::error::{ApiError, ErrorBody};
use crate::export::{ExportStatus, csv_chunks};

/// The statuses an export takes.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ExportChoice {
    Pending,
    Confirmed,
    Unsubscribed,
    All,
}

/// A list's subscribers with their consent records, as a streamed CSV.
#[utoipa::path(
    get,
    path = "/lists/{slug}/subscribers.csv",
    operation_id = "exportSubscribers",
    tag = "lists",
    params(
        ("slug" = String, Path, description = "The list's slug."),
        ("status" = inline(Option<ExportChoice>), Query, description = "Which subscriptions (default `confirmed`)."),
    ),
    responses(
        (status = 200, description = "A CSV attachment named `<slug>-<status>.csv`.", content_type = "text/csv", body = String,
         headers(("Content-Disposition" = String, description = "`attachment; filename=\"<slug>-<status>.csv\"`"))),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 422, description = "A bad status (`invalid_status`).", body = ErrorBody),
    ),
)]
pub async fn subscribers(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = query.get("status").map(String::as_str);
    // The API takes exactly the documented words; the dashboard's form may send an empty choice.
    if status.is_some_and(|s| s.is_empty() || s.trim() != s) {
        return Err(invalid_status());
    }
    subscribers_csv(&state, &slug, status).await
}

fn invalid_status() -> ApiError {
    ApiError::invalid(
        "invalid_status",
        "status",
        format!("status is one of {}.", ExportStatus::CHOICES),
    )
}

/// The export of list `slug` with `status` (`pending`, `confirmed` when absent, `unsubscribed`
/// or `all`) as a streamed `text/csv` attachment named `<slug>-<status>.csv`. A bad status is
/// `422 invalid_status` (as for `GET /api/lists/{slug}/subscribers`), an unknown list `404 unknown_list`. A database error after the head
/// was sent aborts the body (the client sees a truncated transfer, never a short valid file).
pub(super) async fn subscribers_csv(state: &AppState, slug: &str, status: Option<&str>) -> Result<Response, ApiError> {
    let status = ExportStatus::parse(status).ok_or_else(invalid_status)?;
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
