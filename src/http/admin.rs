//! The admin API under `/api`: bearer-token protected.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiJson;
use crate::domain::ListSlug;
use crate::store::{List, ListChange, ListCounts, NewList, StoreError, SubscriptionStatus};

/// Digests of the configured admin tokens: comparing digests in constant time hides both the
/// tokens' contents and their lengths.
pub fn token_digests(tokens: &[String]) -> Vec<[u8; 32]> {
    tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect()
}

pub async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.admin_tokens.is_empty() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The admin API is disabled: set BULLETIN_ADMIN_TOKEN to enable it.",
        )
        .into_response();
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { Sha256::digest(t.trim().as_bytes()).into() });
    let authorised = presented.is_some_and(|p| {
        // Check every token without stopping early.
        state
            .admin_tokens
            .iter()
            .fold(subtle::Choice::from(0), |ok, known| ok | known.ct_eq(&p))
            .into()
    });
    if authorised {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid admin token is required: send `Authorization: Bearer <token>`.",
        )
        .into_response();
        response
            .headers_mut()
            .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        response
    }
}

#[derive(Deserialize)]
pub struct CreateList {
    slug: String,
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Serialize)]
pub struct ListView {
    #[serde(flatten)]
    list: List,
    counts: ListCounts,
}

/// Checks a list's display text: a name or description ends up in email subjects and pages.
pub fn parse_new_list(slug: &str, name: &str, description: &str) -> Result<NewList, ApiError> {
    let slug = ListSlug::parse(slug).map_err(|e| ApiError::invalid("invalid_slug", "slug", e.to_string()))?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_name",
            "name",
            "A list name is 1 to 200 characters, without line breaks or control characters.",
        ));
    }
    let description = description.trim();
    if description.chars().count() > 2000 || description.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid(
            "invalid_description",
            "description",
            "A description is at most 2000 characters, without control characters.",
        ));
    }
    Ok(NewList {
        slug,
        name: name.to_owned(),
        description: description.to_owned(),
    })
}

pub async fn create_list(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateList>,
) -> Result<Response, ApiError> {
    let list = create(&state, &body.slug, &body.name, &body.description).await?;
    Ok((
        StatusCode::CREATED,
        Json(ListView {
            list,
            counts: ListCounts::default(),
        }),
    )
        .into_response())
}

/// Creates a list (the API's and the dashboard's).
pub(super) async fn create(state: &AppState, slug: &str, name: &str, description: &str) -> Result<List, ApiError> {
    let new = parse_new_list(slug, name, description)?;
    match state.store.create_list(&new).await {
        Ok(list) => {
            state.lists.forget();
            Ok(list)
        }
        Err(StoreError::Conflict) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "list_exists",
            format!("A list with the slug “{}” already exists.", new.slug),
        )
        .with_field("slug")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateList {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    archive: Option<bool>,
}

/// `PATCH /api/lists/{slug}`: any of name, description and archive; the list as it is now.
pub async fn update_list(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<UpdateList>,
) -> Result<Response, ApiError> {
    let list = find_list(&state, &slug).await?;
    // The same rules as a new list's, for what is given.
    let checked = parse_new_list(
        &list.slug,
        body.name.as_deref().unwrap_or(&list.name),
        body.description.as_deref().unwrap_or(&list.description),
    )?;
    let change = ListChange {
        name: body.name.map(|_| checked.name),
        description: body.description.map(|_| checked.description),
        archive: body.archive,
    };
    let (list, archive) = state.store.update_list(list.id, &change).await?;
    state.lists.forget();
    tracing::info!(list = %list.slug, archive, "list changed");
    Ok(Json(serde_json::json!({
        "slug": list.slug,
        "name": list.name,
        "description": list.description,
        "created_at": list.created_at,
        "archive": archive,
    }))
    .into_response())
}

pub async fn lists(State(state): State<AppState>) -> Result<Json<Vec<ListView>>, ApiError> {
    let lists = state.store.lists_with_counts().await?;
    Ok(Json(
        lists
            .into_iter()
            .map(|(list, counts)| ListView { list, counts })
            .collect(),
    ))
}

pub async fn find_list(state: &AppState, slug: &str) -> Result<List, ApiError> {
    match state.store.list_by_slug(slug).await {
        Err(StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_list",
            format!("There is no list “{}”.", slug.chars().take(64).collect::<String>()),
        )),
        other => Ok(other?),
    }
}

/// `GET /api/lists/{slug}/subscribers?status=&after=&limit=`
pub async fn subscribers(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let status = match query.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(SubscriptionStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status",
                "status is one of pending, confirmed, unsubscribed.",
            )
        })?),
    };
    let after = match query.get("after").map(String::as_str) {
        None | Some("") => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::invalid(
                "invalid_cursor",
                "after",
                "after must be a cursor from a previous page's `next`.",
            )
        })?,
    };
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => 100,
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_limit", "limit", "limit is a whole number from 1 to 1000."))?,
    };
    let list = find_list(&state, &slug).await?;
    let page = state.store.subscribers_page(list.id, status, after, limit).await?;
    Ok(Json(page).into_response())
}
