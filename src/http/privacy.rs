//! `/api/subscribers/{email}`: everything stored about one address (GDPR Article 15), and its
//! erasure (Article 17).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::domain::EmailAddress;
use crate::store::SubscriberData;

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

/// Everything stored about an address (GDPR Article 15).
#[utoipa::path(
    get,
    path = "/subscribers/{email}",
    operation_id = "getSubscriberData",
    tag = "readers",
    params(("email" = String, Path, format = Email, description = "The address.")),
    responses(
        (status = 200, description = "Everything stored about it.", body = SubscriberData),
        (status = 404, description = "Nothing is stored about it (`unknown_subscriber`).", body = ErrorBody),
        (status = 422, description = "Not a valid address (`invalid_email`).", body = ErrorBody),
    ),
)]
pub async fn show(State(state): State<AppState>, Path(email): Path<String>) -> Result<Response, ApiError> {
    let email = parse(&email)?;
    match crate::privacy::data_of(&state.store, &email).await? {
        Some(data) => Ok(Json(data).into_response()),
        None => Err(unknown()),
    }
}

/// Erases an address everywhere (GDPR Article 17).
///
/// A keyed hash keeps the lists it left and its suppression in force.
#[utoipa::path(
    delete,
    path = "/subscribers/{email}",
    operation_id = "eraseSubscriber",
    tag = "readers",
    params(("email" = String, Path, format = Email, description = "The address.")),
    responses(
        (status = 204, description = "Erased."),
        (status = 404, description = "Nothing is stored about it (`unknown_subscriber`).", body = ErrorBody),
        (status = 422, description = "Not a valid address (`invalid_email`).", body = ErrorBody),
    ),
)]
pub async fn erase(State(state): State<AppState>, Path(email): Path<String>) -> Result<StatusCode, ApiError> {
    let email = parse(&email)?;
    let erased = crate::privacy::erase(&state.store, state.links.secret(), &state.config.outbox_dir, &email).await?;
    if !erased {
        return Err(unknown());
    }
    tracing::info!("an address was erased");
    Ok(StatusCode::NO_CONTENT)
}
