//! Where emails go: an SMTP server (connections we open ourselves, so that TCP_NODELAY is set and
//! every exchange has its own timeout) or, without SMTP, `.eml` files in a directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
use tokio::net::TcpStream;
use url::Url;

/// Upper bound for any one SMTP exchange (connect, greeting, a command, the message data).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    /// `smtp://`: plain text.
    None,
    /// `smtp://…?tls=required`: STARTTLS or fail.
    Required,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// A parsed `BULLETIN_SMTP_URL`.
#[derive(Clone)]
pub struct SmtpSettings {
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<Credentials>,
    hello: ClientId,
}

/// Checks a URL the way `SmtpSettings::parse` reads it, for configuration errors at start-up.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    SmtpSettings::parse(url).map(|_| ())
}

impl SmtpSettings {
    /// Reads lettre's URL form: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://user:pass@host:465`, optionally `/hello-name` as the path.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tls_param = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtp", None) => (TlsMode::None, 25),
            ("smtp", Some("required")) => (TlsMode::Required, 587),
            ("smtp", Some("opportunistic")) => (TlsMode::Opportunistic, 587),
            ("smtps", None) => (TlsMode::Implicit, 465),
            (scheme, tls) => {
                return Err(format!(
                    "unsupported scheme `{scheme}` or tls parameter {tls:?}: use smtp://, smtp://…?tls=required, \
                     smtp://…?tls=opportunistic or smtps://"
                ));
            }
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = url
            .password()
            .map(|password| Credentials::new(decode(url.username()), decode(password)));
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            credentials,
            hello,
        })
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens an authenticated session: TCP (nodelay), TLS as the URL asks, EHLO, AUTH.
    pub async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = timed(TcpStream::connect((self.host.as_str(), self.port)))
            .await?
            .map_err(|e| SendError::Session(format!("cannot connect to {}: {e}", self.address())))?;
        // Without it every message waits for the server's delayed ACK (~40 ms).
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Session(format!("cannot set TCP_NODELAY: {e}")))?;

        let stream: Box<dyn lettre::transport::smtp::client::AsyncTokioStream> = if self.tls == TlsMode::Implicit {
            let connector = tokio_rustls::TlsConnector::from(tls_client_config());
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| SendError::Session(format!("invalid TLS server name {}: {e}", self.host)))?;
            let tls = timed(connector.connect(name, tcp))
                .await?
                .map_err(|e| SendError::Session(format!("TLS handshake with {} failed: {e}", self.address())))?;
            Box::new(ImplicitTls(tls))
        } else {
            Box::new(tcp)
        };

        let mut conn = timed(AsyncSmtpConnection::connect_with_transport(stream, &self.hello))
            .await?
            .map_err(|e| SendError::Session(format!("SMTP greeting from {} failed: {e}", self.address())))?;

        let starttls = match self.tls {
            TlsMode::Required if !conn.can_starttls() => {
                return Err(SendError::Session(format!(
                    "{} does not offer STARTTLS, which tls=required demands",
                    self.address()
                )));
            }
            TlsMode::Required => true,
            TlsMode::Opportunistic => conn.can_starttls(),
            TlsMode::None | TlsMode::Implicit => false,
        };
        if starttls {
            let params = TlsParameters::new(self.host.clone())
                .map_err(|e| SendError::Session(format!("TLS set-up failed: {e}")))?;
            timed(conn.starttls(params, &self.hello))
                .await?
                .map_err(|e| SendError::Session(format!("STARTTLS with {} failed: {e}", self.address())))?;
        }
        if let Some(credentials) = &self.credentials {
            timed(conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials))
                .await?
                .map_err(|e| SendError::Session(format!("SMTP AUTH at {} failed: {e}", self.address())))?;
        }
        Ok(conn)
    }
}

/// An implicit-TLS stream lettre can drive (it only knows plain TCP streams as transports).
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl lettre::transport::smtp::client::AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn tls_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            Arc::new(config)
        })
        .clone()
}

/// Why a message was not delivered, classified by what should happen next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A 5xx to RCPT TO: the mailbox does not exist (a hard bounce). Never retry; suppress it.
    #[error("{0}")]
    Rejected(String),
    /// Another 5xx for this message (to MAIL FROM, or after DATA): never retry it.
    #[error("{0}")]
    Permanent(String),
    /// A 4xx for this message: retry it later.
    #[error("{0}")]
    Transient(String),
    /// The session failed (connection, timeout, TLS, AUTH, 421): no message is at fault.
    #[error("{0}")]
    Session(String),
}

async fn timed<T>(fut: impl Future<Output = T>) -> Result<T, SendError> {
    tokio::time::timeout(SMTP_TIMEOUT, fut)
        .await
        .map_err(|_| SendError::Session(format!("the SMTP server did not answer within {SMTP_TIMEOUT:?}")))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Mail,
    Rcpt,
    Data,
}

/// Sends one message over an open session: MAIL, RCPT, DATA, each exchange with its own timeout.
/// After a refusal of this message the transaction is reset (RSET) so the session can carry the
/// next one; lettre's own `send` would close it.
pub async fn send_on(conn: &mut AsyncSmtpConnection, envelope: &Envelope, raw: &[u8]) -> Result<(), SendError> {
    let mut params = Vec::new();
    if !raw.is_ascii() {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii())
    {
        params.push(MailParameter::SmtpUtfEight);
    }
    let result = async {
        step(
            timed(conn.command(Mail::new(envelope.from().cloned(), params))).await?,
            Phase::Mail,
        )?;
        for to in envelope.to() {
            step(
                timed(conn.command(Rcpt::new(to.clone(), Vec::new()))).await?,
                Phase::Rcpt,
            )?;
        }
        step(timed(conn.command(Data)).await?, Phase::Data)?;
        step(timed(conn.message(raw)).await?, Phase::Data)
    }
    .await;
    if matches!(
        result,
        Err(SendError::Rejected(_) | SendError::Permanent(_) | SendError::Transient(_))
    ) {
        // The session is fine; only this transaction is over.
        match timed(conn.command(Rset)).await {
            Ok(Ok(_)) => {}
            _ => conn.abort().await,
        }
    }
    result
}

fn step(
    result: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
    phase: Phase,
) -> Result<(), SendError> {
    let Err(e) = result else { return Ok(()) };
    let text = e.to_string();
    Err(match e.status() {
        // 421: the server is closing the session; the message is not at fault.
        Some(code) if code.to_string() == "421" => SendError::Session(text),
        Some(_) if e.is_permanent() && phase == Phase::Rcpt => SendError::Rejected(text),
        Some(_) if e.is_permanent() => SendError::Permanent(text),
        Some(_) if e.is_transient() => SendError::Transient(text),
        _ => SendError::Session(text),
    })
}

/// Writes a message as `<dir>/<name>.eml`, atomically (temporary file, then rename), so a reader
/// never sees half a message and a re-send replaces rather than duplicates it.
pub async fn write_eml(dir: &Path, name: &str, raw: &[u8]) -> Result<PathBuf, SendError> {
    let io = |e: std::io::Error| SendError::Session(format!("cannot write the email file in {}: {e}", dir.display()));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let path = dir.join(format!("{name}.eml"));
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let written = match tokio::fs::write(&tmp, raw).await {
        Ok(()) => tokio::fs::rename(&tmp, &path).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        // A full disk leaves a partial file: no half message stays behind to be mistaken for one.
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_url_forms() {
        let s = SmtpSettings::parse("smtp://mail.example:2525").unwrap();
        assert_eq!(
            (s.address().as_str(), s.tls, s.credentials.is_none()),
            ("mail.example:2525", TlsMode::None, true)
        );
        let s = SmtpSettings::parse("smtp://user:p%40ss@mail.example?tls=required").unwrap();
        assert_eq!((s.port, s.tls), (587, TlsMode::Required));
        assert!(s.credentials.is_some());
        let s = SmtpSettings::parse("smtps://user:pass@mail.example").unwrap();
        assert_eq!((s.port, s.tls), (465, TlsMode::Implicit));
        let s = SmtpSettings::parse("smtp://mail.example?tls=opportunistic").unwrap();
        assert_eq!(s.tls, TlsMode::Opportunistic);
    }

    #[test]
    fn rejects_other_forms() {
        for bad in ["ftp://x", "smtp://", "smtp://x?tls=sometimes", "not a url"] {
            assert!(SmtpSettings::parse(bad).is_err(), "{bad}");
        }
    }
}
