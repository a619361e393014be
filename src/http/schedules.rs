//! A list's digest schedule: `PUT`, `GET` and `DELETE /api/lists/{slug}/schedule`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::admin::find_list;
use super::error::{ApiError, ErrorBody};
use super::extract::ApiJson;
use crate::schedule::{Schedule, ScheduleError, ScheduleView};
use crate::store::{List, ScheduleRow};

/// Runs listed with a schedule.
const RUNS_SHOWN: i64 = 20;

/// When a list's digest goes out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSchedule {
    /// Five fields: minute, hour, day of month, month, day of week.
    #[schema(example = "0 7 * * *")]
    cron: String,
    /// An IANA time zone (default: BULLETIN_TIMEZONE).
    #[serde(default)]
    #[schema(example = "Europe/Kyiv")]
    timezone: Option<String>,
    /// At most this many items per digest (default 20).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    max_items: Option<i64>,
    /// A slot with fewer new items sends nothing (default 1).
    #[serde(default)]
    #[schema(minimum = 1)]
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

/// Sets (or replaces) the list's schedule.
#[utoipa::path(
    put,
    path = "/lists/{slug}/schedule",
    operation_id = "setSchedule",
    tag = "schedules",
    params(("slug" = String, Path, description = "The list's slug.")),
    request_body = PutSchedule,
    responses(
        (status = 200, description = "The schedule and its next slot.", body = ScheduleView),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 422, description = "A bad field (`invalid_cron`, `invalid_timezone`, `invalid_max_items`, `invalid_min_items`).", body = ErrorBody),
    ),
)]
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

/// The schedule, its next slot and its last 20 runs.
#[utoipa::path(
    get,
    path = "/lists/{slug}/schedule",
    operation_id = "getSchedule",
    tag = "schedules",
    params(("slug" = String, Path, description = "The list's slug.")),
    responses(
        (status = 200, description = "The schedule, with `runs`.", body = ScheduleView),
        (status = 404, description = "No such list (`unknown_list`), or it has no schedule (`no_schedule`).", body = ErrorBody),
    ),
)]
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

/// Removes a list's schedule.
#[utoipa::path(
    delete,
    path = "/lists/{slug}/schedule",
    operation_id = "deleteSchedule",
    tag = "schedules",
    params(("slug" = String, Path, description = "The list's slug.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such list (`unknown_list`), or it has no schedule (`no_schedule`).", body = ErrorBody),
    ),
)]
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
