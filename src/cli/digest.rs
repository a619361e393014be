//! `bulletin digest …`: the operator's side of digests.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Notify, watch};

use super::{DigestCommand, fail};
use crate::config::Config;
use crate::digest::{DigestError, DigestRequest};
use crate::domain::EmailAddress;
use crate::mail::Links;
use crate::store::{List, Store, StoreError};

pub(crate) async fn run(config: &Config, store: &Store, command: DigestCommand) -> ExitCode {
    match command {
        DigestCommand::Send { list, dry_run } => send(config, store, &list, dry_run).await,
        DigestCommand::Preview { list, text } => preview(config, store, &list, text).await,
        DigestCommand::Test { list, address } => test(config, store, &list, &address).await,
        DigestCommand::Status { id } => status(store, id).await,
    }
}

async fn find_list(store: &Store, slug: &str) -> Result<List, ExitCode> {
    match store.list_by_slug(slug).await {
        Ok(list) => Ok(list),
        Err(StoreError::NotFound) => Err(fail(format_args!("there is no list {slug}"))),
        Err(e) => Err(fail(e)),
    }
}

fn digest_failure(e: DigestError) -> ExitCode {
    fail(e.to_string().trim_end_matches('.'))
}

async fn links(config: &Config, store: &Store) -> Result<Links, ExitCode> {
    match crate::app::load_secret(store, config).await {
        Ok(secret) => Ok(Links::new(config, secret)),
        Err(e) => Err(fail(e)),
    }
}

/// Runs this process's sender until `done` says the work is finished, then stops it cleanly.
async fn work_until(
    config: &Config,
    store: &Store,
    links: &Links,
    mut done: impl AsyncFnMut() -> bool,
) -> Result<(), ExitCode> {
    let sender = match crate::app::build_sender(config, store, links, Arc::new(Notify::new())) {
        Ok(s) => s,
        Err(e) => return Err(fail(e)),
    };
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(sender.run(stopped));
    let interrupted = crate::cli::shutdown_signal();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut interrupted => {
                eprintln!("bulletin: interrupted; what is left will be sent by any running server or the next run");
                break;
            }
        }
        if done().await {
            break;
        }
    }
    let _ = stop.send(true);
    let _ = worker.await;
    Ok(())
}

async fn send(config: &Config, store: &Store, slug: &str, dry_run: bool) -> ExitCode {
    let list = match find_list(store, slug).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let request = DigestRequest::default();
    if dry_run {
        let (items, rendered) = match crate::digest::build_next(store, config, &list, &request).await {
            Ok(next) => next,
            Err(e) => return digest_failure(e),
        };
        let recipients = match store.confirmed_count(list.id).await {
            Ok(n) => n,
            Err(e) => return fail(e),
        };
        println!("Subject: {}", rendered.subject);
        println!("Items ({}):", items.len());
        for item in &items {
            println!("  - {}", item.title);
        }
        println!("Recipients: {recipients}");
        println!("Dry run: nothing was queued.");
        return ExitCode::SUCCESS;
    }
    let links = match links(config, store).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let id = match crate::digest::create(store, config, &list, &request, None).await {
        Ok((id, _)) => id,
        Err(e) => return digest_failure(e),
    };
    // The delivery rows are written while the first ones are already being sent.
    let enqueue_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let enqueue = tokio::spawn({
        let (store, failed) = (store.clone(), enqueue_failed.clone());
        async move {
            let written = crate::digest::finish_enqueue(&store, id).await;
            failed.store(written.is_err(), std::sync::atomic::Ordering::Relaxed);
            written
        }
    });
    let (digest, recipients) = match (store.digest(id).await, store.confirmed_count(list.id).await) {
        (Ok(d), Ok(n)) => (d, n),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    println!(
        "Queued digest {} of {}: {} items, {} recipients.",
        digest.id, list.slug, digest.items, recipients
    );
    let bar = ProgressBar::new(recipients.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} | {per_sec} | ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let id = digest.id;
    let mut last = digest;
    // Counting a large digest's deliveries is not free: the counts are read once a second, the
    // status (one row) at every check.
    let mut counted = std::time::Instant::now();
    let worked = work_until(config, store, &links, async || {
        let finished = enqueue_failed.load(std::sync::atomic::Ordering::Relaxed)
            || match store.digest_status(id).await {
                Ok(status) => matches!(status.as_str(), "done" | "cancelled"),
                Err(_) => false,
            };
        if finished || counted.elapsed() >= Duration::from_secs(1) {
            counted = std::time::Instant::now();
            if let Ok(d) = store.digest(id).await {
                bar.set_position((d.sent + d.failed).max(0) as u64);
                bar.set_message(format!("sent {}, failed {}, pending {}", d.sent, d.failed, d.pending));
                last = d;
            }
        }
        finished
    })
    .await;
    bar.finish();
    if let Err(code) = worked {
        return code;
    }
    // Done means every row was written; interrupted, the rest is written by a server's upkeep.
    if enqueue.is_finished()
        && let Ok(Err(e)) = enqueue.await
    {
        return fail(e);
    }
    println!(
        "Digest {}: {} — sent {}, failed {}, pending {}.",
        last.id, last.status, last.sent, last.failed, last.pending
    );
    ExitCode::SUCCESS
}

async fn preview(config: &Config, store: &Store, slug: &str, text: bool) -> ExitCode {
    let list = match find_list(store, slug).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let links = match links(config, store).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    match crate::digest::build_next(store, config, &list, &DigestRequest::default()).await {
        Ok((_, rendered)) => {
            let (html, text_part) = crate::digest::personalise(
                &rendered.html_body,
                &rendered.text_body,
                &rendered.placeholder,
                &crate::digest::Recipient {
                    email: "subscriber@example.org",
                    unsubscribe_url: &links.link("/unsubscribe?token=preview"),
                    preferences_url: &links.link("/preferences"),
                },
            );
            println!("{}", if text { text_part } else { html });
            ExitCode::SUCCESS
        }
        Err(e) => digest_failure(e),
    }
}

async fn test(config: &Config, store: &Store, slug: &str, address: &str) -> ExitCode {
    let list = match find_list(store, slug).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let to = match EmailAddress::parse(address) {
        Ok(a) => a,
        Err(e) => return fail(format_args!("address: {e}")),
    };
    let links = match links(config, store).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    let rendered = match crate::digest::build_next(store, config, &list, &DigestRequest::default()).await {
        Ok((_, rendered)) => rendered,
        Err(e) => return digest_failure(e),
    };
    let id = match store
        .enqueue(&crate::digest::test_copy(&rendered, &list, to.as_str(), &links))
        .await
    {
        Ok(id) => id,
        Err(e) => return fail(e),
    };
    let mut outcome = ("queued".to_owned(), None);
    let worked = work_until(config, store, &links, async || {
        if let Ok(status) = store.outbox_status(id).await {
            outcome = status;
        }
        outcome.0 != "queued"
    })
    .await;
    if let Err(code) = worked {
        return code;
    }
    match outcome {
        (status, _) if status == "sent" => {
            println!("Test digest sent to {to}.");
            ExitCode::SUCCESS
        }
        (status, error) => fail(format_args!(
            "the test digest was not sent ({status}){}",
            error.map(|e| format!(": {e}")).unwrap_or_default()
        )),
    }
}

async fn status(store: &Store, id: Option<i64>) -> ExitCode {
    let digests = match id {
        Some(id) => match store.digest(id).await {
            Ok(d) => vec![d],
            Err(StoreError::NotFound) => return fail(format_args!("there is no digest {id}")),
            Err(e) => return fail(e),
        },
        None => match store.digests(None).await {
            Ok(d) => d,
            Err(e) => return fail(e),
        },
    };
    if digests.is_empty() {
        println!("No digests yet. Send one with: bulletin digest send <list>");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>5}  {:<12}  {:<9}  {:>6}  {:>10}  {:>8}  {:>7}  {:>7}  CREATED",
        "ID", "LIST", "STATUS", "ITEMS", "RECIPIENTS", "SENT", "FAILED", "PENDING"
    );
    for d in digests {
        println!(
            "{:>5}  {:<12}  {:<9}  {:>6}  {:>10}  {:>8}  {:>7}  {:>7}  {}",
            d.id,
            d.list_slug,
            d.status,
            d.items,
            d.recipients,
            d.sent,
            d.failed,
            d.pending,
            d.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    ExitCode::SUCCESS
}
