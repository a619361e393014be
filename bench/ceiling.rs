//! The ceiling of the signup benchmark: the same HTTP stack as Bulletin (axum on hyper, our
//! tokio runtime), taking the same JSON body, doing nothing with it. What wrk reaches here, on
//! the same machine in the same run, is the most any signup handler could reach.
//!
//!   cargo run --release --example ceiling -- 127.0.0.1:9000

use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Signup {
    email: String,
    #[serde(default)]
    lists: Vec<String>,
}

async fn subscribe(Json(_signup): Json<Signup>) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    (
        axum::http::StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "confirmation_sent"})),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new().route("/subscriptions", post(subscribe));
    axum::serve(listener, app).await
}
