//! The command line: `bulletin [serve]`, `bulletin migrate`, `bulletin lists [create …]`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, StartError, open_store};
use crate::config::Config;
use crate::store::StoreError;

#[derive(Debug, Parser)]
#[command(
    name = "bulletin",
    version,
    about = "Newsletter signups with double opt-in, and digests over SMTP."
)]
#[command(after_help = "Configuration is read from the environment and from .env; see .env.example.")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, serve HTTP and run the sender (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Show the lists with pending / confirmed / unsubscribed counts, or create one.
    Lists {
        #[command(subcommand)]
        command: Option<ListsCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum ListsCommand {
    /// Create a list.
    Create {
        /// Stable identifier used in URLs and forms: lowercase letters, digits, hyphens.
        slug: String,
        /// Display name, shown on the signup page and in emails.
        #[arg(long)]
        name: String,
        /// One or two sentences shown under the name on the signup page.
        #[arg(long, default_value = "")]
        description: String,
    },
}

/// Exit codes: 0 success, 1 the command failed, 2 bad configuration or unreachable database.
pub async fn run(cli: Cli) -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail_start(e.into()),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => match open_store(&config).await {
            Ok(store) => {
                println!("Database is up to date ({}).", store.backend_name());
                ExitCode::SUCCESS
            }
            Err(e) => fail_start(e),
        },
        Command::Lists { command } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            match command {
                None => print_lists(&store).await,
                Some(ListsCommand::Create {
                    slug,
                    name,
                    description,
                }) => create_list(&store, &slug, &name, &description).await,
            }
        }
    }
}

fn fail_start(e: StartError) -> ExitCode {
    eprintln!("bulletin: {e}");
    ExitCode::from(2)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("bulletin: {message}");
    ExitCode::FAILURE
}

async fn serve(config: Config) -> ExitCode {
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => return fail_start(e),
    };
    match app.run_until(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("server error: {e}")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn print_lists(store: &crate::store::Store) -> ExitCode {
    let lists = match store.lists_with_counts().await {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if lists.is_empty() {
        println!("No lists yet. Create one with: bulletin lists create <slug> --name <NAME>");
        return ExitCode::SUCCESS;
    }
    let width = lists
        .iter()
        .map(|(l, _)| l.slug.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>9}  {:>9}  {:>12}  NAME",
        "SLUG", "PENDING", "CONFIRMED", "UNSUBSCRIBED"
    );
    for (list, c) in lists {
        println!(
            "{:<width$}  {:>9}  {:>9}  {:>12}  {}",
            list.slug, c.pending, c.confirmed, c.unsubscribed, list.name
        );
    }
    ExitCode::SUCCESS
}

async fn create_list(store: &crate::store::Store, slug: &str, name: &str, description: &str) -> ExitCode {
    let new = match crate::http::parse_new_list(slug, name, description) {
        Ok(n) => n,
        Err(e) => return fail(format_args!("{}: {}", e.field.as_deref().unwrap_or("list"), e.message)),
    };
    match store.create_list(&new).await {
        Ok(list) => {
            println!("Created list {} ({}).", list.slug, list.name);
            ExitCode::SUCCESS
        }
        Err(StoreError::Conflict) => fail(format_args!("a list with the slug {slug} already exists")),
        Err(e) => fail(e),
    }
}
