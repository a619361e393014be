//! Emails: rendering them from `email_templates/`, turning outbox rows into RFC 5322 messages,
//! and the transports that carry them.

pub mod dkim;
pub mod links;
pub mod mime;
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
use crate::store::{DigestParts, List, NewOutboxMessage, OutboxMessage};

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
    preferences_url: &'a str,
}

#[derive(Template)]
#[template(path = "welcome.txt")]
struct WelcomeText<'a> {
    list: &'a List,
    unsubscribe_url: &'a str,
    preferences_url: &'a str,
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

/// What the reader-facing notices say (the preference link, the erasure link, their data): one
/// layout, `preference.{html,txt}`.
struct Notice<'a> {
    heading: &'a str,
    body: &'a str,
    button: &'a str,
    url: Option<&'a str>,
    footer: &'a str,
}

#[derive(Template)]
#[template(path = "preference.html")]
struct NoticeHtml<'a> {
    notice: &'a Notice<'a>,
}

#[derive(Template)]
#[template(path = "preference.txt")]
struct NoticeText<'a> {
    notice: &'a Notice<'a>,
}

/// The file name of the data a reader asked for, attached to their email.
pub const DATA_ATTACHMENT: &str = "bulletin-data.json";

/// What a `preference` email with parameters carries besides its bodies: the reader's data.
#[derive(serde::Serialize, serde::Deserialize)]
struct AttachmentParams {
    data: String,
}

fn notice_email(recipient: &str, subject: &str, notice: &Notice<'_>, params: Option<String>) -> NewOutboxMessage {
    NewOutboxMessage {
        kind: "preference",
        priority: PRIORITY_TRANSACTIONAL,
        recipient: recipient.to_owned(),
        subject: subject.to_owned(),
        text_body: Some(
            NoticeText { notice }
                .render()
                .unwrap_or_else(|_| notice.body.to_owned()),
        ),
        html_body: Some(NoticeHtml { notice }.render().unwrap_or_default()),
        params,
        headers: Vec::new(),
        subscription_id: None,
    }
}

/// The email with a link to the reader's preference centre (asked for at `/preferences`).
pub fn preference_link_email(recipient: &str, url: &str) -> NewOutboxMessage {
    let notice = Notice {
        heading: "Manage your newsletters",
        body: "Open this page to join or leave each of our newsletters.",
        button: "Manage your newsletters",
        url: Some(url),
        footer: "You get this email because someone asked for a link to manage the newsletters of this \
                 address. If it wasn't you, ignore it: nothing changes unless the link is used.",
    };
    notice_email(recipient, "Manage your newsletters", &notice, None)
}

/// The email with the link that erases everything about the reader ("Delete everything").
pub fn erasure_link_email(recipient: &str, url: &str) -> NewOutboxMessage {
    let notice = Notice {
        heading: "Delete your data",
        body: "Open this page to delete everything we hold about this address: your subscriptions, \
               their consent records and the record of the emails we sent you. The link works for \
               one hour.",
        button: "Delete my data",
        url: Some(url),
        footer: "You get this email because someone asked, from this address's preference page, to \
                 delete its data. If it wasn't you, ignore it: nothing is deleted unless you confirm \
                 on that page.",
    };
    notice_email(recipient, "Delete your data", &notice, None)
}

/// The email that carries everything stored about the reader, as JSON (`data`), attached.
pub fn data_email(recipient: &str, data: String) -> NewOutboxMessage {
    let notice = Notice {
        heading: "Your data",
        body: "Attached is everything we hold about this address, as JSON: your subscriptions with \
               their consent and confirmation records, confirmations waiting, the emails we sent you \
               and any suppression.",
        button: "",
        url: None,
        footer: "You get this email because someone asked for this address's data from its preference \
                 page. It is sent only to the address itself.",
    };
    let params = serde_json::to_string(&AttachmentParams { data }).ok();
    notice_email(recipient, "Your data", &notice, params)
}

/// The email a subscriber receives once a list is confirmed.
pub fn welcome_email(
    recipient: &str,
    list: &List,
    subscription_id: i64,
    unsubscribe_url: &str,
    preferences_url: &str,
    namespace: &str,
) -> NewOutboxMessage {
    let html = WelcomeHtml {
        list,
        unsubscribe_url,
        preferences_url,
    };
    let text = WelcomeText {
        list,
        unsubscribe_url,
        preferences_url,
    };
    NewOutboxMessage {
        kind: "welcome",
        priority: PRIORITY_TRANSACTIONAL,
        recipient: recipient.to_owned(),
        subject: format!("Welcome to {}", list.name),
        text_body: Some(
            text.render()
                .unwrap_or_else(|e| format!("Welcome to {}.\n\nUnsubscribe: {unsubscribe_url}\n({e})", list.name)),
        ),
        html_body: Some(html.render().unwrap_or_default()),
        params: None,
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

/// What a confirmation email is made of; the outbox keeps these rather than the rendered email
/// (a small row is most of what makes signups fast), and the sender renders it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConfirmationParams {
    pub token: String,
    pub lists: Vec<String>,
    pub ttl_secs: u64,
}

/// The double opt-in email for `lists`, carrying the confirmation token, queued as its
/// parameters.
pub fn confirmation_email(recipient: &str, lists: &[&List], token: &str, ttl: Duration) -> NewOutboxMessage {
    let names: Vec<&str> = lists.iter().map(|l| l.name.as_str()).collect();
    let params = ConfirmationParams {
        token: token.to_owned(),
        lists: names.iter().map(|n| (*n).to_owned()).collect(),
        ttl_secs: ttl.as_secs(),
    };
    NewOutboxMessage {
        kind: "confirmation",
        priority: PRIORITY_CONFIRMATION,
        recipient: recipient.to_owned(),
        subject: format!("Please confirm your subscription to {}", join_names(&names)),
        text_body: None,
        html_body: None,
        params: serde_json::to_string(&params).ok(),
        headers: Vec::new(),
        subscription_id: None,
    }
}

/// The confirmation email's bodies (text, HTML).
pub fn render_confirmation(params: &ConfirmationParams, links: &Links) -> (String, String) {
    // The token is base64url: nothing in it needs escaping in a URL.
    let link = links.link(&format!("/subscriptions/confirm?token={}", params.token));
    let names: Vec<&str> = params.lists.iter().map(String::as_str).collect();
    let ttl = human_duration(Duration::from_secs(params.ttl_secs));
    let (link, ttl) = (link.as_str(), ttl.as_str());
    let text = ConfirmText {
        lists: &names,
        link,
        ttl,
    };
    let html = ConfirmHtml {
        lists: &names,
        link,
        ttl,
    };
    // Templates hold no fallible logic; an error here would be a bug in a template.
    (
        text.render()
            .unwrap_or_else(|e| format!("Confirm your subscription: {link}\n\n({e})")),
        html.render().unwrap_or_default(),
    )
}

/// Turns outbox rows and digest deliveries into wire-ready messages.
#[derive(Clone)]
pub struct Composer {
    from: Mailbox,
    /// `from` as a header value, encoded once.
    from_header: String,
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
            from_header: mailbox_header(&from),
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

    pub fn compose(&self, msg: &OutboxMessage, links: &Links) -> Result<(Envelope, Vec<u8>), String> {
        let (text, html) = match (&msg.params, msg.kind.as_str()) {
            (Some(params), "confirmation") => {
                let params: ConfirmationParams =
                    serde_json::from_str(params).map_err(|e| format!("unreadable confirmation parameters: {e}"))?;
                render_confirmation(&params, links)
            }
            (Some(params), "preference") => {
                let params: AttachmentParams =
                    serde_json::from_str(params).map_err(|e| format!("unreadable attachment parameters: {e}"))?;
                return self.build(&Parts {
                    attachment: Some((DATA_ATTACHMENT, params.data.into_bytes())),
                    ..self.stored_parts(msg)
                });
            }
            (Some(_), kind) => return Err(format!("a {kind} email cannot be rendered from parameters")),
            (None, _) => return self.build(&self.stored_parts(msg)),
        };
        self.build(&Parts {
            text,
            html,
            ..self.stored_parts(msg)
        })
    }

    /// The parts of an outbox row as stored (its bodies, its headers).
    fn stored_parts<'a>(&self, msg: &'a OutboxMessage) -> Parts<'a> {
        Parts {
            kind: &msg.kind,
            id: msg.id,
            recipient: &msg.recipient,
            subject: &msg.subject,
            text: msg.text_body.clone().unwrap_or_default(),
            html: msg.html_body.clone().unwrap_or_default(),
            headers: msg.extra_headers(),
            attachment: None,
        }
    }

    /// The wire form of one message. Without DKIM it is assembled directly (`mime`); with DKIM,
    /// lettre builds and signs it.
    pub fn build(&self, parts: &Parts<'_>) -> Result<(Envelope, Vec<u8>), String> {
        if self.dkim.is_some() || parts.attachment.is_some() {
            return self.build_signed(parts);
        }
        if let Some((name, _)) = parts.headers.iter().find(|(name, _)| !mime::is_header_name(name)) {
            return Err(format!("bad header name: {name:?}"));
        }
        let envelope = self.envelope(parts.recipient)?;
        let prepared = mime::Prepared::new(&mime::Draft {
            from: &self.from_header,
            subject: parts.subject,
            headers: &parts.headers,
            unsubscribe_header: false,
            text: &parts.text,
            html: &parts.html,
            marker: None,
        });
        let mut raw = Vec::new();
        prepared.write(
            &mime::Personal {
                date: &mime::date_now(),
                to: parts.recipient,
                message_id: &self.message_id(parts.kind, parts.id),
                unsubscribe_url: "",
                preferences_url: "",
            },
            &mut raw,
        );
        Ok((envelope, raw))
    }

    fn build_signed(&self, parts: &Parts<'_>) -> Result<(Envelope, Vec<u8>), String> {
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
        let bodies = MultiPart::alternative_plain_html(parts.text.clone(), parts.html.clone());
        let body = match &parts.attachment {
            Some((name, content)) => MultiPart::mixed().multipart(bodies).singlepart(
                lettre::message::Attachment::new((*name).to_owned()).body(
                    content.clone(),
                    lettre::message::header::ContentType::parse("application/json").map_err(|e| e.to_string())?,
                ),
            ),
            None => bodies,
        };
        let mut message = builder
            .multipart(body)
            .map_err(|e| format!("cannot build message: {e}"))?;
        // Last: the signature covers only what the message already has.
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut message);
        }
        let envelope = self.envelope(parts.recipient)?;
        Ok((envelope, message.formatted()))
    }

    /// MAIL FROM (the return path, else From) and RCPT TO.
    fn envelope(&self, recipient: &str) -> Result<Envelope, String> {
        let to: lettre::Address = recipient.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let sender = self.return_path.clone().unwrap_or_else(|| self.from.email.clone());
        Envelope::new(Some(sender), vec![to]).map_err(|e| format!("cannot build the envelope: {e}"))
    }
}

/// A digest as its deliveries are made from: the shared part encoded once.
pub struct DigestMessage {
    pub parts: DigestParts,
    list: List,
    prepared: mime::Prepared,
}

impl Composer {
    /// Encodes the part of a digest every recipient shares, once.
    pub fn prepare_digest(&self, parts: DigestParts, namespace: &str) -> DigestMessage {
        let list = List {
            id: parts.list_id,
            slug: parts.list_slug.clone(),
            name: parts.list_name.clone(),
            description: String::new(),
            created_at: chrono::Utc::now(),
        };
        let shared: Vec<(String, String)> = list_headers(&list, "", namespace)
            .into_iter()
            .filter(|(name, _)| name == "List-Id")
            .collect();
        let prepared = mime::Prepared::new(&mime::Draft {
            from: &self.from_header,
            subject: &parts.subject,
            headers: &shared,
            unsubscribe_header: true,
            text: &parts.text_body,
            html: &parts.html_body,
            marker: Some(&parts.placeholder),
        });
        DigestMessage { parts, list, prepared }
    }

    /// One recipient's copy of a digest: the shared bytes with the recipient's values spliced
    /// in. With DKIM, each copy is built and signed whole (the signature covers the body).
    pub fn digest_for(
        &self,
        digest: &DigestMessage,
        delivery_id: i64,
        to: &crate::digest::Recipient<'_>,
        namespace: &str,
    ) -> Result<(Envelope, Vec<u8>), String> {
        let (recipient, unsubscribe_url) = (to.email, to.unsubscribe_url);
        if self.dkim.is_some() {
            let parts = &digest.parts;
            let (html, text) = crate::digest::personalise(&parts.html_body, &parts.text_body, &parts.placeholder, to);
            return self.build(&Parts {
                kind: "digest",
                id: delivery_id,
                recipient,
                subject: &parts.subject,
                text,
                html,
                headers: list_headers(&digest.list, unsubscribe_url, namespace),
                attachment: None,
            });
        }
        let envelope = self.envelope(recipient)?;
        let mut raw = Vec::new();
        digest.prepared.write(
            &mime::Personal {
                date: &mime::date_now(),
                to: recipient,
                message_id: &self.message_id("digest", delivery_id),
                unsubscribe_url,
                preferences_url: to.preferences_url,
            },
            &mut raw,
        );
        Ok((envelope, raw))
    }
}

/// A mailbox as a header value: the name quoted, or as encoded words when it is not ASCII.
fn mailbox_header(mailbox: &Mailbox) -> String {
    match mailbox.name.as_deref().map(str::trim) {
        None | Some("") => mailbox.email.to_string(),
        Some(name) if name.bytes().all(|b| (32..=126).contains(&b)) => {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{}>", mailbox.email)
        }
        Some(name) => format!("{} <{}>", mime::encode_header_text(name), mailbox.email),
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
    /// A file attached (name, content): the reader's data.
    pub attachment: Option<(&'a str, Vec<u8>)>,
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
