//! Self-checks for the in-process SMTP test server in `support/smtp.rs`.

use std::time::Duration;

use crate::support::smtp::SmtpServer;
use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

fn transport(server: &SmtpServer) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .timeout(Some(Duration::from_secs(5)))
        .build()
}

fn simple(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("Bulletin <news@bulletin.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!("Hello {to}\n"))
        .unwrap()
}

async fn send(server: &SmtpServer, to: &str) -> Result<(), SmtpError> {
    transport(server).send(simple(to, "hi")).await.map(drop)
}

#[tokio::test]
async fn receives_and_parses_a_multipart_message() {
    let server = SmtpServer::start().await;
    assert_eq!(server.url(), format!("smtp://127.0.0.1:{}", server.port()));

    // Long non-ASCII text forces quoted-printable/base64 and header folding;
    // the leading-dot line exercises dot-stuffing.
    let text = format!(
        "Café news ☕\n.leading dot line\n{}\nConfirm: https://bulletin.test/confirm?token=abc\n",
        "long line ".repeat(30)
    );
    let html = "<p>Café news ☕</p><a href=\"https://bulletin.test/confirm?token=abc\">Confirm</a>";
    let to: Mailbox = "Zoë Reader <zoe@example.com>".parse().unwrap();
    let email = Message::builder()
        .from("Bulletin <news@bulletin.test>".parse().unwrap())
        .to(to)
        .subject("Café ☕ — your weekly digest with a rather long subject line that must fold")
        .multipart(MultiPart::alternative_plain_html(text.clone(), html.to_owned()))
        .unwrap();
    transport(&server).send(email).await.expect("send");

    let msgs = server.wait_for_count(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "news@bulletin.test");
    assert_eq!(m.rcpt_to, vec!["zoe@example.com".to_owned()]);
    assert_eq!(
        m.subject().as_deref(),
        Some("Café ☕ — your weekly digest with a rather long subject line that must fold")
    );
    assert_eq!(m.to(), vec!["zoe@example.com".to_owned()]);
    assert!(m.header("to").unwrap().contains("Zoë Reader"), "{:?}", m.header("to"));
    assert!(
        m.header("CONTENT-TYPE").unwrap().starts_with("multipart/alternative"),
        "{:?}",
        m.header("content-type")
    );
    assert_eq!(m.headers_all("From").len(), 1);
    assert!(m.header("X-Missing").is_none());
    assert_eq!(m.text_body().replace("\r\n", "\n"), text);
    assert_eq!(m.html_body().trim_end(), html);
    assert!(m.raw_str().contains("MIME-Version: 1.0"));
    assert_eq!(server.messages_to("ZOE@example.com").len(), 1);
    assert!(server.messages_to("other@example.com").is_empty());
    assert!(server.connections() >= 1);
}

#[tokio::test]
async fn multiple_recipients_and_connection_reuse() {
    let server = SmtpServer::start().await;
    let mailer = transport(&server);
    let envelope = Envelope::new(
        Some("bounce@bulletin.test".parse().unwrap()),
        vec!["a@example.com".parse().unwrap(), "b@example.com".parse().unwrap()],
    )
    .unwrap();
    let raw = b"Subject: raw\r\n\r\nbody\r\n";
    mailer.send_raw(&envelope, raw).await.expect("first");
    mailer.send_raw(&envelope, raw).await.expect("second");

    let msgs = server.wait_for_count(2, WAIT).await;
    assert_eq!(msgs[0].rcpt_to, vec!["a@example.com", "b@example.com"]);
    // lettre always sends CRLF before the terminating dot, so a body that
    // already ends in CRLF gains an empty last line.
    assert_eq!(msgs[1].data, [raw.as_slice(), b"\r\n"].concat());
    assert_eq!(server.messages_to("b@example.com").len(), 2);
    server.clear_messages();
    assert!(server.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_concurrent_sessions() {
    let server = SmtpServer::start().await;
    let sends = (0..20).map(|i| {
        let mailer = transport(&server);
        async move { mailer.send(simple(&format!("user{i}@example.com"), "hi")).await }
    });
    for result in futures_join_all(sends).await {
        result.expect("send");
    }
    assert_eq!(server.wait_for_count(20, WAIT).await.len(), 20);
    assert_eq!(server.connections(), 20);

    let m = server
        .wait_for(|m| m.rcpt_to.contains(&"user7@example.com".to_owned()), WAIT)
        .await;
    assert_eq!(m.to(), vec!["user7@example.com"]);
}

/// Minimal join_all so the self-check needs no `futures` crate.
async fn futures_join_all<F: Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn rcpt_550_is_a_permanent_error() {
    let server = SmtpServer::start().await;
    server.reject_rcpt("nobody@example.com", 550, None);

    let err = send(&server, "nobody@example.com").await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("5.1.1"), "{err}");
    let err = send(&server, "Nobody@Example.com").await.unwrap_err();
    assert!(err.is_permanent(), "{err}");

    send(&server, "somebody@example.com").await.expect("others accepted");
    assert_eq!(
        server.rejected(),
        vec![
            ("nobody@example.com".to_owned(), 550),
            ("Nobody@Example.com".to_owned(), 550)
        ]
    );
    let msgs = server.wait_for_count(1, WAIT).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpt_to, vec!["somebody@example.com"]);
}

#[tokio::test]
async fn rcpt_451_is_transient_and_limited_by_times() {
    let server = SmtpServer::start().await;
    server.reject_rcpt("later@example.com", 451, Some(2));

    for _ in 0..2 {
        let err = send(&server, "later@example.com").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    send(&server, "later@example.com")
        .await
        .expect("accepted after 2 rejections");
    assert_eq!(server.wait_for_count(1, WAIT).await.len(), 1);
    assert_eq!(server.rejected().len(), 2);
}

#[tokio::test]
async fn data_rejection_is_reported_after_the_terminator() {
    let server = SmtpServer::start().await;
    server.reject_data("full@example.com", 552, Some(1));

    let err = send(&server, "full@example.com").await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(server.messages().is_empty());
    send(&server, "full@example.com").await.expect("second attempt");
    assert_eq!(server.wait_for_count(1, WAIT).await.len(), 1);
    assert_eq!(server.rejected(), vec![("full@example.com".to_owned(), 552)]);
}

#[tokio::test]
async fn dropped_connection_loses_the_message() {
    let server = SmtpServer::start().await;
    server.drop_connection_after_data(Some(1));

    let err = send(&server, "a@example.com").await.unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(server.messages().is_empty());
    send(&server, "a@example.com").await.expect("retry");
    assert_eq!(server.wait_for_count(1, WAIT).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_down_refuses_then_accepts_on_the_same_port() {
    let server = SmtpServer::start().await;
    let port = server.port();
    // An idle session that must be closed by going down.
    let mut idle = Client::connect(port).await;
    idle.expect(220).await;

    server.set_down(true);
    let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(send(&server, "a@example.com").await.is_err());
    assert!(idle.read_reply().await.is_empty(), "idle session closed");

    server.set_down(false);
    assert_eq!(server.port(), port);
    send(&server, "a@example.com").await.expect("back up");
    assert_eq!(server.wait_for_count(1, WAIT).await.len(), 1);

    // reset_faults also brings it back up.
    server.set_down(true);
    server.reset_faults();
    send(&server, "b@example.com").await.expect("up after reset");
}

#[tokio::test]
async fn greeting_faults() {
    let server = SmtpServer::start().await;
    server.greeting(421);
    let err = send(&server, "a@example.com").await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    server.greeting(554);
    let err = send(&server, "a@example.com").await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let mut client = Client::connect(server.port()).await;
    client.expect(554).await;
    client.cmd("EHLO me", 503).await;
    client.cmd("QUIT", 221).await;

    server.reset_faults();
    send(&server, "a@example.com").await.expect("normal greeting again");
}

#[tokio::test]
async fn stall_delays_replies() {
    let server = SmtpServer::start().await;
    server.stall(Duration::from_secs(2));
    // lettre's own `timeout` only bounds the TCP connect, so a sender has to
    // bound the whole send itself.
    let mailer = transport(&server);
    let sending = mailer.send(simple("a@example.com", "hi"));
    let timed_out = tokio::time::timeout(Duration::from_millis(200), sending).await;
    assert!(timed_out.is_err(), "reply should have been stalled");

    let mut c = Client::connect(server.port()).await;
    server.stall(Duration::from_millis(300)); // applies to running sessions too
    let started = std::time::Instant::now();
    c.expect(220).await;
    c.cmd("NOOP", 250).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    server.stall(Duration::ZERO);
    send(&server, "a@example.com").await.expect("no stall");
}

#[tokio::test]
#[should_panic(expected = "expected at least 2 message(s) within 100ms, but 1 arrived")]
async fn wait_for_count_reports_how_many_arrived() {
    let server = SmtpServer::start().await;
    send(&server, "a@example.com").await.unwrap();
    server.wait_for_count(2, Duration::from_millis(100)).await;
}

#[tokio::test]
#[should_panic(expected = "no matching message within 100ms; 1 arrived")]
async fn wait_for_reports_what_arrived() {
    let server = SmtpServer::start().await;
    send(&server, "a@example.com").await.unwrap();
    server
        .wait_for(
            |m| m.rcpt_to.contains(&"b@example.com".to_owned()),
            Duration::from_millis(100),
        )
        .await;
}

/// A raw line-level client for protocol details lettre never exercises.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// Reads one complete (possibly multi-line) reply; empty on EOF.
    async fn read_reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return lines;
            }
            assert!(line.ends_with("\r\n"), "reply line not CRLF-terminated: {line:?}");
            let last = line.as_bytes().get(3) == Some(&b' ');
            lines.push(line.trim_end().to_owned());
            if last {
                return lines;
            }
        }
    }

    async fn expect(&mut self, code: u16) -> Vec<String> {
        let reply = self.read_reply().await;
        let prefix = code.to_string();
        assert!(
            !reply.is_empty() && reply.iter().all(|l| l.starts_with(&prefix)),
            "expected {code}, got {reply:?}"
        );
        reply
    }

    async fn send_line(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, line: &str, code: u16) -> Vec<String> {
        self.send_line(line).await;
        self.expect(code).await
    }
}

#[tokio::test]
async fn speaks_rfc5321() {
    let server = SmtpServer::start().await;
    let mut c = Client::connect(server.port()).await;
    c.expect(220).await;

    c.cmd("MAIL FROM:<a@x.test>", 503).await; // before EHLO
    let ehlo = c.cmd("EHLO client.test", 250).await;
    for ext in ["8BITMIME", "SMTPUTF8", "SIZE"] {
        assert!(ehlo.iter().any(|l| l[4..].starts_with(ext)), "{ext} in {ehlo:?}");
    }
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS") || l.contains("AUTH")));
    c.cmd("HELO client.test", 250).await;
    c.cmd("NOOP", 250).await;
    c.cmd("VRFY someone", 252).await;
    c.cmd("FROBNICATE", 500).await;
    c.cmd("STARTTLS", 502).await;
    c.cmd("RCPT TO:<b@x.test>", 503).await; // before MAIL
    c.cmd("DATA", 503).await;
    c.cmd("MAIL FROM:<a@x.test> SIZE=999999999", 552).await;
    c.cmd("MAIL FROM:<a@x.test> FOO=bar", 555).await;
    c.cmd("MAIL FROM:<ä@x.test>", 553).await; // non-ASCII without SMTPUTF8
    c.cmd("mail from:<a@x.test> BODY=8BITMIME", 250).await;
    c.cmd("MAIL FROM:<a@x.test>", 503).await; // nested
    c.cmd("DATA", 554).await; // no recipients
    c.cmd("RCPT TO:<b@x.test>", 250).await;
    c.cmd("RSET", 250).await;
    c.cmd("RCPT TO:<b@x.test>", 503).await; // RSET cleared MAIL

    // A full transaction with dot-stuffing and an empty-line body.
    c.cmd("MAIL FROM:<> SMTPUTF8", 250).await;
    c.cmd("RCPT TO:<b@x.test>", 250).await;
    c.cmd("RCPT TO:<ü@x.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_line("Subject: =?UTF-8?Q?caf=C3=A9?=\r\nX-Tag: one\r\nX-Tag: two\r\n\tfolded\r\n\r\n..dot\r\n..\r\n\r\nend")
        .await;
    c.cmd(".", 250).await;
    // The connection stays usable for a further transaction.
    c.cmd("MAIL FROM:<a@x.test>", 250).await;
    c.cmd("RCPT TO:<c@x.test>", 250).await;
    c.cmd("DATA", 354).await;
    c.send_line("Subject: second\r\n").await;
    c.cmd(".", 250).await;
    // Pipelined commands are answered in order.
    c.send_line("NOOP\r\nNOOP").await;
    c.expect(250).await;
    c.expect(250).await;
    c.cmd("QUIT", 221).await;
    assert!(c.read_reply().await.is_empty(), "closed after QUIT");

    let msgs = server.wait_for_count(2, WAIT).await;
    assert_eq!(msgs[1].subject().as_deref(), Some("second"));
    assert_eq!(server.connections(), 1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "");
    assert_eq!(m.rcpt_to, vec!["b@x.test", "ü@x.test"]);
    assert_eq!(
        m.raw_str(),
        "Subject: =?UTF-8?Q?caf=C3=A9?=\r\nX-Tag: one\r\nX-Tag: two\r\n\tfolded\r\n\r\n.dot\r\n.\r\n\r\nend\r\n"
    );
    assert_eq!(m.subject().as_deref(), Some("café"));
    assert_eq!(m.headers_all("x-tag"), vec!["one", "two\tfolded"]);
    assert_eq!(m.text_body(), ".dot\r\n.\r\n\r\nend\r\n");
    assert_eq!(m.html_body(), "");
}
