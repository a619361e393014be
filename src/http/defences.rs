//! Defences of the public surface: who the client is (behind trusted proxies), a per-client rate
//! limit on signups, and the security headers every response carries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;

use super::AppState;
use super::error::ApiError;
use super::extract::Format;
use crate::domain::{Cidr, canonical_ip as canonical};

/// The client's address: the socket's peer, unless that peer is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
/// were written by the client and prove nothing).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // Some proxies write the client's port too: `203.0.113.7:51234`, `[2001:db8::1]:443`.
        let parsed = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()));
        match parsed {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return canonical(ip),
            // A garbled entry: the last address we can vouch for is the answer.
            Err(_) => break,
        }
    }
    canonical(client)
}

/// The client address of a request, as [`client_ip`] decided it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// A token bucket per client: `per_minute` requests in a burst, refilled evenly over a minute.
/// IPv6 clients are counted per /64, which one subscriber line usually gets whole. Memory is
/// bounded: at `max_keys` clients, idle ones (whose bucket is full again) are dropped first.
pub struct RateLimiter {
    per_minute: u32,
    max_keys: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Clients tracked at most: ~100,000 × ~50 bytes.
    pub const MAX_KEYS: usize = 100_000;

    pub fn new(per_minute: u32, max_keys: usize) -> Self {
        Self {
            per_minute,
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.per_minute));
        bucket.updated = now;
    }

    /// Takes one request from `ip`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = match canonical(ip) {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            v4 => v4,
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            let full = f64::from(self.per_minute);
            buckets.retain(|_, b| {
                let mut b = *b;
                self.refill(&mut b, now);
                b.tokens < full
            });
            if buckets.len() >= self.max_keys {
                // Every tracked client is active: more than `max_keys` addresses at once is a
                // distributed attack that a per-address limit cannot stop anyway; the
                // per-address confirmation caps still protect the people it targets.
                tracing::warn!(clients = buckets.len(), "rate limiter full: not limiting a new client");
                return Ok(());
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: f64::from(self.per_minute),
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let rate = f64::from(self.per_minute) / 60.0;
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

/// Rate-limits the routes it wraps per client address: `429` with `Retry-After`, in the error
/// shape (or as a page for browsers).
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ClientIp>().map(|c| c.0);
    let Some(ip) = ip else {
        return next.run(request).await;
    };
    match state.rate_limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            if request.uri().path() == "/subscriptions" {
                crate::telemetry::signup("rate_limited");
            }
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many requests from your address. Please try again in {seconds} seconds."),
            );
            let mut response = err.for_client(Format::of(request.headers()));
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

/// Answers `408` in the error shape when a request (reading its body included) takes longer than
/// `BULLETIN_REQUEST_TIMEOUT`.
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let format = Format::of(request.headers());
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "The request took too long. Please try again.",
        )
        .for_client(format),
    }
}

/// The script-src hash of an inline script: CSP allows exactly these bytes and nothing else.
fn script_hash(script: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(script.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// The Content-Security-Policy of every response. No inline code but the confirm page's
/// auto-submit script, by hash; forms post only here; no framing (clickjacking).
pub fn content_security_policy() -> HeaderValue {
    let policy = format!(
        "default-src 'none'; script-src {}; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
        script_hash(super::confirm::AUTO_SUBMIT_SCRIPT)
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

/// Resolves the client address for everything after it, and gives every response (error pages
/// and the router's own rejections included) the security headers.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let ip = client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies);
        request.extensions_mut().insert(ClientIp(ip));
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A response that knows better (the digest preview: email HTML) keeps its own policy.
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert_with(|| state.csp.clone());
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Tokens travel in URLs (confirm, unsubscribe): never hand them on through Referer.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The dashboard's preview alone sets its own (it is framed by the dashboard).
    headers
        .entry(X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2".parse().unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // Untrusted peer: its own address, whatever the header says.
        assert_eq!(client_ip(peer, &headers, &[]), peer);
        // Trusted proxies: the right-most untrusted hop; the spoofed left-most is ignored.
        let trusted = cidrs(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer, &headers, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Ports are dropped.
        let mut ported = HeaderMap::new();
        ported.insert(
            "x-forwarded-for",
            "[2001:db8::7]:443, 203.0.113.8:51234".parse().unwrap(),
        );
        assert_eq!(
            client_ip(peer, &ported, &trusted),
            "203.0.113.8".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn buckets_refill_and_memory_stays_bounded() {
        let limiter = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(a, t0).is_ok());
        let wait = limiter.check(a, t0).unwrap_err();
        assert_eq!(wait.as_secs(), 30, "one token per 30 s at 2/min");
        assert!(limiter.check(a, t0 + Duration::from_secs(31)).is_ok());
        // One /64 is one client.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(limiter.check(v6a, t0).is_ok() && limiter.check(v6b, t0).is_ok());
        assert!(limiter.check(v6a, t0).is_err());
        // Full: idle clients are evicted to make room.
        let later = t0 + Duration::from_secs(600);
        for n in 0..10u8 {
            assert!(limiter.check(IpAddr::from([198, 51, 100, n]), later).is_ok());
            assert!(limiter.tracked() <= 3);
        }
        // Off.
        let off = RateLimiter::new(0, 1);
        assert!((0..100).all(|_| off.check(a, t0).is_ok()));
    }
}
