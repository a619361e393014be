//! CORS for the routes a news site's own pages post to (the signup box under an article): only
//! origins in `BULLETIN_ALLOWED_ORIGINS`, never with credentials. Any other origin gets no CORS
//! header, so its browser keeps the answer from its script.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ORIGIN, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECONDS: &str = "86400";

/// The request's `Origin`, if it is an allowed one.
fn allowed_origin(state: &AppState, request: &Request) -> Option<HeaderValue> {
    let origin = request.headers().get(ORIGIN)?;
    let text = origin.to_str().ok()?;
    state
        .config
        .allowed_origins
        .iter()
        .any(|o| o.as_str() == text)
        .then(|| origin.clone())
}

/// Answers preflights (`OPTIONS`: `204`) and marks the other answers for allowed origins. Every
/// answer varies by `Origin`, so that no cache hands one origin's answer to another.
pub async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = allowed_origin(&state, &request);
    let mut response = if request.method() == Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        if origin.is_some() {
            let headers = preflight.headers_mut();
            headers.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
            headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_SECONDS));
        }
        preflight
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Some(origin) = origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    headers.append(VARY, HeaderValue::from_static("Origin"));
    response
}
