//! A web origin (`https://news.example`, `http://127.0.0.1:8000`): the sites allowed to post
//! signups from their own pages, and to be linked back to after one.

use std::fmt;

/// Scheme, host and port as a browser sends them in `Origin`: lowercase, default port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebOrigin(String);

impl WebOrigin {
    /// An origin as configured: `scheme://host[:port]`, http(s) only, nothing after the host.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url =
            url::Url::parse(raw.trim()).map_err(|_| format!("{raw:?} is not an origin like https://news.example"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{raw:?} is not an http(s) origin"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!("{raw:?} has more than scheme, host and port"));
        }
        Ok(Self(url.origin().ascii_serialization()))
    }

    /// The origin of a URL (for `return_to`), if it is an http(s) URL.
    pub fn of_url(url: &url::Url) -> Option<Self> {
        matches!(url.scheme(), "http" | "https")
            .then(|| url.origin().ascii_serialization())
            .filter(|o| o != "null")
            .map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The URL `raw` if it lies under one of `allowed` (an http(s) URL whose origin is allowed).
pub fn allowed_url(raw: &str, allowed: &[WebOrigin]) -> Option<url::Url> {
    let url = url::Url::parse(raw.trim()).ok()?;
    let origin = WebOrigin::of_url(&url)?;
    allowed.contains(&origin).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            WebOrigin::parse("https://News.Example/").unwrap().as_str(),
            "https://news.example"
        );
        assert_eq!(
            WebOrigin::parse("https://news.example:443").unwrap().as_str(),
            "https://news.example"
        );
        assert_eq!(
            WebOrigin::parse("http://127.0.0.1:8000").unwrap().as_str(),
            "http://127.0.0.1:8000"
        );
        for bad in [
            "news.example",
            "ftp://news.example",
            "https://news.example/path",
            "https://u@news.example",
            "",
        ] {
            assert!(WebOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_urls_under_an_allowed_origin_are_kept() {
        let allowed = [WebOrigin::parse("https://news.example").unwrap()];
        assert!(allowed_url("https://news.example/2026/12/story?x=1", &allowed).is_some());
        for bad in [
            "https://news.example.evil.test/",
            "https://evil.test/?https://news.example",
            "http://news.example/",
            "javascript:alert(1)",
            "//news.example/story",
            "/story",
        ] {
            assert!(allowed_url(bad, &allowed).is_none(), "{bad}");
        }
    }
}
