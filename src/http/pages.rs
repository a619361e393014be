//! Public pages: the signup form and short message pages.

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::store::List;

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignupPage<'a> {
    pub lists: &'a [List],
    /// The address as typed, kept when the form comes back with an error.
    pub email: &'a str,
    /// Slugs ticked by the reader.
    pub checked: &'a [String],
    pub email_error: Option<&'a str>,
    pub lists_error: Option<&'a str>,
    /// The allowed page the reader came from: kept through the form, and linked back to.
    pub return_to: Option<&'a str>,
}

impl SignupPage<'_> {
    fn is_checked(&self, slug: &str) -> bool {
        // A single list is ticked by default: there is nothing to choose.
        self.checked.iter().any(|s| s == slug) || self.lists.len() == 1
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub show_signup_link: bool,
    /// A link back to the page the reader came from (an allowed site's article).
    pub back: Option<&'a str>,
}

/// A page with `status`. A template fault is a bug: a logged 500.
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// A short page: a title and one message.
pub fn message(status: StatusCode, title: &str, message: &str, show_signup_link: bool) -> Response {
    page(
        status,
        &MessagePage {
            title,
            message,
            show_signup_link,
            back: None,
        },
    )
}

/// `GET /`: lists are read from the database on every request, so a list created by another
/// process appears at once.
pub async fn signup_form(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let lists = state.store.lists().await?;
    let page = SignupPage {
        lists: &lists,
        email: "",
        checked: &[],
        email_error: None,
        lists_error: None,
        return_to: None,
    };
    Ok(Html(page.render()?))
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/style.css"),
    )
        .into_response()
}

/// The signup box's script for a news site's own pages (`README`: "A signup box for any page").
pub async fn embed_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/embed.js"),
    )
        .into_response()
}

/// The dashboard's script: it only improves pages that work without it.
pub async fn admin_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/admin.js"),
    )
        .into_response()
}
