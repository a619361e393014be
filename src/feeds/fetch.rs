//! Fetching a feed over HTTP: conditional GET, a 10 s budget, a 10 MiB cap, http(s) only.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use url::Url;

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_FEED_BYTES: usize = 10 * 1024 * 1024;

pub enum Fetched {
    /// 304: nothing changed since the validators we sent.
    NotModified,
    Body {
        bytes: Vec<u8>,
        content_type: Option<String>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// One HTTP client for all polls (connection reuse), with the time budget and a bounded
/// number of redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("Bulletin/", env!("CARGO_PKG_VERSION"), " (feed poller)"))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Checks that a feed URL is one we can poll.
pub fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}`: feeds are fetched over http or https",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the URL names no host".into());
    }
    Ok(url)
}

pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Result<Fetched, String> {
    let url = check_url(url)?;
    let mut request = client.get(url);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(last_modified) = last_modified {
        request = request.header(IF_MODIFIED_SINCE, last_modified);
    }
    let mut response = request.send().await.map_err(describe)?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if response.content_length().is_some_and(|n| n > MAX_FEED_BYTES as u64) {
        return Err(too_large());
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, etag, last_modified) = (header(CONTENT_TYPE), header(ETAG), header(LAST_MODIFIED));
    // Read in chunks so a body without Content-Length is still cut off at the cap.
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if bytes.len() + chunk.len() > MAX_FEED_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body {
        bytes,
        content_type,
        etag,
        last_modified,
    })
}

fn too_large() -> String {
    format!("the feed is larger than {} MiB", MAX_FEED_BYTES / (1024 * 1024))
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no complete answer within {} s", FETCH_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_redirect() {
        "too many redirects".to_owned()
    } else {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        message
    }
}
