//! `/api/suppressions`: addresses that get no email at all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use crate::domain::EmailAddress;
use crate::store::{StoreError, Suppression};

/// An address to suppress by hand.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AddSuppression {
    #[schema(format = Email, example = "reader@example.org")]
    email: String,
    /// Why, for operators (500 characters are kept).
    #[serde(default)]
    note: Option<String>,
}

fn parse(email: &str, field: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(email).map_err(|e| ApiError::invalid("invalid_email", field, e.to_string()))
}

fn not_suppressed() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_suppressed",
        "This address is not suppressed.",
    )
}

/// Suppresses an address by hand (a new opt-in does not lift it).
#[utoipa::path(
    post,
    path = "/suppressions",
    operation_id = "addSuppression",
    tag = "readers",
    request_body = AddSuppression,
    responses(
        (status = 201, description = "Suppressed.", body = Suppression),
        (status = 422, description = "Not a valid address (`invalid_email`).", body = ErrorBody),
    ),
)]
pub async fn add(State(state): State<AppState>, ApiJson(body): ApiJson<AddSuppression>) -> Result<Response, ApiError> {
    let email = parse(&body.email, "email")?;
    let note = body
        .note
        .map(|n| n.chars().filter(|c| !c.is_control()).take(500).collect::<String>());
    state
        .store
        .suppress(&email.key(), email.as_str(), "manual", note.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(state.store.suppression(&email.key()).await?)).into_response())
}

/// The keys a suppression of `email` may be kept under: the address's, or the hash its erasure
/// left (`privacy`).
fn keys(state: &AppState, email: &EmailAddress) -> [String; 2] {
    let key = email.key();
    let erased = state.links.erased_key(&key);
    [key, erased]
}

/// Whether an address is suppressed, and why.
#[utoipa::path(
    get,
    path = "/suppressions/{email}",
    operation_id = "getSuppression",
    tag = "readers",
    params(("email" = String, Path, format = Email, description = "The address.")),
    responses(
        (status = 200, description = "Its suppression.", body = Suppression),
        (status = 404, description = "Not suppressed (`not_suppressed`).", body = ErrorBody),
        (status = 422, description = "Not a valid address (`invalid_email`).", body = ErrorBody),
    ),
)]
pub async fn show(State(state): State<AppState>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let email = parse(&email, "email")?;
    for key in keys(&state, &email) {
        match state.store.suppression(&key).await {
            Ok(mut s) => {
                email.as_str().clone_into(&mut s.email);
                return Ok(Json(s).into_response());
            }
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(not_suppressed())
}

/// Lifts an address's suppression.
#[utoipa::path(
    delete,
    path = "/suppressions/{email}",
    operation_id = "removeSuppression",
    tag = "readers",
    params(("email" = String, Path, format = Email, description = "The address.")),
    responses(
        (status = 204, description = "Lifted."),
        (status = 404, description = "Not suppressed (`not_suppressed`).", body = ErrorBody),
        (status = 422, description = "Not a valid address (`invalid_email`).", body = ErrorBody),
    ),
)]
pub async fn remove(State(state): State<AppState>, Path(email): Path<String>) -> Result<StatusCode, ApiError> {
    let email = parse(&email, "email")?;
    let mut removed = false;
    for key in keys(&state, &email) {
        match state.store.unsuppress(&key).await {
            Ok(()) => removed = true,
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_suppressed())
    }
}
