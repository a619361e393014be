use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment alone is enough.
    let _ = dotenvy::dotenv();
    let format = match bulletin::logging::LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    bulletin::logging::init(format);
    bulletin::cli::run(bulletin::cli::Cli::parse()).await
}
