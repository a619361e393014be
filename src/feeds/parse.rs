//! Feed documents (RSS 0.9x/1.0/2.0, Atom, JSON Feed) → items ready for digests.
//!
//! feed-rs does the format work. On top of it this module decides the character set, picks a
//! stable key and an absolute http(s) link per item, sanitises summary HTML with ammonia and
//! renders a plain-text version of it for text/plain emails.
//!
//! Sanitised summary HTML keeps: links (`a href`, http/https/mailto only, with
//! `rel="noopener noreferrer"`), basic formatting (p, br, strong, b, em, i, u, s, small, sub,
//! sup, mark, code, pre, kbd, abbr, cite, q, del, ins, span, div), headings h1–h6, lists,
//! blockquote, figure/figcaption, hr, simple tables, and `img` with an absolute http(s) `src`,
//! `alt` and `title` (no width/height: publishers set 2000px, which breaks email layouts; the
//! digest template should give images `max-width: 100%`). No class, style, id or event handler
//! attribute survives. Script, style, iframe, object, embed, form controls, media players, svg
//! and math are dropped together with their content.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use encoding_rs::Encoding;
use feed_rs::model::{Entry, FeedType, Text};
use feed_rs::parser::{ParseErrorKind, ParseFeedError};
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use sha2::{Digest, Sha256};
use url::Url;

/// One feed entry, normalised for storage and for both email bodies.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedItem {
    /// The entry's guid/id when present and non-empty, else its resolved link (keys longer than
    /// 1024 bytes are replaced by `sha256:<hex>` so they fit a unique index).
    pub key: String,
    /// Plain text, whitespace collapsed, at most 500 characters.
    pub title: String,
    /// Absolute http(s) link to the entry.
    pub url: Option<String>,
    /// Sanitised HTML (see the module docs for what survives).
    pub summary_html: String,
    /// Plain text of `summary_html`: blank lines between paragraphs, links as "text (url)".
    pub summary_text: String,
    /// The entry's picture (see [`super::images`]).
    pub image: Option<super::images::ItemImage>,
    /// Published, else updated.
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub items: Vec<ParsedItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The body is not a feed feed-rs can read; the text is short enough to show as the feed's
    /// last error.
    #[error("not a valid RSS, Atom or JSON feed: {0}")]
    Malformed(String),
}

const TITLE_MAX_CHARS: usize = 500;
const FALLBACK_TITLE_CHARS: usize = 80;
/// Postgres cannot index a btree key much beyond 2.7 kB; real guids and links are far shorter.
const KEY_MAX_BYTES: usize = 1024;
const ERROR_REASON_MAX_CHARS: usize = 200;

const ATOM_NS: &[u8] = b"http://www.w3.org/2005/Atom";
const RSS1_NS: &[u8] = b"http://purl.org/rss/1.0/";
const CONTENT_NS: &[u8] = b"http://purl.org/rss/1.0/modules/content/";

/// Tags kept in summaries.
const SUMMARY_TAGS: &[&str] = &[
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "dd",
    "del",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "mark",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
];

/// Tags removed with everything inside them: their content is code, widgets or fallback text
/// ("your browser does not support video"), never part of the story.
const DROPPED_WITH_CONTENT: &[&str] = &[
    "applet", "audio", "button", "canvas", "embed", "form", "frame", "frameset", "iframe", "math", "noembed",
    "noscript", "object", "script", "select", "style", "svg", "template", "textarea", "title", "video",
];

/// Parses a fetched feed body. `content_type` is the HTTP header (only its charset is used);
/// `feed_url` is where the body came from, the base for relative links without xml:base.
pub fn parse_feed(body: &[u8], content_type: Option<&str>, feed_url: &Url) -> Result<ParsedFeed, FeedError> {
    // The XML reader under feed-rs panics on some documents (found by fuzzing: an encoding
    // declared after the reader's prefix buffer was drained). A feed is someone else's bytes:
    // such a document is malformed, and the poller goes on.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse_feed_unguarded(body, content_type, feed_url)
    }))
    .unwrap_or_else(|_| {
        tracing::warn!(feed = %feed_url, "the feed parser gave up on a document (it panicked)");
        Err(FeedError::Malformed("the document could not be read".to_owned()))
    })
}

fn parse_feed_unguarded(body: &[u8], content_type: Option<&str>, feed_url: &Url) -> Result<ParsedFeed, FeedError> {
    let text = decode_body(body, content_type);
    if text.trim().is_empty() {
        return Err(FeedError::Malformed("the document is empty".to_owned()));
    }

    let feed = feed_rs::parser::Builder::new()
        // Root of the xml:base chain, so relative links and relative xml:base values resolve.
        .base_uri(Some(feed_url.as_str()))
        // An empty id means "no guid": the default generator would invent a hash and hide that.
        .id_generator(|_, _, _| String::new())
        .sanitize_content(false)
        .build()
        .parse(text.as_bytes())
        .map_err(|e| FeedError::Malformed(describe_error(&e, &text)))?;

    // feed-rs resolves `<link>` against xml:base but does not say which base applies to a
    // summary's HTML, so a second light pass over the XML records it per entry. It is used only
    // when it found exactly the entries feed-rs did.
    let bases = if feed.feed_type != FeedType::JSON && text.contains("xml:base") {
        scan_xml_bases(&text, feed_url).filter(|b| b.len() == feed.entries.len())
    } else {
        None
    };

    let json_images = if feed.feed_type == FeedType::JSON {
        super::images::json_feed_images(&text, feed_url)
    } else {
        Vec::new()
    };

    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(feed.entries.len());
    for (index, entry) in feed.entries.iter().enumerate() {
        let entry_bases = bases.as_ref().and_then(|b| b.get(index));
        if let Some(mut item) = convert_entry(entry, &feed.feed_type, entry_bases, feed_url) {
            if let Some(image) = json_images.get(index).cloned().flatten() {
                item.image = Some(image);
            }
            if item.image.is_none() {
                let (image, summary_html) = super::images::take_from_summary(&item.summary_html);
                item.image = image;
                item.summary_html = summary_html;
            }
            // Duplicate guids happen (republished items); the store keys on (feed, key).
            if seen.insert(item.key.clone()) {
                items.push(item);
            }
        }
    }

    let title = feed
        .title
        .as_ref()
        .map(|t| title_text(t, &feed.feed_type))
        .filter(|t| !t.is_empty());
    Ok(ParsedFeed { title, items })
}

fn convert_entry(
    entry: &Entry,
    feed_type: &FeedType,
    bases: Option<&EntryBases>,
    feed_url: &Url,
) -> Option<ParsedItem> {
    let url = entry_url(entry, feed_type, feed_url);
    let key = item_key(&entry.id).or_else(|| url.as_deref().and_then(item_key))?;

    let (summary_html, summary_text) = match summary_source(entry, feed_type, bases, feed_url) {
        Some((html, base)) => sanitize_with_text(&html, &base),
        None => (String::new(), String::new()),
    };

    let mut title = entry
        .title
        .as_ref()
        .map(|t| title_text(t, feed_type))
        .unwrap_or_default();
    if title.is_empty() {
        title = truncate_chars(&collapse_whitespace(&summary_text), FALLBACK_TITLE_CHARS);
    }
    if title.is_empty() {
        return None;
    }

    Some(ParsedItem {
        key,
        title,
        url,
        summary_html,
        summary_text,
        image: super::images::from_media(entry, feed_url),
        published_at: entry.published.or(entry.updated),
    })
}

/// The entry's web page: its first alternate (or untyped) link that resolves to http(s). RSS
/// items without one fall back to a guid that is an http(s) URL, as RSS defines guids to be
/// permalinks unless marked otherwise.
fn entry_url(entry: &Entry, feed_type: &FeedType, feed_url: &Url) -> Option<String> {
    let from_links = entry
        .links
        .iter()
        .filter(|l| l.target.is_none() && l.rel.as_deref().is_none_or(|r| r.eq_ignore_ascii_case("alternate")))
        .find_map(|l| http_url(feed_url, &l.href));
    let rss = matches!(feed_type, FeedType::RSS0 | FeedType::RSS1 | FeedType::RSS2);
    from_links.or_else(|| {
        rss.then(|| Url::parse(entry.id.trim()).ok())
            .flatten()
            .filter(is_http)
            .map(String::from)
    })
}

fn http_url(base: &Url, href: &str) -> Option<String> {
    base.join(href.trim()).ok().filter(is_http).map(String::from)
}

fn is_http(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// An item's stable key from its guid (or link): control characters dropped, and a key too long
/// to index replaced by its hash. `None` when nothing is left.
pub fn item_key(raw: &str) -> Option<String> {
    let key: String = raw.trim().chars().filter(|c| !c.is_control()).collect();
    if key.is_empty() {
        return None;
    }
    if key.len() <= KEY_MAX_BYTES {
        return Some(key);
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::from("sha256:");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    Some(out)
}

/// Picks the summary (else the content body, else a Media RSS description), turns it into HTML
/// and returns it with the base its relative URLs resolve against.
fn summary_source(
    entry: &Entry,
    feed_type: &FeedType,
    bases: Option<&EntryBases>,
    feed_url: &Url,
) -> Option<(String, Url)> {
    let usable_base = |base: Option<&Url>| base.filter(|b| is_http(b)).cloned().unwrap_or_else(|| feed_url.clone());

    if let Some(summary) = entry.summary.as_ref().filter(|s| !s.content.trim().is_empty()) {
        let base = usable_base(bases.and_then(|b| b.summary.as_ref()));
        return Some((
            as_html(&summary.content, essence(summary.content_type.as_str()), feed_type),
            base,
        ));
    }

    if let Some(content) = &entry.content {
        let kind = essence(content.content_type.as_str());
        // feed-rs labels Atom xhtml "application/xhtml"; other types (images, XML) are not text.
        let readable = matches!(
            kind.as_str(),
            "text/html" | "application/xhtml" | "application/xhtml+xml" | "text/plain"
        );
        if let Some(body) = content.body.as_ref().filter(|b| readable && !b.trim().is_empty()) {
            // Without the scan, feed-rs still reports a `<content xml:base>` as `Entry::base`.
            let raw_base = || entry.base.as_deref().and_then(|b| feed_url.join(b).ok());
            let base = match bases {
                Some(b) => usable_base(b.content.as_ref()),
                None => usable_base(raw_base().as_ref()),
            };
            return Some((as_html(body, kind, feed_type), base));
        }
    }

    entry
        .media
        .iter()
        .filter_map(|m| m.description.as_ref())
        .find(|d| !d.content.trim().is_empty())
        .map(|d| {
            (
                as_html(&d.content, essence(d.content_type.as_str()), feed_type),
                feed_url.clone(),
            )
        })
}

/// The media type without parameters, lower-cased.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Atom and JSON Feed say whether a text is plain or HTML, so plain text is escaped. RSS
/// descriptions are HTML by convention whatever feed-rs labels them (it calls RSS 1.0 ones
/// text/plain although real ones carry markup). HTML without a single tag is often plain text
/// whose line breaks matter, so its blank lines become paragraphs.
fn as_html(raw: &str, content_type: String, feed_type: &FeedType) -> String {
    let declared_plain = matches!(feed_type, FeedType::Atom | FeedType::JSON) && content_type == "text/plain";
    if declared_plain {
        text_to_html(raw, true)
    } else if has_markup(raw) {
        raw.to_owned()
    } else {
        text_to_html(raw, false)
    }
}

fn has_markup(s: &str) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'/' || w[1] == b'!'))
}

/// Paragraphs from plain text: blank lines separate them, single newlines become `<br>`.
/// `escape` is false for "HTML without tags", whose entities must still be decoded later.
fn text_to_html(text: &str, escape: bool) -> String {
    let mut html = String::with_capacity(text.len() + 16);
    let mut in_paragraph = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if in_paragraph {
                html.push_str("</p>");
                in_paragraph = false;
            }
            continue;
        }
        if in_paragraph {
            html.push_str("<br>");
        } else {
            html.push_str("<p>");
            in_paragraph = true;
        }
        if escape {
            for c in line.chars() {
                match c {
                    '&' => html.push_str("&amp;"),
                    '<' => html.push_str("&lt;"),
                    '>' => html.push_str("&gt;"),
                    '"' => html.push_str("&quot;"),
                    c => html.push(c),
                }
            }
        } else {
            html.push_str(line);
        }
    }
    if in_paragraph {
        html.push_str("</p>");
    }
    html
}

fn sanitize_summary(html: &str, base: &Url) -> String {
    let filter_base = base.clone();
    let mut builder = ammonia::Builder::default();
    builder
        .tags(SUMMARY_TAGS.iter().copied().collect())
        .clean_content_tags(DROPPED_WITH_CONTENT.iter().copied().collect())
        .tag_attributes(HashMap::from([
            ("a", HashSet::from(["href", "title"])),
            ("img", HashSet::from(["src", "alt", "title"])),
            ("ol", HashSet::from(["start"])),
            ("td", HashSet::from(["colspan", "rowspan"])),
            ("th", HashSet::from(["colspan", "rowspan"])),
        ]))
        .generic_attributes(HashSet::from(["lang", "title"]))
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer"))
        .url_relative(ammonia::UrlRelative::RewriteWithBase(base.clone()))
        // Images load by themselves when the email opens, so only absolute http(s) sources
        // survive (no data:, cid:, mailto:). This runs before ammonia's relative rewrite, hence
        // the resolution here.
        .attribute_filter(move |element, attribute, value| {
            if element == "img" && attribute == "src" {
                http_url(&filter_base, value).map(Cow::Owned)
            } else {
                Some(Cow::Borrowed(value))
            }
        });
    builder.clean(html).to_string()
}

/// Titles are shown as plain text. Atom `type="text"` titles are literal by definition; every
/// other title may carry markup or entities (common in RSS), which are stripped and decoded.
fn title_text(title: &Text, feed_type: &FeedType) -> String {
    let raw = title.content.as_str();
    if *feed_type == FeedType::Atom && essence(title.content_type.as_str()) == "text/plain" {
        truncate_chars(&collapse_whitespace(raw), TITLE_MAX_CHARS)
    } else {
        plain_text(raw)
    }
}

/// A title-like string that may hold HTML or entities as plain text: tags stripped (scripts and
/// styles with their content), entities decoded, whitespace collapsed, at most 500 characters.
/// Also used for titles pushed through the API.
pub fn plain_text(html: &str) -> String {
    let text: Cow<'_, str> = if html.contains(['<', '&']) {
        Cow::Owned(html_to_text(&TITLE_CLEANER.clean(html).to_string(), false))
    } else {
        Cow::Borrowed(html)
    };
    truncate_chars(&collapse_whitespace(&text), TITLE_MAX_CHARS)
}

/// Sanitised HTML and its plain text for a summary given as HTML (text without tags counts as
/// plain text with paragraphs), relative URLs resolved against `base`. Also used for summaries
/// pushed through the API.
pub fn clean_summary(html: &str, base: &Url) -> (String, String) {
    if html.trim().is_empty() {
        return (String::new(), String::new());
    }
    sanitize_with_text(&as_html(html, "text/html".to_owned(), &FeedType::RSS2), base)
}

fn sanitize_with_text(html: &str, base: &Url) -> (String, String) {
    let clean = sanitize_summary(html, base);
    let text = html_to_text(&clean, true);
    (clean, text)
}

/// Drops scripts and the like from titles before their text is read; attributes are not needed.
static TITLE_CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .tags(SUMMARY_TAGS.iter().copied().collect())
        .clean_content_tags(DROPPED_WITH_CONTENT.iter().copied().collect())
        .tag_attributes(HashMap::new())
        .generic_attributes(HashSet::new())
        .link_rel(None);
    builder
});

/// Words joined by single spaces, control characters dropped: a title is one line, and
/// PostgreSQL refuses NUL in text.
fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        let word = word.chars().filter(|c| !c.is_control());
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word);
    }
    out.truncate(out.trim_end().len());
    out
}

/// At most `max` characters; a cut ends at a word boundary when one is near and gets an ellipsis.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max.saturating_sub(1)).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(at) if cut[..at].chars().count() >= max * 3 / 4 => &cut[..at],
        _ => cut.as_str(),
    };
    format!("{}…", cut.trim_end())
}

// ---------------------------------------------------------------------------------------------
// Plain-text rendering of (sanitised) HTML, on html5ever's tokenizer: sanitised markup is flat
// and well-formed enough that a token stream is all the structure needed.

/// Renders HTML as text: blocks become paragraphs separated by a blank line, `br` and list
/// items a line break, whitespace is collapsed. With `link_urls`, links read "text (url)", or
/// just the url when the text is the url itself.
fn html_to_text(html: &str, link_urls: bool) -> String {
    let sink = TextSink(RefCell::new(TextRenderer::new(link_urls)));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner().finish()
}

struct TextSink(RefCell<TextRenderer>);

impl TokenSink for TextSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        self.0.borrow_mut().token(token);
        TokenSinkResult::Continue
    }
}

/// Separator owed before the next visible text; the strongest one asked for wins.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Space,
    Line,
    Paragraph,
}

struct PendingLink {
    href: Option<String>,
    text: String,
}

struct TextRenderer {
    out: String,
    gap: Gap,
    /// List marker ("- ", "3. ") written before the next visible text.
    marker: Option<String>,
    link: Option<PendingLink>,
    /// Open lists: `None` for `ul`, the next number for `ol`.
    lists: Vec<Option<u32>>,
    link_urls: bool,
}

impl TextRenderer {
    fn new(link_urls: bool) -> Self {
        TextRenderer {
            out: String::new(),
            gap: Gap::None,
            marker: None,
            link: None,
            lists: Vec::new(),
            link_urls,
        }
    }

    fn token(&mut self, token: Token) {
        match token {
            Token::CharacterTokens(text) => self.text(&text),
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                match tag.kind {
                    TagKind::StartTag => {
                        let attr = |wanted: &str| {
                            tag.attrs
                                .iter()
                                .find(|a| &*a.name.local == wanted)
                                .map(|a| a.value.to_string())
                        };
                        self.start_tag(name, attr("href"), attr("alt"), attr("start"));
                    }
                    TagKind::EndTag => self.end_tag(name),
                }
            }
            Token::EOFToken => self.end_link(),
            _ => {}
        }
    }

    fn start_tag(&mut self, name: &str, href: Option<String>, alt: Option<String>, start: Option<String>) {
        match name {
            "a" if self.link_urls => {
                self.end_link();
                self.link = Some(PendingLink {
                    href,
                    text: String::new(),
                });
            }
            "img" => {
                // An image that is a link's only content names the link.
                if let (Some(link), Some(alt)) = (self.link.as_mut(), alt) {
                    link.text.push(' ');
                    link.text.push_str(&alt);
                }
            }
            "br" => {
                let gap = if self.gap >= Gap::Line {
                    Gap::Paragraph
                } else {
                    Gap::Line
                };
                self.separate(gap);
            }
            "ul" | "ol" => {
                self.separate(if self.lists.is_empty() {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
                let first = start.and_then(|s| s.trim().parse().ok()).unwrap_or(1);
                self.lists.push((name == "ol").then_some(first));
            }
            "li" => {
                self.separate(Gap::Line);
                let indent = "  ".repeat(self.lists.len().saturating_sub(1));
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        *n += 1;
                        format!("{indent}{}. ", *n - 1)
                    }
                    _ => format!("{indent}- "),
                };
                self.marker = Some(marker);
            }
            "tr" | "dt" | "dd" => self.separate(Gap::Line),
            "td" | "th" => self.separate(Gap::Space),
            name if is_block(name) => self.separate(Gap::Paragraph),
            _ => {}
        }
    }

    fn end_tag(&mut self, name: &str) {
        match name {
            "a" => self.end_link(),
            "ul" | "ol" => {
                self.lists.pop();
                self.marker = None;
                self.separate(if self.lists.is_empty() {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
            }
            "li" | "tr" | "dt" | "dd" => self.separate(Gap::Line),
            name if is_block(name) => self.separate(Gap::Paragraph),
            _ => {}
        }
    }

    fn separate(&mut self, gap: Gap) {
        match self.link.as_mut() {
            // Blocks inside a link only separate words of its text.
            Some(link) => link.text.push(' '),
            None => self.gap = self.gap.max(gap),
        }
    }

    fn text(&mut self, text: &str) {
        match self.link.as_mut() {
            Some(link) => link.text.push_str(text),
            None => self.emit(text),
        }
    }

    /// Appends text, collapsing whitespace and paying any separator owed.
    fn emit(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_whitespace() {
                self.gap = self.gap.max(Gap::Space);
                continue;
            }
            if self.gap != Gap::None || self.marker.is_some() {
                if !self.out.is_empty() {
                    self.out.push_str(match self.gap {
                        Gap::None => "",
                        Gap::Space => " ",
                        Gap::Line => "\n",
                        Gap::Paragraph => "\n\n",
                    });
                }
                self.gap = Gap::None;
                if let Some(marker) = self.marker.take() {
                    self.out.push_str(&marker);
                }
            }
            self.out.push(c);
        }
    }

    fn end_link(&mut self) {
        let Some(link) = self.link.take() else { return };
        // Spaces just inside the link still separate it from the words around it.
        if link.text.starts_with(char::is_whitespace) {
            self.gap = self.gap.max(Gap::Space);
        }
        let trailing_space = link.text.ends_with(char::is_whitespace);
        let text = collapse_whitespace(&link.text);
        let rendered = match link.href.filter(|h| !h.trim().is_empty()) {
            Some(href) if text.is_empty() => href,
            // "a@b.example" reads better than "mailto:a@b.example"; a spelled-out web link
            // gets its full URL so mail clients make it clickable.
            Some(href) if same_target(&text, &href) => {
                if href.starts_with("mailto:") {
                    text
                } else {
                    href
                }
            }
            Some(href) => format!("{text} ({href})"),
            None => text,
        };
        self.emit(&rendered);
        if trailing_space {
            self.gap = self.gap.max(Gap::Space);
        }
    }

    fn finish(mut self) -> String {
        self.end_link();
        // Lines are all a text part keeps; PostgreSQL refuses NUL in text.
        self.out.retain(|c| c == '\n' || !c.is_control());
        self.out
    }
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "blockquote"
            | "figure"
            | "figcaption"
            | "pre"
            | "table"
            | "caption"
            | "dl"
            | "hr"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
    )
}

/// Whether a link's text just spells its URL ("example.com/x" for "https://example.com/x/").
fn same_target(text: &str, href: &str) -> bool {
    fn bare(s: &str) -> String {
        let s = s.trim().to_lowercase();
        let s = ["https://", "http://", "mailto:"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
            .unwrap_or(&s);
        let s = s.strip_prefix("www.").unwrap_or(s);
        s.trim_end_matches('/').to_owned()
    }
    bare(text) == bare(href)
}

// ---------------------------------------------------------------------------------------------
// Character set.

/// Decodes the body to UTF-8 and makes any XML declaration say so, so that feed-rs does not
/// decode it a second time.
///
/// Order: a byte-order mark; else bytes that are valid UTF-8 are UTF-8 whatever the labels say
/// (a server's default `charset=ISO-8859-1` on a UTF-8 feed is far more common than Latin-1 text
/// that happens to be valid UTF-8); else the HTTP charset, then the XML declaration, skipping a
/// "UTF-8" label the bytes contradict; else UTF-8 with replacement characters.
fn decode_body<'a>(body: &'a [u8], content_type: Option<&str>) -> Cow<'a, str> {
    let text = if let Some((encoding, bom_length)) = Encoding::for_bom(body) {
        let rest = body.get(bom_length..).unwrap_or_default();
        encoding.decode_without_bom_handling(rest).0
    } else if let Ok(text) = std::str::from_utf8(body) {
        Cow::Borrowed(text)
    } else {
        // A declaration that could be read as ASCII rules out UTF-16, and "replacement" would
        // turn the whole document into U+FFFD.
        let usable = |e: &&'static Encoding| {
            *e != encoding_rs::UTF_8
                && *e != encoding_rs::REPLACEMENT
                && *e != encoding_rs::UTF_16LE
                && *e != encoding_rs::UTF_16BE
        };
        let from_http = content_type
            .and_then(charset_param)
            .and_then(|l| Encoding::for_label(l.as_bytes()));
        let from_declaration = xml_declaration(body)
            .and_then(|(decl, _)| declared_encoding(decl))
            .and_then(|(label, _)| Encoding::for_label(label.as_bytes()));
        let encoding = from_http
            .filter(|e| *e != encoding_rs::UTF_8 && *e != encoding_rs::REPLACEMENT)
            .or(from_declaration.filter(usable))
            .unwrap_or(encoding_rs::UTF_8);
        encoding.decode_without_bom_handling(body).0
    };
    declare_utf8(text)
}

/// The charset parameter of a Content-Type header value.
fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
    })
}

/// The `<?xml ...?>` declaration at the start of the document (leading whitespace tolerated, as
/// feed-rs tolerates it) and its byte offset. Read as bytes: it is ASCII in every
/// ASCII-compatible encoding.
fn xml_declaration(body: &[u8]) -> Option<(&str, usize)> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = body.get(start..)?;
    if !rest.starts_with(b"<?xml") {
        return None;
    }
    let head = rest.get(..rest.len().min(512))?;
    let end = head.windows(2).position(|w| w == b"?>")? + 2;
    let decl = std::str::from_utf8(head.get(..end)?).ok()?;
    Some((decl, start))
}

/// The encoding label in a declaration and its byte range within it.
fn declared_encoding(decl: &str) -> Option<(&str, std::ops::Range<usize>)> {
    let after_name = decl.find("encoding")? + "encoding".len();
    let rest = decl.get(after_name..)?;
    let equals = rest.find('=')?;
    if !rest.get(..equals)?.trim().is_empty() {
        return None;
    }
    let value = rest.get(equals + 1..)?;
    let quote_at = value.find(['"', '\''])?;
    if !value.get(..quote_at)?.trim().is_empty() {
        return None;
    }
    let quote = value.get(quote_at..quote_at + 1)?;
    let label_start = after_name + equals + 1 + quote_at + 1;
    let label_length = decl.get(label_start..)?.find(quote)?;
    let range = label_start..label_start + label_length;
    Some((decl.get(range.clone())?, range))
}

fn declare_utf8(text: Cow<'_, str>) -> Cow<'_, str> {
    let Some((decl, offset)) = xml_declaration(text.as_bytes()) else {
        return text;
    };
    match declared_encoding(decl) {
        Some((label, range)) if !label.eq_ignore_ascii_case("utf-8") => {
            let mut owned = text.into_owned();
            owned.replace_range(range.start + offset..range.end + offset, "UTF-8");
            Cow::Owned(owned)
        }
        _ => text,
    }
}

// ---------------------------------------------------------------------------------------------
// xml:base per entry.

/// Effective xml:base at an entry's summary and content elements (`None`: the element is absent).
#[derive(Debug, Default, Clone, PartialEq)]
struct EntryBases {
    summary: Option<Url>,
    content: Option<Url>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    Atom,
    AtomEntry,
    Rss,
    Rdf,
    Other,
}

/// Walks the XML once, tracking xml:base like feed-rs does (rooted at `feed_url`), and records
/// the bases of each entry's summary/content in document order, the order feed-rs emits entries.
/// Elements without a namespace count as the format's own, as in feed-rs.
fn scan_xml_bases(xml: &str, feed_url: &Url) -> Option<Vec<EntryBases>> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;

    let mut reader = quick_xml::NsReader::from_str(xml);
    reader.config_mut().expand_empty_elements = true;

    // (effective base, local name) per open element; index 0 is the document itself.
    let mut stack: Vec<(Url, String)> = vec![(feed_url.clone(), String::new())];
    let mut root = Root::Other;
    let mut entry_depth: Option<usize> = None;
    let mut entries = Vec::new();

    loop {
        let (namespace, event) = reader.read_resolved_event().ok()?;
        match event {
            Event::Start(element) => {
                let ns: Option<Vec<u8>> = match namespace {
                    ResolveResult::Bound(ns) => Some(ns.into_inner().as_bytes().to_vec()),
                    _ => None,
                };
                let local = element.local_name().into_inner().to_owned();
                let (parent_base, parent_name) = stack.last()?;
                let mut base = parent_base.clone();
                for attribute in element.attributes().flatten() {
                    if attribute.key.as_ref() == "xml:base"
                        && let Ok(value) = attribute.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        && let Ok(joined) = base.join(value.trim())
                    {
                        base = joined;
                    }
                }
                let depth = stack.len();
                let in_ns = |wanted: &[u8]| ns.as_deref().is_none_or(|n| n == wanted);

                if depth == 1 {
                    root = match local.as_str() {
                        "feed" => Root::Atom,
                        "entry" => Root::AtomEntry,
                        "rss" => Root::Rss,
                        "RDF" => Root::Rdf,
                        _ => Root::Other,
                    };
                }
                match entry_depth {
                    None => {
                        let is_entry = match root {
                            Root::AtomEntry => depth == 1,
                            Root::Atom => depth == 2 && local == "entry" && in_ns(ATOM_NS),
                            Root::Rss => depth == 3 && local == "item" && parent_name == "channel" && ns.is_none(),
                            Root::Rdf => depth == 2 && local == "item" && in_ns(RSS1_NS),
                            Root::Other => false,
                        };
                        if is_entry {
                            entry_depth = Some(depth);
                            entries.push(EntryBases::default());
                        }
                    }
                    Some(at) if depth == at + 1 => {
                        let atom = matches!(root, Root::Atom | Root::AtomEntry);
                        let is_summary = if atom {
                            local == "summary" && in_ns(ATOM_NS)
                        } else {
                            local == "description" && in_ns(RSS1_NS)
                        };
                        let is_content = if atom {
                            local == "content" && in_ns(ATOM_NS)
                        } else {
                            local == "encoded" && ns.as_deref() == Some(CONTENT_NS)
                        };
                        if let Some(current) = entries.last_mut() {
                            if is_summary {
                                current.summary = Some(base.clone());
                            } else if is_content {
                                current.content = Some(base.clone());
                            }
                        }
                    }
                    Some(_) => {}
                }
                stack.push((base, local));
            }
            Event::End(_) => {
                stack.pop();
                if entry_depth == Some(stack.len()) {
                    entry_depth = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(entries)
}

// ---------------------------------------------------------------------------------------------

fn describe_error(error: &ParseFeedError, text: &str) -> String {
    let start: String = text
        .trim_start()
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    let reason = if start.starts_with("<!doctype html") || start.starts_with("<html") {
        "the document is an HTML page".to_owned()
    } else {
        match error {
            ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
                "no <rss>, <feed> or <rdf:RDF> root element and not a JSON Feed".to_owned()
            }
            ParseFeedError::XmlReader(e) => {
                let detail = e.to_string();
                format!(
                    "malformed XML: {}",
                    detail.strip_prefix("Parser error: ").unwrap_or(&detail)
                )
            }
            ParseFeedError::JsonSerde(e) => format!("malformed JSON: {e}"),
            ParseFeedError::JsonUnsupportedVersion(version) => format!("unsupported JSON Feed version {version}"),
            other => other.to_string(),
        }
    };
    truncate_chars(&collapse_whitespace(&reason), ERROR_REASON_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/feeds");

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}/{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn parse(body: &str, feed_url: &str) -> ParsedFeed {
        parse_feed(body.as_bytes(), None, &url(feed_url)).expect("feed parses")
    }

    fn rss_with_items(items: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Test</title><link>https://site.example.org/</link>
{items}
</channel></rss>"#
        )
    }

    #[test]
    fn every_fixture_parses_except_the_invalid_one() {
        let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
            .expect("fixture directory")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".xml"))
            .collect();
        names.sort();
        assert!(names.len() >= 11, "fixtures missing: {names:?}");
        let feed_url = url("https://feeds.example.com/feed.xml");
        for name in names {
            let result = parse_feed(&fixture(&name), None, &feed_url);
            if name == "rss_2.0_invalid_1.xml" {
                let error = result.expect_err("invalid feed must fail");
                assert!(
                    error.to_string().starts_with("not a valid RSS, Atom or JSON feed: "),
                    "{error}"
                );
                continue;
            }
            let feed = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "rss_2.0_ghost_1.xml" {
                // Its only item has neither guid nor link, so nothing could key it across polls.
                assert!(feed.items.is_empty(), "{name}: {:?}", feed.items);
                continue;
            }
            assert!(!feed.items.is_empty(), "{name}: no items");
            for item in &feed.items {
                assert!(!item.key.trim().is_empty(), "{name}: empty key");
                assert!(!item.title.trim().is_empty(), "{name}: empty title");
                assert!(item.title.chars().count() <= TITLE_MAX_CHARS);
                if let Some(u) = &item.url {
                    assert!(u.starts_with("http://") || u.starts_with("https://"), "{name}: {u}");
                }
                for banned in [
                    "<script",
                    "<style",
                    "<iframe",
                    " onerror=",
                    " onclick=",
                    " onload=",
                    "javascript:",
                    " class=",
                    " style=",
                ] {
                    assert!(
                        !item.summary_html.contains(banned),
                        "{name}: {banned} in {}",
                        item.summary_html
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_fixture_error_is_short_and_human() {
        let error = parse_feed(&fixture("rss_2.0_invalid_1.xml"), None, &url("https://x.example/f")).unwrap_err();
        let FeedError::Malformed(reason) = &error;
        assert!(reason.starts_with("malformed XML"), "{reason}");
        assert!(error.to_string().chars().count() < 300, "{error}");
    }

    #[test]
    fn fixture_details_come_through() {
        let feed_url = url("https://feeds.example.com/feed.xml");

        let ghost = parse_feed(&fixture("rss_2.0_ghost_2.xml"), None, &feed_url).expect("ghost");
        let item = &ghost.items[0];
        assert_eq!(ghost.title.as_deref(), Some("Changelog"));
        assert_eq!(item.key, "615376bf10e1d9004af82a8c");
        assert_eq!(item.title, "Send emails without publishing");
        assert_eq!(
            item.url.as_deref(),
            Some("https://ghost.org/changelog/email-without-publishing/")
        );
        assert_eq!(
            item.published_at,
            Some(DateTime::parse_from_rfc3339("2021-10-11T18:11:15Z").unwrap().to_utc())
        );
        // The summary's first picture becomes the item's, above its title.
        let image = item.image.as_ref().expect("the summary's picture");
        assert!(
            image
                .url
                .starts_with("https://ghost.org/changelog/content/images/2021/10/"),
            "{image:?}"
        );
        assert!(!item.summary_html.contains(&image.url));
        assert!(
            item.summary_text
                .starts_with("You can now choose whether or not to publish a post")
        );

        // ghost_1's item has no title (and no guid or link); given a guid, its content stands in.
        let ghost_1 = String::from_utf8(fixture("rss_2.0_ghost_1.xml")).expect("utf-8");
        let with_guid = ghost_1.replace("<item>", "<item><guid>g1</guid>");
        let untitled = parse_feed(with_guid.as_bytes(), None, &feed_url).expect("ghost 1");
        assert_eq!(untitled.items[0].title, "Example");
        assert_eq!(untitled.items[0].summary_html, "<p>Example</p>");
        assert_eq!(untitled.items[0].url, None);

        // Plain-text description with a line break next to an HTML content body: the summary wins.
        let spiegel = parse_feed(&fixture("rss_2.0_spiegel.xml"), None, &feed_url).expect("spiegel");
        assert_eq!(
            spiegel.items[0].summary_text,
            "Die wichtigsten Nachrichten aus der SPIEGEL-Redaktion.\nSee omnystudio.com/listener for privacy information."
        );

        // Atom with only <content>.
        let reddit = parse_feed(&fixture("atom_example_reddit.xml"), None, &feed_url).expect("reddit");
        assert!(reddit.items[0].summary_text.starts_with("Mystified about strings?"));
        assert_eq!(reddit.items[0].key, "t3_glvkc5");
    }

    #[test]
    fn iso_8859_1_fixture_decodes() {
        let feed_url = url("https://www.golem.de/rss.php");
        let feed = parse_feed(&fixture("rss_1.0_iso8859.xml"), None, &feed_url).expect("golem");
        let item = &feed.items[0];
        assert_eq!(
            item.title,
            "Digitalministerium: Neue Glasfaserförderung mit Schnellkasse"
        );
        assert!(
            item.summary_text
                .contains("Ab April soll es wieder Förderung für den Ausbau"),
            "{}",
            item.summary_text
        );
        assert!(item.summary_html.contains("Förderung für"));
        // RSS 1.0 has no guid: the link is the key.
        assert_eq!(item.key, item.url.clone().expect("url"));

        // A wrong HTTP charset that claims UTF-8 does not win over the declaration.
        let with_header = parse_feed(
            &fixture("rss_1.0_iso8859.xml"),
            Some("text/xml; charset=utf-8"),
            &feed_url,
        );
        assert_eq!(with_header.expect("golem").items[0].title, item.title);
    }

    #[test]
    fn http_charset_and_declaration_are_honoured() {
        let feed_url = url("https://news.example.com/feed");
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode(
            "<rss version=\"2.0\"><channel><title>Café</title><item><guid>1</guid><title>Crème brûlée à l'été</title></item></channel></rss>",
        );
        let feed = parse_feed(&latin1, Some("application/rss+xml; charset=\"ISO-8859-1\""), &feed_url).expect("latin1");
        assert_eq!(feed.title.as_deref(), Some("Café"));
        assert_eq!(feed.items[0].title, "Crème brûlée à l'été");

        // UTF-8 bytes whose declaration (and header) say ISO-8859-1: the bytes win.
        let utf8 = "<?xml version='1.0' encoding='ISO-8859-1'?><rss version=\"2.0\"><channel><item><guid>1</guid><title>Müller é</title></item></channel></rss>";
        let feed = parse_feed(utf8.as_bytes(), Some("text/xml; charset=iso-8859-1"), &feed_url).expect("utf8");
        assert_eq!(feed.items[0].title, "Müller é");
        let indented = format!("\n  {utf8}");
        assert_eq!(
            parse_feed(indented.as_bytes(), None, &feed_url)
                .expect("indented")
                .items[0]
                .title,
            "Müller é"
        );

        // windows-1251 announced only by the declaration.
        let (cyrillic, _, _) = encoding_rs::WINDOWS_1251.encode(
            "<?xml version=\"1.0\" encoding=\"windows-1251\"?><rss version=\"2.0\"><channel><item><guid>1</guid><title>Новости</title></item></channel></rss>",
        );
        let feed = parse_feed(&cyrillic, None, &feed_url).expect("cyrillic");
        assert_eq!(feed.items[0].title, "Новости");

        // UTF-16 with a byte-order mark.
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "<?xml version=\"1.0\" encoding=\"UTF-16\"?><rss version=\"2.0\"><channel><item><guid>1</guid><title>Grüße</title></item></channel></rss>".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let feed = parse_feed(&utf16, Some("application/xml"), &feed_url).expect("utf16");
        assert_eq!(feed.items[0].title, "Grüße");
    }

    #[test]
    fn hostile_summaries_are_cleaned() {
        let feed = parse(
            &rss_with_items(
                r#"<item><guid>evil</guid><title>Evil</title><description><![CDATA[
<p onclick="alert(1)" style="color:red" class="x">Intro <strong>bold</strong> <b>b</b> <em>em</em>
<a href="https://good.example.com/page" onmouseover="alert(1)" target="_blank">good link</a></p>
<script>alert(1)</script>
<img src=x onerror=alert(1)>
<img src="data:image/png;base64,AAAA" alt="data">
<a href="javascript:alert(1)">x</a>
<a href="  JaVaScRiPt:alert(1)">y</a>
<a href="vbscript:msgbox(1)">z</a>
<a href="data:text/html;base64,PHNjcmlwdD4=">d</a>
<iframe src="https://evil.example.net/frame">frame fallback</iframe>
<form action="https://evil.example.net/steal"><input name="q"><button>Go</button></form>
<style>body { display: none }</style>
<object data="x.swf"><embed src="x.swf"></object>
<svg><script>alert(1)</script></svg>
]]></description></item>"#,
            ),
            "https://news.example.com/feed.xml",
        );
        let html = &feed.items[0].summary_html;
        for banned in [
            "<script",
            "alert",
            "onerror",
            "onclick",
            "onmouseover",
            "javascript",
            "vbscript",
            "data:",
            "<iframe",
            "frame fallback",
            "<form",
            "<input",
            "<button",
            "Go<",
            "<style",
            "display",
            "<object",
            "<embed",
            "<svg",
            "style=",
            "class=",
            "target=",
        ] {
            assert!(
                !html.to_lowercase().contains(&banned.to_lowercase()),
                "{banned} survived in {html}"
            );
        }
        assert!(
            html.contains(r#"<a href="https://good.example.com/page" rel="noopener noreferrer">good link</a>"#),
            "{html}"
        );
        assert!(html.contains("<strong>bold</strong>") && html.contains("<b>b</b>") && html.contains("<em>em</em>"));
        // The relative "x" is an ordinary image path once resolved: the item's picture.
        assert_eq!(
            feed.items[0].image.as_ref().map(|i| i.url.as_str()),
            Some("https://news.example.com/x")
        );
        assert!(html.contains(r#"<img alt="data">"#), "{html}");
        assert!(html.contains("<a rel=\"noopener noreferrer\">x</a>"), "{html}");
    }

    #[test]
    fn atom_links_resolve_against_xml_base() {
        let atom = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://blog.example.org/posts/">
  <title type="html">Blog &amp;amp; more</title>
  <id>urn:feed</id>
  <entry>
    <id>tag:blog.example.org,2024:1</id>
    <title>Relative things</title>
    <link href="2024/cafe.html"/>
    <updated>2024-03-01T10:00:00Z</updated>
    <summary type="html">&lt;p&gt;Read &lt;a href="../about/"&gt;about us&lt;/a&gt;.&lt;img src="img/x.png" alt="x"&gt;&lt;/p&gt;</summary>
  </entry>
  <entry xml:base="https://other.example.net/a/">
    <id>tag:blog.example.org,2024:2</id>
    <title>Nested base</title>
    <link rel="alternate" href="b/page.html"/>
    <link rel="enclosure" href="b/audio.mp3"/>
    <published>2024-03-02T10:00:00Z</published>
    <content type="xhtml" xml:base="sub/"><div xmlns="http://www.w3.org/1999/xhtml"><p><a href="page">rel</a></p></div></content>
  </entry>
</feed>"#;
        let feed = parse(atom, "https://feeds.example.com/atom.xml");
        assert_eq!(feed.title.as_deref(), Some("Blog & more"));
        let first = &feed.items[0];
        assert_eq!(
            first.url.as_deref(),
            Some("https://blog.example.org/posts/2024/cafe.html")
        );
        assert!(
            first.summary_html.contains(r#"href="https://blog.example.org/about/""#),
            "{}",
            first.summary_html
        );
        // The summary's picture, resolved against xml:base, is the item's picture.
        assert_eq!(
            first.image.as_ref().map(|i| i.url.as_str()),
            Some("https://blog.example.org/posts/img/x.png")
        );
        assert_eq!(first.summary_text, "Read about us (https://blog.example.org/about/).");
        assert_eq!(
            first.published_at,
            Some(DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z").unwrap().to_utc())
        );

        let second = &feed.items[1];
        assert_eq!(second.url.as_deref(), Some("https://other.example.net/a/b/page.html"));
        assert!(
            second
                .summary_html
                .contains(r#"href="https://other.example.net/a/sub/page""#),
            "{}",
            second.summary_html
        );
        assert_eq!(
            second.published_at,
            Some(DateTime::parse_from_rfc3339("2024-03-02T10:00:00Z").unwrap().to_utc())
        );
    }

    #[test]
    fn rss_links_resolve_against_feed_url() {
        let feed = parse(
            &rss_with_items(
                r#"<item><title>Relative</title><link>/articles/1</link>
<description>&lt;p&gt;See &lt;a href="story.html"&gt;the story&lt;/a&gt; and &lt;a href="https://elsewhere.example.net/x"&gt;this&lt;/a&gt;&lt;/p&gt;</description></item>
<item><title>Absolute</title><link>https://cdn.example.net/a?b=1&amp;c=2</link></item>
<item><title>Not web</title><link>ftp://files.example.net/x</link><guid>ftp-guid</guid></item>
<item><title>Nothing to key on</title><description>no link, no guid</description></item>
<item><guid isPermaLink="true">https://news.example.com/p/42</guid><title>Guid permalink</title></item>"#,
            ),
            "https://news.example.com/feeds/main.xml",
        );
        let titles: Vec<&str> = feed.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(titles, ["Relative", "Absolute", "Not web", "Guid permalink"]);

        let relative = &feed.items[0];
        assert_eq!(relative.url.as_deref(), Some("https://news.example.com/articles/1"));
        assert_eq!(relative.key, "https://news.example.com/articles/1");
        assert!(
            relative
                .summary_html
                .contains(r#"href="https://news.example.com/feeds/story.html""#)
        );
        assert!(
            relative
                .summary_html
                .contains(r#"href="https://elsewhere.example.net/x""#)
        );

        assert_eq!(feed.items[1].url.as_deref(), Some("https://cdn.example.net/a?b=1&c=2"));
        assert_eq!(feed.items[2].url, None);
        assert_eq!(feed.items[2].key, "ftp-guid");
        assert_eq!(feed.items[3].url.as_deref(), Some("https://news.example.com/p/42"));
        assert_eq!(feed.items[3].key, "https://news.example.com/p/42");
    }

    #[test]
    fn json_feed_parses() {
        let json = r#"{
  "version": "https://jsonfeed.org/version/1.1",
  "title": "JSON &amp; more",
  "home_page_url": "https://json.example.org/",
  "items": [
    {
      "id": "post-1",
      "url": "/posts/1",
      "title": "Tom &amp; Jerry <em>live</em>",
      "content_html": "<p>Hello <a href=\"/world\">world</a></p><script>x()</script>",
      "date_published": "2024-05-06T07:08:09+02:00"
    },
    {
      "id": "post-2",
      "url": "https://json.example.org/posts/2",
      "summary": "Plain <summary> text\n\nSecond paragraph",
      "content_html": "<p>ignored</p>"
    }
  ]
}"#;
        let feed = parse_feed(
            json.as_bytes(),
            Some("application/feed+json"),
            &url("https://json.example.org/feed.json"),
        )
        .expect("json feed");
        assert_eq!(feed.title.as_deref(), Some("JSON & more"));
        let first = &feed.items[0];
        assert_eq!(first.key, "post-1");
        assert_eq!(first.title, "Tom & Jerry live");
        assert_eq!(first.url.as_deref(), Some("https://json.example.org/posts/1"));
        assert_eq!(
            first.summary_html,
            r#"<p>Hello <a href="https://json.example.org/world" rel="noopener noreferrer">world</a></p>"#
        );
        assert_eq!(
            first.published_at,
            Some(DateTime::parse_from_rfc3339("2024-05-06T05:08:09Z").unwrap().to_utc())
        );

        // JSON Feed summaries are plain text: markup-looking text is kept, escaped.
        let second = &feed.items[1];
        assert_eq!(
            second.summary_html,
            "<p>Plain &lt;summary&gt; text</p><p>Second paragraph</p>"
        );
        assert_eq!(second.summary_text, "Plain <summary> text\n\nSecond paragraph");
        assert_eq!(second.title, "Plain <summary> text Second paragraph");
    }

    #[test]
    fn titles_become_plain_text() {
        let feed = parse(
            &rss_with_items(
                r#"<item><guid>1</guid><title>Tom &amp;amp; Jerry &lt;em&gt;live&lt;/em&gt; &amp;#8211; caf&amp;eacute;</title></item>
<item><guid>2</guid><title><![CDATA[<b>Bold</b>   news&nbsp;today <script>alert(1)</script>]]></title></item>
<item><guid>3</guid><title>  multi
   line   title </title></item>
<item><guid>4</guid><title></title><description>&lt;p&gt;Fallback from a long summary that keeps going well past the eighty character limit for titles.&lt;/p&gt;</description></item>
<item><guid>5</guid><title> </title></item>"#,
            ),
            "https://news.example.com/feed.xml",
        );
        let titles: Vec<&str> = feed.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Tom & Jerry live – café",
                "Bold news today",
                "multi line title",
                "Fallback from a long summary that keeps going well past the eighty character…"
            ]
        );
        assert!(titles[3].chars().count() <= FALLBACK_TITLE_CHARS);

        // Atom type="text" titles are literal.
        let atom = r#"<feed xmlns="http://www.w3.org/2005/Atom"><id>f</id><title>t</title>
<entry><id>e</id><title type="text">Using &lt;details&gt; &amp;amp; more</title></entry></feed>"#;
        assert_eq!(
            parse(atom, "https://a.example/feed").items[0].title,
            "Using <details> &amp; more"
        );

        let long = format!(
            "<rss version=\"2.0\"><channel><item><guid>1</guid><title>{}</title></item></channel></rss>",
            "word ".repeat(200)
        );
        let title = &parse(&long, "https://a.example/feed").items[0].title;
        assert!(
            title.chars().count() <= TITLE_MAX_CHARS && title.ends_with("word…"),
            "{title}"
        );
    }

    #[test]
    fn summary_text_reads_well() {
        let feed = parse(
            &rss_with_items(
                r#"<item><guid>1</guid><title>T</title><description><![CDATA[
<h2>Heading</h2>
<p>First   paragraph with<a href="https://example.com/x"> a link </a>.</p>
<p>Second paragraph<br>next line, <a href="https://example.com/">https://example.com/</a> and <a href="https://www.example.org/path/">example.org/path</a>.</p>
<ul><li>One</li><li>Two <a href="mailto:editor@example.com">write to us</a> or <a href="mailto:desk@example.com">desk@example.com</a></li></ul>
<ol start="3"><li>Three</li><li>Four</li></ol>
<p>Caf&eacute; &amp; bar&nbsp;&mdash; <img src="https://img.example.com/a.png" alt="an image"> done</p>
]]></description></item>"#,
            ),
            "https://news.example.com/feed.xml",
        );
        assert_eq!(
            feed.items[0].summary_text,
            "Heading\n\n\
             First paragraph with a link (https://example.com/x) .\n\n\
             Second paragraph\nnext line, https://example.com/ and https://www.example.org/path/.\n\n\
             - One\n- Two write to us (mailto:editor@example.com) or desk@example.com\n\n\
             3. Three\n4. Four\n\n\
             Café & bar — done"
        );
    }

    /// Found by fuzzing (fuzz/run feed): the XML reader under feed-rs panicked on it.
    #[test]
    fn a_document_that_makes_the_xml_reader_panic_is_malformed() {
        let body = include_bytes!("../../tests/data/fuzz/feed-encoding-after-prefix.xml");
        let base = Url::parse("https://news.example/feed.xml").unwrap();
        assert!(matches!(
            parse_feed(body, Some("application/xml"), &base),
            Err(FeedError::Malformed(_))
        ));
    }

    #[test]
    fn plain_text_descriptions_keep_their_paragraphs() {
        let feed = parse(
            &rss_with_items(
                "<item><guid>1</guid><title>T</title><description>Line one\nline two\n\nAT&amp;T &amp;amp; more</description></item>",
            ),
            "https://news.example.com/feed.xml",
        );
        assert_eq!(
            feed.items[0].summary_html,
            "<p>Line one<br>line two</p><p>AT&amp;T &amp; more</p>"
        );
        assert_eq!(feed.items[0].summary_text, "Line one\nline two\n\nAT&T & more");
    }

    #[test]
    fn helpers_for_pushed_items() {
        assert_eq!(
            plain_text("  Tom &amp; Jerry <b>live</b><script>x()</script>\n"),
            "Tom & Jerry live"
        );
        assert_eq!(plain_text("plain"), "plain");
        let base = url("https://bulletin.example.com/");
        assert_eq!(clean_summary("  ", &base), (String::new(), String::new()));
        let (html, text) = clean_summary(
            r#"<p onclick="x()">See <a href="/a">this</a></p><script>x()</script>"#,
            &base,
        );
        assert_eq!(
            html,
            r#"<p>See <a href="https://bulletin.example.com/a" rel="noopener noreferrer">this</a></p>"#
        );
        assert_eq!(text, "See this (https://bulletin.example.com/a)");
        assert_eq!(
            clean_summary("One\n\nTwo & three", &base),
            (
                "<p>One</p><p>Two &amp; three</p>".to_owned(),
                "One\n\nTwo & three".to_owned()
            )
        );
    }

    #[test]
    fn keys_are_bounded_and_unique() {
        let long_guid = "g".repeat(KEY_MAX_BYTES + 1);
        let feed = parse(
            &rss_with_items(&format!(
                "<item><guid>{long_guid}</guid><title>Long</title></item>\
                 <item><guid>dup</guid><title>First</title></item>\
                 <item><guid>dup</guid><title>Second</title></item>"
            )),
            "https://news.example.com/feed.xml",
        );
        assert_eq!(feed.items.len(), 2);
        assert!(feed.items[0].key.starts_with("sha256:") && feed.items[0].key.len() == 7 + 64);
        assert_eq!(feed.items[1].title, "First");
    }

    #[test]
    fn control_characters_are_dropped_from_what_is_stored() {
        // PostgreSQL refuses NUL in text: a pushed title "\0z" was an internal error there.
        assert_eq!(plain_text("\u{0}z"), "z");
        assert_eq!(plain_text("a\u{1}b &amp;\u{0} c"), "ab & c");
        let (html, text) = clean_summary("\u{c4}\u{0}<p>x\u{0}y</p>", &url("https://news.example.com/"));
        assert!(!html.contains('\0') && !text.contains('\0'), "{html:?} {text:?}");
        assert_eq!(item_key(" \u{0}g\u{7}1 ").as_deref(), Some("g1"));
        assert_eq!(item_key("\u{0}\u{1}"), None);
        let feed = parse(
            &rss_with_items(
                "<item><guid>&#1;</guid><link>https://news.example.com/a</link><title>A&#1;</title></item>",
            ),
            "https://news.example.com/feed.xml",
        );
        assert_eq!(feed.items[0].key, "https://news.example.com/a");
        assert_eq!(feed.items[0].title, "A");
    }

    proptest::proptest! {
        #[test]
        fn stored_text_never_holds_control_characters(raw in "\\PC*|[\\x00-\\x1f<>&;#a-z ]*") {
            let base = url("https://news.example.com/");
            let title = plain_text(&raw);
            proptest::prop_assert!(!title.chars().any(char::is_control), "{title:?}");
            let (html, text) = clean_summary(&raw, &base);
            proptest::prop_assert!(!html.contains('\0'), "{html:?}");
            proptest::prop_assert!(!text.chars().any(|c| c != '\n' && c.is_control()), "{text:?}");
            if let Some(key) = item_key(&raw) {
                proptest::prop_assert!(!key.is_empty() && !key.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn non_feeds_are_errors() {
        let feed_url = url("https://news.example.com/feed");
        let cases: [(&[u8], &str); 4] = [
            (b"", "the document is empty"),
            (
                b"<!DOCTYPE html><html><body>Not found</body></html>",
                "the document is an HTML page",
            ),
            (
                b"<note><to>you</to></note>",
                "no <rss>, <feed> or <rdf:RDF> root element and not a JSON Feed",
            ),
            (
                b"{\"version\": \"https://jsonfeed.org/version/1.1\", ",
                "malformed JSON",
            ),
        ];
        for (body, expected) in cases {
            let FeedError::Malformed(reason) = parse_feed(body, None, &feed_url).expect_err("not a feed");
            assert!(reason.starts_with(expected), "{reason}");
        }
    }

    #[test]
    fn declaration_rewrite_only_touches_the_label() {
        assert_eq!(
            declare_utf8(Cow::Borrowed("<?xml version=\"1.0\" encoding = 'iso-8859-1' ?><a/>")),
            "<?xml version=\"1.0\" encoding = 'UTF-8' ?><a/>"
        );
        assert_eq!(
            declare_utf8(Cow::Borrowed("<?xml version=\"1.0\"?><a/>")),
            "<?xml version=\"1.0\"?><a/>"
        );
        assert_eq!(
            declare_utf8(Cow::Borrowed(
                "\n <?xml version=\"1.0\" encoding=\"windows-1252\"?><a/>"
            )),
            "\n <?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>"
        );
        assert_eq!(
            charset_param("text/xml; Charset=\"windows-1251\""),
            Some("windows-1251".to_owned())
        );
        assert_eq!(charset_param("text/xml"), None);
    }
}
