//! `/admin/subscribers`: find a reader by a prefix of the address or by domain, and one reader's
//! page: every subscription with its consent, the last deliveries, the suppression, and the
//! actions (unsubscribe from a list, suppress), each through a confirmation step.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Session, admin_page, check_csrf, field, finish, form_error, form_fields, notice, when};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{IdPath, RawBody, query_param};
use crate::store::{
    List, Reader, ReaderDelivery, ReaderQuery, ReaderRow, ReaderSearch, ReaderSubscription, StoreError,
    SubscriptionStatus, Suppression,
};

/// Readers on a page of results.
const PAGE: i64 = 50;
/// Deliveries shown on a reader's page.
const DELIVERIES_SHOWN: i64 = 50;

struct ResultRow {
    reader: ReaderRow,
    subscriptions: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "admin_readers.html")]
struct ReadersPage<'a> {
    q: &'a str,
    list: &'a str,
    status: &'a str,
    lists: &'a [List],
    rows: &'a [ResultRow],
    /// The next page's query string.
    next: Option<String>,
    csrf: &'a str,
}

struct SubscriptionBox {
    sub: ReaderSubscription,
    consent: String,
    confirmed: Option<String>,
    left: Option<String>,
}

struct DeliveryRow {
    d: ReaderDelivery,
    at: String,
}

#[derive(Template)]
#[template(path = "admin_reader.html")]
struct ReaderPage<'a> {
    reader: &'a Reader,
    created: String,
    subscriptions: &'a [SubscriptionBox],
    deliveries: &'a [DeliveryRow],
    suppression: Option<(Suppression, String)>,
    csrf: &'a str,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "admin_reader_confirm.html")]
struct ConfirmPage<'a> {
    reader: &'a Reader,
    /// `unsubscribe` or `suppress`.
    action: &'a str,
    list: Option<&'a ReaderSubscription>,
    csrf: &'a str,
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    serde_html_form::to_string(pairs.iter().filter(|(_, v)| !v.is_empty()).collect::<Vec<_>>()).unwrap_or_default()
}

/// `GET /admin/subscribers?q=&list=&status=&after=`
pub async fn readers(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let raw = raw.as_deref();
    let q = query_param(raw, "q").unwrap_or_default();
    let list_slug = query_param(raw, "list").unwrap_or_default();
    let status_name = query_param(raw, "status").unwrap_or_default();
    let lists = state.store.lists().await?;
    let list_id = match list_slug.as_str() {
        "" => None,
        slug => Some(
            lists
                .iter()
                .find(|l| l.slug == slug)
                .map(|l| l.id)
                .ok_or_else(|| ApiError::invalid("unknown_list", "list", "There is no such list."))?,
        ),
    };
    let status = match status_name.as_str() {
        "" => None,
        s => Some(SubscriptionStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_status",
                "status",
                "status is pending, confirmed or unsubscribed.",
            )
        })?),
    };
    let page = state
        .store
        .search_readers(&ReaderQuery {
            search: ReaderSearch::parse(&q),
            list_id,
            status,
            after: query_param(raw, "after").filter(|a| !a.is_empty()),
            limit: PAGE,
        })
        .await?;
    let ids: Vec<i64> = page.readers.iter().map(|r| r.id).collect();
    let subscriptions = state.store.readers_subscriptions(&ids).await?;
    let rows: Vec<ResultRow> = page
        .readers
        .into_iter()
        .map(|reader| ResultRow {
            subscriptions: subscriptions
                .iter()
                .filter(|s| s.subscriber_id == reader.id)
                .map(|s| (s.list_slug.clone(), s.status.clone()))
                .collect(),
            reader,
        })
        .collect();
    let next = page.next.map(|after| {
        query_string(&[
            ("q", &q),
            ("list", &list_slug),
            ("status", &status_name),
            ("after", &after),
        ])
    });
    Ok(admin_page(
        StatusCode::OK,
        &ReadersPage {
            q: &q,
            list: &list_slug,
            status: &status_name,
            lists: &lists,
            rows: &rows,
            next,
            csrf: &session.csrf,
        },
    ))
}

async fn find_reader(state: &AppState, id: i64) -> Result<Reader, ApiError> {
    match state.store.reader(id).await {
        Err(StoreError::NotFound) => Err(ApiError::not_found(format!("There is no subscriber {id}."))),
        other => Ok(other?),
    }
}

async fn suppression_of(state: &AppState, reader: &Reader) -> Result<Option<Suppression>, ApiError> {
    match state.store.suppression(&reader.email_key).await {
        Ok(s) => Ok(Some(s)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET /admin/subscribers/{id}`
pub async fn reader(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    IdPath(id): IdPath,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let tz = state.config.timezone;
    let reader = find_reader(&state, id).await?;
    let subscriptions: Vec<SubscriptionBox> = state
        .store
        .readers_subscriptions(&[id])
        .await?
        .into_iter()
        .map(|sub| SubscriptionBox {
            consent: when(tz, sub.consent_at),
            confirmed: sub.confirmed_at.map(|t| when(tz, t)),
            left: sub.unsubscribed_at.map(|t| when(tz, t)),
            sub,
        })
        .collect();
    let deliveries: Vec<DeliveryRow> = state
        .store
        .reader_deliveries(&reader, DELIVERIES_SHOWN)
        .await?
        .into_iter()
        .map(|d| DeliveryRow { at: when(tz, d.at), d })
        .collect();
    let suppression = suppression_of(&state, &reader).await?.map(|s| {
        let at = when(tz, s.created_at);
        (s, at)
    });
    Ok(admin_page(
        StatusCode::OK,
        &ReaderPage {
            created: when(tz, reader.created_at),
            reader: &reader,
            subscriptions: &subscriptions,
            deliveries: &deliveries,
            suppression,
            csrf: &session.csrf,
            notice: notice(raw.as_deref()),
        },
    ))
}

/// The reader's subscription to the list named `slug`.
async fn subscription_of(state: &AppState, id: i64, slug: &str) -> Result<ReaderSubscription, ApiError> {
    state
        .store
        .readers_subscriptions(&[id])
        .await?
        .into_iter()
        .find(|s| s.list_slug == slug)
        .ok_or_else(|| ApiError::not_found("This reader has no subscription to that list."))
}

/// `GET /admin/subscribers/{id}/unsubscribe?list=` and `…/suppress`: the confirmation step.
pub async fn confirm_action(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("There is no such subscriber."))?;
    let reader = find_reader(&state, id).await?;
    let list = match action.as_str() {
        "unsubscribe" => {
            Some(subscription_of(&state, id, &query_param(raw.as_deref(), "list").unwrap_or_default()).await?)
        }
        "suppress" => None,
        _ => return Err(ApiError::not_found("There is nothing at this address.")),
    };
    Ok(admin_page(
        StatusCode::OK,
        &ConfirmPage {
            reader: &reader,
            action: &action,
            list: list.as_ref(),
            csrf: &session.csrf,
        },
    ))
}

/// `POST /admin/subscribers/{id}/unsubscribe` (`list`) and `POST …/suppress`.
pub async fn act(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    axum::extract::Path((id, action)): axum::extract::Path<(String, String)>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let form = form_fields(&bytes);
    check_csrf(&session, &form)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::not_found("There is no such subscriber."))?;
    let reader = find_reader(&state, id).await?;
    let back = format!("/admin/subscribers/{id}");
    match action.as_str() {
        "unsubscribe" => {
            let sub = match subscription_of(&state, id, field(&form, "list")).await {
                Ok(sub) => sub,
                Err(e) => return Ok(form_error(e, &back)),
            };
            let done = state.store.unsubscribe(sub.id).await.map_err(ApiError::from);
            if matches!(done, Ok(true)) {
                crate::telemetry::unsubscribe(crate::telemetry::Via::Admin);
            }
            tracing::info!(subscription = sub.id, list = %sub.list_slug, "unsubscribed from the dashboard");
            Ok(finish(done, back, "unsubscribed"))
        }
        "suppress" => {
            let done = state
                .store
                .suppress(&reader.email_key, &reader.email, "manual", Some("from the dashboard"))
                .await
                .map_err(ApiError::from);
            Ok(finish(done, back, "suppressed"))
        }
        _ => Err(ApiError::not_found("There is nothing at this address.")),
    }
}
