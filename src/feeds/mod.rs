//! Feeds: polling the site's RSS/Atom/JSON feeds (one process at a time per feed, through a
//! lease in the database) and storing their items, cleaned and deduplicated.

pub mod fetch;
pub mod images;
pub mod parse;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::{Notify, watch};

use crate::store::{Feed, IngestCounts, NewItem, Store, now};

/// A poll holds its feed this long; well above the fetch budget.
const POLL_LEASE: TimeDelta = TimeDelta::seconds(60);
/// How often an idle poller looks for due feeds (a feed added in this process wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// A feed that keeps failing is retried at most this far apart.
const MAX_BACKOFF: TimeDelta = TimeDelta::hours(6);
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The feed could not be fetched or parsed; recorded on the feed.
    #[error("{0}")]
    Feed(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("another poll of this feed did not finish in time")]
    Busy,
}

#[derive(Clone)]
pub struct Poller {
    store: Store,
    client: reqwest::Client,
    instance: String,
    wake: Arc<Notify>,
}

impl Poller {
    pub fn new(store: Store, wake: Arc<Notify>) -> Self {
        Self {
            store,
            client: fetch::client(),
            instance: format!("poller-{}-{:08x}", std::process::id(), rand::random::<u32>()),
            wake,
        }
    }

    /// Polls due feeds until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let due = match self.store.claim_due_feeds(&self.instance, now() + POLL_LEASE, 4).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "feeds: cannot read due feeds");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = self.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for feed in due {
                match self.poll_claimed(&feed).await {
                    Ok(counts) if counts.new + counts.updated > 0 => {
                        tracing::info!(
                            feed = feed.id,
                            new = counts.new,
                            updated = counts.updated,
                            "feed polled"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(feed = feed.id, url = %feed.url, error = %e, "feed poll failed"),
                }
            }
        }
    }

    /// Polls one feed now, waiting for a poll of it already running elsewhere to finish first.
    pub async fn poll_now(&self, feed_id: i64) -> Result<IngestCounts, PollError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !self
            .store
            .try_claim_feed(feed_id, &self.instance, now() + POLL_LEASE)
            .await?
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(PollError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let feed = self.store.feed(feed_id).await?;
        self.poll_claimed(&feed).await
    }

    /// Fetches and parses a feed this poller holds, then stores its items together with the
    /// outcome (which frees the lease). A failure keeps every stored item.
    async fn poll_claimed(&self, feed: &Feed) -> Result<IngestCounts, PollError> {
        let result = self.fetch_and_record(feed).await;
        crate::telemetry::feed_poll(if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn fetch_and_record(&self, feed: &Feed) -> Result<IngestCounts, PollError> {
        let interval = TimeDelta::seconds(feed.poll_interval_secs.max(1));
        match self.fetch(feed).await {
            Ok((items, etag, last_modified)) => {
                let validators = crate::store::PollValidators {
                    etag: etag.as_deref(),
                    last_modified: last_modified.as_deref(),
                    next_poll_at: now() + interval,
                };
                Ok(self.store.record_poll_success(feed, &items, validators).await?)
            }
            Err(PollError::Feed(error)) => {
                let failures = feed.consecutive_failures + 1;
                let delay = backoff(interval, failures);
                let message = if failures > 1 {
                    format!(
                        "{error} (failed {failures} times in a row; next try in {})",
                        humantime::format_duration(delay.to_std().unwrap_or_default())
                    )
                } else {
                    error
                };
                self.store.record_poll_failure(feed.id, &message, now() + delay).await?;
                Err(PollError::Feed(message))
            }
            Err(other) => {
                // A database fault: leave the feed due again when the lease lapses.
                Err(other)
            }
        }
    }

    /// Fetches and parses a feed: its items (none on a 304) and its new cache validators.
    async fn fetch(&self, feed: &Feed) -> Result<(Vec<NewItem>, Option<String>, Option<String>), PollError> {
        let fetched = fetch::fetch(
            &self.client,
            &feed.url,
            feed.etag.as_deref(),
            feed.last_modified.as_deref(),
        )
        .await
        .map_err(PollError::Feed)?;
        let (bytes, content_type, etag, last_modified) = match fetched {
            fetch::Fetched::NotModified => return Ok((Vec::new(), None, None)),
            fetch::Fetched::Body {
                bytes,
                content_type,
                etag,
                last_modified,
            } => (bytes, content_type, etag, last_modified),
        };
        let base = url::Url::parse(&feed.url).map_err(|e| PollError::Feed(e.to_string()))?;
        let parsed =
            parse::parse_feed(&bytes, content_type.as_deref(), &base).map_err(|e| PollError::Feed(e.to_string()))?;
        let items: Vec<NewItem> = parsed.items.into_iter().map(into_new_item).collect();
        Ok((items, etag, last_modified))
    }
}

fn into_new_item(item: parse::ParsedItem) -> NewItem {
    NewItem {
        key: item.key,
        title: item.title,
        url: item.url,
        summary_html: item.summary_html,
        summary_text: item.summary_text,
        image_width: item.image.as_ref().and_then(images::ItemImage::stored_width),
        image_url: item.image.map(|i| i.url),
        published_at: item.published_at,
    }
}

/// The interval after one failure, doubling with each further one, capped at six hours (or the
/// interval itself, if that is longer).
fn backoff(interval: TimeDelta, failures: i32) -> TimeDelta {
    let factor = 2i32.saturating_pow(u32::try_from(failures - 1).unwrap_or(0).min(20));
    (interval * factor).min(MAX_BACKOFF.max(interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_feeds_back_off_up_to_six_hours() {
        let ten = TimeDelta::minutes(10);
        assert_eq!(backoff(ten, 1), ten);
        assert_eq!(backoff(ten, 2), TimeDelta::minutes(20));
        assert_eq!(backoff(ten, 3), TimeDelta::minutes(40));
        assert_eq!(backoff(ten, 30), TimeDelta::hours(6));
        assert_eq!(backoff(TimeDelta::hours(12), 5), TimeDelta::hours(12));
    }
}
