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

/// One entry of `/readyz`.
#[derive(serde::Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn of(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Check { ok: true, error: None },
            Err(e) => Check {
                ok: false,
                error: Some(e),
            },
        }
    }
}

/// `GET /readyz`: `{"database", "migrations", "sender"}`, each `{"ok": …}` with an `error` when
/// it fails; `200` only when all hold, else `503`.
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let database = state.store.ping().await.map_err(|e| e.to_string());
    let migrations = match &database {
        Err(_) => Err("unknown while the database does not answer".to_owned()),
        Ok(()) => match state.store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => Ok(()),
            Ok(pending) => Err(format!("not applied: {pending:?}")),
            Err(e) => Err(e.to_string()),
        },
    };
    let sender = state.sender_health.state();
    let ready = database.is_ok() && migrations.is_ok() && sender.is_ok();
    let body = serde_json::json!({
        "database": Check::of(database),
        "migrations": Check::of(migrations),
        "sender": Check::of(sender),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
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
