//! `POST /api/lists/{slug}/import`: a CSV body, streamed to a temporary file (up to 1 GiB).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;

use super::AppState;
use super::admin::find_list;
use super::error::{ApiError, ErrorBody};
use crate::import::{ImportError, ImportOptions, ImportReport};

pub const IMPORT_LIMIT: u64 = 1024 * 1024 * 1024;

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(ApiError::invalid(
            "invalid_flag",
            name,
            format!("{name} is true or false."),
        )),
    }
}

/// A refused import: the error, and for invalid rows the report naming each one's line.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ImportRefused<'a> {
    error: super::error::ErrorDetail<'a>,
    /// For `invalid_rows` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    report: Option<ImportReport>,
}

/// Imports a CSV of addresses into a list.
///
/// A header row names `email` (and optionally `name`); up to 1 GiB, streamed. Rows are confirmed
/// with a consent record, or each is sent a confirmation email.
#[utoipa::path(
    post,
    path = "/lists/{slug}/import",
    operation_id = "importSubscribers",
    tag = "lists",
    params(
        ("slug" = String, Path, description = "The list's slug."),
        ("confirmed" = Option<bool>, Query, description = "Import as confirmed (needs `consent`) instead of sending each a confirmation email."),
        ("consent" = Option<String>, Query, description = "Where the consent of a confirmed import was given, recorded on each row (one line: control characters are dropped, at most 500 characters kept)."),
        ("skip_invalid" = Option<bool>, Query, description = "Import the valid rows of a file with invalid ones."),
    ),
    request_body(content = String, content_type = "text/csv", description = "Up to 1 GiB."),
    responses(
        (status = 200, description = "Imported.", body = ImportReport),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 413, description = "Over 1 GiB (`payload_too_large`).", body = ErrorBody),
        (status = 422, description = "Invalid rows and `skip_invalid` not set (`invalid_rows`: nothing imported, the report names each line), an unreadable file (`invalid_csv`), a bad flag (`invalid_flag`), or `consent` missing (`consent_required`).",
         content((ImportRefused = "application/json"))),
    ),
)]
pub async fn import(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let options = ImportOptions {
        confirmed: flag(&query, "confirmed")?,
        consent: query.get("consent").cloned(),
        skip_invalid: flag(&query, "skip_invalid")?,
    };
    if options.confirmed && options.consent.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return Err(ApiError::invalid(
            "consent_required",
            "consent",
            ImportError::ConsentRequired.to_string(),
        ));
    }
    let file = spool_body(body).await?;
    let report = crate::import::import_file(&state.store, &state.config, &list, file.path(), &options).await;
    match report {
        Ok(report) => {
            if !options.confirmed && report.imported > 0 {
                state.wake_all_senders();
            }
            Ok(Json(report).into_response())
        }
        Err(ImportError::InvalidRows(report)) => {
            let message = ImportError::InvalidRows(report.clone()).to_string();
            let refused = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rows", message);
            let body = ImportRefused {
                error: refused.detail(),
                report: Some(report),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response())
        }
        Err(ImportError::Unreadable(message)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_csv", message))
        }
        Err(ImportError::ConsentRequired) => Err(ApiError::invalid(
            "consent_required",
            "consent",
            ImportError::ConsentRequired.to_string(),
        )),
        Err(ImportError::Store(e)) => Err(e.into()),
    }
}

/// Streams the body to a temporary file, refusing more than `IMPORT_LIMIT` bytes.
async fn spool_body(body: Body) -> Result<tempfile::NamedTempFile, ApiError> {
    spool(body.into_data_stream()).await
}

/// Streams chunks (a request body, or one part of a form) to a temporary file, refusing more
/// than `IMPORT_LIMIT` bytes.
pub(super) async fn spool<E>(
    stream: impl futures_util::Stream<Item = Result<axum::body::Bytes, E>>,
) -> Result<tempfile::NamedTempFile, ApiError> {
    use futures_util::StreamExt;
    let file = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
    let mut out = tokio::fs::File::create(file.path()).await.map_err(ApiError::internal)?;
    let mut stream = std::pin::pin!(stream);
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "The upload was interrupted."))?;
        total += chunk.len() as u64;
        if total > IMPORT_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "An import is at most 1 GiB.",
            ));
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    Ok(file)
}
