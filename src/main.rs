use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment alone is enough.
    let _ = dotenvy::dotenv();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // At debug level the SMTP client logs every message it writes, and messages carry
    // confirmation and unsubscribe tokens: never below info, whatever RUST_LOG asks.
    if let Ok(directive) = "lettre=info".parse() {
        filter = filter.add_directive(directive);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    bulletin::cli::run(bulletin::cli::Cli::parse()).await
}
