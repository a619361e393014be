use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;

/// `GET /healthz`: `200 ok` when the database answers, else `503`.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// `GET /metrics` (admin): the Prometheus text format. The queue depths are read here, once per
/// scrape; a database that does not answer leaves them as last read.
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let handle = crate::telemetry::handle();
    match state.store.queue_depths().await {
        Ok(depths) => crate::telemetry::queue_depth(&depths),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the queue depths"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Counts every answered request by its route template (`(no route)` when none matched) and
/// status, and times it.
pub async fn count_requests(
    matched: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let route = matched.as_ref().map_or("(no route)", |m| m.as_str()).to_owned();
    let response = next.run(request).await;
    crate::telemetry::http_request(&route, response.status().as_u16(), started.elapsed());
    response
}
