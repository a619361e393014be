//! Building a digest: choosing its items, rendering the part every recipient shares once, and
//! personalising it per recipient (address and unsubscribe link) by substitution.

use askama::Template;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::store::{DigestItem, List};

pub const DEFAULT_MAX_ITEMS: i64 = 20;
pub const MAX_ITEMS_LIMIT: i64 = 100;
/// Without `since`, a digest looks back this far.
pub const DEFAULT_LOOKBACK: TimeDelta = TimeDelta::hours(24);

/// Widest an item's picture is shown: the width of the digest's content column.
pub const IMAGE_WIDTH: i32 = 560;

pub(crate) struct ItemView<'a> {
    pub title: &'a str,
    pub url: Option<&'a str>,
    pub time: String,
    pub summary_html: &'a str,
    pub summary_text: &'a str,
    pub image: Option<&'a str>,
    /// The `width` attribute of the picture: its own width when the feed gave it, at most the
    /// column's.
    pub image_width: i32,
}

impl<'a> ItemView<'a> {
    pub(crate) fn of(item: &'a DigestItem, tz: Tz) -> Self {
        ItemView {
            title: &item.title,
            url: item.url.as_deref(),
            time: item.published_at.with_timezone(&tz).format("%-d %b, %H:%M").to_string(),
            summary_html: &item.summary_html,
            summary_text: &item.summary_text,
            image: item.image_url.as_deref(),
            image_width: item
                .image_width
                .filter(|w| *w > 0)
                .unwrap_or(IMAGE_WIDTH)
                .min(IMAGE_WIDTH),
        }
    }
}

#[derive(Template)]
#[template(path = "digest.html")]
struct DigestHtml<'a> {
    list: &'a List,
    date: &'a str,
    items: &'a [ItemView<'a>],
    email: &'a str,
    unsubscribe_url: &'a str,
    preferences_url: &'a str,
    postal_address: Option<&'a str>,
    web_url: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "digest.txt")]
struct DigestText<'a> {
    list: &'a List,
    date: &'a str,
    items: &'a [ItemView<'a>],
    email: &'a str,
    unsubscribe_url: &'a str,
    preferences_url: &'a str,
    postal_address: Option<&'a str>,
    web_url: Option<&'a str>,
}

/// A digest rendered once for all its recipients (the shape the store keeps it in).
pub type Rendered = crate::store::DigestContent;

pub fn default_subject(list: &List, now: DateTime<Utc>, tz: Tz) -> String {
    format!("{} — {}", list.name, now.with_timezone(&tz).format("%-d %B %Y"))
}

/// Renders the shared part of a digest of `items` (newest first); `web_url` is its web version.
pub fn render(
    list: &List,
    items: &[DigestItem],
    subject: Option<&str>,
    now: DateTime<Utc>,
    tz: Tz,
    postal_address: Option<&str>,
    web_url: Option<&str>,
) -> Result<Rendered, askama::Error> {
    let placeholder = format!("bulletin-{}-", crate::domain::hex(&rand::random::<[u8; 12]>()));
    let date = now.with_timezone(&tz).format("%A, %-d %B %Y").to_string();
    let views: Vec<ItemView<'_>> = items.iter().map(|i| ItemView::of(i, tz)).collect();
    let unsubscribe = format!("{placeholder}U");
    let preferences = format!("{placeholder}P");
    let email = format!("{placeholder}E");
    let html = DigestHtml {
        list,
        date: &date,
        items: &views,
        email: &email,
        unsubscribe_url: &unsubscribe,
        preferences_url: &preferences,
        postal_address,
        web_url,
    }
    .render()?;
    let text = DigestText {
        list,
        date: &date,
        items: &views,
        email: &email,
        unsubscribe_url: &unsubscribe,
        preferences_url: &preferences,
        postal_address,
        web_url,
    }
    .render()?;
    let subject = subject
        .map(str::to_owned)
        .unwrap_or_else(|| default_subject(list, now, tz));
    Ok(Rendered {
        subject,
        html_body: html,
        text_body: text,
        placeholder,
    })
}

/// A recipient's own values in a digest.
pub struct Recipient<'a> {
    pub email: &'a str,
    pub unsubscribe_url: &'a str,
    pub preferences_url: &'a str,
}

/// One recipient's copy: (html, text).
pub fn personalise(html: &str, text: &str, placeholder: &str, to: &Recipient<'_>) -> (String, String) {
    let Recipient {
        email,
        unsubscribe_url,
        preferences_url,
    } = *to;
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let html = html
        .replace(&format!("{placeholder}U"), &escape(unsubscribe_url))
        .replace(&format!("{placeholder}P"), &escape(preferences_url))
        .replace(&format!("{placeholder}E"), &escape(email));
    let text = text
        .replace(&format!("{placeholder}U"), unsubscribe_url)
        .replace(&format!("{placeholder}P"), preferences_url)
        .replace(&format!("{placeholder}E"), email);
    (html, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> List {
        List {
            id: 1,
            slug: "daily".into(),
            name: "Daily Briefing".into(),
            description: "The news at 7am".into(),
            created_at: Utc::now(),
        }
    }

    fn item(title: &str, summary_html: &str) -> DigestItem {
        DigestItem {
            id: 1,
            title: title.into(),
            url: Some("https://news.example/a?b=1&c=2".into()),
            summary_html: summary_html.into(),
            summary_text: "Plain summary".into(),
            published_at: "2026-11-28T06:30:00Z".parse().unwrap(),
            image_url: None,
            image_width: None,
        }
    }

    #[test]
    fn renders_once_and_personalises_by_substitution() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let now = "2026-11-28T23:30:00Z".parse().unwrap();
        let r = render(
            &list(),
            &[item("Tom & Jerry", "<p>Safe <strong>summary</strong></p>")],
            None,
            now,
            tz,
            Some("1 Main St"),
            Some("https://n.example/digests/abc"),
        )
        .unwrap();
        // Dates in the configured zone: 23:30 UTC is already the 29th in Berlin.
        assert_eq!(r.subject, "Daily Briefing — 29 November 2026");
        assert!(
            r.html_body.contains("Tom &#38; Jerry") || r.html_body.contains("Tom &amp; Jerry"),
            "{}",
            r.html_body
        );
        assert!(r.html_body.contains("<strong>summary</strong>"), "{}", r.html_body);
        assert!(r.text_body.contains("Tom & Jerry") && r.text_body.contains("07:30"));
        let (html, text) = personalise(
            &r.html_body,
            &r.text_body,
            &r.placeholder,
            &Recipient {
                email: "o'neil@x.org",
                unsubscribe_url: "https://n.example/u?token=1.a",
                preferences_url: "https://n.example/preferences?token=2.b",
            },
        );
        assert!(html.contains("https://n.example/u?token=1.a") && html.contains("o&#39;neil@x.org"));
        assert!(html.contains("https://n.example/preferences?token=2.b") && text.contains("preferences?token=2.b"));
        assert!(text.contains("https://n.example/u?token=1.a") && text.contains("o'neil@x.org"));
        assert!(!html.contains(&r.placeholder) && !text.contains(&r.placeholder));
        assert!(html.contains("1 Main St") && text.contains("1 Main St"));
        // The web version at the top of both parts; an item without a picture shows none.
        assert!(
            html.contains(r#"<a href="https://n.example/digests/abc" style="color:#555555;">View in your browser</a>"#)
        );
        assert!(text.contains("View in your browser: https://n.example/digests/abc"));
        assert!(!html.contains("<img"));
    }
}

/// What an operator asks for; every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DigestRequest {
    pub since: Option<DateTime<Utc>>,
    pub max_items: Option<i64>,
    pub subject: Option<String>,
}

impl DigestRequest {
    /// A stable fingerprint of the request, to tell an idempotent retry from a different request.
    pub fn fingerprint(&self) -> String {
        let canonical = format!(
            "since={:?};max_items={:?};subject={:?}",
            self.since.map(|t| t.timestamp_millis()),
            self.max_items,
            self.subject
        );
        crate::domain::hex(&<sha2::Sha256 as sha2::Digest>::digest(canonical.as_bytes()))
    }

    /// The items it may carry: what came after `since`, late stories included; without `since`,
    /// what was published in the last `DEFAULT_LOOKBACK`.
    pub fn window(&self, now: DateTime<Utc>) -> crate::store::ItemWindow {
        match self.since {
            Some(since) => crate::store::ItemWindow::after(since),
            None => crate::store::ItemWindow::published_within(now, DEFAULT_LOOKBACK),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("There are no new items for this list in the chosen period: nothing to send.")]
    NoItems,
    #[error("This list has no confirmed subscribers: nothing to send.")]
    NoRecipients,
    #[error("This Idempotency-Key was used for a different request.")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot render the digest: {0}")]
    Render(String),
}

/// The next digest of a list as it would be built now: its items and its rendered shared part.
pub async fn build_next(
    store: &crate::store::Store,
    config: &crate::config::Config,
    list: &List,
    request: &DigestRequest,
) -> Result<(Vec<DigestItem>, Rendered), DigestError> {
    let now = crate::store::now();
    let max = request.max_items.unwrap_or(DEFAULT_MAX_ITEMS);
    let items = store.eligible_items(list.id, request.window(now), max).await?;
    if items.is_empty() {
        return Err(DigestError::NoItems);
    }
    let rendered = render(
        list,
        &items,
        request.subject.as_deref(),
        now,
        config.timezone,
        config.postal_address.as_deref(),
        None,
    )
    .map_err(|e| DigestError::Render(e.to_string()))?;
    Ok((items, rendered))
}

/// Queues the next digest of a list: the digest row with its items (chosen and recorded in one
/// write, so concurrent requests never share an item), then one delivery row per confirmed
/// subscriber, written in chunks. With an idempotency key already used for the same request,
/// returns that digest and queues nothing.
pub async fn queue(
    store: &crate::store::Store,
    config: &crate::config::Config,
    list: &List,
    request: &DigestRequest,
    idempotency_key: Option<&str>,
) -> Result<(crate::store::DigestView, bool), DigestError> {
    let (id, created) = create(store, config, list, request, idempotency_key).await?;
    if created {
        finish_enqueue(store, id).await?;
        crate::telemetry::digest("queued");
    }
    Ok((store.digest(id).await?, created))
}

/// The digest row with its items, without its delivery rows (`finish_enqueue` writes them):
/// its id, and whether it was made now (not found under the idempotency key).
pub async fn create(
    store: &crate::store::Store,
    config: &crate::config::Config,
    list: &List,
    request: &DigestRequest,
    idempotency_key: Option<&str>,
) -> Result<(i64, bool), DigestError> {
    use crate::store::NextDigest;
    let fingerprint = request.fingerprint();
    let now = crate::store::now();
    let public_id = crate::domain::hex(&rand::random::<[u8; 16]>());
    let web_url = web_url(config, &public_id);
    let new = crate::store::NewDigest {
        public_id: &public_id,
        list_id: list.id,
        window: request.window(now),
        max_items: request.max_items.unwrap_or(DEFAULT_MAX_ITEMS),
        idempotency_key,
        request_hash: &fingerprint,
    };
    let render = |items: &[DigestItem]| {
        let subject = request.subject.as_deref();
        render(
            list,
            items,
            subject,
            now,
            config.timezone,
            config.postal_address.as_deref(),
            Some(&web_url),
        )
        .map_err(|e| e.to_string())
    };
    match store.create_digest(&new, render).await? {
        NextDigest::Created(id) => Ok((id, true)),
        NextDigest::Existing { id, same_request: true } => Ok((id, false)),
        NextDigest::Existing { .. } => Err(DigestError::IdempotencyMismatch),
        NextDigest::NoItems => Err(DigestError::NoItems),
        NextDigest::NoRecipients => Err(DigestError::NoRecipients),
        NextDigest::RenderFailed(e) => Err(DigestError::Render(e)),
    }
}

/// The web version of a digest: a public page at an unguessable address (128 random bits).
pub fn web_url(config: &crate::config::Config, public_id: &str) -> String {
    format!(
        "{}/digests/{public_id}",
        config.public_url.as_str().trim_end_matches('/')
    )
}

/// Writes the remaining delivery rows of a digest, chunk by chunk; safe to repeat after a crash.
pub async fn finish_enqueue(store: &crate::store::Store, id: i64) -> Result<(), crate::store::StoreError> {
    while !store.enqueue_deliveries(id).await? {}
    // A digest whose every recipient left meanwhile has nothing to send.
    store.finish_digest_if_complete(id).await?;
    Ok(())
}

/// A test copy of a rendered digest for one address: subject marked "[TEST]", a placeholder
/// unsubscribe link, and an `X-Bulletin-Test` header. It goes through the outbox.
pub fn test_copy(
    rendered: &Rendered,
    list: &List,
    to: &str,
    links: &crate::mail::Links,
) -> crate::store::NewOutboxMessage {
    let unsubscribe = links.link("/unsubscribe?token=test");
    let (html, text) = personalise(
        &rendered.html_body,
        &rendered.text_body,
        &rendered.placeholder,
        &Recipient {
            email: to,
            unsubscribe_url: &unsubscribe,
            preferences_url: &links.link("/preferences"),
        },
    );
    let list_id = crate::mail::list_headers(list, &unsubscribe, links.namespace())
        .into_iter()
        .filter(|(name, _)| name == "List-Id");
    crate::store::NewOutboxMessage {
        kind: "digest-test",
        priority: crate::store::outbox::PRIORITY_TRANSACTIONAL,
        recipient: to.to_owned(),
        subject: format!("[TEST] {}", rendered.subject),
        text_body: Some(text),
        html_body: Some(html),
        params: None,
        headers: list_id
            .chain([("X-Bulletin-Test".to_owned(), "yes".to_owned())])
            .collect(),
        subscription_id: None,
    }
}
