//! The public side of digests: each digest's web version (`/digests/{public_id}`), and a list's
//! archive of sent digests as a page and an Atom feed, when the list's archive is on.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::AppState;
use super::error::ApiError;
use super::extract::query_param;
use crate::digest::ItemView;
use crate::store::{ArchivedDigest, List};

/// Digests per archive page (and in the Atom feed).
const PER_PAGE: i64 = 20;

/// The web version is email HTML: inline styles and remote pictures, no script, no form.
const WEB_VERSION_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; \
                               base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "digest_web.html")]
struct WebVersion<'a> {
    list: &'a List,
    subject: &'a str,
    date: &'a str,
    items: &'a [ItemView<'a>],
    signup_url: &'a str,
    archive_url: Option<&'a str>,
}

struct Entry {
    url: String,
    subject: String,
    date: String,
}

#[derive(Template)]
#[template(path = "archive.html")]
struct ArchivePage<'a> {
    list: &'a List,
    entries: &'a [Entry],
    newer: Option<String>,
    older: Option<String>,
    atom_url: &'a str,
}

fn nothing_here() -> ApiError {
    ApiError::not_found("There is nothing at this address.")
}

/// A web version's id is 32 lowercase hex digits; anything else is not one.
fn is_public_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `GET /digests/{public_id}`: the digest as its readers got it, without anything of theirs.
pub async fn web_version(State(state): State<AppState>, Path(public_id): Path<String>) -> Result<Response, ApiError> {
    if !is_public_id(&public_id) {
        return Err(nothing_here());
    }
    let digest = state.store.public_digest(&public_id).await?.ok_or_else(nothing_here)?;
    let items = state.store.digest_items(digest.id).await?;
    let tz = state.config.timezone;
    let views: Vec<ItemView<'_>> = items.iter().map(|i| ItemView::of(i, tz)).collect();
    let date = digest.created_at.with_timezone(&tz).format("%A, %-d %B %Y").to_string();
    let archive_url = state
        .store
        .list_archive(digest.list.id)
        .await?
        .then(|| state.links.link(&format!("/lists/{}/archive", digest.list.slug)));
    let html = WebVersion {
        list: &digest.list,
        subject: &digest.subject,
        date: &date,
        items: &views,
        signup_url: &state.links.link("/"),
        archive_url: archive_url.as_deref(),
    }
    .render()?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(WEB_VERSION_CSP),
            ),
            // The address works like a password: kept out of search engines.
            (
                header::HeaderName::from_static("x-robots-tag"),
                HeaderValue::from_static("noindex"),
            ),
        ],
        html,
    )
        .into_response())
}

/// The list of `slug`, if its archive is on.
async fn archived_list(state: &AppState, slug: &str) -> Result<List, ApiError> {
    let list = match state.store.list_by_slug(slug).await {
        Err(crate::store::StoreError::NotFound) => return Err(nothing_here()),
        other => other?,
    };
    if state.store.list_archive(list.id).await? {
        Ok(list)
    } else {
        Err(nothing_here())
    }
}

fn web_url(state: &AppState, d: &ArchivedDigest) -> String {
    crate::digest::web_url(&state.config, &d.public_id)
}

/// `GET /lists/{slug}/archive?page=N`: 20 sent digests per page, newest first. A page: its
/// errors are pages too.
pub async fn page(State(state): State<AppState>, Path(slug): Path<String>, RawQuery(query): RawQuery) -> Response {
    archive_page(&state, &slug, query.as_deref())
        .await
        .unwrap_or_else(ApiError::into_html)
}

async fn archive_page(state: &AppState, slug: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let list = archived_list(state, slug).await?;
    let page = match query_param(query, "page").as_deref() {
        None | Some("") => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_page", "page", "page is a whole number from 1."))?,
    };
    // One more than a page tells whether there is an older one.
    let mut digests = state
        .store
        .archived_digests(list.id, (page - 1) * PER_PAGE, PER_PAGE + 1)
        .await?;
    let has_older = digests.len() as i64 > PER_PAGE;
    digests.truncate(PER_PAGE as usize);
    let tz = state.config.timezone;
    let entries: Vec<Entry> = digests
        .iter()
        .map(|d| Entry {
            url: web_url(state, d),
            subject: d.subject.clone(),
            date: d.sent_at.with_timezone(&tz).format("%-d %B %Y, %H:%M").to_string(),
        })
        .collect();
    let base = format!("/lists/{}/archive", list.slug);
    let newer = (page > 1).then(|| match page - 1 {
        1 => base.clone(),
        n => format!("{base}?page={n}"),
    });
    let older = has_older.then(|| format!("{base}?page={}", page + 1));
    let atom_url = format!("{base}.atom");
    Ok(super::pages::page(
        StatusCode::OK,
        &ArchivePage {
            list: &list,
            entries: &entries,
            newer,
            older,
            atom_url: &atom_url,
        },
    ))
}

fn xml_escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

fn atom_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `GET /lists/{slug}/archive.atom`: the newest sent digests as an Atom feed.
pub async fn atom(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let list = archived_list(&state, &slug).await?;
    let digests = state.store.archived_digests(list.id, 0, PER_PAGE).await?;
    let page_url = state.links.link(&format!("/lists/{}/archive", list.slug));
    let updated = digests.first().map_or(list.created_at, |d| d.sent_at);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
         <title>{title}</title>\n<subtitle>{subtitle}</subtitle>\n<id>{page}</id>\n\
         <link rel=\"alternate\" type=\"text/html\" href=\"{page}\"/>\n\
         <link rel=\"self\" type=\"application/atom+xml\" href=\"{page}.atom\"/>\n\
         <updated>{updated}</updated>\n<author><name>{title}</name></author>\n",
        title = xml_escape(&list.name),
        subtitle = xml_escape(&list.description),
        page = xml_escape(&page_url),
        updated = atom_time(updated),
    );
    for d in &digests {
        let url = xml_escape(&web_url(&state, d));
        xml.push_str(&format!(
            "<entry>\n<title>{title}</title>\n<id>{url}</id>\n<link rel=\"alternate\" type=\"text/html\" href=\"{url}\"/>\n\
             <updated>{at}</updated>\n<published>{at}</published>\n<summary>{summary}</summary>\n</entry>\n",
            title = xml_escape(&d.subject),
            at = atom_time(d.sent_at),
            summary = match d.items {
                1 => "1 story".to_owned(),
                n => format!("{n} stories"),
            },
        ));
    }
    xml.push_str("</feed>\n");
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        xml,
    )
        .into_response())
}
