//! Emails: rendering them from `email_templates/`, turning outbox rows into RFC 5322 messages,
//! and the transports that carry them.

pub mod dkim;
pub mod links;
pub mod transport;

pub use dkim::DkimSigner;
pub use links::Links;

use std::time::Duration;

use askama::Template;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::store::outbox::{PRIORITY_CONFIRMATION, PRIORITY_TRANSACTIONAL};
use crate::store::{List, NewOutboxMessage, OutboxMessage};

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmHtml<'a> {
    lists: &'a [&'a str],
    link: &'a str,
    ttl: &'a str,
}

#[derive(Template)]
#[template(path = "confirm.txt")]
struct ConfirmText<'a> {
    lists: &'a [&'a str],
    link: &'a str,
    ttl: &'a str,
}

#[derive(Template)]
#[template(path = "welcome.html")]
struct WelcomeHtml<'a> {
    list: &'a List,
    unsubscribe_url: &'a str,
}

#[derive(Template)]
#[template(path = "welcome.txt")]
struct WelcomeText<'a> {
    list: &'a List,
    unsubscribe_url: &'a str,
}

/// The headers every email to a confirmed subscriber carries: `List-Id` (RFC 2919) and one-click
/// unsubscribe (RFC 2369 + RFC 8058). `namespace` is a domain of the sender's.
pub fn list_headers(list: &List, unsubscribe_url: &str, namespace: &str) -> Vec<(String, String)> {
    // The phrase is quoted; quotes and backslashes in a list name would end it early.
    let phrase: String = list.name.chars().filter(|c| !matches!(c, '"' | '\\')).collect();
    vec![
        ("List-Id".into(), format!("\"{phrase}\" <{}.{namespace}>", list.slug)),
        ("List-Unsubscribe".into(), format!("<{unsubscribe_url}>")),
        ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
    ]
}

/// The email a subscriber receives once a list is confirmed.
pub fn welcome_email(
    recipient: &str,
    list: &List,
    subscription_id: i64,
    unsubscribe_url: &str,
    namespace: &str,
) -> NewOutboxMessage {
    let html = WelcomeHtml { list, unsubscribe_url };
    let text = WelcomeText { list, unsubscribe_url };
    NewOutboxMessage {
        kind: "welcome",
        priority: PRIORITY_TRANSACTIONAL,
        recipient: recipient.to_owned(),
        subject: format!("Welcome to {}", list.name),
        text_body: text
            .render()
            .unwrap_or_else(|e| format!("Welcome to {}.\n\nUnsubscribe: {unsubscribe_url}\n({e})", list.name)),
        html_body: html.render().unwrap_or_default(),
        headers: list_headers(list, unsubscribe_url, namespace),
        subscription_id: Some(subscription_id),
    }
}

/// "Daily Briefing", "Daily Briefing and Weekly", "A, B and C".
pub fn join_names(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// "48 hours", "30 minutes", "1 hour".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The double opt-in email for `lists`, carrying the confirmation `link`.
pub fn confirmation_email(recipient: &str, lists: &[&List], link: &str, ttl: Duration) -> NewOutboxMessage {
    let names: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
    let ttl = human_duration(ttl);
    let html = ConfirmHtml {
        lists: &names,
        link,
        ttl: &ttl,
    };
    let text = ConfirmText {
        lists: &names,
        link,
        ttl: &ttl,
    };
    NewOutboxMessage {
        kind: "confirmation",
        priority: PRIORITY_CONFIRMATION,
        recipient: recipient.to_owned(),
        subject: format!("Please confirm your subscription to {}", join_names(&names)),
        // Templates hold no fallible logic; an error here would be a bug in a template.
        text_body: text
            .render()
            .unwrap_or_else(|e| format!("Confirm your subscription: {link}\n\n({e})")),
        html_body: html.render().unwrap_or_default(),
        headers: Vec::new(),
        subscription_id: None,
    }
}

/// Turns outbox rows into wire-ready messages.
#[derive(Clone)]
pub struct Composer {
    from: Mailbox,
    /// The envelope sender (MAIL FROM), where bounces go; `None`: the From address.
    return_path: Option<lettre::Address>,
    /// Makes Message-IDs of this installation unique: `<id.tag@domain>`.
    message_id_tag: String,
    /// Signs every message; `None`: the relay is expected to.
    dkim: Option<DkimSigner>,
}

impl Composer {
    pub fn new(
        from: Mailbox,
        return_path: Option<lettre::Address>,
        message_id_tag: String,
        dkim: Option<DkimSigner>,
    ) -> Self {
        Self {
            from,
            return_path,
            message_id_tag,
            dkim,
        }
    }

    /// Message-ID derived from the outbox id, so a re-send after a crash carries the same one.
    pub fn message_id(&self, kind: &str, id: i64) -> String {
        format!("<{kind}.{id}.{}@{}>", self.message_id_tag, self.from.email.domain())
    }

    pub fn compose(&self, msg: &OutboxMessage) -> Result<(Envelope, Vec<u8>), String> {
        self.build(&Parts {
            kind: &msg.kind,
            id: msg.id,
            recipient: &msg.recipient,
            subject: &msg.subject,
            text: msg.text_body.clone().unwrap_or_default(),
            html: msg.html_body.clone().unwrap_or_default(),
            headers: msg.extra_headers(),
        })
    }

    pub fn build(&self, parts: &Parts<'_>) -> Result<(Envelope, Vec<u8>), String> {
        let to: Mailbox = parts.recipient.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(parts.subject)
            .message_id(Some(self.message_id(parts.kind, parts.id)))
            .date_now();
        for (name, value) in &parts.headers {
            let name = HeaderName::new_from_ascii(name.clone()).map_err(|e| format!("bad header name: {e}"))?;
            builder = builder.raw_header(HeaderValue::new(name, value.clone()));
        }
        let mut message = builder
            .multipart(MultiPart::alternative_plain_html(
                parts.text.clone(),
                parts.html.clone(),
            ))
            .map_err(|e| format!("cannot build message: {e}"))?;
        // Last: the signature covers only what the message already has.
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut message);
        }
        let envelope = match &self.return_path {
            Some(sender) => Envelope::new(Some(sender.clone()), message.envelope().to().to_vec())
                .map_err(|e| format!("cannot build the envelope: {e}"))?,
            None => message.envelope().clone(),
        };
        Ok((envelope, message.formatted()))
    }
}

/// What one email is made of.
pub struct Parts<'a> {
    pub kind: &'a str,
    /// Outbox or delivery id: the Message-ID derives from it.
    pub id: i64,
    pub recipient: &'a str,
    pub subject: &'a str,
    pub text: String,
    pub html: String,
    pub headers: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_naturally() {
        assert_eq!(join_names(&["A"]), "A");
        assert_eq!(join_names(&["A", "B"]), "A and B");
        assert_eq!(join_names(&["A", "B", "C"]), "A, B and C");
        assert_eq!(human_duration(Duration::from_secs(48 * 3600)), "48 hours");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90 * 60)), "90 minutes");
    }
}
