//! A real HTTP server on loopback that serves feeds for the poller: the shared fixtures with
//! validators (ETag / Last-Modified, answering 304), a body the test sets, and faulty answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/feeds");

#[derive(Default)]
struct Shared {
    /// (content type, body) of `/custom`; its ETag changes whenever it is set.
    custom: Mutex<(String, Vec<u8>, u64)>,
    requests: AtomicUsize,
    not_modified: AtomicUsize,
}

pub struct FeedServer {
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FeedServer {
    pub async fn start() -> FeedServer {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/fixtures/{name}", get(fixture))
            .route("/custom", get(custom))
            .route("/slow", get(slow))
            .route("/huge", get(huge))
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down for maintenance") }),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FeedServer { base, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sets what `/custom` serves (a new ETag each time).
    pub fn set_custom(&self, content_type: &str, body: impl Into<Vec<u8>>) {
        let mut custom = self.shared.custom.lock().unwrap_or_else(|e| e.into_inner());
        let version = custom.2 + 1;
        *custom = (content_type.to_owned(), body.into(), version);
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn not_modified(&self) -> usize {
        self.shared.not_modified.load(Ordering::SeqCst)
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers 304 when the client's validators match `etag`.
fn conditional(shared: &Shared, headers: &HeaderMap, etag: &str, content_type: &str, body: Vec<u8>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let last_modified = "Sat, 28 Nov 2026 06:00:00 GMT";
    let matches = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag);
    if matches {
        shared.not_modified.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.to_owned())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::ETAG, etag.to_owned()),
            (header::LAST_MODIFIED, last_modified.to_owned()),
        ],
        body,
    )
        .into_response()
}

async fn fixture(State(shared): State<Arc<Shared>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if name.contains('/') || name.contains("..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(format!("{FIXTURES}/{name}")) {
        Ok(body) => conditional(&shared, &headers, &format!("\"{name}-v1\""), "application/xml", body),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn custom(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (content_type, body, version) = shared.custom.lock().unwrap_or_else(|e| e.into_inner()).clone();
    conditional(
        &shared,
        &headers,
        &format!("\"custom-v{version}\""),
        &content_type,
        body,
    )
}

/// Headers at once, then a body that never completes in time.
async fn slow(State(shared): State<Arc<Shared>>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let stream = async_stream_body(Duration::from_secs(30));
    ([(header::CONTENT_TYPE, "application/xml")], stream).into_response()
}

fn async_stream_body(delay: Duration) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel>".to_vec()))
            .await;
        tokio::time::sleep(delay).await;
        let _ = tx.send(Ok(b"</channel></rss>".to_vec())).await;
    });
    Body::from_stream(tokio_stream_from(rx))
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Vec<u8>, std::io::Error>> {
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// 20 MiB without a Content-Length (chunked), so only reading stops it.
async fn huge(State(shared): State<Arc<Shared>>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut chunk = b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>".to_vec();
        chunk.resize(1024 * 1024, b'x');
        for _ in 0..20 {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/xml")],
        Body::from_stream(tokio_stream_from(rx)),
    )
        .into_response()
}
