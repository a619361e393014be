//! `/api/suppressions`: addresses that get no email at all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiJson;
use crate::domain::EmailAddress;
use crate::store::StoreError;

#[derive(Deserialize)]
pub struct AddSuppression {
    email: String,
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

/// `POST /api/suppressions`: a manual suppression (a new opt-in does not lift it).
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

pub async fn show(State(state): State<AppState>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let email = parse(&email, "email")?;
    match state.store.suppression(&email.key()).await {
        Ok(s) => Ok(Json(s).into_response()),
        Err(StoreError::NotFound) => Err(not_suppressed()),
        Err(e) => Err(e.into()),
    }
}

pub async fn remove(State(state): State<AppState>, Path(email): Path<String>) -> Result<StatusCode, ApiError> {
    let email = parse(&email, "email")?;
    match state.store.unsuppress(&email.key()).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(not_suppressed()),
        Err(e) => Err(e.into()),
    }
}
