//! The preference centre: `/preferences?token=…` shows every list with the reader's status on
//! each and changes nothing; its forms join and leave lists. The token is signed per subscriber
//! (with the subscriber's link key) and sits in mail that people forward, so it can show and
//! change list memberships and nothing more. Each form's `csrf` field is bound to the token.
//! Its reader's data and its erasure go to the address itself: "Email me my data" mails the data
//! there, and "Delete everything" mails there a link, working for an hour, to a page that erases.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use super::extract::{Origin, RawBody, query_param};
use super::pages::page;
use crate::domain::{EmailAddress, ExpiringToken, LinkPurpose, LinkToken, LinkTokenError};
use crate::store::{Joined, LinkedSubscriber, RequestOrigin, SubscriptionStatus};

/// The consent record's page for a list joined here.
const CONSENT_PAGE: &str = "preference centre";

#[derive(Template)]
#[template(path = "preferences.html")]
struct PreferencesPage<'a> {
    token: &'a str,
    csrf: &'a str,
    email: &'a str,
    lists: Vec<ListRow>,
    notice: Option<String>,
}

struct ListRow {
    slug: String,
    name: String,
    description: String,
    status: &'static str,
    member: bool,
}

#[derive(Template)]
#[template(path = "preferences_request.html")]
struct RequestPage<'a> {
    email: &'a str,
    error: Option<&'a str>,
}

/// `r•••@example.org`: enough for a reader to know which address this is, not enough to learn
/// it from a forwarded link.
fn masked(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".to_owned(),
    }
}

/// The subscriber a preference token was signed for (never a row that took its id since).
async fn subscriber_of(state: &AppState, raw: &str) -> Result<LinkedSubscriber, ApiError> {
    let token = LinkToken::parse(raw)?;
    let subscriber = state
        .store
        .linked_subscriber(token.id)
        .await?
        .ok_or_else(|| ApiError::from(LinkTokenError::BadSignature))?;
    state
        .links
        .verify(&token, LinkPurpose::Preferences, subscriber.link_key)?;
    Ok(subscriber)
}

/// The `csrf` value of forms made for `token`.
fn csrf_for(state: &AppState, token: &str) -> String {
    state.links.keyed(format!("preferences-csrf:{token}").as_bytes())
}

fn notice(done: &str, list: Option<&str>) -> Option<String> {
    let list = list.unwrap_or("the newsletter");
    Some(match done {
        "joined" => format!("You've joined {list}."),
        "confirm_sent" => format!("We've sent you an email to confirm {list}."),
        "already" => format!("You already get {list}."),
        "left" => format!("You've left {list}. You won't receive it anymore."),
        "left_all" => "You've left every newsletter. You won't receive any of them anymore.".to_owned(),
        "data_sent" => "We've sent your data to your address. It can take a few minutes to arrive.".to_owned(),
        "data_wait" => "We sent your data less than a day ago. You can ask again tomorrow.".to_owned(),
        "erasure_sent" => {
            "We've sent you an email with a link to delete everything. The link works for one hour.".to_owned()
        }
        "erasure_wait" => {
            "We sent you an email a moment ago. Please check your inbox, or ask again in a few minutes.".to_owned()
        }
        _ => return None,
    })
}

/// `GET /preferences?token=…` (no token: a form to have a link emailed).
pub async fn page_of(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let query = query.as_deref();
    let Some(raw) = query_param(query, "token").filter(|t| !t.is_empty()) else {
        return page(StatusCode::OK, &RequestPage { email: "", error: None });
    };
    let result = async {
        let subscriber = subscriber_of(&state, &raw).await?;
        let lists = state.store.preference_lists(subscriber.id).await?;
        let done = query_param(query, "done").unwrap_or_default();
        let list_name = query_param(query, "list")
            .and_then(|slug| lists.iter().find(|l| l.list.slug == slug).map(|l| l.list.name.clone()));
        let rows = lists
            .into_iter()
            .map(|l| ListRow {
                status: match l.status {
                    Some(SubscriptionStatus::Confirmed) => "Subscribed",
                    Some(SubscriptionStatus::Pending) => "Waiting for your confirmation",
                    Some(SubscriptionStatus::Unsubscribed) | None => "Not subscribed",
                },
                member: matches!(
                    l.status,
                    Some(SubscriptionStatus::Confirmed | SubscriptionStatus::Pending)
                ),
                slug: l.list.slug,
                name: l.list.name,
                description: l.list.description,
            })
            .collect();
        Ok::<_, ApiError>(page(
            StatusCode::OK,
            &PreferencesPage {
                token: &raw,
                csrf: &csrf_for(&state, &raw),
                email: &masked(&subscriber.email),
                lists: rows,
                notice: notice(&done, list_name.as_deref()),
            },
        ))
    }
    .await;
    result.unwrap_or_else(ApiError::into_html)
}

/// `POST /preferences`: form fields `token`, `csrf`, `action` (`join`, `leave`, `leave_all`) and
/// `list`. Answers `303` back to the page with what was done.
pub async fn act(State(state): State<AppState>, Origin(origin): Origin, RawBody(bytes): RawBody) -> Response {
    let form = super::dashboard::form_fields(&bytes);
    let field = |name: &str| super::dashboard::field(&form, name).to_owned();
    let token = field("token");
    let result = async {
        let subscriber = subscriber_of(&state, &token).await?;
        let expected = csrf_for(&state, &token);
        if !bool::from(field("csrf").as_bytes().ct_eq(expected.as_bytes())) {
            return Err(bad_csrf());
        }
        let lists = state.store.preference_lists(subscriber.id).await?;
        let slug = field("list");
        let chosen = lists.iter().find(|l| l.list.slug == slug);
        let done = match (field("action").as_str(), chosen) {
            ("leave_all", _) => {
                for l in &lists {
                    if let (Some(id), Some(SubscriptionStatus::Confirmed | SubscriptionStatus::Pending)) =
                        (l.subscription_id, l.status)
                        && state.store.unsubscribe(id).await?
                    {
                        crate::telemetry::unsubscribe(crate::telemetry::Via::Preferences);
                    }
                }
                tracing::info!(subscriber = subscriber.id, "left every list from the preference centre");
                "left_all"
            }
            ("leave", Some(l)) => {
                if let Some(id) = l.subscription_id
                    && state.store.unsubscribe(id).await?
                {
                    crate::telemetry::unsubscribe(crate::telemetry::Via::Preferences);
                }
                tracing::info!(subscriber = subscriber.id, list = %l.list.slug, "left from the preference centre");
                "left"
            }
            ("join", Some(l)) => {
                let origin = RequestOrigin {
                    page: Some(CONSENT_PAGE.to_owned()),
                    ..origin
                };
                join(&state, &subscriber, &l.list, origin).await?
            }
            ("send_data", _) => send_data(&state, &subscriber).await?,
            ("erase", _) => send_erasure_link(&state, &subscriber).await?,
            ("join" | "leave", None) => {
                return Err(ApiError::invalid(
                    "unknown_list",
                    "list",
                    "There is no such newsletter.",
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    "bad_action",
                    "action",
                    "Choose to join or leave a newsletter.",
                ));
            }
        };
        Ok(Redirect::to(&format!(
            "/preferences?token={}&done={done}&list={}",
            urlencoding(&token),
            urlencoding(&slug)
        ))
        .into_response())
    }
    .await;
    result.unwrap_or_else(ApiError::into_html)
}

async fn join(
    state: &AppState,
    subscriber: &LinkedSubscriber,
    list: &crate::store::List,
    origin: RequestOrigin,
) -> Result<&'static str, ApiError> {
    let joined = state
        .store
        .join_from_preferences(subscriber.id, list, &origin, |subscription_id, link_key| {
            let unsubscribe = state.links.unsubscribe_url(subscription_id, link_key);
            let preferences = state.links.preferences_url(subscriber.id, subscriber.link_key);
            crate::mail::welcome_email(
                &subscriber.email,
                list,
                subscription_id,
                &unsubscribe,
                &preferences,
                state.links.namespace(),
            )
        })
        .await?;
    Ok(match joined {
        Joined::Confirmed => {
            tracing::info!(subscriber = subscriber.id, list = %list.slug, "joined from the preference centre");
            state.wake_sender();
            "joined"
        }
        Joined::Already => "already",
        Joined::NeedsOptIn => {
            let email = EmailAddress::parse(&subscriber.email)
                .map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))?;
            super::subscriptions::start_opt_in(state, email, vec![list.clone()], origin).await?;
            "confirm_sent"
        }
    })
}

/// "Email me my data": everything stored about the address, to the address, once a day.
async fn send_data(state: &AppState, subscriber: &LinkedSubscriber) -> Result<&'static str, ApiError> {
    let email = EmailAddress::parse(&subscriber.email)
        .map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))?;
    let Some(data) = crate::privacy::data_of(&state.store, &email).await? else {
        return Err(LinkTokenError::BadSignature.into());
    };
    let json = serde_json::to_string_pretty(&data).map_err(ApiError::internal)?;
    let message = crate::mail::data_email(&subscriber.email, json);
    Ok(if state.store.queue_data_mail(subscriber.id, &message).await? {
        tracing::info!(subscriber = subscriber.id, "data sent on request");
        state.wake_sender();
        "data_sent"
    } else {
        "data_wait"
    })
}

/// How long the "Delete everything" link works.
const ERASURE_LINK_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// "Delete everything": a link to the erasure page, to the address itself (within the caps of
/// the preference links): the token in forwarded mail cannot erase anyone.
async fn send_erasure_link(state: &AppState, subscriber: &LinkedSubscriber) -> Result<&'static str, ApiError> {
    let expires = (crate::store::now() + ERASURE_LINK_TTL).timestamp();
    let url = state.links.erasure_url(subscriber.id, subscriber.link_key, expires);
    let message = crate::mail::erasure_link_email(&subscriber.email, &url);
    Ok(if state.store.queue_preference_link(subscriber.id, &message).await? {
        state.wake_sender();
        "erasure_sent"
    } else {
        "erasure_wait"
    })
}

#[derive(Template)]
#[template(path = "erase.html")]
struct ErasePage<'a> {
    token: &'a str,
    csrf: &'a str,
    email: &'a str,
}

/// The subscriber an erasure link was made for, while it works.
async fn erasure_subscriber(state: &AppState, raw: &str) -> Result<LinkedSubscriber, ApiError> {
    let token = ExpiringToken::parse(raw)?;
    let subscriber = state
        .store
        .linked_subscriber(token.id)
        .await?
        .ok_or_else(|| ApiError::from(LinkTokenError::BadSignature))?;
    state
        .links
        .verify_expiring(&token, subscriber.link_key, crate::store::now().timestamp())?;
    Ok(subscriber)
}

fn erasure_csrf(state: &AppState, token: &str) -> String {
    state.links.keyed(format!("erasure-csrf:{token}").as_bytes())
}

/// `GET /preferences/erase?token=…`: what erasing means, and the button that does it. Changes
/// nothing (mail scanners open links).
pub async fn erase_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let raw = query_param(query.as_deref(), "token").unwrap_or_default();
    let result = async {
        let subscriber = erasure_subscriber(&state, &raw).await?;
        Ok::<_, ApiError>(page(
            StatusCode::OK,
            &ErasePage {
                token: &raw,
                csrf: &erasure_csrf(&state, &raw),
                email: &masked(&subscriber.email),
            },
        ))
    }
    .await;
    result.unwrap_or_else(ApiError::into_html)
}

/// `POST /preferences/erase` (`token`, `csrf`): erases the address everywhere, as
/// `DELETE /api/subscribers/{email}` does.
pub async fn erase(State(state): State<AppState>, RawBody(bytes): RawBody) -> Response {
    let form = super::dashboard::form_fields(&bytes);
    let token = super::dashboard::field(&form, "token").to_owned();
    let result = async {
        let subscriber = erasure_subscriber(&state, &token).await?;
        let expected = erasure_csrf(&state, &token);
        if !bool::from(
            super::dashboard::field(&form, "csrf")
                .as_bytes()
                .ct_eq(expected.as_bytes()),
        ) {
            return Err(bad_csrf());
        }
        let email = EmailAddress::parse(&subscriber.email)
            .map_err(|e| ApiError::invalid("invalid_email", "email", e.to_string()))?;
        crate::privacy::erase(&state.store, state.links.secret(), &state.config.outbox_dir, &email).await?;
        tracing::info!("an address was erased at its reader's request");
        Ok(super::pages::message(
            StatusCode::OK,
            "Your data is deleted",
            "We've deleted everything we held about your address. You won't get any more email from us.",
            false,
        ))
    }
    .await;
    result.unwrap_or_else(ApiError::into_html)
}

fn bad_csrf() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "bad_csrf",
        "This form has expired or was not made for this link. Please open the link from your email again.",
    )
}

fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The answer to `POST /preferences/link`, the same whether or not the address is known.
const LINK_SENT: &str = "If this address gets our newsletters, we've sent it a link to manage them. \
                         It can take a few minutes to arrive.";

/// `POST /preferences/link` (`email`): emails the address a link to its preference page, within
/// its caps. The answer never says whether the address is known.
pub async fn send_link(State(state): State<AppState>, RawBody(bytes): RawBody) -> Response {
    let form = super::dashboard::form_fields(&bytes);
    let raw = super::dashboard::field(&form, "email");
    let email = match EmailAddress::parse(raw.trim()) {
        Ok(e) => e,
        Err(e) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                &RequestPage {
                    email: raw.trim(),
                    error: Some(&e.to_string()),
                },
            );
        }
    };
    let result = async {
        if let Some(subscriber) = state.store.linked_subscriber_by_key(&email.key()).await? {
            let url = state.links.preferences_url(subscriber.id, subscriber.link_key);
            let message = crate::mail::preference_link_email(&subscriber.email, &url);
            if state.store.queue_preference_link(subscriber.id, &message).await? {
                state.wake_sender();
            }
        }
        Ok::<_, ApiError>(())
    }
    .await;
    match result {
        Ok(()) => super::pages::message(StatusCode::ACCEPTED, "Check your inbox", LINK_SENT, false),
        Err(e) => e.into_html(),
    }
}
