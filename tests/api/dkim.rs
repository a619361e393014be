//! DKIM: with `BULLETIN_DKIM_*` set, every email leaves signed, and an independent verifier
//! (mail-auth) holding the published key accepts the signature as received over SMTP, with the
//! one-click unsubscribe headers covered. The keys are fixed test keys in tests/fixtures/dkim,
//! their DNS records derived with openssl; the verifier's DNS is a cache filled by the test and a
//! resolver with no name server, so nothing leaves the machine.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};
use serde_json::json;

use crate::support::app::{Backend, MAIL_WAIT, TestApp, find_link};
use crate::support::smtp::Received;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dkim");
const SELECTOR: &str = "bulletin2026";
/// The test app's From is news@bulletin.test.
const DOMAIN: &str = "bulletin.test";

/// The verifier's DNS: TXT records the test publishes, nothing else.
#[derive(Default)]
struct Dns(Mutex<HashMap<Box<str>, Txt>>);

impl Dns {
    fn publish(&self, name: &str, record: &str) {
        let key = DomainKey::parse(record.as_bytes()).unwrap_or_else(|e| panic!("TXT {record}: {e}"));
        self.insert(format!("{name}.").into_boxed_str(), Txt::from(key), Instant::now());
    }
}

impl ResolverCache<Box<str>, Txt> for Dns {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// What a receiver concludes about one DKIM-Signature.
#[derive(Debug)]
struct Verdict {
    result: DkimResult,
    domain: String,
    selector: String,
    /// The `h=` tag, lowercased.
    signed_headers: Vec<String>,
}

/// Verifies the message as a receiving MTA would, with `record` published for our selector.
async fn verify(raw: &[u8], record: &str) -> Vec<Verdict> {
    let dns = Dns::default();
    dns.publish(&format!("{SELECTOR}._domainkey.{DOMAIN}"), record);
    // No name server: a lookup the cache cannot answer fails instead of going out.
    let authenticator = MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![]), ResolverOpts::default())
        .expect("resolver");
    let message = AuthenticatedMessage::parse(raw).expect("parsable message");
    authenticator
        .verify_dkim(Parameters::new(&message).with_txt_cache(&dns))
        .await
        .into_iter()
        .map(|out| {
            let signature = out.signature();
            Verdict {
                result: out.result().clone(),
                domain: signature.map(|s| s.d.clone()).unwrap_or_default(),
                selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
                signed_headers: signature
                    .map(|s| s.h.iter().map(|h| h.to_ascii_lowercase()).collect())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// The one signature passes, by our domain and selector, covering the one-click headers.
async fn assert_passes(mail: &Received, record: &str) {
    let verdicts = verify(&mail.data, record).await;
    assert_eq!(
        verdicts.len(),
        1,
        "one signature expected: {verdicts:?}\n{}",
        mail.raw_str()
    );
    let v = &verdicts[0];
    assert_eq!(v.result, DkimResult::Pass, "{v:?}\n{}", mail.raw_str());
    assert_eq!((v.domain.as_str(), v.selector.as_str()), (DOMAIN, SELECTOR));
    for header in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(v.signed_headers.iter().any(|h| h == header), "h= lacks {header}: {v:?}");
    }
}

/// A receiver must not accept the message: any result but pass.
async fn assert_rejected(raw: &[u8], record: &str, what: &str) {
    let verdicts = verify(raw, record).await;
    assert!(!verdicts.is_empty(), "{what}: no signature found");
    assert!(
        verdicts.iter().all(|v| v.result != DkimResult::Pass),
        "{what}: still passes: {verdicts:?}"
    );
}

/// `raw` with the first occurrence of `from` (which must be in the header of `name`) replaced.
fn tamper_header(raw: &[u8], name: &str, from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).expect("ASCII message");
    let header_end = text.find("\r\n\r\n").expect("header section");
    let start = text[..header_end]
        .to_ascii_lowercase()
        .find(&format!("\r\n{}:", name.to_ascii_lowercase()))
        .unwrap_or_else(|| panic!("no {name} header"));
    let at = start
        + text[start..header_end]
            .find(from)
            .unwrap_or_else(|| panic!("{from} not in {name}"));
    let mut out = text.clone();
    out.replace_range(at..at + from.len(), to);
    out.into_bytes()
}

/// Signs up, confirms, and returns the confirmation and the welcome email as received.
async fn confirmation_and_welcome(key_file: &str) -> (TestApp, Received, Received) {
    let key = format!("{FIXTURES}/{key_file}");
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("BULLETIN_DKIM_KEY_FILE", &key),
            ("BULLETIN_DKIM_SELECTOR", SELECTOR),
            ("BULLETIN_DKIM_DOMAIN", DOMAIN),
        ],
    )
    .await
    .expect("SQLite app");
    app.create_list("daily", "Daily Briefing").await;
    assert_eq!(app.signup_json("reader@news.example", &["daily"]).await.status(), 202);
    let confirmation = app
        .smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.contains("confirm")), MAIL_WAIT)
        .await;
    let link = find_link(&confirmation.text_body(), &app.url("/subscriptions/confirm?token=")).expect("link");
    let token = link.rsplit("token=").next().unwrap();
    let r = app.post_json("/subscriptions/confirm", &json!({"token": token})).await;
    assert_eq!(r.status(), 200);
    let welcome = app
        .smtp
        .wait_for(|m| m.subject().is_some_and(|s| s.starts_with("Welcome")), MAIL_WAIT)
        .await;
    assert!(welcome.header("List-Unsubscribe").is_some(), "{}", welcome.raw_str());
    assert_eq!(
        welcome.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    (app, confirmation, welcome)
}

async fn signed_mail_verifies(key_file: &str, record_file: &str, other_record_file: &str) {
    let record = std::fs::read_to_string(format!("{FIXTURES}/{record_file}")).unwrap();
    let other = std::fs::read_to_string(format!("{FIXTURES}/{other_record_file}")).unwrap();
    let (_app, confirmation, welcome) = confirmation_and_welcome(key_file).await;
    assert_passes(&confirmation, record.trim()).await;
    assert_passes(&welcome, record.trim()).await;

    // The signature is real: a changed signed header, a changed body or another key fails.
    let raw = &welcome.data;
    let redirected = tamper_header(raw, "List-Unsubscribe", "token=", "token=X");
    assert_rejected(&redirected, record.trim(), "List-Unsubscribe changed").await;
    let not_one_click = tamper_header(raw, "List-Unsubscribe-Post", "One-Click", "One-Clack");
    assert_rejected(&not_one_click, record.trim(), "List-Unsubscribe-Post changed").await;
    let subject = tamper_header(raw, "Subject", "Welcome", "Welcome back");
    assert_rejected(&subject, record.trim(), "Subject changed").await;
    let text = String::from_utf8(raw.clone()).unwrap();
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    let body_changed = format!("{}{}", &text[..body_at], text[body_at..].replacen("Daily", "Dai1y", 1));
    assert_ne!(body_changed.as_bytes(), raw.as_slice());
    assert_rejected(body_changed.as_bytes(), record.trim(), "body changed").await;
    assert_rejected(raw, other.trim(), "another key published").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signed_mail_verifies() {
    signed_mail_verifies("ed25519.pem", "ed25519.txt", "rsa.txt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signed_mail_verifies() {
    signed_mail_verifies("rsa.pem", "rsa.txt", "ed25519.txt").await;
}

/// `bulletin serve` with `vars` (and nothing else from the environment) must exit 2 at once,
/// saying all of `expected` on stderr.
fn start_fails(vars: &[(&str, &str)], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bulletin"));
    command
        .arg("serve")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("b.db").display()),
        )
        .env("BULLETIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn bulletin");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bulletin started with {vars:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for part in expected {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
}

#[test]
fn half_set_dkim_config_stops_start_up() {
    let key = format!("{FIXTURES}/ed25519.pem");
    start_fails(
        &[("BULLETIN_DKIM_KEY_FILE", &key)],
        &[
            "BULLETIN_DKIM_SELECTOR",
            "missing: BULLETIN_DKIM_SELECTOR, BULLETIN_DKIM_DOMAIN",
        ],
    );
    start_fails(
        &[("BULLETIN_DKIM_SELECTOR", SELECTOR), ("BULLETIN_DKIM_DOMAIN", DOMAIN)],
        &["missing: BULLETIN_DKIM_KEY_FILE"],
    );
}

#[test]
fn unusable_dkim_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public.pem");
    std::fs::write(
        &public,
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAssM84YtsofeCI3bgZo6SdyyHDTSVDG7XqoizoOd1Tqo=\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let absent = dir.path().join("absent.pem");
    for (file, expected) in [(&absent, "cannot read"), (&public, "public key")] {
        start_fails(
            &[
                ("BULLETIN_DKIM_KEY_FILE", file.to_str().unwrap()),
                ("BULLETIN_DKIM_SELECTOR", SELECTOR),
                ("BULLETIN_DKIM_DOMAIN", DOMAIN),
            ],
            &["BULLETIN_DKIM_KEY_FILE", expected],
        );
    }
}
