//! The feeds API: add, list, delete and poll feeds of a list; push items.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admin::find_list;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, IdPath};
use crate::feeds::{DEFAULT_INTERVAL, PollError};
use crate::store::{Feed, IngestCounts, NewItem, StoreError};

/// Body limit of the item push route.
pub const PUSH_BODY_LIMIT: usize = 10 * 1024 * 1024;
const MIN_INTERVAL: Duration = Duration::from_secs(60);
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A feed of a list, polled or receiving pushed items.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FeedView {
    #[serde(flatten)]
    feed: Feed,
    /// How often it is polled, such as `10m`.
    #[schema(example = "10m")]
    poll_interval: String,
}

impl From<Feed> for FeedView {
    fn from(feed: Feed) -> Self {
        let poll_interval =
            humantime::format_duration(Duration::from_secs(feed.poll_interval_secs.max(0) as u64)).to_string();
        FeedView { feed, poll_interval }
    }
}

/// A feed to poll.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct AddFeed {
    /// An http or https URL of an RSS, Atom or JSON feed.
    #[schema(format = Uri, example = "https://news.example/feed.xml")]
    url: String,
    /// From `1m` to `7d` (default `10m`).
    #[serde(default)]
    #[schema(example = "10m")]
    poll_interval: Option<String>,
}

/// What a poll brought.
#[derive(Serialize, utoipa::ToSchema)]
struct Polled {
    /// Items new to the feed.
    new: u64,
    /// Known items whose content changed.
    updated: u64,
    /// The feed's items now.
    items: i64,
}

/// Parses a poll interval such as `10m`: from one minute to a week.
pub fn parse_interval(raw: Option<&str>) -> Result<Duration, String> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(DEFAULT_INTERVAL);
    };
    let interval = humantime::parse_duration(raw).map_err(|e| format!("not a duration like 10m or 1h: {e}"))?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return Err("the poll interval is between 1m and 7d".into());
    }
    Ok(interval)
}

/// Adds a feed to poll to a list; it is polled at once.
#[utoipa::path(
    post,
    path = "/lists/{slug}/feeds",
    operation_id = "addFeed",
    tag = "feeds",
    params(("slug" = String, Path, description = "The list's slug.")),
    request_body = AddFeed,
    responses(
        (status = 201, description = "Added.", body = FeedView),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 409, description = "The list has this feed already (`feed_exists`).", body = ErrorBody),
        (status = 422, description = "A URL that is not http(s) or points at a private network (`invalid_url`), or an interval out of range (`invalid_interval`).", body = ErrorBody),
    ),
)]
pub async fn add_feed(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<AddFeed>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let feed = add(&state, &list, &body.url, body.poll_interval.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(FeedView::from(feed))).into_response())
}

/// Adds a feed to poll to `list` (the API's and the dashboard's).
pub(super) async fn add(
    state: &AppState,
    list: &crate::store::List,
    url: &str,
    interval: Option<&str>,
) -> Result<Feed, ApiError> {
    let url = crate::feeds::fetch::check_url(url).map_err(|e| ApiError::invalid("invalid_url", "url", e))?;
    let interval = parse_interval(interval).map_err(|e| ApiError::invalid("invalid_interval", "poll_interval", e))?;
    match state
        .store
        .create_feed(list.id, url.as_str(), interval.as_secs() as i64)
        .await
    {
        Ok(feed) => {
            state.feeds_wake.notify_one();
            Ok(feed)
        }
        Err(StoreError::Conflict) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "feed_exists",
            format!("The list “{}” already has this feed.", list.slug),
        )
        .with_field("url")),
        Err(e) => Err(e.into()),
    }
}

/// A list's feeds.
#[utoipa::path(
    get,
    path = "/lists/{slug}/feeds",
    operation_id = "listFeeds",
    tag = "feeds",
    params(("slug" = String, Path, description = "The list's slug.")),
    responses(
        (status = 200, description = "The list's feeds.", body = Vec<FeedView>),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
    ),
)]
pub async fn list_feeds(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let feeds = state.store.feeds(Some(list.id)).await?;
    Ok(Json(feeds.into_iter().map(FeedView::from).collect::<Vec<_>>()).into_response())
}

fn feed_not_found(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown_feed", format!("There is no feed {id}."))
}

/// Removes a feed; its items stay.
#[utoipa::path(
    delete,
    path = "/feeds/{id}",
    operation_id = "deleteFeed",
    tag = "feeds",
    params(("id" = i64, Path, description = "The feed's id.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such feed (`unknown_feed`).", body = ErrorBody),
    ),
)]
pub async fn delete_feed(State(state): State<AppState>, IdPath(id): IdPath) -> Result<StatusCode, ApiError> {
    remove(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn remove(state: &AppState, id: i64) -> Result<(), ApiError> {
    match state.store.delete_feed(id).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => Err(feed_not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// Polls a feed now.
#[utoipa::path(
    post,
    path = "/feeds/{id}/poll",
    operation_id = "pollFeed",
    tag = "feeds",
    params(("id" = i64, Path, description = "The feed's id.")),
    responses(
        (status = 200, description = "Polled.", body = Polled),
        (status = 404, description = "No such feed (`unknown_feed`).", body = ErrorBody),
        (status = 409, description = "A feed of pushed items is not polled (`push_feed`).", body = ErrorBody),
        (status = 502, description = "The feed could not be fetched or parsed (`feed_unavailable`).", body = ErrorBody),
        (status = 503, description = "The feed is being polled right now (`feed_busy`), or the database did not answer (`unavailable`).", body = ErrorBody),
    ),
)]
pub async fn poll_feed(State(state): State<AppState>, IdPath(id): IdPath) -> Result<Response, ApiError> {
    let (counts, items) = poll(&state, id).await?;
    Ok(Json(Polled {
        new: counts.new,
        updated: counts.updated,
        items,
    })
    .into_response())
}

/// Polls a feed now: what it brought, and the feed's items since.
pub(super) async fn poll(state: &AppState, id: i64) -> Result<(crate::store::IngestCounts, i64), ApiError> {
    let feed = match state.store.feed(id).await {
        Err(StoreError::NotFound) => return Err(feed_not_found(id)),
        other => other?,
    };
    if feed.kind != "poll" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "push_feed",
            "This feed receives pushed items; it is not polled.",
        ));
    }
    match state.poller.poll_now(id).await {
        Ok(counts) => Ok((counts, state.store.feed(id).await?.items)),
        Err(PollError::Feed(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "feed_unavailable", e)),
        Err(PollError::Busy) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "feed_busy",
            PollError::Busy.to_string(),
        )),
        Err(PollError::Store(e)) => Err(e.into()),
    }
}

/// Items for a list, as a site's publishing system pushes them.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct PushBody {
    /// Checked one by one (an error names the item), stored all or none.
    #[schema(value_type = Vec<PushItem>)]
    items: Vec<serde_json::Value>,
}

/// One pushed item; an item already pushed (same `guid`, else the same `url`) is updated.
#[derive(Deserialize, utoipa::ToSchema)]
struct PushItem {
    /// Its stable id (default: its URL).
    #[serde(default)]
    guid: Option<String>,
    #[serde(default)]
    #[schema(required = true, value_type = String, example = "Council approves the new tram line")]
    title: Option<String>,
    /// An http or https URL.
    #[serde(default)]
    #[schema(required = true, value_type = String, format = Uri, example = "https://news.example/2026/12/07/tram")]
    url: Option<String>,
    /// HTML or text; sanitised.
    #[serde(default)]
    summary: Option<String>,
    /// An RFC 3339 time (default: now).
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    published_at: Option<String>,
    /// An absolute http(s) URL of its picture.
    #[serde(default)]
    #[schema(format = Uri)]
    image_url: Option<String>,
}

/// Validates one pushed item; the error names what is wrong with it.
fn parse_pushed(value: serde_json::Value, base: &url::Url) -> Result<NewItem, String> {
    let item: PushItem = serde_json::from_value(value).map_err(|e| format!("not an item object: {e}"))?;
    let url = item
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or("missing url")?;
    let url = crate::feeds::fetch::check_url(url).map_err(|e| format!("url: {e}"))?;
    let title = item
        .title
        .as_deref()
        .map(crate::feeds::parse::plain_text)
        .unwrap_or_default();
    if title.is_empty() {
        return Err("missing title".into());
    }
    let published_at = match item.published_at.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None => None,
        Some(raw) => Some(
            DateTime::parse_from_rfc3339(raw)
                .map_err(|e| format!("published_at is not an RFC 3339 time: {e}"))?
                .with_timezone(&Utc),
        ),
    };
    let key = item
        .guid
        .as_deref()
        .and_then(crate::feeds::parse::item_key)
        .or_else(|| crate::feeds::parse::item_key(url.as_str()))
        .unwrap_or_else(|| url.to_string());
    let image_url = match item.image_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(raw) => Some(
            url::Url::parse(raw)
                .ok()
                .and_then(|u| crate::feeds::images::image_url(&u, raw))
                .ok_or("image_url: must be an absolute http or https URL (at most 2048 bytes)")?,
        ),
    };
    let (mut summary_html, summary_text) =
        crate::feeds::parse::clean_summary(item.summary.as_deref().unwrap_or(""), base);
    let mut image = image_url.map(|url| crate::feeds::images::ItemImage { url, width: None });
    if image.is_none() {
        (image, summary_html) = crate::feeds::images::take_from_summary(&summary_html);
    }
    Ok(NewItem {
        key,
        title,
        url: Some(url.to_string()),
        summary_html,
        summary_text,
        image_width: image.as_ref().and_then(crate::feeds::images::ItemImage::stored_width),
        image_url: image.map(|i| i.url),
        published_at,
    })
}

/// Pushes items to a list, validated as a whole: one bad item stores nothing.
#[utoipa::path(
    post,
    path = "/lists/{slug}/items",
    operation_id = "pushItems",
    tag = "feeds",
    params(("slug" = String, Path, description = "The list's slug.")),
    request_body(content = PushBody, description = "At most 10 MiB."),
    responses(
        (status = 200, description = "Stored.", body = IngestCounts),
        (status = 404, description = "No such list (`unknown_list`).", body = ErrorBody),
        (status = 422, description = "An item is invalid (`invalid_item`, `field` is `items[N]`).", body = ErrorBody),
    ),
)]
pub async fn push_items(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<PushBody>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    let base = url::Url::parse(&state.config.link("/")).map_err(ApiError::internal)?;
    let mut items = Vec::with_capacity(body.items.len());
    for (index, value) in body.items.into_iter().enumerate() {
        let item = parse_pushed(value, &base).map_err(|e| {
            ApiError::invalid(
                "invalid_item",
                &format!("items[{index}]"),
                format!("Item {index}: {e}."),
            )
        })?;
        items.push(item);
    }
    let feed_id = state.store.push_feed(list.id).await?;
    let counts = state.store.ingest_items(feed_id, list.id, &items).await?;
    Ok(Json(counts).into_response())
}
