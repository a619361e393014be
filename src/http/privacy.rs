//! `/api/subscribers/{email}`: everything stored about one address (GDPR Article 15), and its
//! erasure (Article 17).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::domain::EmailAddress;

fn parse(email: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(email).map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))
}

fn unknown() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_subscriber",
        "Nothing is stored about this address.",
    )
}

/// `GET /api/subscribers/{email}`.
pub async fn show(State(state): State<AppState>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let email = parse(&email)?;
    match crate::privacy::data_of(&state.store, &email).await? {
        Some(data) => Ok(Json(data).into_response()),
        None => Err(unknown()),
    }
}

/// `DELETE /api/subscribers/{email}`.
pub async fn erase(State(state): State<AppState>, Path(email): Path<String>) -> Result<StatusCode, ApiError> {
    let email = parse(&email)?;
    let erased = crate::privacy::erase(&state.store, state.links.secret(), &state.config.outbox_dir, &email).await?;
    if !erased {
        return Err(unknown());
    }
    tracing::info!("an address was erased");
    Ok(StatusCode::NO_CONTENT)
}
