//! A list's digest schedule: `PUT`, `GET` and `DELETE /api/lists/{slug}/schedule`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::admin::find_list;
use super::error::ApiError;
use super::extract::ApiJson;
use crate::schedule::{Schedule, ScheduleError, ScheduleView};
use crate::store::{List, ScheduleRow};

/// Runs listed with a schedule.
const RUNS_SHOWN: i64 = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSchedule {
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    max_items: Option<i64>,
    #[serde(default)]
    min_items: Option<i64>,
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let code = match e {
            ScheduleError::Cron(_) => "invalid_cron",
            ScheduleError::Timezone => "invalid_timezone",
            ScheduleError::MaxItems => "invalid_max_items",
            ScheduleError::MinItems => "invalid_min_items",
        };
        ApiError::invalid(code, e.field(), format!("{e}."))
    }
}

fn no_schedule(slug: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_schedule",
        format!("The list “{slug}” has no schedule."),
    )
}

/// `PUT /api/lists/{slug}/schedule`
pub async fn put(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<PutSchedule>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let row = set(
        &state,
        &list,
        &body.cron,
        body.timezone.as_deref(),
        body.max_items,
        body.min_items,
    )
    .await?;
    Ok(Json(ScheduleView::new(&list, &row, None)).into_response())
}

/// Sets a list's schedule (the API's and the dashboard's).
pub(super) async fn set(
    state: &AppState,
    list: &List,
    cron: &str,
    timezone: Option<&str>,
    max_items: Option<i64>,
    min_items: Option<i64>,
) -> Result<ScheduleRow, ApiError> {
    let schedule = Schedule::new(cron, timezone, state.config.timezone, max_items, min_items)?;
    let row = crate::schedule::set(&state.store, list, &schedule, crate::store::now()).await?;
    tracing::info!(list = %list.slug, cron = %row.cron, timezone = %row.timezone, next = %row.next_slot, "schedule set");
    state.schedule_wake.notify_one();
    Ok(row)
}

/// `GET /api/lists/{slug}/schedule`
pub async fn show(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let row = state
        .store
        .schedule(list.id)
        .await?
        .ok_or_else(|| no_schedule(&list.slug))?;
    let runs = state.store.schedule_runs(list.id, RUNS_SHOWN).await?;
    Ok(Json(ScheduleView::new(&list, &row, Some(runs))).into_response())
}

/// `DELETE /api/lists/{slug}/schedule`
pub async fn delete(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    remove(&state, &list).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn remove(state: &AppState, list: &List) -> Result<(), ApiError> {
    if state.store.delete_schedule(list.id).await? {
        tracing::info!(list = %list.slug, "schedule removed");
        Ok(())
    } else {
        Err(no_schedule(&list.slug))
    }
}
