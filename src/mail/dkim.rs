//! DKIM signing (RFC 6376) of every outgoing message, with an RSA (RFC 8301) or Ed25519
//! (RFC 8463) key.
//!
//! Key files are read as an operator has them: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what
//! `openssl genpkey` writes, RSA or Ed25519), PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`), or
//! the base64 of a raw 32-byte Ed25519 seed (what lettre itself takes). lettre wants RSA keys as
//! PKCS#1 PEM and Ed25519 keys as base64 seeds, so each form is converted to that.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::Message;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::der::asn1::OctetStringRef;
use rsa::pkcs8::der::{Decode, pem};
use rsa::pkcs8::{EncodePublicKey, LineEnding, ObjectIdentifier, PrivateKeyInfo};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

/// Headers covered by every signature (the `h=` tag), when present. RFC 8058: a mailbox provider
/// honours one-click unsubscribe only when both `List-Unsubscribe` headers are signed. A listed
/// header a message lacks is signed as absent, so it cannot be added on the way either.
pub const SIGNED_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RSA keys shorter than this are refused (RFC 8301: verifiers may ignore them).
const MIN_RSA_BITS: usize = 1024;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Signs messages as `domain` with the key published at `selector._domainkey.domain`.
/// Cheap to clone; never shows the key, not even through `{:?}`.
#[derive(Clone)]
pub struct DkimSigner(Arc<Inner>);

struct Inner {
    config: DkimConfig,
    selector: String,
    domain: String,
    algorithm: DkimSigningAlgorithm,
    /// The `p=` of the DNS record: base64 of the SubjectPublicKeyInfo (RSA) or of the raw 32-byte
    /// public key (Ed25519, RFC 8463).
    public_key: String,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("selector", &self.0.selector)
            .field("domain", &self.0.domain)
            .field("algorithm", &self.0.algorithm)
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// A signer from the text of a key file (see the module documentation for the forms taken).
    pub fn new(selector: &str, domain: &str, key: &str) -> Result<Self, String> {
        check_selector(selector)?;
        check_domain(domain)?;
        let (algorithm, lettre_key, public_key) = read_key(key)?;
        let signing_key =
            DkimSigningKey::new(&lettre_key, algorithm).map_err(|e| format!("the key was not accepted: {e}"))?;
        let config = DkimConfig::new(
            selector.to_owned(),
            domain.to_ascii_lowercase(),
            signing_key,
            SIGNED_HEADERS
                .iter()
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        Ok(Self(Arc::new(Inner {
            config,
            selector: selector.to_owned(),
            domain: domain.to_ascii_lowercase(),
            algorithm,
            public_key,
        })))
    }

    /// Adds the `DKIM-Signature` header. Call it on the finished message: a header added later is
    /// not covered.
    pub fn sign(&self, message: &mut Message) {
        message.sign(&self.0.config);
    }

    pub fn domain(&self) -> &str {
        &self.0.domain
    }

    /// `rsa` or `ed25519`, as in the DNS record's `k=`.
    pub fn algorithm(&self) -> String {
        self.0.algorithm.to_string()
    }

    /// Where the public key must be published: `selector._domainkey.domain`.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.0.selector, self.0.domain)
    }

    /// The TXT record to publish at [`Self::dns_name`].
    pub fn dns_record(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.0.algorithm, self.0.public_key)
    }

    /// Whether mail from `from_domain` aligns with the signing domain for DMARC. Relaxed alignment
    /// (same organizational domain) is approximated without the public suffix list: one domain
    /// is the other or a subdomain of it.
    pub fn aligns_with(&self, from_domain: &str) -> bool {
        let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
        let d = &self.0.domain;
        from == *d || from.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{from}"))
    }
}

/// A selector is one or more DNS labels (`s=` of RFC 6376 §3.5).
pub fn check_selector(selector: &str) -> Result<(), String> {
    check_labels(selector).map_err(|e| format!("not a DKIM selector (DNS labels such as mail2026): {e}"))
}

/// The signing domain (`d=`): a DNS name of at least two labels.
pub fn check_domain(domain: &str) -> Result<(), String> {
    check_labels(domain).map_err(|e| format!("not a domain name such as news.example: {e}"))?;
    if !domain.contains('.') {
        return Err("not a domain name such as news.example: needs at least two labels".into());
    }
    Ok(())
}

fn check_labels(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("empty or longer than 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("bad label `{label}`"));
        }
    }
    Ok(())
}

/// The algorithm, the key as lettre takes it, and the `p=` of the DNS record.
fn read_key(text: &str) -> Result<(DkimSigningAlgorithm, String, String), String> {
    if text.trim().is_empty() {
        return Err("the file is empty".into());
    }
    let Some(start) = text.find("-----BEGIN ") else {
        // No PEM armour: lettre's own form, the base64 of a raw Ed25519 seed.
        let seed = BASE64
            .decode(text.trim())
            .map_err(|_| "neither a PEM key nor the base64 of a 32-byte Ed25519 seed".to_owned())?;
        return ed25519(&seed);
    };
    // Explanatory text before the armour (as `openssl pkey -text` writes) is allowed.
    let (label, der) =
        pem::decode_vec(text[start..].trim().as_bytes()).map_err(|e| format!("not a valid PEM file: {e}"))?;
    match label {
        "RSA PRIVATE KEY" => rsa(RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| format!("not an RSA private key: {e}"))?),
        "PRIVATE KEY" => {
            let info = PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
            if info.algorithm.oid == OID_RSA {
                rsa(RsaPrivateKey::from_pkcs1_der(info.private_key).map_err(|e| format!("not an RSA private key: {e}"))?)
            } else if info.algorithm.oid == OID_ED25519 {
                // RFC 8410: the private key is an OCTET STRING holding the 32-byte seed.
                let seed = OctetStringRef::from_der(info.private_key)
                    .map_err(|e| format!("not an Ed25519 private key: {e}"))?;
                ed25519(seed.as_bytes())
            } else {
                Err(format!(
                    "a {} key: DKIM signs with RSA or Ed25519 only",
                    info.algorithm.oid
                ))
            }
        }
        "ENCRYPTED PRIVATE KEY" => Err(
            "the key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN), and keep that file readable to Bulletin only".into(),
        ),
        "PUBLIC KEY" => Err("this is a public key: BULLETIN_DKIM_KEY_FILE takes the private key".into()),
        other => Err(format!(
            "a `{other}` PEM block: expected `PRIVATE KEY` (PKCS#8, RSA or Ed25519) or `RSA PRIVATE KEY`"
        )),
    }
}

fn rsa(key: RsaPrivateKey) -> Result<(DkimSigningAlgorithm, String, String), String> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {bits} bits: at least {MIN_RSA_BITS} are needed (2048 recommended)"
        ));
    }
    key.validate().map_err(|e| format!("not a consistent RSA key: {e}"))?;
    let public = RsaPublicKey::from(&key)
        .to_public_key_der()
        .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
    let pkcs1 = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| format!("cannot convert the RSA key: {e}"))?;
    Ok((
        DkimSigningAlgorithm::Rsa,
        pkcs1.to_string(),
        BASE64.encode(public.as_bytes()),
    ))
}

fn ed25519(seed: &[u8]) -> Result<(DkimSigningAlgorithm, String, String), String> {
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| format!("an Ed25519 key must be 32 bytes, this one has {}", seed.len()))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    Ok((
        DkimSigningAlgorithm::Ed25519,
        BASE64.encode(seed),
        BASE64.encode(public.as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_PEM: &str = include_str!("../../tests/fixtures/dkim/ed25519.pem");
    const ED25519_TXT: &str = include_str!("../../tests/fixtures/dkim/ed25519.txt");
    const RSA_PEM: &str = include_str!("../../tests/fixtures/dkim/rsa.pem");
    const RSA_PKCS1_PEM: &str = include_str!("../../tests/fixtures/dkim/rsa-pkcs1.pem");
    const RSA_TXT: &str = include_str!("../../tests/fixtures/dkim/rsa.txt");

    fn message() -> Message {
        Message::builder()
            .from("News <news@news.example>".parse().unwrap())
            .to("reader@example.org".parse().unwrap())
            .subject("Hello")
            .body("Hi\r\n".to_owned())
            .unwrap()
    }

    #[test]
    fn every_key_form_gives_the_record_openssl_derives() {
        for (pem, txt) in [(ED25519_PEM, ED25519_TXT), (RSA_PEM, RSA_TXT), (RSA_PKCS1_PEM, RSA_TXT)] {
            let signer = DkimSigner::new("mail", "News.Example", pem).unwrap();
            assert_eq!(signer.dns_record(), txt.trim());
            assert_eq!(signer.dns_name(), "mail._domainkey.news.example");
        }
        // lettre's own form: the base64 seed, here taken out of the PKCS#8 file.
        let (_, der) = pem::decode_vec(ED25519_PEM.trim().as_bytes()).unwrap();
        let raw = BASE64.encode(&der[der.len() - 32..]);
        let signer = DkimSigner::new("mail", "news.example", &raw).unwrap();
        assert_eq!(signer.dns_record(), ED25519_TXT.trim());
        assert_eq!(signer.algorithm(), "ed25519");
    }

    #[test]
    fn signature_covers_the_listed_headers_relaxed() {
        let signer = DkimSigner::new("mail", "news.example", ED25519_PEM).unwrap();
        let mut m = message();
        signer.sign(&mut m);
        let raw = String::from_utf8(m.formatted()).unwrap();
        let unfolded = raw.replace("\r\n ", " ").replace("\r\n\t", " ");
        let sig = unfolded
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("dkim-signature:"))
            .expect(&raw);
        assert!(
            sig.contains("a=ed25519-sha256;") && sig.contains("c=relaxed/relaxed;"),
            "{sig}"
        );
        assert!(
            sig.contains("h=from:to:subject:date:message-id:list-id:list-unsubscribe:list-unsubscribe-post;"),
            "{sig}"
        );
    }

    #[test]
    fn bad_keys_and_names_are_explained() {
        let bad = |s: &str, d: &str, k: &str| DkimSigner::new(s, d, k).expect_err("accepted");
        assert!(bad("mail", "news.example", " \n").contains("empty"));
        assert!(bad("mail", "news.example", "not a key").contains("neither a PEM key"));
        assert!(bad("mail", "news.example", "aGVsbG8=").contains("32 bytes"));
        assert!(
            bad(
                "mail",
                "news.example",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .contains("PKCS#8")
        );
        assert!(
            bad(
                "mail",
                "news.example",
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
            )
            .contains("EC PRIVATE KEY")
        );
        assert!(bad("bad selector", "news.example", ED25519_PEM).contains("selector"));
        assert!(bad("mail", "localhost", ED25519_PEM).contains("two labels"));
        assert!(bad("mail", "news..example", ED25519_PEM).contains("domain"));
        let signer = DkimSigner::new("mail", "news.example", RSA_PEM).unwrap();
        assert!(!format!("{signer:?}").contains("BEGIN"));
        assert!(signer.aligns_with("News.Example") && signer.aligns_with("mail.news.example"));
        let sub = DkimSigner::new("mail", "mail.news.example", RSA_PEM).unwrap();
        assert!(sub.aligns_with("news.example"));
        assert!(!signer.aligns_with("othernews.example"));
    }
}
