//! An in-process SMTP server (RFC 5321, loopback only) for integration tests.
//!
//! It records every accepted message, lets tests wait for deliveries without
//! sleeping, and can inject faults (rejections, dropped connections, refused
//! connections, slow replies) at any time to exercise a sender's retry logic.
//!
//! ```ignore
//! let smtp = SmtpServer::start().await;
//! // ... point the app at smtp.port() / smtp.url() and trigger a send ...
//! let msg = smtp.wait_for(|m| m.rcpt_to.contains(&"a@example.com".into()), Duration::from_secs(5)).await;
//! assert!(msg.text_body().contains("Confirm"));
//! ```

// Shared test support: not every test binary uses every helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use mail_parser::{Message, MessageParser, MimeHeaders, parsers::MessageStream};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// Largest message accepted (advertised via the SIZE extension).
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Longest command line accepted; RFC 5321 requires at least 512 octets.
const MAX_COMMAND_LINE: usize = 4096;
const HOSTNAME: &str = "127.0.0.1";

/// A message the server accepted (250 after the DATA terminator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Envelope sender (`MAIL FROM`), empty for the null path `<>`.
    pub mail_from: String,
    /// Envelope recipients (`RCPT TO`) in the order they were accepted.
    pub rcpt_to: Vec<String>,
    /// Message content exactly as transmitted, dot-unstuffed, without the
    /// terminating `.` line (ends with the CRLF of the last line).
    pub data: Vec<u8>,
}

impl Received {
    /// The raw message as text (invalid UTF-8 replaced).
    pub fn raw_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The message parsed by `mail-parser`, for anything the helpers don't cover.
    pub fn parsed(&self) -> Option<Message<'_>> {
        MessageParser::default().parse(&self.data)
    }

    /// First occurrence of header `name` (case-insensitive): unfolded, trimmed,
    /// RFC 2047 encoded-words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers_all(name).into_iter().next()
    }

    /// All occurrences of header `name`, in message order, decoded as in [`Self::header`].
    pub fn headers_all(&self, name: &str) -> Vec<String> {
        raw_headers(&self.raw_str())
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_header_value(&v))
            .collect()
    }

    /// The decoded `Subject` header.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// Bare addresses from the `To` header (display names dropped).
    pub fn to(&self) -> Vec<String> {
        self.parsed()
            .and_then(|m| {
                m.to()
                    .map(|to| to.iter().filter_map(|a| a.address().map(str::to_owned)).collect())
            })
            .unwrap_or_default()
    }

    /// The first `text/plain` body part, transfer-decoded (quoted-printable,
    /// base64) and charset-decoded; empty if the message has none. Unlike
    /// `mail-parser`'s `body_text`, an HTML-only message is *not* converted.
    pub fn text_body(&self) -> String {
        self.parsed()
            .and_then(|m| {
                m.text_bodies()
                    .find(|p| p.is_text() && !p.is_text_html())
                    .and_then(|p| p.text_contents().map(str::to_owned))
            })
            .unwrap_or_default()
    }

    /// The content of the attachment named `name`, decoded.
    pub fn attachment(&self, name: &str) -> Option<Vec<u8>> {
        self.parsed().and_then(|m| {
            m.attachments()
                .find(|a| a.attachment_name() == Some(name))
                .map(|a| a.contents().to_vec())
        })
    }

    /// The first `text/html` body part, decoded; empty if the message has none.
    pub fn html_body(&self) -> String {
        self.parsed()
            .and_then(|m| {
                m.html_bodies()
                    .find(|p| p.is_text_html())
                    .and_then(|p| p.text_contents().map(str::to_owned))
            })
            .unwrap_or_default()
    }
}

/// Splits the header section into `(name, unfolded value)` pairs.
fn raw_headers(raw: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    // `lines()` also strips the CR of CRLF.
    for line in raw.lines() {
        if line.is_empty() {
            break; // end of the header section
        }
        if line.starts_with([' ', '\t']) {
            // RFC 5322 §2.2.3 unfolding: drop the CRLF, keep the whitespace.
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.to_owned()));
        }
    }
    headers
}

fn decode_header_value(value: &str) -> String {
    let value = value.trim();
    if !value.contains("=?") {
        return value.to_owned();
    }
    // mail-parser's unstructured parser decodes RFC 2047 encoded-words; it
    // needs the line terminator to finish the field.
    let line = format!("{value}\r\n");
    MessageStream::new(line.as_bytes())
        .parse_unstructured()
        .into_text()
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// How many more times a fault fires; `None` means forever.
#[derive(Debug, Clone, Copy, Default)]
struct Budget(Option<usize>);

impl Budget {
    /// Consumes one use, returning whether the fault fires.
    fn take(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    addr: String,
    code: u16,
    budget: Budget,
}

impl Rule {
    /// Whether this rule applies to `addr` now (consumes one use if so).
    fn fire(&mut self, addr: &str) -> Option<u16> {
        (self.addr.eq_ignore_ascii_case(addr) && self.budget.take()).then_some(self.code)
    }
}

#[derive(Debug)]
struct Faults {
    rcpt: Vec<Rule>,
    data: Vec<Rule>,
    drop_after_data: Budget,
    drop_mid_data: Budget,
    greeting: u16,
    stall: Duration,
    held: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rcpt: Vec::new(),
            data: Vec::new(),
            drop_after_data: Budget(Some(0)),
            drop_mid_data: Budget(Some(0)),
            greeting: 220,
            stall: Duration::ZERO,
            held: false,
        }
    }
}

/// Replaces any existing rule for the same address.
fn set_rule(rules: &mut Vec<Rule>, addr: &str, code: u16, times: Option<usize>) {
    assert!(
        (400..600).contains(&code),
        "SMTP test server: rejection code must be 4xx or 5xx, got {code}"
    );
    rules.retain(|r| !r.addr.eq_ignore_ascii_case(addr));
    rules.push(Rule {
        addr: addr.to_owned(),
        code,
        budget: Budget(times),
    });
}

#[derive(Debug, Default)]
struct State {
    faults: Faults,
    /// Keep only envelopes (for very large sends).
    envelopes_only: bool,
    connections: usize,
    rejected: Vec<(String, u16)>,
}

/// Listener and tasks; one lock so that going down cannot race with the
/// accept loop spawning a session for a connection it just accepted.
struct Net {
    listener: Option<TcpListener>,
    accept_task: Option<AbortHandle>,
    sessions: JoinSet<()>,
}

struct Shared {
    port: u16,
    state: Mutex<State>,
    /// Stored messages; the watch channel doubles as the "new message" signal.
    messages: watch::Sender<Vec<Received>>,
    net: Mutex<Net>,
}

/// A poisoned lock only means another test thread panicked; the data is fine.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Installs `listener` and starts accepting. Needs a Tokio runtime context.
    fn go_up(self: &Arc<Self>, listener: TcpListener) {
        let mut net = lock(&self.net);
        net.listener = Some(listener);
        net.accept_task = Some(tokio::spawn(accept_loop(Arc::clone(self))).abort_handle());
    }

    /// Closes the listening socket synchronously (so the port refuses
    /// connections as soon as this returns) and aborts all tasks.
    fn go_down(&self) {
        let mut net = lock(&self.net);
        net.listener = None;
        if let Some(task) = net.accept_task.take() {
            task.abort();
        }
        net.sessions.abort_all();
    }
}

/// Binds with SO_REUSEADDR so the same port can be re-bound after `set_down`
/// even while old connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(shared: Arc<Shared>) {
    loop {
        // Poll the listener under the lock rather than owning it, so that
        // `set_down(true)` can close it synchronously from outside the task.
        let accepted = poll_fn(|cx| match &lock(&shared.net).listener {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, _))) => {
                let mut net = lock(&shared.net);
                if net.listener.is_none() {
                    return; // went down meanwhile: drop the connection
                }
                shared.state().connections += 1;
                while net.sessions.try_join_next().is_some() {} // reap finished sessions
                net.sessions.spawn(Session::new(stream, Arc::clone(&shared)).run());
            }
            // Transient accept errors (e.g. EMFILE): back off instead of spinning.
            Some(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Handle to the running server. Dropping it stops accepting and aborts all sessions.
pub struct SmtpServer {
    shared: Arc<Shared>,
}

impl SmtpServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    pub async fn start() -> SmtpServer {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("SMTP test server: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("SMTP test server: local address").port();
        let shared = Arc::new(Shared {
            port,
            state: Mutex::default(),
            messages: watch::Sender::new(Vec::new()),
            net: Mutex::new(Net {
                listener: None,
                accept_task: None,
                sessions: JoinSet::new(),
            }),
        });
        shared.go_up(listener);
        SmtpServer { shared }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `smtp://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    // ----- received messages -------------------------------------------------

    /// Snapshot of all messages accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.borrow().clone()
    }

    /// How many messages are stored (without copying them).
    pub fn count(&self) -> usize {
        self.shared.messages.borrow().len()
    }

    /// Messages per envelope recipient (lowercased), without copying them.
    pub fn recipient_counts(&self) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for message in self.shared.messages.borrow().iter() {
            for rcpt in &message.rcpt_to {
                *counts.entry(rcpt.to_lowercase()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits until at least `n` messages are stored, without copying them.
    pub async fn wait_for_at_least(&self, n: usize, timeout: Duration) {
        let mut rx = self.shared.messages.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|m| m.len() >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "SMTP test server: {} of {n} messages within {timeout:?}",
            self.count()
        );
    }

    /// Messages whose envelope recipients include `addr` (case-insensitive).
    pub fn messages_to(&self, addr: &str) -> Vec<Received> {
        self.shared
            .messages
            .borrow()
            .iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(addr)))
            .cloned()
            .collect()
    }

    /// Forgets all stored messages (counters are kept).
    pub fn clear_messages(&self) {
        self.shared.messages.send_modify(Vec::clear);
    }

    /// Waits until at least `n` messages are stored and returns all of them.
    /// Panics after `timeout`, reporting how many did arrive.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut rx = self.shared.messages.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|msgs| msgs.len() >= n).await.map(|msgs| msgs.clone())
        })
        .await;
        match waited {
            Ok(Ok(msgs)) => msgs,
            _ => {
                let msgs = self.messages();
                panic!(
                    "SMTP test server: expected at least {n} message(s) within {timeout:?}, \
                     but {} arrived:{}",
                    msgs.len(),
                    summary(&msgs)
                )
            }
        }
    }

    /// Waits for (and returns) the first stored message matching `predicate`.
    /// Panics after `timeout`, listing what did arrive.
    pub async fn wait_for(&self, predicate: impl Fn(&Received) -> bool, timeout: Duration) -> Received {
        let mut rx = self.shared.messages.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|msgs| msgs.iter().any(&predicate))
                .await
                .map(|msgs| msgs.iter().find(|m| predicate(m)).cloned())
        })
        .await;
        match waited {
            Ok(Ok(Some(msg))) => msg,
            _ => {
                let msgs = self.messages();
                panic!(
                    "SMTP test server: no matching message within {timeout:?}; {} arrived:{}",
                    msgs.len(),
                    summary(&msgs)
                )
            }
        }
    }

    // ----- counters ----------------------------------------------------------

    /// Connections accepted so far (including ones later refused by a fault).
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }

    /// Every injected rejection given so far, as `(address, code)`, for both
    /// RCPT and DATA rejections.
    pub fn rejected(&self) -> Vec<(String, u16)> {
        self.shared.state().rejected.clone()
    }

    // ----- fault injection ---------------------------------------------------

    /// Answer `code` (4xx/5xx) to `RCPT TO:<addr>`, `times` times (`None` =
    /// always), then accept. Replaces an earlier rule for the same address.
    pub fn reject_rcpt(&self, addr: &str, code: u16, times: Option<usize>) {
        set_rule(&mut self.shared.state().faults.rcpt, addr, code, times);
    }

    /// Answer `code` after the DATA terminator of messages with recipient
    /// `addr`, `times` times (`None` = always). Rejected messages are not stored.
    pub fn reject_data(&self, addr: &str, code: u16, times: Option<usize>) {
        set_rule(&mut self.shared.state().faults.data, addr, code, times);
    }

    /// After receiving a message's data, close the socket without replying and
    /// without storing the message, `times` times (`None` = always).
    pub fn drop_connection_after_data(&self, times: Option<usize>) {
        self.shared.state().faults.drop_after_data = Budget(times);
    }

    /// Hang up in the middle of the next `times` messages' DATA (`None` = every one): after
    /// their first line, with no reply. The message is lost.
    pub fn drop_connection_mid_data(&self, times: Option<usize>) {
        self.shared.state().faults.drop_mid_data = Budget(times);
    }

    /// Whether every hang-up asked of `drop_connection_mid_data` has happened.
    pub fn mid_data_drops_done(&self) -> bool {
        self.shared.state().faults.drop_mid_data.0 == Some(0)
    }

    /// Greeting code for new connections (e.g. 421, 554; 220 = normal).
    /// After 421 the server closes; after another non-220 code it answers 503
    /// to everything but QUIT (RFC 5321 §3.1).
    pub fn greeting(&self, code: u16) {
        assert!(
            code == 220 || (400..600).contains(&code),
            "SMTP test server: greeting code must be 220, 4xx or 5xx, got {code}"
        );
        self.shared.state().faults.greeting = code;
    }

    /// Delay every reply (the greeting included) by `duration`; zero disables.
    pub fn stall(&self, duration: Duration) {
        self.shared.state().faults.stall = duration;
    }

    /// Holds every reply (the greeting included) until [`release`](Self::release): a test can
    /// look at a send while it is surely still under way.
    pub fn hold(&self) {
        self.shared.state().faults.held = true;
    }

    pub fn release(&self) {
        self.shared.state().faults.held = false;
    }

    /// `true`: close the listener (connections to the port are refused as soon
    /// as this returns) and abort existing sessions. `false`: re-bind the same
    /// port. Must be called within a Tokio runtime.
    pub fn set_down(&self, down: bool) {
        let is_up = lock(&self.shared.net).listener.is_some();
        if down && is_up {
            self.shared.go_down();
        } else if !down && !is_up {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
            let listener =
                bind(addr).unwrap_or_else(|e| panic!("SMTP test server: re-binding {addr} after set_down failed: {e}"));
            self.shared.go_up(listener);
        }
    }

    /// Clears every injected fault and brings the server back up if it was down.
    /// Counters and stored messages are kept.
    /// Stores only the envelope of each message from now on (for sends too large to keep).
    pub fn keep_envelopes_only(&self) {
        self.shared.state().envelopes_only = true;
    }

    pub fn reset_faults(&self) {
        self.shared.state().faults = Faults::default();
        self.set_down(false);
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.shared.go_down();
    }
}

fn summary(msgs: &[Received]) -> String {
    let mut out = String::new();
    for (i, m) in msgs.iter().enumerate() {
        let _ = write!(
            out,
            "\n  #{i}: from=<{}> to={:?} subject={:?}",
            m.mail_from,
            m.rcpt_to,
            m.subject()
        );
    }
    out
}

// ----- protocol ----------------------------------------------------------------

/// Reply text for injected failure codes, with RFC 3463 enhanced status codes.
fn failure_text(code: u16) -> &'static str {
    match code {
        421 => "4.3.2 Service not available, closing transmission channel",
        450 => "4.2.1 Mailbox unavailable, try again later",
        451 => "4.7.1 Try again later",
        452 => "4.2.2 Insufficient system storage",
        550 => "5.1.1 No such user",
        551 | 553 => "5.1.3 Mailbox name not allowed",
        552 => "5.2.2 Mailbox full",
        554 => "5.7.1 Transaction failed",
        c if c >= 500 => "5.0.0 Permanent failure",
        _ => "4.0.0 Temporary failure",
    }
}

enum Flow {
    Continue,
    Close,
}

enum DataOutcome {
    Complete(Vec<u8>),
    TooLarge,
    Disconnected,
}

/// Reads one line (terminator included) of at most `limit` bytes. A result
/// not ending in `\n` means EOF or an over-long line.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
    buf.clear();
    reader.take(limit as u64).read_until(b'\n', buf).await?;
    Ok(())
}

/// Parses `FROM:<path> params` / `TO:<path> params` (keyword case-insensitive).
fn parse_path<'a>(arg: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let prefix = arg.get(..keyword.len())?;
    if !prefix.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start().strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    // Drop an obsolete source route (`<@a,@b:user@c>`).
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    Some((path.to_owned(), params.trim()))
}

struct Session {
    shared: Arc<Shared>,
    stream: BufReader<TcpStream>,
    greeted: bool,
    /// Set after a non-220 greeting: only QUIT is served.
    refused: bool,
    mail_from: Option<String>,
    smtputf8: bool,
    rcpt_to: Vec<String>,
}

impl Session {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        Self {
            shared,
            stream: BufReader::new(stream),
            greeted: false,
            refused: false,
            mail_from: None,
            smtputf8: false,
            rcpt_to: Vec::new(),
        }
    }

    async fn run(mut self) {
        // I/O errors just end the session, like a client hanging up.
        let _ = self.serve().await;
    }

    async fn serve(&mut self) -> io::Result<()> {
        let greeting = self.shared.state().faults.greeting;
        match greeting {
            220 => {
                self.reply(220, &format!("{HOSTNAME} ESMTP Bulletin test server"))
                    .await?
            }
            421 => return self.reply(421, failure_text(421)).await,
            code => {
                self.reply(code, "5.3.2 No SMTP service here").await?;
                self.refused = true;
            }
        }

        let mut line = Vec::new();
        loop {
            read_line(&mut self.stream, &mut line, MAX_COMMAND_LINE).await?;
            if !line.ends_with(b"\n") {
                if line.len() >= MAX_COMMAND_LINE {
                    self.reply(500, "5.5.2 Line too long").await?;
                }
                return Ok(()); // EOF (possibly mid-line)
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
            let verb = verb.to_ascii_uppercase();
            if let Flow::Close = self.command(&verb, arg.trim()).await? {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, verb: &str, arg: &str) -> io::Result<Flow> {
        if self.refused && verb != "QUIT" {
            self.reply(503, "5.5.1 No SMTP service here, QUIT only").await?;
            return Ok(Flow::Continue);
        }
        match verb {
            "EHLO" | "HELO" if arg.is_empty() => self.reply(501, "5.5.4 Domain name required").await?,
            "EHLO" => {
                self.reset_transaction();
                self.greeted = true;
                let greets = format!("{HOSTNAME} greets {arg}");
                let size = format!("SIZE {MAX_MESSAGE_SIZE}");
                self.reply_lines(250, &[&greets, "8BITMIME", "ENHANCEDSTATUSCODES", &size, "SMTPUTF8"])
                    .await?
            }
            "HELO" => {
                self.reset_transaction();
                self.greeted = true;
                self.reply(250, HOSTNAME).await?
            }
            "MAIL" => self.mail(arg).await?,
            "RCPT" => return self.rcpt(arg).await,
            "DATA" => return self.data(arg).await,
            "RSET" => {
                self.reset_transaction();
                self.reply(250, "2.0.0 Ok").await?
            }
            "NOOP" => self.reply(250, "2.0.0 Ok").await?,
            "VRFY" => {
                self.reply(252, "2.5.0 Cannot VRFY user, but will accept message")
                    .await?
            }
            "QUIT" => {
                self.reply(221, "2.0.0 Bye").await?;
                return Ok(Flow::Close);
            }
            // Known but deliberately not offered (not advertised in EHLO either).
            "STARTTLS" | "AUTH" | "EXPN" | "TURN" => self.reply(502, "5.5.1 Command not implemented").await?,
            _ => self.reply(500, "5.5.2 Command not recognized").await?,
        }
        Ok(Flow::Continue)
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.smtputf8 = false;
        self.rcpt_to.clear();
    }

    async fn mail(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.reply(503, "5.5.1 Send EHLO/HELO first").await;
        }
        if self.mail_from.is_some() {
            return self.reply(503, "5.5.1 Nested MAIL command").await;
        }
        let Some((from, params)) = parse_path(arg, "FROM:") else {
            return self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        let mut smtputf8 = false;
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "BODY" if ["7BIT", "8BITMIME"].iter().any(|b| value.eq_ignore_ascii_case(b)) => {}
                "SMTPUTF8" if value.is_empty() => smtputf8 = true,
                "SIZE" => match value.parse::<usize>() {
                    Ok(size) if size > MAX_MESSAGE_SIZE => {
                        return self.reply(552, "5.3.4 Message size exceeds fixed limit").await;
                    }
                    Ok(_) => {}
                    Err(_) => return self.reply(501, "5.5.4 Invalid SIZE parameter").await,
                },
                _ => return self.reply(555, "5.5.4 Unsupported MAIL parameter").await,
            }
        }
        if !smtputf8 && !from.is_ascii() {
            return self.reply(553, "5.6.7 Non-ASCII address requires SMTPUTF8").await;
        }
        self.mail_from = Some(from);
        self.smtputf8 = smtputf8;
        self.reply(250, "2.1.0 Ok").await
    }

    async fn rcpt(&mut self, arg: &str) -> io::Result<Flow> {
        if self.mail_from.is_none() {
            self.reply(503, "5.5.1 Need MAIL before RCPT").await?;
            return Ok(Flow::Continue);
        }
        let (to, params) = match parse_path(arg, "TO:") {
            Some((to, params)) if !to.is_empty() => (to, params),
            _ => {
                self.reply(501, "5.5.4 Syntax: RCPT TO:<address>").await?;
                return Ok(Flow::Continue);
            }
        };
        if !params.is_empty() {
            self.reply(555, "5.5.4 Unsupported RCPT parameter").await?;
            return Ok(Flow::Continue);
        }
        if !self.smtputf8 && !to.is_ascii() {
            self.reply(553, "5.6.7 Non-ASCII address requires SMTPUTF8").await?;
            return Ok(Flow::Continue);
        }
        let injected = {
            let mut state = self.shared.state();
            let code = state.faults.rcpt.iter_mut().find_map(|r| r.fire(&to));
            if let Some(code) = code {
                state.rejected.push((to.clone(), code));
            }
            code
        };
        if let Some(code) = injected {
            return self.reject(code, &to).await;
        }
        self.rcpt_to.push(to);
        self.reply(250, "2.1.5 Ok").await?;
        Ok(Flow::Continue)
    }

    async fn data(&mut self, arg: &str) -> io::Result<Flow> {
        if !arg.is_empty() {
            self.reply(501, "5.5.4 DATA takes no arguments").await?;
            return Ok(Flow::Continue);
        }
        if self.mail_from.is_none() {
            self.reply(503, "5.5.1 Need MAIL before DATA").await?;
            return Ok(Flow::Continue);
        }
        if self.rcpt_to.is_empty() {
            self.reply(554, "5.5.1 No valid recipients").await?;
            return Ok(Flow::Continue);
        }
        self.reply(354, "End data with <CR><LF>.<CR><LF>").await?;
        if self.shared.state().faults.drop_mid_data.take() {
            let mut first = Vec::new();
            let _ = self.stream.read_until(b'\n', &mut first).await;
            return Ok(Flow::Close);
        }

        let data = match self.read_data().await? {
            DataOutcome::Complete(data) => data,
            DataOutcome::Disconnected => return Ok(Flow::Close),
            DataOutcome::TooLarge => {
                self.reset_transaction();
                self.reply(552, "5.3.4 Message size exceeds fixed limit").await?;
                return Ok(Flow::Continue);
            }
        };
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        self.reset_transaction();

        let injected = {
            let mut state = self.shared.state();
            if state.faults.drop_after_data.take() {
                return Ok(Flow::Close); // hang up without a reply; message lost
            }
            let hit = state.faults.data.iter_mut().find_map(|rule| {
                rcpt_to
                    .iter()
                    .find_map(|to| rule.fire(to).map(|code| (to.clone(), code)))
            });
            if let Some((addr, code)) = &hit {
                state.rejected.push((addr.clone(), *code));
            }
            hit
        };
        if let Some((addr, code)) = injected {
            return self.reject(code, &addr).await;
        }

        let mut queue_id = 0;
        let data = if self.shared.state().envelopes_only {
            Vec::new()
        } else {
            data
        };
        self.shared.messages.send_modify(|msgs| {
            msgs.push(Received {
                mail_from,
                rcpt_to,
                data,
            });
            queue_id = msgs.len();
        });
        self.reply(250, &format!("2.0.0 Ok: queued as {queue_id}")).await?;
        Ok(Flow::Continue)
    }

    /// Sends an injected failure reply; 421 also closes the channel, as RFC 5321 requires.
    async fn reject(&mut self, code: u16, addr: &str) -> io::Result<Flow> {
        self.reply(code, &format!("{} <{addr}>", failure_text(code))).await?;
        Ok(if code == 421 { Flow::Close } else { Flow::Continue })
    }

    /// Reads message content up to the `.` line, undoing dot-stuffing
    /// (RFC 5321 §4.5.2).
    async fn read_data(&mut self) -> io::Result<DataOutcome> {
        let mut data = Vec::new();
        let mut line = Vec::new();
        let mut too_large = false;
        loop {
            // Any line longer than the size limit is oversized anyway.
            read_line(&mut self.stream, &mut line, MAX_MESSAGE_SIZE + 3).await?;
            if !line.ends_with(b"\n") {
                return Ok(DataOutcome::Disconnected);
            }
            if line == b".\r\n" {
                break;
            }
            let content = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + content.len() > MAX_MESSAGE_SIZE {
                too_large = true; // keep reading to stay in sync with the client
            } else if !too_large {
                data.extend_from_slice(content);
            }
        }
        Ok(if too_large {
            DataOutcome::TooLarge
        } else {
            DataOutcome::Complete(data)
        })
    }

    async fn reply(&mut self, code: u16, text: &str) -> io::Result<()> {
        self.reply_lines(code, &[text]).await
    }

    /// Writes a (possibly multi-line) reply, after any injected stall.
    async fn reply_lines(&mut self, code: u16, lines: &[&str]) -> io::Result<()> {
        // Read at reply time so `stall` takes effect in running sessions too.
        let stall = self.shared.state().faults.stall;
        if !stall.is_zero() {
            tokio::time::sleep(stall).await;
        }
        while self.shared.state().faults.held {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let _ = write!(out, "{code}{sep}{line}\r\n");
        }
        let stream = self.stream.get_mut();
        stream.write_all(out.as_bytes()).await?;
        stream.flush().await
    }
}
