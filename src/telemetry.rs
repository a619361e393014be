//! Prometheus metrics (`GET /metrics`): counters and histograms of events in this process, and
//! gauges read from the database once per scrape. Every metric is named here, with its help text,
//! so that the README's list and the code cannot drift apart.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) of the histograms: a fast signup to a slow SMTP server.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. A process that serves several apps (the test
/// suite) shares it: counters count events of the process.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed: /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

/// Keeps the histograms' pending samples from growing between scrapes.
pub async fn upkeep(handle: PrometheusHandle, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn describe() {
    describe_counter!(
        "bulletin_signups_total",
        "Signup requests by outcome: accepted, dropped (the honeypot), invalid, rate_limited, unavailable, error."
    );
    describe_counter!("bulletin_confirmations_total", "Subscriptions confirmed by their link.");
    describe_counter!(
        "bulletin_unsubscribes_total",
        "Unsubscribes by way: one_click (the mail client's POST), page, preferences, admin."
    );
    describe_counter!(
        "bulletin_deliveries_total",
        "Messages by kind (confirmation, welcome, digest, test, preference) and outcome (sent, deferred, failed, suppressed, cancelled)."
    );
    describe_gauge!(
        "bulletin_queue_depth",
        "Messages waiting to be sent, by kind, read from the database at the scrape."
    );
    describe_histogram!(
        "bulletin_smtp_send_seconds",
        "Time to hand one message to the SMTP server (or write it as a file)."
    );
    describe_counter!(
        "bulletin_feed_polls_total",
        "Feed polls by outcome: ok (a 304 included), error."
    );
    describe_counter!("bulletin_digests_total", "Digests by outcome: queued, done, cancelled.");
    describe_counter!(
        "bulletin_schedule_runs_total",
        "Scheduled slots by outcome: queued, skipped_no_items, skipped_no_recipients, missed."
    );
    describe_counter!(
        "bulletin_http_requests_total",
        "HTTP requests by route template and status."
    );
    describe_histogram!(
        "bulletin_http_request_seconds",
        "HTTP request latency by route template."
    );
}

pub fn signup(outcome: &'static str) {
    counter!("bulletin_signups_total", "outcome" => outcome).increment(1);
}

pub fn confirmation() {
    counter!("bulletin_confirmations_total").increment(1);
}

/// How a reader left a list.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    OneClick,
    Page,
    Preferences,
    Admin,
}

pub fn unsubscribe(via: Via) {
    let via = match via {
        Via::OneClick => "one_click",
        Via::Page => "page",
        Via::Preferences => "preferences",
        Via::Admin => "admin",
    };
    counter!("bulletin_unsubscribes_total", "via" => via).increment(1);
}

/// The metric's kind of a queued message's kind.
pub fn message_kind(kind: &str) -> &'static str {
    match kind {
        "confirmation" => "confirmation",
        "welcome" => "welcome",
        "digest" => "digest",
        "digest-test" => "test",
        "preference" => "preference",
        _ => "other",
    }
}

/// `outcome`: sent, deferred, failed, suppressed or cancelled.
pub fn delivery(kind: &str, outcome: &'static str) {
    counter!("bulletin_deliveries_total", "kind" => message_kind(kind), "outcome" => outcome).increment(1);
}

pub fn smtp_send(took: Duration) {
    histogram!("bulletin_smtp_send_seconds").record(took.as_secs_f64());
}

pub fn feed_poll(outcome: &'static str) {
    counter!("bulletin_feed_polls_total", "outcome" => outcome).increment(1);
}

pub fn digest(outcome: &'static str) {
    counter!("bulletin_digests_total", "outcome" => outcome).increment(1);
}

pub fn schedule_run(outcome: &'static str) {
    counter!("bulletin_schedule_runs_total", "outcome" => outcome).increment(1);
}

/// One answered request; `route` is the matched route template, never the raw path.
pub fn http_request(route: &str, status: u16, took: Duration) {
    counter!("bulletin_http_requests_total", "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    histogram!("bulletin_http_request_seconds", "route" => route.to_owned()).record(took.as_secs_f64());
}

/// The queue depth by kind, as read at a scrape. Kinds with nothing queued read 0.
pub fn queue_depth(depths: &[(String, i64)]) {
    for kind in ["confirmation", "welcome", "digest", "test", "preference"] {
        let n: i64 = depths
            .iter()
            .filter(|(k, _)| message_kind(k) == kind)
            .map(|(_, n)| n)
            .sum();
        gauge!("bulletin_queue_depth", "kind" => kind).set(n as f64);
    }
}
