//! One personalised digest message (10 items) made from the shared part, as the sender makes
//! every copy: `spliced` is Bulletin's way (the shared bytes encoded once, the recipient's
//! values spliced in); `rebuilt` is the way it was done before, for comparison (the bodies
//! substituted as text, then a whole MIME message built and encoded by lettre).
//!
//!   cargo bench --bench digest_message

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use lettre::message::{Mailbox, MultiPart};

use bulletin::mail::Composer;
use bulletin::store::{DigestItem, DigestParts, List};

fn digest_parts() -> DigestParts {
    let list = List {
        id: 1,
        slug: "daily".into(),
        name: "Daily Briefing".into(),
        description: "The news at 7am".into(),
        created_at: Utc::now(),
    };
    let now = Utc::now();
    let items: Vec<DigestItem> = (0..10)
        .map(|i| DigestItem {
            id: i,
            title: format!("Story {i}: the council votes on the new budget — what changes"),
            url: Some(format!("https://news.example/2026/12/02/story-{i}")),
            summary_html: "<p>The council voted on Tuesday. <strong>Here is what changes</strong> for readers, \
                           and what it means for the city's schools, roads and parks.</p>"
                .repeat(3),
            summary_text: "The council voted on Tuesday. Here is what changes for readers.".repeat(3),
            published_at: now - TimeDelta::minutes(i),
            image_url: Some(format!("https://news.example/images/story-{i}.jpg")),
            image_width: Some(600),
        })
        .collect();
    let rendered = bulletin::digest::render(
        &list,
        &items,
        None,
        now,
        chrono_tz::Europe::Kyiv,
        Some("1 Main Street"),
        Some("https://news.example/digests/0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    DigestParts {
        id: 1,
        list_id: list.id,
        list_slug: list.slug,
        list_name: list.name,
        subject: rendered.subject,
        html_body: rendered.html_body,
        text_body: rendered.text_body,
        placeholder: rendered.placeholder,
        status: "sending".into(),
    }
}

fn bench(c: &mut Criterion) {
    let from: Mailbox = "Newsroom <news@news.example>".parse().unwrap();
    let composer = Composer::new(from.clone(), None, "0123456789abcdef".into(), None);
    let parts = digest_parts();
    let digest = composer.prepare_digest(parts.clone(), "news.example");
    let unsubscribe = "https://news.example/unsubscribe?token=123456.Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4";
    let to = bulletin::digest::Recipient {
        email: "reader@news.example",
        unsubscribe_url: unsubscribe,
        preferences_url: "https://news.example/preferences?token=654321.cXV4cXV1eHF1dXhxdXV4Zm9vYmFyYmF6",
    };
    let (_, sample) = composer.digest_for(&digest, 42, &to, "news.example").unwrap();
    println!("message size: {} bytes", sample.len());

    let mut group = c.benchmark_group("one digest message, 10 items");
    group.bench_function("spliced", |b| {
        b.iter(|| composer.digest_for(&digest, 42, &to, "news.example").unwrap())
    });
    group.bench_function("rebuilt (lettre)", |b| {
        b.iter(|| {
            let (html, text) =
                bulletin::digest::personalise(&parts.html_body, &parts.text_body, &parts.placeholder, &to);
            let message = lettre::Message::builder()
                .from(from.clone())
                .to("reader@news.example".parse().unwrap())
                .subject(&parts.subject)
                .date_now()
                .multipart(MultiPart::alternative_plain_html(text, html))
                .unwrap();
            message.formatted()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
