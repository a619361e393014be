//! `/admin/import`: a CSV upload into a list, as the import API takes it (confirmed with a
//! consent record, or with double opt-in), streamed to a temporary file; the report on the page.

use askama::Template;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Session, admin_page, check_csrf};
use crate::http::AppState;
use crate::http::admin::find_list;
use crate::http::error::ApiError;
use crate::import::{ImportError, ImportOptions, ImportReport};
use crate::store::List;

/// Row errors shown on the page (the report counts them all).
const ERRORS_SHOWN: usize = 200;

#[derive(Template)]
#[template(path = "admin_import.html")]
struct ImportPage<'a> {
    lists: &'a [List],
    /// The form as sent, so that it comes back as it was.
    list: &'a str,
    confirmed: bool,
    consent: &'a str,
    skip_invalid: bool,
    /// What happened: a summary, whether it is a failure, and the report.
    outcome: Option<(String, bool, &'a ImportReport)>,
    csrf: &'a str,
}

/// `GET /admin/import`
pub async fn import_form(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
) -> Result<Response, ApiError> {
    let lists = state.store.lists().await?;
    Ok(admin_page(
        StatusCode::OK,
        &ImportPage {
            lists: &lists,
            list: "",
            confirmed: true,
            consent: "",
            skip_invalid: false,
            outcome: None,
            csrf: &session.csrf,
        },
    ))
}

fn bad_form(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_form", message.to_owned())
}

/// `POST /admin/import` (multipart): the fields first (`csrf` before anything is stored), then
/// the file, which streams to disk.
pub async fn import(
    State(state): State<AppState>,
    axum::Extension((_, session)): Session,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut file = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|_| bad_form("The upload could not be read. Try again."))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            // Nothing is written before the form has proved it came from the dashboard.
            check_csrf(&session, &fields)?;
            file = Some(crate::http::import::spool(field).await?);
        } else if fields.len() < 16 {
            let value = field
                .text()
                .await
                .map_err(|_| bad_form("A field of the form could not be read."))?;
            fields.push((name, value.chars().take(2000).collect()));
        }
    }
    check_csrf(&session, &fields)?;
    let get = |name: &str| super::field(&fields, name).to_owned();
    let (slug, consent) = (get("list"), get("consent"));
    let options = ImportOptions {
        confirmed: get("mode") != "opt_in",
        consent: Some(consent.clone()).filter(|c| !c.trim().is_empty()),
        skip_invalid: get("skip_invalid") == "on",
    };
    let lists = state.store.lists().await?;
    let page = |status: StatusCode, outcome: Option<(String, bool, &ImportReport)>| {
        admin_page(
            status,
            &ImportPage {
                lists: &lists,
                list: &slug,
                confirmed: options.confirmed,
                consent: &consent,
                skip_invalid: options.skip_invalid,
                outcome,
                csrf: &session.csrf,
            },
        )
    };
    let empty = ImportReport::default();
    let failed = |status, message: String| Ok(page(status, Some((message, true, &empty))));
    let list = match find_list(&state, &slug).await {
        Ok(list) => list,
        Err(e) => return failed(StatusCode::UNPROCESSABLE_ENTITY, e.message),
    };
    let Some(file) = file else {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a CSV file to import.".to_owned(),
        );
    };
    if options.confirmed && options.consent.is_none() {
        return failed(
            StatusCode::UNPROCESSABLE_ENTITY,
            ImportError::ConsentRequired.to_string(),
        );
    }
    match crate::import::import_file(&state.store, &state.config, &list, file.path(), &options).await {
        Ok(mut report) => {
            if !options.confirmed && report.imported > 0 {
                state.wake_all_senders();
            }
            tracing::info!(list = %list.slug, imported = report.imported, "import from the dashboard");
            let summary = format!(
                "Imported {} of {} rows into {}: {} left as they were, {} invalid.",
                report.imported, report.rows, list.name, report.skipped, report.invalid
            );
            report.errors.truncate(ERRORS_SHOWN);
            Ok(page(StatusCode::OK, Some((summary, false, &report))))
        }
        Err(ImportError::InvalidRows(mut report)) => {
            let message = ImportError::InvalidRows(report.clone()).to_string();
            report.errors.truncate(ERRORS_SHOWN);
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, Some((message, true, &report))))
        }
        Err(ImportError::Unreadable(message)) => failed(StatusCode::UNPROCESSABLE_ENTITY, message),
        Err(e @ ImportError::ConsentRequired) => failed(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(ImportError::Store(e)) => Err(e.into()),
    }
}
