//! The command line: `bulletin [serve]`, `bulletin migrate`, `bulletin lists [create …]`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod digest;
mod export;
mod schedule;

use crate::app::{Application, StartError, open_store};
use crate::config::Config;
use crate::store::{Store, StoreError};

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
    /// Show every feed with its last poll and error, or add or poll feeds.
    Feeds {
        #[command(subcommand)]
        command: Option<FeedsCommand>,
    },
    /// Import subscribers, export them as CSV, show or erase what is stored about one address.
    Subscribers {
        #[command(subcommand)]
        command: SubscribersCommand,
    },
    /// Send, preview, test-send or inspect digests.
    Digest {
        #[command(subcommand)]
        command: DigestCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SubscribersCommand {
    /// Import a CSV file (columns `email`, optional `name`) into a list. Every row is validated
    /// like a signup; a file with invalid rows imports nothing unless --skip-invalid.
    Import {
        /// The list's slug.
        list: String,
        /// The CSV file.
        file: std::path::PathBuf,
        /// Import as confirmed (needs --consent); otherwise each new address gets a double
        /// opt-in email, sent by a running server.
        #[arg(long)]
        confirmed: bool,
        /// Where consent was given (kept as each imported address's consent record).
        #[arg(long)]
        consent: Option<String>,
        /// Import the valid rows and report the others.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Export a list's subscribers as CSV (email, name, status, created_at, confirmed_at,
    /// unsubscribed_at, consent_at, consent_ip; times RFC 3339 UTC), to stdout or a file.
    Export {
        /// The list's slug.
        list: String,
        /// Which subscribers.
        #[arg(long, default_value = "confirmed", value_parser = ["pending", "confirmed", "unsubscribed", "all"])]
        status: String,
        /// Write to this file (created whole or not at all) instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
    /// Print everything stored about one address, as JSON (as `GET /api/subscribers/{email}`).
    Show { email: String },
    /// Erase one address everywhere (as `DELETE /api/subscribers/{email}`): what stays is a keyed
    /// hash with the lists it had left and any suppression.
    Erase { email: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DigestCommand {
    /// Queue the list's next digest and send it, showing progress, next to any running servers.
    Send {
        /// The list's slug.
        list: String,
        /// Print the subject, the item titles and the recipient count; queue nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the next digest (HTML, or the text part with --text); changes nothing.
    Preview {
        list: String,
        #[arg(long)]
        text: bool,
    },
    /// Send the next digest to one address only, marked as a test; the items stay unsent.
    Test { list: String, address: String },
    /// Show recent digests, or one digest in detail.
    Status { id: Option<i64> },
}

#[derive(Debug, Subcommand)]
enum FeedsCommand {
    /// Add a feed (RSS, Atom or JSON Feed) to a list and poll it once.
    Add {
        /// The list's slug.
        list: String,
        /// The feed's http(s) URL.
        url: String,
        /// How often to poll it (1m to 7d).
        #[arg(long, default_value = "10m")]
        every: String,
    },
    /// Poll every feed (of one list) now.
    Poll {
        /// Only this list's feeds.
        list: Option<String>,
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
    /// Show a list's digest schedule with its next five slots, set it, or remove it (--off).
    Schedule {
        /// The list's slug.
        slug: String,
        /// A five-field cron pattern in the schedule's zone, like "0 7 * * *".
        cron: Option<String>,
        /// IANA time zone of the pattern (default BULLETIN_TIMEZONE).
        #[arg(long)]
        timezone: Option<String>,
        /// Items per digest at most, 1–100 (default 20).
        #[arg(long)]
        max_items: Option<i64>,
        /// Fewer eligible items than this skip the slot, 1–100 (default 1).
        #[arg(long)]
        min_items: Option<i64>,
        /// Remove the schedule.
        #[arg(long, conflicts_with_all = ["cron", "timezone", "max_items", "min_items"])]
        off: bool,
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
                Some(ListsCommand::Schedule {
                    slug,
                    cron,
                    timezone,
                    max_items,
                    min_items,
                    off,
                }) => {
                    let change = match (off, cron) {
                        (true, _) => schedule::Change::Off,
                        (false, None) if timezone.is_some() || max_items.is_some() || min_items.is_some() => {
                            return fail("give the cron pattern to set a schedule, like \"0 7 * * *\"");
                        }
                        (false, None) => schedule::Change::Show,
                        (false, Some(cron)) => schedule::Change::Set {
                            cron,
                            timezone,
                            max_items,
                            min_items,
                        },
                    };
                    schedule::run(&config, &store, &slug, change).await
                }
            }
        }
        Command::Subscribers {
            command:
                SubscribersCommand::Import {
                    list,
                    file,
                    confirmed,
                    consent,
                    skip_invalid,
                },
        } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            let options = crate::import::ImportOptions {
                confirmed,
                consent,
                skip_invalid,
            };
            import(&config, &store, &list, &file, &options).await
        }
        Command::Subscribers {
            command: SubscribersCommand::Export { list, status, output },
        } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            export::run(&store, &list, &status, output.as_deref()).await
        }
        Command::Subscribers {
            command: SubscribersCommand::Show { email },
        } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            show_subscriber(&store, &email).await
        }
        Command::Subscribers {
            command: SubscribersCommand::Erase { email },
        } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            erase_subscriber(&config, &store, &email).await
        }
        Command::Digest { command } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            digest::run(&config, &store, command).await
        }
        Command::Feeds { command } => {
            let store = match open_store(&config).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            match command {
                None => print_feeds(&store).await,
                Some(FeedsCommand::Add { list, url, every }) => add_feed(&store, &list, &url, &every).await,
                Some(FeedsCommand::Poll { list }) => poll_feeds(&store, list.as_deref()).await,
            }
        }
    }
}

fn fail_start(e: StartError) -> ExitCode {
    eprintln!("bulletin: {e}");
    ExitCode::from(2)
}

pub(crate) fn fail(message: impl std::fmt::Display) -> ExitCode {
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

async fn print_lists(store: &Store) -> ExitCode {
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

async fn create_list(store: &Store, slug: &str, name: &str, description: &str) -> ExitCode {
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

fn poller(store: &Store) -> crate::feeds::Poller {
    crate::feeds::Poller::new(store.clone(), std::sync::Arc::new(tokio::sync::Notify::new()))
}

async fn find_list(store: &Store, slug: &str) -> Result<crate::store::List, ExitCode> {
    match store.list_by_slug(slug).await {
        Ok(list) => Ok(list),
        Err(StoreError::NotFound) => Err(fail(format_args!("there is no list {slug}"))),
        Err(e) => Err(fail(e)),
    }
}

async fn add_feed(store: &Store, list: &str, url: &str, every: &str) -> ExitCode {
    let list = match find_list(store, list).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let url = match crate::feeds::fetch::check_url(url) {
        Ok(u) => u,
        Err(e) => return fail(format_args!("url: {e}")),
    };
    let interval = match crate::http::parse_interval(Some(every)) {
        Ok(i) => i,
        Err(e) => return fail(format_args!("--every: {e}")),
    };
    let feed = match store
        .create_feed(list.id, url.as_str(), interval.as_secs() as i64)
        .await
    {
        Ok(feed) => feed,
        Err(StoreError::Conflict) => return fail(format_args!("the list {} already has this feed", list.slug)),
        Err(e) => return fail(e),
    };
    println!(
        "Added feed {} to {}, polled every {}.",
        feed.id,
        list.slug,
        humantime::format_duration(interval)
    );
    // Poll once right away so the operator sees items, or the error, at once.
    report_poll(&feed, poller(store).poll_now(feed.id).await)
}

fn report_poll(
    feed: &crate::store::Feed,
    result: Result<crate::store::IngestCounts, crate::feeds::PollError>,
) -> ExitCode {
    match result {
        Ok(c) => {
            println!("{} {}: {} new, {} updated", feed.id, feed.url, c.new, c.updated);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{} {}: {e}", feed.id, feed.url);
            ExitCode::FAILURE
        }
    }
}

async fn poll_feeds(store: &Store, list: Option<&str>) -> ExitCode {
    let list_id = match list {
        Some(slug) => match find_list(store, slug).await {
            Ok(l) => Some(l.id),
            Err(code) => return code,
        },
        None => None,
    };
    let feeds = match store.feeds(list_id).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let poller = poller(store);
    let mut code = ExitCode::SUCCESS;
    for feed in feeds.iter().filter(|f| f.kind == "poll") {
        if report_poll(feed, poller.poll_now(feed.id).await) != ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    code
}

async fn print_feeds(store: &Store) -> ExitCode {
    let feeds = match store.feeds(None).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if feeds.is_empty() {
        println!("No feeds yet. Add one with: bulletin feeds add <list> <url>");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>4}  {:<12}  {:<8}  {:<20}  {:>6}  URL / LAST ERROR",
        "ID", "LIST", "EVERY", "LAST POLL", "ITEMS"
    );
    for f in feeds {
        let every = if f.kind == "push" {
            "push".to_owned()
        } else {
            humantime::format_duration(std::time::Duration::from_secs(f.poll_interval_secs.max(0) as u64)).to_string()
        };
        let polled = f
            .last_polled_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "never".into());
        println!(
            "{:>4}  {:<12}  {:<8}  {:<20}  {:>6}  {}",
            f.id, f.list_slug, every, polled, f.items, f.url
        );
        if let Some(error) = f.last_error {
            println!("{:>4}  error: {error}", "");
        }
    }
    ExitCode::SUCCESS
}

fn address(email: &str) -> Result<crate::domain::EmailAddress, ExitCode> {
    crate::domain::EmailAddress::parse(email).map_err(|e| fail(format_args!("{email}: {e}")))
}

async fn show_subscriber(store: &Store, email: &str) -> ExitCode {
    let email = match address(email) {
        Ok(e) => e,
        Err(code) => return code,
    };
    match crate::privacy::data_of(store, &email).await {
        Ok(Some(data)) => match serde_json::to_string_pretty(&data) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Ok(None) => fail("nothing is stored about this address"),
        Err(e) => fail(e),
    }
}

async fn erase_subscriber(config: &Config, store: &Store, email: &str) -> ExitCode {
    let email = match address(email) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let secret = match crate::app::load_secret(store, config).await {
        Ok(s) => s,
        Err(e) => return fail_start(e),
    };
    match crate::privacy::erase(store, &secret, &config.outbox_dir, &email).await {
        Ok(true) => {
            println!("Erased {email}.");
            ExitCode::SUCCESS
        }
        Ok(false) => fail("nothing is stored about this address"),
        Err(e) => fail(e),
    }
}

async fn import(
    config: &Config,
    store: &Store,
    slug: &str,
    file: &std::path::Path,
    options: &crate::import::ImportOptions,
) -> ExitCode {
    use crate::import::ImportError;
    let list = match store.list_by_slug(slug).await {
        Ok(l) => l,
        Err(StoreError::NotFound) => return fail(format_args!("there is no list {slug}")),
        Err(e) => return fail(e),
    };
    let started = std::time::Instant::now();
    let report = match crate::import::import_file(store, config, &list, file, options).await {
        Ok(report) => report,
        Err(ImportError::InvalidRows(report)) => {
            for e in &report.errors {
                eprintln!("line {}: {}", e.line, e.message);
            }
            if report.invalid as usize > report.errors.len() {
                eprintln!("… and {} more", report.invalid as usize - report.errors.len());
            }
            return fail(ImportError::InvalidRows(report));
        }
        Err(e) => return fail(e),
    };
    for e in &report.errors {
        eprintln!("skipped line {}: {}", e.line, e.message);
    }
    println!(
        "Imported {} of {} rows into {} in {:.1} s ({} skipped: already there, unsubscribed or suppressed; {} invalid).",
        report.imported,
        report.rows,
        list.slug,
        started.elapsed().as_secs_f64(),
        report.skipped,
        report.invalid
    );
    ExitCode::SUCCESS
}
