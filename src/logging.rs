//! The process's log: `text` (the default) or `json` (`BULLETIN_LOG_FORMAT`), one event per
//! line on stderr. Every line passes through [`mask`] on its way out, whatever wrote it (our
//! events, an SMTP server's reply quoted in an error, a library's message): addresses keep their
//! first character and their domain, and token values are replaced.

use std::borrow::Cow;
use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `BULLETIN_LOG_FORMAT`: `text`, `json`, or unset (`text`).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("BULLETIN_LOG_FORMAT").as_deref() {
            Err(_) | Ok("" | "text") => Ok(LogFormat::Text),
            Ok("json") => Ok(LogFormat::Json),
            Ok(other) => Err(format!("BULLETIN_LOG_FORMAT must be text or json, not {other:?}")),
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info,sqlx=warn`), never below `info`
/// for the SMTP client, in `format`, masked.
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // At debug level the SMTP client logs every message it writes, and messages carry
    // confirmation and unsubscribe tokens: never below info, whatever RUST_LOG asks.
    if let Ok(directive) = "lettre=info".parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MaskedStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
    }
}

/// Hands out one [`MaskedLine`] per event.
struct MaskedStderr;

impl<'a> MakeWriter<'a> for MaskedStderr {
    type Writer = MaskedLine;

    fn make_writer(&'a self) -> Self::Writer {
        MaskedLine(Vec::with_capacity(256))
    }
}

/// One event's output, masked and written to stderr when dropped (the formatter writes an event
/// whole, then drops its writer).
struct MaskedLine(Vec<u8>);

impl Write for MaskedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().lock().write_all(mask(&text).as_bytes());
    }
}

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

/// `reader@example.org` → `r•••@example.org`; the value after `token=` (or `token":"`, or
/// `Bearer `) → `•••`. Text without either comes back borrowed.
pub fn mask(line: &str) -> Cow<'_, str> {
    if !line.contains('@') && !line.contains("token") && !line.contains("Bearer ") {
        return Cow::Borrowed(line);
    }
    Cow::Owned(mask_secrets(&mask_addresses(line)))
}

fn mask_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('@') {
        let (before, after) = rest.split_at(at);
        let local_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_local_char(*c))
            .last()
            .map_or(before.len(), |(i, _)| i);
        let domain = &after[1..];
        let domain_len = domain.find(|c: char| !is_domain_char(c)).unwrap_or(domain.len());
        let domain_part = &domain[..domain_len];
        let local = &before[local_start..];
        if !local.is_empty() && domain_part.contains('.') {
            out.push_str(&before[..local_start]);
            if let Some(first) = local.chars().next() {
                out.push(first);
            }
            out.push_str("•••@");
            out.push_str(domain_part);
            rest = &domain[domain_len..];
        } else {
            out.push_str(before);
            out.push('@');
            rest = domain;
        }
    }
    out.push_str(rest);
    out
}

fn mask_secrets(line: &str) -> String {
    let mut out = line.to_owned();
    for marker in ["token=", "token\":\"", "token\": \"", "Bearer "] {
        let mut from = 0;
        while let Some(found) = out[from..].find(marker) {
            let start = from + found + marker.len();
            let len = out[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.~%+/=".contains(c)))
                .unwrap_or(out.len() - start);
            from = if len > 0 {
                out.replace_range(start..start + len, "•••");
                start + "•••".len()
            } else {
                start
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_keep_their_first_character_and_domain() {
        assert_eq!(
            mask("recipient rejected: 550 5.1.1 <reader@example.org>: unknown"),
            "recipient rejected: 550 5.1.1 <r•••@example.org>: unknown"
        );
        assert_eq!(
            mask(r#"{"error":"a.b+c@news.example.co.uk and x@y.org"}"#),
            r#"{"error":"a•••@news.example.co.uk and x•••@y.org"}"#
        );
        // Not addresses: left alone.
        assert_eq!(mask("user@localhost @ 5 °C"), "user@localhost @ 5 °C");
        assert!(matches!(mask("nothing to hide"), Cow::Borrowed(_)));
    }

    #[test]
    fn token_values_are_replaced() {
        assert_eq!(
            mask("GET /unsubscribe?token=12.pq3_-x&done=1"),
            "GET /unsubscribe?token=•••&done=1"
        );
        assert_eq!(mask(r#"{"token":"abc123","x":1}"#), r#"{"token":"•••","x":1}"#);
        assert_eq!(mask("Authorization: Bearer s3cr3t.t0k3n"), "Authorization: Bearer •••");
        assert_eq!(mask("token= then"), "token= then");
        assert_eq!(mask("token=é token=x"), "token=é token=•••");
    }
}
