//! Wire-ready messages assembled from pre-encoded bytes. A digest is the same for all its
//! recipients but for a few values (the address, the unsubscribe link, the Date and Message-ID),
//! so its headers and both bodies are encoded once, with gaps for those values; each recipient's
//! message is the shared bytes copied with the gaps filled, each value encoded on its own.
//!
//! Bodies are quoted-printable (RFC 2045): lines of at most 76 characters, CRLF line ends, and
//! a gap always starts on a fresh line (the text before it ends with a soft line break), so a
//! value encoded alone splices in without re-encoding anything around it. A line never starts
//! with a dot (it is written `=2E`), so the message needs no dot-stuffing for SMTP.

use std::io::Write as _;

/// Where a recipient's own value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// The `Date` header's value.
    Date,
    /// The `To` header's value: the address.
    To,
    MessageId,
    /// The unsubscribe URL, as a header value (inside `<…>`).
    UnsubscribeHeader,
    /// A value inside a body: (which value, escaped for HTML or not).
    Body(Value, bool),
}

/// The values a body can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Unsubscribe,
    Preferences,
    Email,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    Gap(Gap),
}

/// What one recipient's copy is filled with.
pub struct Personal<'a> {
    /// RFC 5322 date.
    pub date: &'a str,
    /// The recipient's address (already validated: no CR, LF, quotes or brackets).
    pub to: &'a str,
    /// With its angle brackets.
    pub message_id: &'a str,
    pub unsubscribe_url: &'a str,
    /// The reader's preference centre.
    pub preferences_url: &'a str,
}

/// A message with gaps, encoded once.
#[derive(Debug, Clone)]
pub struct Prepared {
    pieces: Vec<Piece>,
    shared_len: usize,
}

/// The parts of a message before encoding.
pub struct Draft<'a> {
    /// The From header's value, already formatted.
    pub from: &'a str,
    pub subject: &'a str,
    /// Further headers, in order: (name, value). `List-Unsubscribe` is added by the gap.
    pub headers: &'a [(String, String)],
    /// Whether the message carries `List-Unsubscribe` (with the recipient's own URL).
    pub unsubscribe_header: bool,
    pub text: &'a str,
    pub html: &'a str,
    /// Marks the values in `text` and `html`: `{marker}U` is the unsubscribe URL, `{marker}E`
    /// the address. `None`: the bodies are final.
    pub marker: Option<&'a str>,
}

impl Prepared {
    pub fn new(draft: &Draft<'_>) -> Self {
        let mut b = Builder::default();
        b.text("From: ");
        b.text(draft.from);
        b.text("\r\nTo: ");
        b.gap(Gap::To);
        b.text("\r\nSubject: ");
        b.text(&encode_header_text(draft.subject));
        b.text("\r\nMessage-ID: ");
        b.gap(Gap::MessageId);
        b.text("\r\nDate: ");
        b.gap(Gap::Date);
        b.text("\r\n");
        for (name, value) in draft.headers {
            b.text(name);
            b.text(": ");
            b.text(&clean_header_value(value));
            b.text("\r\n");
        }
        if draft.unsubscribe_header {
            b.text("List-Unsubscribe: <");
            b.gap(Gap::UnsubscribeHeader);
            b.text(">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        let boundary = boundary();
        let _ = write!(
            b.last_bytes(),
            "MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary=\"{boundary}\"\r\n\r\n"
        );
        for (subtype, body, html) in [("plain", draft.text, false), ("html", draft.html, true)] {
            let _ = write!(
                b.last_bytes(),
                "--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            );
            b.body(body, draft.marker, html);
            b.text("\r\n");
        }
        let _ = write!(b.last_bytes(), "--{boundary}--\r\n");
        b.finish()
    }

    /// One recipient's message, appended to `out`.
    pub fn write(&self, personal: &Personal<'_>, out: &mut Vec<u8>) {
        out.reserve(self.shared_len + 512);
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(bytes) => out.extend_from_slice(bytes),
                Piece::Gap(Gap::Date) => out.extend_from_slice(personal.date.as_bytes()),
                Piece::Gap(Gap::To) => out.extend_from_slice(personal.to.as_bytes()),
                Piece::Gap(Gap::MessageId) => out.extend_from_slice(personal.message_id.as_bytes()),
                Piece::Gap(Gap::UnsubscribeHeader) => out.extend_from_slice(personal.unsubscribe_url.as_bytes()),
                Piece::Gap(Gap::Body(value, html)) => {
                    let raw = match value {
                        Value::Unsubscribe => personal.unsubscribe_url,
                        Value::Preferences => personal.preferences_url,
                        Value::Email => personal.to,
                    };
                    let mut qp = QuotedPrintable::new(out);
                    if *html {
                        qp.push_str(&escape_html(raw));
                    } else {
                        qp.push_str(raw);
                    }
                    qp.soft_break();
                }
            }
        }
    }
}

#[derive(Default)]
struct Builder {
    pieces: Vec<Piece>,
}

impl Builder {
    fn last_bytes(&mut self) -> &mut Vec<u8> {
        if !matches!(self.pieces.last(), Some(Piece::Bytes(_))) {
            self.pieces.push(Piece::Bytes(Vec::new()));
        }
        match self.pieces.last_mut() {
            Some(Piece::Bytes(bytes)) => bytes,
            _ => unreachable!("a bytes piece was just pushed"),
        }
    }

    fn text(&mut self, s: &str) {
        self.last_bytes().extend_from_slice(s.as_bytes());
    }

    fn gap(&mut self, gap: Gap) {
        self.pieces.push(Piece::Gap(gap));
    }

    /// A body, quoted-printable, with a gap at each marker.
    fn body(&mut self, body: &str, marker: Option<&str>, html: bool) {
        let mut rest = body;
        loop {
            let next = marker.and_then(|m| {
                rest.match_indices(m).find_map(|(at, _)| {
                    let value = match rest.as_bytes().get(at + m.len()) {
                        Some(b'U') => Value::Unsubscribe,
                        Some(b'P') => Value::Preferences,
                        Some(b'E') => Value::Email,
                        _ => return None,
                    };
                    Some((at, m.len() + 1, value))
                })
            });
            let (before, gap) = match next {
                Some((at, len, value)) => {
                    let before = &rest[..at];
                    rest = &rest[at + len..];
                    (before, Some(value))
                }
                None => (std::mem::take(&mut rest), None),
            };
            let mut qp = QuotedPrintable::new(self.last_bytes());
            qp.push_str(before);
            match gap {
                Some(value) => {
                    qp.soft_break();
                    self.gap(Gap::Body(value, html));
                }
                None => {
                    qp.finish();
                    return;
                }
            }
        }
    }

    fn finish(self) -> Prepared {
        let shared_len = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len(),
                Piece::Gap(_) => 0,
            })
            .sum();
        Prepared {
            pieces: self.pieces,
            shared_len,
        }
    }
}

/// A quoted-printable encoder writing into a buffer, one line at a time.
struct QuotedPrintable<'a> {
    out: &'a mut Vec<u8>,
    /// Characters on the current line.
    column: usize,
    /// A space or tab not yet written: literal if more follows on the line, `=20` / `=09` at a
    /// line's end.
    pending_space: Option<u8>,
}

const MAX_LINE: usize = 76;
const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl<'a> QuotedPrintable<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            column: 0,
            pending_space: None,
        }
    }

    fn push_str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {}
                b'\n' => self.hard_break(),
                b @ (b' ' | b'\t') => {
                    self.flush_space(false);
                    self.pending_space = Some(b);
                }
                b => {
                    self.flush_space(false);
                    let literal = (33..=126).contains(&b) && b != b'=' && !(b == b'.' && self.column == 0);
                    if literal {
                        self.put(&[b]);
                    } else {
                        self.put(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                    }
                }
            }
            i += 1;
        }
    }

    /// Writes `token`, first breaking the line if it would grow past the limit (keeping one
    /// column for the `=` of a soft break).
    fn put(&mut self, token: &[u8]) {
        if self.column + token.len() > MAX_LINE - 1 {
            self.out.extend_from_slice(b"=\r\n");
            self.column = 0;
            if token == b"." {
                self.out.extend_from_slice(b"=2E");
                self.column = 3;
                return;
            }
        }
        self.out.extend_from_slice(token);
        self.column += token.len();
    }

    /// A pending space, literal when text follows on the line, encoded at a line's end.
    fn flush_space(&mut self, line_end: bool) {
        if let Some(space) = self.pending_space.take() {
            if line_end {
                self.put(&[b'=', HEX[usize::from(space >> 4)], HEX[usize::from(space & 15)]]);
            } else {
                self.put(&[space]);
            }
        }
    }

    fn hard_break(&mut self) {
        self.flush_space(true);
        self.out.extend_from_slice(b"\r\n");
        self.column = 0;
    }

    /// Ends the line without ending the text: what follows starts on a fresh line.
    fn soft_break(&mut self) {
        // Before `=`, a space is not at the line's end.
        self.flush_space(false);
        if self.column > 0 {
            self.out.extend_from_slice(b"=\r\n");
            self.column = 0;
        }
    }

    /// The end of the body.
    fn finish(&mut self) {
        self.flush_space(true);
    }
}

/// `Subject` text: as is when it is short printable ASCII, else RFC 2047 encoded words (UTF-8,
/// base64), folded so that no line grows long. Line breaks can never get through either way.
pub fn encode_header_text(text: &str) -> String {
    let plain = text.len() <= 900 && text.bytes().all(|b| (32..=126).contains(&b)) && !text.contains("=?");
    if plain {
        return text.to_owned();
    }
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    // 45 bytes of UTF-8 make 60 base64 characters: a word of 72.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?utf-8?b?{}?=", engine.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(format!("=?utf-8?b?{}?=", engine.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// Whether `name` may be a header's name: printable ASCII without a colon (RFC 5322 ftext).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// The current time as a `Date` header's value.
pub fn date_now() -> String {
    chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// A header value on one line: control characters (CR and LF above all) become spaces.
fn clean_header_value(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn boundary() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    // URL-safe base64 has no characters that need quoting beyond the quotes we put around it.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_qp(encoded: &str) -> String {
        let joined = encoded.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' {
                out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap().replace("\r\n", "\n")
    }

    fn encode(s: &str) -> String {
        let mut out = Vec::new();
        let mut qp = QuotedPrintable::new(&mut out);
        qp.push_str(s);
        qp.finish();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoted_printable_round_trips_and_keeps_lines_short() {
        for input in [
            "plain text\nsecond line\n",
            "trailing space \nand tab\t\nend ",
            &"x".repeat(300),
            &format!("{}=\n.starts with a dot\n..two", "é".repeat(40)),
            "a = b; c=3D\r\nwindows line\r\n",
            &" ".repeat(100),
        ] {
            let encoded = encode(input);
            assert_eq!(decode_qp(&encoded), input.replace("\r\n", "\n"), "{encoded}");
            for line in encoded.split("\r\n") {
                assert!(line.len() <= MAX_LINE, "{line:?}");
                assert!(!line.starts_with('.'), "{line:?}");
                assert!(!line.ends_with(' ') && !line.ends_with('\t'), "{line:?}");
            }
        }
    }

    #[test]
    fn header_text_is_plain_or_encoded_words() {
        assert_eq!(encode_header_text("Daily Briefing"), "Daily Briefing");
        let encoded = encode_header_text("Daily Briefing — 2 December\r\nBcc: x@y.org");
        assert!(!encoded.contains('\n') || encoded.split("\r\n").skip(1).all(|l| l.starts_with(' ')));
        assert!(!encoded.contains("Bcc: x"), "{encoded}");
        assert!(encoded.starts_with("=?utf-8?b?"), "{encoded}");
        let long = encode_header_text(&"Привет ".repeat(30));
        assert!(long.split("\r\n").all(|l| l.len() <= 76), "{long}");
    }

    #[test]
    fn gaps_are_filled_per_recipient_and_decode_to_the_whole_text() {
        let marker = "bulletin-0123456789abcdef-";
        let text = format!("Hello {marker}E,\nleave: {marker}U\nbye {}", "x".repeat(90));
        let html = format!("<a href=\"{marker}U\">{marker}E</a> &amp; more");
        let headers = vec![("List-Id".to_owned(), "\"Daily\" <daily.news.example>".to_owned())];
        let prepared = Prepared::new(&Draft {
            from: "News <news@news.example>",
            subject: "Daily — 2 December",
            headers: &headers,
            unsubscribe_header: true,
            text: &text,
            html: &html,
            marker: Some(marker),
        });
        let mut out = Vec::new();
        prepared.write(
            &Personal {
                date: "Wed, 02 Dec 2026 07:00:00 +0000",
                to: "o'neil@example.org",
                message_id: "<digest.1.x@news.example>",
                unsubscribe_url: "https://news.example/unsubscribe?token=1.abc&x=2",
                preferences_url: "https://news.example/preferences?token=3.def",
            },
            &mut out,
        );
        let message = String::from_utf8(out).unwrap();
        assert!(message.contains("\r\nTo: o'neil@example.org\r\n"), "{message}");
        assert!(
            message.contains("List-Unsubscribe: <https://news.example/unsubscribe?token=1.abc&x=2>\r\n"),
            "{message}"
        );
        let parts: Vec<&str> = message
            .split("Content-Transfer-Encoding: quoted-printable\r\n\r\n")
            .collect();
        let text_part = decode_qp(parts[1].split("\r\n--").next().unwrap());
        assert_eq!(
            text_part,
            text.replace(&format!("{marker}E"), "o'neil@example.org").replace(
                &format!("{marker}U"),
                "https://news.example/unsubscribe?token=1.abc&x=2"
            )
        );
        let html_part = decode_qp(parts[2].split("\r\n--").next().unwrap());
        assert_eq!(
            html_part,
            "<a href=\"https://news.example/unsubscribe?token=1.abc&amp;x=2\">o&#39;neil@example.org</a> &amp; more"
        );
        for line in message.split("\r\n") {
            assert!(line.len() <= 998 && !line.starts_with('.'), "{line:?}");
        }
        assert!(!message.contains(marker));
    }
}
