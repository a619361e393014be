//! Request parsing that maps every failure into `ApiError`: no bare framework error text.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{ACCEPT, CONTENT_TYPE, REFERER, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

use super::error::ApiError;
use crate::store::RequestOrigin;

/// The body limit of public routes.
pub const PUBLIC_BODY_LIMIT: usize = 16 * 1024;
/// Most fields a form may carry (a signup has an address and a few lists).
pub const MAX_FORM_FIELDS: usize = 64;
/// Deepest nesting of arrays and objects a JSON body may have (ours need 3).
pub const MAX_JSON_DEPTH: usize = 32;

/// What the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
}

impl Format {
    /// JSON for a JSON body or `Accept: application/json`; HTML otherwise (form posts, browsers).
    pub fn of(headers: &HeaderMap) -> Self {
        let is_json = |name| {
            headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("application/json"))
        };
        if is_json(CONTENT_TYPE) || is_json(ACCEPT) {
            Format::Json
        } else {
            Format::Html
        }
    }
}

/// Content types a body may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

pub fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match ct.as_deref() {
        Some("application/json") => Ok(BodyKind::Json),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyKind::Json),
        Some("application/x-www-form-urlencoded") => Ok(BodyKind::Form),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json or application/x-www-form-urlencoded.",
        )),
    }
}

/// The raw body, within the route's `DefaultBodyLimit`.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is too large.",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "The request body could not be read.",
                )
            }
        })
    }
}

/// A form or JSON body, by its content type.
pub fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    match body_kind(headers)? {
        BodyKind::Json => parse_json(bytes),
        BodyKind::Form => parse_form(bytes),
    }
}

/// A JSON body (admin API): 415 without a JSON content type, 400 when unparsable, 422 naming the
/// field when a field is missing or of the wrong type, 413 over the limit.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if body_kind(req.headers())? != BodyKind::Json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as application/json.",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// How deep arrays and objects nest in `bytes`, outside strings (a cheap pass before parsing).
fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if json_depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deeply_nested",
            format!("The JSON body nests deeper than {MAX_JSON_DEPTH} levels."),
        ));
    }
    // Every body is an object: serde would also read a struct from an array of its fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "The JSON body must be an object.",
            ),
            Err(e) => invalid_json(&e),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() == serde_json::error::Category::Data {
            let field = field_name(&path, &inner.to_string());
            let message = match &field {
                Some(f) => format!("The field `{f}` is missing or has the wrong type."),
                None => format!("The JSON body does not have the expected shape: {inner}."),
            };
            let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
            match field {
                Some(f) => err.with_field(f),
                None => err,
            }
        } else {
            invalid_json(&inner)
        }
    })?;
    de.end().map_err(|e| invalid_json(&e))?;
    Ok(value)
}

fn invalid_json(e: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!("The body is not valid JSON: {e}."),
    )
}

/// The field at fault: the error's path, or for a missing field the name serde quotes.
fn field_name(path: &str, message: &str) -> Option<String> {
    if !path.is_empty() && path != "." {
        return Some(path.to_owned());
    }
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// A form body that may repeat keys (`lists=a&lists=b`), which axum's `Form` cannot take.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.split(|b| *b == b'&').filter(|pair| !pair.is_empty()).count() > MAX_FORM_FIELDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_many_fields",
            format!("The form has more than {MAX_FORM_FIELDS} fields."),
        ));
    }
    serde_html_form::from_bytes(bytes).map_err(|e| {
        let message = e.to_string();
        let err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("The form is not valid: {message}."),
        );
        match field_name("", &message) {
            Some(f) => err.with_field(f),
            None => err,
        }
    })
}

/// The consent record's facts about a request: client address, user agent, referring page.
pub struct Origin(pub RequestOrigin);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The address `defences::guard` resolved (behind trusted proxies), else the socket's.
        let ip = match parts.extensions.get::<super::defences::ClientIp>() {
            Some(client) => Some(client.0.to_string()),
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
        };
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .map(|v| v.chars().filter(|c| !c.is_control()).take(1000).collect::<String>())
        };
        Ok(Origin(RequestOrigin {
            ip,
            user_agent: header(USER_AGENT),
            page: header(REFERER),
        }))
    }
}

/// A numeric id in the path; anything else is a 404 in the error shape.
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|_| ApiError::not_found("There is nothing at this address."))
    }
}

/// One parameter of a raw query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"items":[{"title":"[[[{{{"}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"\"[["}"#), 1);
        assert_eq!(json_depth(&[b'['; 40]), 40);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        email: String,
        #[serde(default)]
        lists: Vec<String>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<T>(br#"{"lists": []}"#).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
        );
        let e = parse_json::<T>(br#"{"email": "a@b.org", "lists": "daily"}"#).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("lists"))
        );
        let e = parse_json::<T>(br#"{"email": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("email"));
        assert_eq!(
            parse_json::<T>(b"{not json").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_json::<T>(br#"{"email": "x"} trailing"#).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        // A struct is read from an object only, never from an array of its fields.
        assert_eq!(
            parse_json::<T>(br#"["a@b.org", []]"#).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(parse_json::<T>(b"[oops").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn forms_take_repeated_keys() {
        let t: T = parse_form(b"email=a%40b.org&lists=daily&lists=weekly").unwrap();
        assert_eq!(t.lists, ["daily", "weekly"]);
    }
}
