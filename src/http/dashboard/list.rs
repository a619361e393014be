//! `/admin/lists/{slug}`: one list's figures, feeds, schedule, preview, sending and digests.
//! Every action goes through the same functions as the API's.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::overview::{CHART_DAYS, subscriptions_chart};
use super::{Session, admin_page, check_csrf, field, finish, form_error, form_fields, notice, when};
use crate::digest::{DigestError, DigestRequest};
use crate::http::AppState;
use crate::http::admin::find_list;
use crate::http::chart::Chart;
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, RawBody, query_param};
use crate::http::{digests, feeds, schedules};
use crate::store::{DigestView, Feed, List, ListActivity, ListCounts};

/// Upcoming slots shown with a schedule.
const SLOTS_SHOWN: usize = 5;

struct FeedRow {
    feed: Feed,
    polled: Option<String>,
    interval: String,
}

struct ScheduleBox {
    cron: String,
    timezone: String,
    max_items: i32,
    min_items: i32,
    next: Vec<String>,
}

struct DigestRow {
    digest: DigestView,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_list.html")]
struct ListPage<'a> {
    list: &'a List,
    counts: ListCounts,
    day: ListActivity,
    chart: &'a Chart,
    feeds: &'a [FeedRow],
    schedule: Option<ScheduleBox>,
    digests: &'a [DigestRow],
    default_timezone: &'a str,
    csrf: &'a str,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "admin_send.html")]
struct SendPage<'a> {
    list: &'a List,
    subject: &'a str,
    items: &'a [String],
    recipients: i64,
    key: &'a str,
    csrf: &'a str,
}

fn list_path(list: &List) -> String {
    format!("/admin/lists/{}", list.slug)
}

/// `GET /admin/lists/{slug}`
pub async fn list_page(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let now = crate::store::now();
    let tz = state.config.timezone;
    let counts = state.store.list_counts(list.id).await?;
    let day = state
        .store
        .last_day_activity(now)
        .await?
        .get(&list.id)
        .copied()
        .unwrap_or_default();
    let chart = subscriptions_chart(&state.store.subscription_days(list.id, CHART_DAYS, now).await?);
    let feeds: Vec<FeedRow> = state
        .store
        .feeds(Some(list.id))
        .await?
        .into_iter()
        .filter(|f| f.kind == "poll")
        .map(|feed| FeedRow {
            polled: feed.last_polled_at.map(|t| when(tz, t)),
            interval: humantime::format_duration(std::time::Duration::from_secs(feed.poll_interval_secs.max(0) as u64))
                .to_string(),
            feed,
        })
        .collect();
    let schedule = match state.store.schedule(list.id).await? {
        None => None,
        Some(row) => {
            let next = match crate::schedule::parse_row(&row, tz) {
                Ok(s) => s
                    .upcoming(now, SLOTS_SHOWN)
                    .into_iter()
                    .map(|t| when(s.timezone, t))
                    .collect(),
                Err(_) => Vec::new(),
            };
            Some(ScheduleBox {
                cron: row.cron,
                timezone: row.timezone,
                max_items: row.max_items,
                min_items: row.min_items,
                next,
            })
        }
    };
    let digests: Vec<DigestRow> = state
        .store
        .digests(Some(list.id))
        .await?
        .into_iter()
        .map(|digest| DigestRow {
            created: when(tz, digest.created_at),
            digest,
        })
        .collect();
    Ok(admin_page(
        StatusCode::OK,
        &ListPage {
            list: &list,
            counts,
            day,
            chart: &chart,
            feeds: &feeds,
            schedule,
            digests: &digests,
            default_timezone: tz.name(),
            csrf: &session.csrf,
            notice: notice(query.as_deref()),
        },
    ))
}

/// `POST /admin/lists/{slug}/feeds`
pub async fn add_feed(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    let list = find_list(&state, &slug).await?;
    let interval = Some(field(&form, "poll_interval")).filter(|s| !s.trim().is_empty());
    Ok(finish(
        feeds::add(&state, &list, field(&form, "url"), interval).await,
        list_path(&list),
        "feed_added",
    ))
}

/// The feed of a form, and the path of its list's page.
async fn feed_and_back(state: &AppState, id: i64) -> Result<String, ApiError> {
    match state.store.feed(id).await {
        Ok(feed) => Ok(format!("/admin/lists/{}", feed.list_slug)),
        Err(crate::store::StoreError::NotFound) => Err(ApiError::not_found(format!("There is no feed {id}."))),
        Err(e) => Err(e.into()),
    }
}

/// `POST /admin/feeds/{id}/poll`
pub async fn poll_feed(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form_fields(&bytes))?;
    let back = feed_and_back(&state, id).await?;
    Ok(finish(feeds::poll(&state, id).await, back, "feed_polled"))
}

/// `POST /admin/feeds/{id}/remove`
pub async fn remove_feed(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form_fields(&bytes))?;
    let back = feed_and_back(&state, id).await?;
    Ok(finish(feeds::remove(&state, id).await, back, "feed_removed"))
}

/// An optional whole number of a form; a clear error when it is not one.
fn optional_number(form: &[(String, String)], name: &'static str) -> Result<Option<i64>, ApiError> {
    let raw = field(form, name).trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|_| ApiError::invalid("invalid_number", name, format!("{name} is a whole number.")))
}

/// `POST /admin/lists/{slug}/schedule`
pub async fn set_schedule(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    let list = find_list(&state, &slug).await?;
    let set = async {
        let max = optional_number(&form, "max_items")?;
        let min = optional_number(&form, "min_items")?;
        let tz = Some(field(&form, "timezone").trim()).filter(|s| !s.is_empty());
        schedules::set(&state, &list, field(&form, "cron"), tz, max, min).await
    };
    Ok(finish(set.await, list_path(&list), "schedule_set"))
}

/// `POST /admin/lists/{slug}/schedule/remove`
pub async fn remove_schedule(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    check_csrf(&session, &form_fields(&bytes))?;
    let list = find_list(&state, &slug).await?;
    Ok(finish(
        schedules::remove(&state, &list).await,
        list_path(&list),
        "schedule_removed",
    ))
}

/// `GET /admin/lists/{slug}/preview`: the next digest as the API previews it, which the list
/// page alone may frame.
pub async fn preview(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let text = query_param(query.as_deref(), "format").as_deref() == Some("text");
    let mut response = match digests::preview_of(&state, &list, text).await {
        Err(e) if e.code == "no_items" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "No new items yet: the next digest has nothing to carry. Add a feed or wait for its next poll.",
        )
            .into_response(),
        other => other?,
    };
    let csp = format!("{}; frame-ancestors 'self'", digests::EMAIL_PREVIEW_CSP);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /admin/lists/{slug}/test`
pub async fn send_test(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    let list = find_list(&state, &slug).await?;
    Ok(finish(
        digests::send_test(&state, &list, field(&form, "to")).await,
        list_path(&list),
        "test_queued",
    ))
}

/// `GET /admin/lists/{slug}/send`: what Send now would send, to confirm. Changes nothing.
pub async fn send_form(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let (items, rendered) =
        match crate::digest::build_next(&state.store, &state.config, &list, &DigestRequest::default()).await {
            Ok(next) => next,
            Err(e @ DigestError::NoItems) => return Ok(form_error(e.into(), &list_path(&list))),
            Err(e) => return Err(e.into()),
        };
    let recipients = state.store.confirmed_count(list.id).await?;
    let titles: Vec<String> = items.into_iter().map(|i| i.title).collect();
    // One key per confirmation page: sending twice from it (a double click, a resubmission)
    // finds the digest the first made.
    let key = crate::domain::hex(&rand::random::<[u8; 16]>());
    Ok(admin_page(
        StatusCode::OK,
        &SendPage {
            list: &list,
            subject: &rendered.subject,
            items: &titles,
            recipients,
            key: &key,
            csrf: &session.csrf,
        },
    ))
}

/// `POST /admin/lists/{slug}/send`: queues the digest, then its page.
pub async fn send(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    Path(slug): Path<String>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    let list = find_list(&state, &slug).await?;
    let key = field(&form, "key");
    if key.len() != 32 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(form_error(
            ApiError::invalid("invalid_key", "key", "This form is incomplete. Open Send now again."),
            &list_path(&list),
        ));
    }
    let key = format!("dashboard-{key}");
    Ok(
        match digests::queue(&state, &list, &DigestRequest::default(), Some(&key)).await {
            Ok((digest, _)) => super::see_other_to(&format!("/admin/digests/{}", digest.id)),
            Err(e) => form_error(e, &list_path(&list)),
        },
    )
}

/// `GET /admin/lists/{slug}/export.csv?status=`: the API's export, with the session.
pub async fn export(State(state): State<AppState>, Path(slug): Path<String>, RawQuery(query): RawQuery) -> Response {
    let status = query_param(query.as_deref(), "status");
    crate::http::export::subscribers_csv(&state, &slug, status.as_deref())
        .await
        .unwrap_or_else(|e| form_error(e, "/admin"))
}
