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

/// The keys a suppression of `email` may be kept under: the address's, or the hash its erasure
/// left (`privacy`).
fn keys(state: &AppState, email: &EmailAddress) -> [String; 2] {
    let key = email.key();
    let erased = state.links.erased_key(&key);
    [key, erased]
}

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
