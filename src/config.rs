//! Configuration from the environment (and `.env`). Every variable is documented in `.env.example`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    pub public_url: Url,
    pub smtp_url: Option<String>,
    pub outbox_dir: PathBuf,
    pub from: Mailbox,
    pub admin_tokens: Vec<String>,
    pub confirm_ttl: Duration,
    pub secret: Option<String>,
    pub retry_base: Duration,
    pub max_attempts: u32,
    /// SMTP connections (sender workers) per process.
    pub smtp_pool: usize,
    /// Time zone of dates in digests, and of schedules that name none.
    pub timezone: chrono_tz::Tz,
    /// A scheduled digest is sent only while its slot is younger than this.
    pub schedule_grace: Duration,
    /// The sender's postal address, shown in every digest's footer.
    pub postal_address: Option<String>,
    /// Messages per second per process, if limited.
    pub send_rate: Option<f64>,
    /// Signups per minute per client address (per process); 0: no limit.
    pub rate_limit: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::domain::Cidr>,
    /// Sites whose pages may post signups here from the browser (CORS), and be linked back to.
    pub allowed_origins: Vec<crate::domain::WebOrigin>,
    /// A client must send a request's headers within this time (slow clients).
    pub header_timeout: Duration,
    /// A request (body included) must be answered within this time.
    pub request_timeout: Duration,
    /// Envelope sender (MAIL FROM) where bounces go, if not the From address.
    pub return_path: Option<lettre::Address>,
    /// Signs every outgoing email, when `BULLETIN_DKIM_*` are set.
    pub dkim: Option<crate::mail::DkimSigner>,
}

/// A variable that cannot be used, named with its problem: start-up prints it and exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

// Secrets never reach a log, not even through `{:?}`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("outbox_dir", &self.outbox_dir)
            .field("from", &self.from.to_string())
            .field("admin_tokens", &format_args!("[{} redacted]", self.admin_tokens.len()))
            .field("confirm_ttl", &self.confirm_ttl)
            .field("secret", &self.secret.as_ref().map(|_| "redacted"))
            .field("dkim", &self.dkim)
            .finish_non_exhaustive()
    }
}

/// Drops the password of a URL for display.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `get`, so tests can configure an app without touching the
    /// process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let err = |var: &'static str, problem: String| ConfigError { var, problem };

        let database_url = var("DATABASE_URL").unwrap_or_else(|| "sqlite://bulletin.db".into());
        if !["sqlite:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            return Err(err("DATABASE_URL", "must start with sqlite:// or postgres://".into()));
        }
        let listen = var("BULLETIN_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .map_err(|e| err("BULLETIN_LISTEN", format!("not a socket address (host:port): {e}")))?;
        let public_url = Url::parse(&var("BULLETIN_PUBLIC_URL").unwrap_or_else(|| "http://127.0.0.1:8080".into()))
            .map_err(|e| err("BULLETIN_PUBLIC_URL", format!("not a URL: {e}")))?;
        if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
            return Err(err("BULLETIN_PUBLIC_URL", "must be an http:// or https:// URL".into()));
        }
        let smtp_url = var("BULLETIN_SMTP_URL");
        if let Some(url) = &smtp_url {
            crate::mail::transport::check_smtp_url(url).map_err(|e| err("BULLETIN_SMTP_URL", e))?;
        }
        let from: Mailbox = var("BULLETIN_FROM")
            .unwrap_or_else(|| "Bulletin <newsletter@localhost>".into())
            .parse()
            .map_err(|e| {
                err(
                    "BULLETIN_FROM",
                    format!("not a mailbox like `Name <address@example.org>`: {e}"),
                )
            })?;
        let admin_tokens: Vec<String> = var("BULLETIN_ADMIN_TOKEN")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let duration = |name: &'static str, default: &str| {
            humantime::parse_duration(&var(name).unwrap_or_else(|| default.into()))
                .map_err(|e| err(name, format!("not a duration like 30s, 10m or 48h: {e}")))
        };
        let confirm_ttl = duration("BULLETIN_CONFIRM_TTL", "48h")?;
        if confirm_ttl.is_zero() {
            return Err(err("BULLETIN_CONFIRM_TTL", "must be longer than zero".into()));
        }
        let retry_base = duration("BULLETIN_RETRY_BASE", "30s")?;
        let schedule_grace = duration("BULLETIN_SCHEDULE_GRACE", "2h")?;
        if schedule_grace.is_zero() {
            return Err(err("BULLETIN_SCHEDULE_GRACE", "must be longer than zero".into()));
        }
        let max_attempts = var("BULLETIN_MAX_ATTEMPTS")
            .map(|v| v.parse::<u32>().ok().filter(|n| *n >= 1))
            .unwrap_or(Some(12))
            .ok_or_else(|| err("BULLETIN_MAX_ATTEMPTS", "must be a whole number of at least 1".into()))?;

        let smtp_pool = var("BULLETIN_SMTP_POOL")
            .map(|v| v.parse::<usize>().ok().filter(|n| (1..=256).contains(n)))
            .unwrap_or(Some(8))
            .ok_or_else(|| err("BULLETIN_SMTP_POOL", "must be a whole number from 1 to 256".into()))?;

        let timezone = var("BULLETIN_TIMEZONE")
            .unwrap_or_else(|| "UTC".into())
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                err(
                    "BULLETIN_TIMEZONE",
                    "not an IANA time zone name like Europe/Berlin or UTC".into(),
                )
            })?;
        let return_path = var("BULLETIN_RETURN_PATH")
            .map(|v| {
                v.parse::<lettre::Address>()
                    .map_err(|e| err("BULLETIN_RETURN_PATH", format!("not an address: {e}")))
            })
            .transpose()?;
        let postal_address = var("BULLETIN_POSTAL_ADDRESS");
        let send_rate = var("BULLETIN_SEND_RATE")
            .map(|v| v.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0))
            .map(|r| {
                r.ok_or_else(|| {
                    err(
                        "BULLETIN_SEND_RATE",
                        "must be a number of messages per second above 0".into(),
                    )
                })
            })
            .transpose()?;
        let rate_limit = var("BULLETIN_RATE_LIMIT")
            .map(|v| v.parse::<u32>().ok())
            .unwrap_or(Some(10))
            .ok_or_else(|| {
                err(
                    "BULLETIN_RATE_LIMIT",
                    "must be a whole number of signups per minute (0 turns the limit off)".into(),
                )
            })?;
        let trusted_proxies = var("BULLETIN_TRUSTED_PROXIES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<crate::domain::Cidr>, String>>()
            })
            .transpose()
            .map_err(|e| err("BULLETIN_TRUSTED_PROXIES", e))?
            .unwrap_or_default();
        let allowed_origins = var("BULLETIN_ALLOWED_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(crate::domain::WebOrigin::parse)
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()
            .map_err(|e| err("BULLETIN_ALLOWED_ORIGINS", e))?
            .unwrap_or_default();
        let header_timeout = duration("BULLETIN_HEADER_TIMEOUT", "10s")?;
        let request_timeout = duration("BULLETIN_REQUEST_TIMEOUT", "30s")?;
        for (name, value) in [
            ("BULLETIN_HEADER_TIMEOUT", header_timeout),
            ("BULLETIN_REQUEST_TIMEOUT", request_timeout),
        ] {
            if value.is_zero() {
                return Err(err(name, "must be longer than zero".into()));
            }
        }
        if postal_address
            .as_deref()
            .is_some_and(|a| a.chars().any(|c| c.is_control() && c != '\n'))
        {
            return Err(err(
                "BULLETIN_POSTAL_ADDRESS",
                "must not contain control characters".into(),
            ));
        }

        // DKIM: the three variables together, or none (the relay signs).
        const DKIM_VARS: [&str; 3] = [
            "BULLETIN_DKIM_KEY_FILE",
            "BULLETIN_DKIM_SELECTOR",
            "BULLETIN_DKIM_DOMAIN",
        ];
        let dkim = match DKIM_VARS.map(var) {
            [None, None, None] => None,
            [Some(key_file), Some(selector), Some(domain)] => {
                use crate::mail::dkim;
                dkim::check_selector(&selector).map_err(|e| err("BULLETIN_DKIM_SELECTOR", e))?;
                dkim::check_domain(&domain).map_err(|e| err("BULLETIN_DKIM_DOMAIN", e))?;
                let key = std::fs::read_to_string(&key_file)
                    .map_err(|e| err("BULLETIN_DKIM_KEY_FILE", format!("cannot read {key_file}: {e}")))?;
                let signer = crate::mail::DkimSigner::new(&selector, &domain, &key)
                    .map_err(|e| err("BULLETIN_DKIM_KEY_FILE", format!("{key_file}: {e}")))?;
                Some(signer)
            }
            set => {
                let missing: Vec<&'static str> = DKIM_VARS
                    .into_iter()
                    .zip(set)
                    .filter_map(|(name, value)| value.is_none().then_some(name))
                    .collect();
                return Err(err(
                    missing[0],
                    format!(
                        "not set, but DKIM signing needs {} together (set all three, or none to leave \
                         signing to the SMTP relay); missing: {}",
                        DKIM_VARS.join(", "),
                        missing.join(", ")
                    ),
                ));
            }
        };

        Ok(Config {
            database_url,
            listen,
            public_url,
            smtp_url,
            outbox_dir: var("BULLETIN_OUTBOX_DIR").unwrap_or_else(|| "./outbox".into()).into(),
            from,
            admin_tokens,
            confirm_ttl,
            secret: var("BULLETIN_SECRET"),
            retry_base,
            max_attempts,
            smtp_pool,
            timezone,
            schedule_grace,
            postal_address,
            send_rate,
            rate_limit,
            trusted_proxies,
            allowed_origins,
            header_timeout,
            request_timeout,
            return_path,
            dkim,
        })
    }

    /// RFC 8058 one-click unsubscribe is honoured by mailbox providers only over https.
    pub fn public_url_is_safe(&self) -> bool {
        self.public_url.scheme() == "https"
            || match self.public_url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    }

    /// `BULLETIN_PUBLIC_URL` joined with `path_and_query` (which starts with `/`).
    pub fn link(&self, path_and_query: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.database_url, "sqlite://bulletin.db");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.confirm_ttl, Duration::from_secs(48 * 3600));
        assert!(c.admin_tokens.is_empty());
        assert!(c.public_url_is_safe());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("BULLETIN_LISTEN", "nowhere"),
            ("BULLETIN_PUBLIC_URL", "not a url"),
            ("BULLETIN_SMTP_URL", "ftp://x"),
            ("BULLETIN_FROM", "no at sign"),
            ("BULLETIN_CONFIRM_TTL", "soon"),
            ("BULLETIN_MAX_ATTEMPTS", "0"),
            ("BULLETIN_TIMEZONE", "Mars/Olympus"),
            ("BULLETIN_SEND_RATE", "-3"),
            ("BULLETIN_RETURN_PATH", "bounces at example"),
            ("BULLETIN_ALLOWED_ORIGINS", "https://news.example, news.example"),
            ("BULLETIN_ALLOWED_ORIGINS", "https://news.example/articles"),
        ] {
            let e = cfg(&[(var, value)])
                .err()
                .unwrap_or_else(|| panic!("{var}={value} accepted"));
            assert_eq!(e.var, var);
        }
    }

    #[test]
    fn tokens_rotate_and_secrets_stay_out_of_debug() {
        let c = cfg(&[
            ("BULLETIN_ADMIN_TOKEN", "old-token, new-token"),
            ("BULLETIN_SECRET", "s3cret"),
        ])
        .unwrap();
        assert_eq!(c.admin_tokens, ["old-token", "new-token"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("old-token") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn dkim_needs_all_three_variables_and_a_readable_key() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dkim/ed25519.pem");
        let c = cfg(&[
            ("BULLETIN_DKIM_KEY_FILE", key),
            ("BULLETIN_DKIM_SELECTOR", "mail"),
            ("BULLETIN_DKIM_DOMAIN", "news.example"),
        ])
        .unwrap();
        let dkim = c.dkim.as_ref().expect("signer");
        assert_eq!(dkim.dns_name(), "mail._domainkey.news.example");
        assert!(!format!("{c:?}").contains("PRIVATE"));
        assert!(cfg(&[]).unwrap().dkim.is_none());

        let e = cfg(&[("BULLETIN_DKIM_KEY_FILE", key)]).expect_err("half set accepted");
        assert_eq!(e.var, "BULLETIN_DKIM_SELECTOR");
        assert!(
            e.problem
                .contains("missing: BULLETIN_DKIM_SELECTOR, BULLETIN_DKIM_DOMAIN"),
            "{e}"
        );
        let e = cfg(&[
            ("BULLETIN_DKIM_SELECTOR", "mail"),
            ("BULLETIN_DKIM_DOMAIN", "news.example"),
        ])
        .expect_err("half set accepted");
        assert_eq!(e.var, "BULLETIN_DKIM_KEY_FILE");
        assert!(e.problem.ends_with("missing: BULLETIN_DKIM_KEY_FILE"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        for (file, expected) in [
            (dir.path().join("absent.pem"), "cannot read"),
            (garbage, "neither a PEM key"),
        ] {
            let e = cfg(&[
                ("BULLETIN_DKIM_KEY_FILE", file.to_str().unwrap()),
                ("BULLETIN_DKIM_SELECTOR", "mail"),
                ("BULLETIN_DKIM_DOMAIN", "news.example"),
            ])
            .expect_err("bad key accepted");
            assert_eq!(e.var, "BULLETIN_DKIM_KEY_FILE");
            assert!(e.problem.contains(expected), "{e}");
        }
        let e = cfg(&[
            ("BULLETIN_DKIM_KEY_FILE", key),
            ("BULLETIN_DKIM_SELECTOR", "mail"),
            ("BULLETIN_DKIM_DOMAIN", "not a domain"),
        ])
        .expect_err("bad domain accepted");
        assert_eq!(e.var, "BULLETIN_DKIM_DOMAIN");
    }

    #[test]
    fn plain_http_public_url_is_flagged() {
        assert!(
            !cfg(&[("BULLETIN_PUBLIC_URL", "http://news.example")])
                .unwrap()
                .public_url_is_safe()
        );
        assert!(
            cfg(&[("BULLETIN_PUBLIC_URL", "https://news.example")])
                .unwrap()
                .public_url_is_safe()
        );
    }
}
