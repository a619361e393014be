//! `/admin`: every list with its figures, the charts, what needs attention, and a new list.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Session, admin_page, check_csrf, done, field, form_error, form_fields, notice, when};
use crate::http::AppState;
use crate::http::chart::{self, Chart};
use crate::http::error::ApiError;
use crate::http::extract::RawBody;
use crate::store::{DayFigures, Feed, List, ListActivity, ListCounts, QueueDepth};

/// Days a chart covers.
pub(super) const CHART_DAYS: u64 = 90;

pub(super) struct ListRow {
    pub list: List,
    pub counts: ListCounts,
    pub day: ListActivity,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_overview.html")]
struct OverviewPage<'a> {
    rows: &'a [ListRow],
    subscriptions: &'a Chart,
    messages: &'a Chart,
    failing: &'a [Feed],
    queue: QueueDepth,
    csrf: &'a str,
    notice: Option<&'static str>,
}

/// Adds up the lists' days (the same days, in the same order, for every list).
fn sum_days(per_list: Vec<Vec<DayFigures>>) -> Vec<DayFigures> {
    let mut total: Vec<DayFigures> = Vec::new();
    for days in per_list {
        if total.is_empty() {
            total = days;
            continue;
        }
        for (t, d) in total.iter_mut().zip(days) {
            t.a += d.a;
            t.b += d.b;
        }
    }
    total
}

pub(super) fn subscriptions_chart(days: &[DayFigures]) -> Chart {
    chart::daily(
        "New confirmed subscriptions and unsubscribes per day",
        ["confirmed", "unsubscribed"],
        days,
    )
}

/// `GET /admin`
pub async fn overview(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let now = crate::store::now();
    let tz = state.config.timezone;
    let lists = state.store.lists_with_counts().await?;
    let activity = state.store.last_day_activity(now).await?;
    let slots = state.store.next_slots().await?;
    let mut per_list = Vec::with_capacity(lists.len());
    for (list, _) in &lists {
        per_list.push(state.store.subscription_days(list.id, CHART_DAYS, now).await?);
    }
    let rows: Vec<ListRow> = lists
        .into_iter()
        .map(|(list, counts)| ListRow {
            day: activity.get(&list.id).copied().unwrap_or_default(),
            next: slots.get(&list.id).map(|t| when(tz, *t)),
            list,
            counts,
        })
        .collect();
    let subscriptions = subscriptions_chart(&sum_days(per_list));
    let messages = chart::daily(
        "Messages sent and failed per day",
        ["sent", "failed"],
        &state.store.message_days(CHART_DAYS, now).await?,
    );
    let failing: Vec<Feed> = state
        .store
        .feeds(None)
        .await?
        .into_iter()
        .filter(|f| f.last_error.is_some())
        .collect();
    Ok(admin_page(
        StatusCode::OK,
        &OverviewPage {
            rows: &rows,
            subscriptions: &subscriptions,
            messages: &messages,
            failing: &failing,
            queue: state.store.queue_depth().await?,
            csrf: &session.csrf,
            notice: notice(query.as_deref()),
        },
    ))
}

/// `POST /admin/lists`: a new list, then its page.
pub async fn create_list(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    match crate::http::admin::create(
        &state,
        field(&form, "slug"),
        field(&form, "name"),
        field(&form, "description"),
    )
    .await
    {
        Ok(list) => Ok(done(format!("/admin/lists/{}", list.slug), "list_created")),
        Err(e) => Ok(form_error(e, "/admin")),
    }
}
