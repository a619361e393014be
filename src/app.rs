//! Wiring: configuration → database → HTTP server and background work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::delivery::{Sender, SenderConfig, Transport};
use crate::http::{AppState, router};
use crate::mail::transport::SmtpSettings;
use crate::mail::{Composer, Links};
use crate::store::Store;

/// Pending signups older than this are deleted.
const PURGE_AFTER: TimeDelta = TimeDelta::days(30);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Errors that stop start-up, each with the variable or resource at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("DATABASE_URL: cannot open the database: {0}")]
    Database(crate::store::StoreError),
    #[error("BULLETIN_LISTEN: cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Connects and migrates: what every command needs first.
pub async fn open_store(config: &Config) -> Result<Store, StartError> {
    // Two thirds of the request timeout: a query that finds no connection fails in time for its
    // request to answer `503`.
    let store = Store::connect_with(&config.database_url, config.request_timeout * 2 / 3)
        .await
        .map_err(StartError::Database)?;
    store.migrate().await.map_err(StartError::Database)?;
    Ok(store)
}

/// The key for signed links: `BULLETIN_SECRET`, or one generated once and kept in the database
/// (insert-if-absent, then re-read, so processes starting together agree).
pub async fn load_secret(store: &Store, config: &Config) -> Result<Vec<u8>, StartError> {
    if let Some(secret) = &config.secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let fresh = crate::domain::ConfirmationToken::generate();
    let stored = store
        .setting_get_or_insert("secret", fresh.as_str())
        .await
        .map_err(StartError::Database)?;
    Ok(stored.into_bytes())
}

/// The sender of this process, as configured.
pub fn build_sender(config: &Config, store: &Store, links: &Links, wake: Arc<Notify>) -> Result<Sender, StartError> {
    let transport = match &config.smtp_url {
        Some(url) => Transport::Smtp(SmtpSettings::parse(url).map_err(|problem| crate::config::ConfigError {
            var: "BULLETIN_SMTP_URL",
            problem,
        })?),
        None => Transport::Files(config.outbox_dir.clone()),
    };
    let composer = Composer::new(
        config.from.clone(),
        config.return_path.clone(),
        links.keyed(b"message-id")[..16].to_owned(),
        config.dkim.clone(),
    );
    let sender_config = SenderConfig {
        workers: config.smtp_pool,
        retry_base: config.retry_base,
        max_attempts: config.max_attempts,
        send_rate: config.send_rate,
    };
    Ok(Sender::new(
        store.clone(),
        composer,
        links.clone(),
        transport,
        sender_config,
        wake,
    ))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    sender: Sender,
}

impl Application {
    /// Opens the database, applies migrations and binds the listener (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        Self::with_listener(config, listener).await
    }

    /// As `build`, on a listener the caller bound (tests bind first to learn the port).
    pub async fn with_listener(config: Config, listener: TcpListener) -> Result<Self, StartError> {
        let store = open_store(&config).await?;
        let links = Links::new(&config, load_secret(&store, &config).await?);

        let wake = Arc::new(Notify::new());
        let sender = build_sender(&config, &store, &links, wake.clone())?;
        let state = AppState::new(store, config, links, wake);
        let sender = sender
            .yield_to(state.signups.pressure())
            .reporting_to(state.sender_health.clone());
        Ok(Self {
            listener,
            state,
            sender,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.listen)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The path of every route this app serves (the contract test checks each JSON one against
    /// the OpenAPI document).
    pub fn route_paths(&self) -> Vec<String> {
        crate::http::route_paths(self.state.clone())
    }

    /// Serves until `stop` resolves, then stops taking requests, lets the sender finish what it
    /// has in flight, and returns.
    pub async fn run_until(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self {
            listener,
            state,
            sender,
        } = self;
        log_startup(&state.config, listener.local_addr()?, state.store.backend_name());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let sender_task = tokio::spawn(sender.run(shutdown_rx.clone()));
        let purge_task = tokio::spawn(purge_loop(state.store.clone(), shutdown_rx.clone()));
        let poller_task = tokio::spawn(state.poller.clone().run(shutdown_rx.clone()));
        let digests_task = tokio::spawn(digest_upkeep(state.store.clone(), shutdown_rx.clone()));
        let scheduler = crate::schedule::Scheduler {
            store: state.store.clone(),
            config: state.config.clone(),
            wake: state.schedule_wake.clone(),
            sender_wake: state.sender_wake.clone(),
        };
        let scheduler_task = tokio::spawn(scheduler.run(shutdown_rx.clone()));
        let metrics_task = tokio::spawn(crate::telemetry::upkeep(
            crate::telemetry::handle(),
            shutdown_rx.clone(),
        ));

        let server = crate::http::server::serve(
            listener,
            router(state.clone()),
            state.config.header_timeout,
            shutdown_rx.clone(),
        );
        let trigger = tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down: finishing in-flight work");
            let _ = shutdown_tx.send(true);
        });
        let served = server.await;
        trigger.abort();
        let _ = sender_task.await;
        let _ = purge_task.await;
        let _ = poller_task.await;
        let _ = digests_task.await;
        let _ = scheduler_task.await;
        let _ = metrics_task.await;
        state.store.close().await;
        served
    }
}

fn log_startup(config: &Config, addr: SocketAddr, backend: &str) {
    tracing::info!(%addr, backend, "Bulletin is listening on http://{addr}");
    match &config.smtp_url {
        Some(url) => tracing::info!(smtp = %crate::config::redact_url(url), "sending through SMTP"),
        None => {
            tracing::info!(dir = %config.outbox_dir.display(), "no BULLETIN_SMTP_URL: writing emails as .eml files")
        }
    }
    match &config.dkim {
        Some(dkim) => {
            tracing::info!(
                name = %dkim.dns_name(),
                record = %dkim.dns_record(),
                "DKIM-signing every email ({}): the TXT record must be published at that name",
                dkim.algorithm()
            );
            if !dkim.aligns_with(config.from.email.domain()) {
                tracing::warn!(
                    from = %config.from.email,
                    dkim_domain = dkim.domain(),
                    "BULLETIN_DKIM_DOMAIN is neither the From domain nor a parent of it: the signature will not count for DMARC"
                );
            }
        }
        None => tracing::info!("no BULLETIN_DKIM_* set: emails go out unsigned (the SMTP relay must DKIM-sign them)"),
    }
    if config.admin_tokens.is_empty() {
        tracing::warn!(
            "the admin API is disabled: set BULLETIN_ADMIN_TOKEN (comma-separated for rotation) to enable /api"
        );
    }
    if config.postal_address.is_none() {
        tracing::warn!("BULLETIN_POSTAL_ADDRESS is unset: digests go out without the sender's postal address");
    }
    if !config.public_url_is_safe() {
        tracing::warn!(
            public_url = %config.public_url,
            "BULLETIN_PUBLIC_URL is neither https nor loopback: one-click unsubscribe (RFC 8058) needs https"
        );
    }
}

async fn purge_loop(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        match store.purge_unconfirmed(PURGE_AFTER).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "deleted signups never confirmed within 30 days"),
            Err(e) => tracing::warn!(error = %e, "purge of old signups failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Finishes what a dead process left: writes the missing delivery rows of a digest it was
/// queuing, and marks done a digest with nothing left to send (e.g. every recipient left).
async fn digest_upkeep(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let unfinished = match store.unfinished_digests().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "digest upkeep: cannot read digests");
                continue;
            }
        };
        for (id, enqueued) in unfinished {
            let result = if enqueued {
                store.finish_digest_if_complete(id).await.map(|_| ())
            } else {
                crate::digest::finish_enqueue(&store, id).await
            };
            if let Err(e) = result {
                tracing::warn!(digest = id, error = %e, "digest upkeep failed");
            }
        }
    }
}
