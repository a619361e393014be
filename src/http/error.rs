//! The one error type of the HTTP layer and its one mapping to responses.
//!
//! JSON clients get `{"error": {"code", "message", "field"?}}`; pages get the same status with a
//! readable page. Internal errors are logged and answered with a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// Every JSON error: `{"error": {"code", "message", "field"?}}`; the one error schema of the
/// OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// A stable machine-readable code, such as `invalid_email` or `unknown_list`.
    #[schema(example = "invalid_email")]
    pub code: &'a str,
    /// What went wrong, in words for the reader or operator.
    pub message: &'a str,
    /// The one request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<&'a str>,
}

impl ApiError {
    /// `503 unavailable`: the database did not answer in time; nothing was changed.
    pub fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The service is unavailable for a moment. Please try again shortly.",
        )
    }
    /// The outcome a metric counts this error under.
    pub fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "invalid",
            _ => "error",
        }
    }

    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The error's JSON detail (the `error` member of its body).
    pub fn detail(&self) -> ErrorDetail<'_> {
        ErrorDetail {
            code: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422 about one field.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side. Please try again later.",
        )
    }

    /// The error as the client asked for it: the JSON shape, or a page for browsers.
    pub fn for_client(self, format: super::extract::Format) -> Response {
        match format {
            super::extract::Format::Json => self.into_response(),
            super::extract::Format::Html => self.into_html(),
        }
    }

    /// The same error as a page, for browsers.
    pub fn into_html(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        super::pages::message(self.status, title, &self.message, true)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.detail() };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "the database is unavailable");
            return ApiError::unavailable();
        }
        match err {
            StoreError::NotFound => ApiError::not_found("Not found."),
            StoreError::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", "It already exists."),
            other => ApiError::internal(other),
        }
    }
}

/// A signed link (unsubscribe, preferences) that is not one: malformed `400`, else `404`, the
/// same for a forgery and for a row that took the id since.
impl From<crate::domain::LinkTokenError> for ApiError {
    fn from(e: crate::domain::LinkTokenError) -> Self {
        let code = match e {
            crate::domain::LinkTokenError::Malformed => (StatusCode::BAD_REQUEST, "malformed_token"),
            crate::domain::LinkTokenError::BadSignature => (StatusCode::NOT_FOUND, "unknown_token"),
            crate::domain::LinkTokenError::Expired => (StatusCode::GONE, "expired_token"),
        };
        ApiError::new(code.0, code.1, e.to_string())
    }
}

impl From<askama::Error> for ApiError {
    fn from(err: askama::Error) -> Self {
        ApiError::internal(err)
    }
}
