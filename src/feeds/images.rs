//! An item's picture, taken from its feed: `media:thumbnail`, then `media:content` of an image
//! type, then an image `enclosure`, then JSON Feed's `image`, then the first `img` of the
//! summary. Only absolute http(s) URLs are kept; Bulletin never fetches them.

use feed_rs::model::Entry;
use url::Url;

/// Widest an image is shown in a digest (the column's width).
pub const MAX_WIDTH: u32 = 600;
/// Longest image URL kept.
const MAX_URL_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemImage {
    pub url: String,
    /// The width the feed declares, if any.
    pub width: Option<u32>,
}

impl ItemImage {
    /// The width kept with the item: the declared one, at most `MAX_WIDTH`.
    pub fn stored_width(&self) -> Option<i32> {
        self.width.map(|w| w.min(MAX_WIDTH) as i32)
    }
}

/// An absolute http(s) URL, resolved against `base`, of a sane length.
pub fn image_url(base: &Url, href: &str) -> Option<String> {
    let url = base.join(href.trim()).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some() && url.as_str().len() <= MAX_URL_BYTES)
        .then(|| url.to_string())
}

fn looks_like_image(path: &str) -> bool {
    let path = path.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif"]
        .iter()
        .any(|e| path.ends_with(e))
}

/// The picture of a feed entry from its Media RSS and enclosure elements. feed-rs lists an
/// item's `media:*` objects before the one it makes of its `enclosure`, which gives the order.
pub fn from_media(entry: &Entry, base: &Url) -> Option<ItemImage> {
    let thumbnail = entry.media.iter().flat_map(|m| &m.thumbnails).find_map(|t| {
        image_url(base, &t.image.uri).map(|url| ItemImage {
            url,
            width: t.image.width,
        })
    });
    thumbnail.or_else(|| {
        entry.media.iter().flat_map(|m| &m.content).find_map(|c| {
            let url = c.url.as_ref()?;
            let is_image = match &c.content_type {
                Some(t) => t.ty().as_str().eq_ignore_ascii_case("image"),
                None => looks_like_image(url.path()),
            };
            is_image
                .then(|| image_url(base, url.as_str()))
                .flatten()
                .map(|url| ItemImage { url, width: c.width })
        })
    })
}

/// JSON Feed's `image` of each item, in the feed's order (feed-rs does not keep it).
pub fn json_feed_images(body: &str, base: &Url) -> Vec<Option<ItemImage>> {
    #[derive(serde::Deserialize)]
    struct Feed {
        #[serde(default)]
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        image: Option<serde_json::Value>,
    }
    let Ok(feed) = serde_json::from_str::<Feed>(body) else {
        return Vec::new();
    };
    feed.items
        .into_iter()
        .map(|i| {
            let href = i.image?;
            image_url(base, href.as_str()?).map(|url| ItemImage { url, width: None })
        })
        .collect()
}

/// The summary's first picture, taken out of it (the digest shows it above the title, once):
/// the picture, and the summary without its `img` element.
pub fn take_from_summary(summary_html: &str) -> (Option<ItemImage>, String) {
    // The sanitiser writes each `<img …>` with quoted attributes and `>` escaped inside them, so
    // a tag ends at the first `>`; the first tag that is a usable picture is taken.
    let mut from = 0;
    while let Some(start) = summary_html[from..].find("<img").map(|i| from + i) {
        let Some(end) = summary_html[start..].find('>').map(|i| start + i + 1) else {
            break;
        };
        if let Some(image) = from_summary(&summary_html[start..end]) {
            let mut rest = format!("{}{}", &summary_html[..start], &summary_html[end..]);
            for empty in ["<figure></figure>", "<p></p>"] {
                rest = rest.replace(empty, "");
            }
            return (Some(image), rest);
        }
        from = end;
    }
    (None, summary_html.to_owned())
}

/// The first `img` of a summary already sanitised (its URLs absolute, its markup normalised by
/// the sanitiser), read with the same HTML tokenizer as the rest of the feed code.
pub fn from_summary(summary_html: &str) -> Option<ItemImage> {
    use html5ever::tendril::StrTendril;
    use html5ever::tokenizer::{
        BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
    };
    use std::cell::RefCell;

    struct FirstImage(RefCell<Option<ItemImage>>);
    impl TokenSink for FirstImage {
        type Handle = ();
        fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
            if let Token::TagToken(Tag {
                kind: TagKind::StartTag,
                name,
                attrs,
                ..
            }) = token
                && &*name == "img"
                && self.0.borrow().is_none()
            {
                let attr = |n: &str| attrs.iter().find(|a| &*a.name.local == n).map(|a| a.value.to_string());
                let width = attr("width").and_then(|w| w.trim().parse::<u32>().ok());
                if let Some(src) = attr("src").filter(|s| s.starts_with("https://") || s.starts_with("http://")) {
                    *self.0.borrow_mut() = Some(ItemImage { url: src, width });
                }
            }
            TokenSinkResult::Continue
        }
    }

    if !summary_html.contains("<img") {
        return None;
    }
    let queue = BufferQueue::default();
    queue.push_back(StrTendril::from_slice(summary_html));
    let tokenizer = Tokenizer::new(FirstImage(RefCell::new(None)), TokenizerOpts::default());
    let _ = tokenizer.feed(&queue);
    tokenizer.end();
    let found = tokenizer.sink.0.borrow().clone();
    found.filter(|i| i.url.len() <= MAX_URL_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_img_of_a_summary() {
        let html = r#"<p>Intro</p><p><img src="https://img.example/a.jpg?x=1&amp;y=2" alt="A" width="320"> and <img src="https://img.example/b.jpg"></p>"#;
        assert_eq!(
            from_summary(html),
            Some(ItemImage {
                url: "https://img.example/a.jpg?x=1&y=2".into(),
                width: Some(320)
            })
        );
        assert_eq!(from_summary("<p>No picture</p>"), None);
        assert_eq!(from_summary(r#"<img src="data:image/png;base64,AAAA">"#), None);
    }

    #[test]
    fn the_summary_picture_is_taken_out_of_the_summary() {
        let html = r#"<img alt="no source"><figure><img src="https://img.example/a.jpg" alt=""></figure><p>Text <img src="https://img.example/b.jpg"></p>"#;
        let (image, rest) = take_from_summary(html);
        assert_eq!(image.map(|i| i.url).as_deref(), Some("https://img.example/a.jpg"));
        assert_eq!(
            rest,
            r#"<img alt="no source"><p>Text <img src="https://img.example/b.jpg"></p>"#
        );
        assert_eq!(take_from_summary("<p>x</p>"), (None, "<p>x</p>".to_owned()));
    }

    #[test]
    fn image_urls_are_absolute_http() {
        let base = Url::parse("https://news.example/feed.xml").unwrap();
        assert_eq!(
            image_url(&base, "/i/a.png").as_deref(),
            Some("https://news.example/i/a.png")
        );
        assert_eq!(image_url(&base, "javascript:alert(1)"), None);
        assert_eq!(image_url(&base, "ftp://x.example/a.png"), None);
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"t","items":[{"id":"1","image":"https://img.example/1.png"},{"id":"2"},{"id":"3","image":"ftp://x/y.png"}]}"#;
        let images = json_feed_images(json, &base);
        assert_eq!(images.len(), 3);
        assert_eq!(
            images[0].as_ref().map(|i| i.url.as_str()),
            Some("https://img.example/1.png")
        );
        assert!(images[1].is_none() && images[2].is_none());
    }
}
