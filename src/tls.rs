//! TLS for wss:// and mqtts://: the OS trust store plus any CA the user gives, verification on.
//! When the OS store has no certificate at all (slim or distroless images without a CA bundle),
//! the bundled Mozilla roots stand in for it, as Node's own bundled roots do for Node's clients.

use std::sync::{Arc, OnceLock};

use rumqttc::TlsConfiguration;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CertificateError, ClientConfig, InconsistentKeys, RootCertStore};

use crate::errors::{shortened, PubSubError, Result};

/// Parses the PEM text of option `name` into certificates; an empty or unreadable bundle is an
/// option error. The parser's own message is not shown: it quotes the text, which may hold a
/// private key (a `cert` and `key` swapped, with its line breaks lost).
pub fn parse_certificates(name: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| PubSubError::InvalidOption(format!("Option '{name}' is not valid PEM{}", not_pem_hint(name, pem, "certificate"))))?;
    if certs.is_empty() {
        return Err(PubSubError::InvalidOption(format!("Option '{name}' holds no PEM certificate{}", not_pem_hint(name, pem, "certificate"))));
    }
    Ok(certs)
}

/// Why PEM text holds nothing of what was looked for (`wanted`), when it can be told; never
/// any of the text itself, which may be a key.
fn not_pem_hint(name: &str, text: &str, wanted: &str) -> String {
    if text.trim().is_empty() {
        return ": it is empty".into();
    }
    // A binary (DER) file read as UTF-8: replacement characters and control bytes.
    if text.chars().any(|c| c == '\u{FFFD}' || (c.is_control() && !c.is_whitespace())) {
        let convert = if wanted == "private key" { "openssl pkey -inform der -in key.der -out key.pem" } else { "openssl x509 -inform der -in cert.der -out cert.pem" };
        return format!(": it looks like DER (binary); convert it to PEM ({convert})");
    }
    if !text.contains("-----BEGIN") {
        return " ('-----BEGIN …'): pass the file's contents (fs.readFileSync(path)), not its path".into();
    }
    if !text.trim().contains('\n') || text.contains("\\n") {
        // From an environment variable or JSON, with its line breaks written as `\n` or lost.
        return ": its line breaks are missing (written as the two characters \\n?)".into();
    }
    match (name, text.contains("PRIVATE KEY-----")) {
        ("cert", true) => ": it holds a private key (are 'cert' and 'key' swapped?)".into(),
        (_, true) if wanted == "certificate" => ": it holds a private key, not a certificate".into(),
        ("key", false) if text.contains("CERTIFICATE-----") => ": it holds a certificate (are 'cert' and 'key' swapped?)".into(),
        _ => String::new(),
    }
}

/// A client certificate for mutual TLS: the `cert` option's chain (PEM, the client's own
/// certificate first) and the `key` option's private key (PEM).
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("cert_pem", &self.cert_pem).field("key_pem", &"[redacted]").finish()
    }
}

impl ClientIdentity {
    /// The chain and the key, checked to belong together. Messages never show the key.
    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let certs = parse_certificates("cert", &self.cert_pem)?;
        if self.key_pem.contains("ENCRYPTED") {
            return Err(PubSubError::InvalidOption(
                "Option 'key' is an encrypted private key, which this client cannot decrypt: pass it decrypted (openssl pkey -in key.pem -out plain.pem), read from a secret store rather than a file others can read".into(),
            ));
        }
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes())
            .map_err(|_| PubSubError::InvalidOption(format!("Option 'key' is not valid PEM{}", not_pem_hint("key", &self.key_pem, "private key"))))?
            .ok_or_else(|| PubSubError::InvalidOption(format!("Option 'key' holds no PEM private key{}", not_pem_hint("key", &self.key_pem, "private key"))))?;
        Ok((certs, key))
    }

    /// Checks the identity as `client_config` will use it, for the constructor's errors.
    pub fn check(&self) -> Result<()> {
        self.authenticate(ClientConfig::builder().with_root_certificates(RootCertStore::empty())).map(|_| ())
    }

    /// The TLS configuration of `builder`, sending this certificate when the server asks.
    fn authenticate(&self, builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>) -> Result<ClientConfig> {
        let (certs, key) = self.parse()?;
        builder.with_client_auth_cert(certs, key).map_err(unusable_identity)
    }
}

/// Why rustls would not take the client certificate and key.
fn unusable_identity(error: rustls::Error) -> PubSubError {
    match error {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => PubSubError::InvalidOption(
            "Options 'cert' and 'key' do not belong together: the key is not the private key of the certificate (the first one in 'cert')".into(),
        ),
        rustls::Error::InvalidCertificate(_) => {
            PubSubError::InvalidOption("Option 'cert' holds a certificate that cannot be read (is a line of it missing or changed?)".into())
        }
        other => PubSubError::InvalidOption(format!("Option 'key' cannot be used: {other}")),
    }
}

/// The process-wide roots, and which store they came from (for certificate error messages).
struct Trust {
    roots: RootCertStore,
    source: String,
}

fn default_trust() -> &'static Trust {
    // Loading the OS store takes tens of milliseconds: do it once per process.
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _unparsable) = roots.add_parsable_certificates(loaded.certs);
        if added > 0 {
            return Trust { roots, source: format!("the OS trust store ({added} certificates)") };
        }
        // Read only here, so a process whose OS store has certificates never touches them (RSS).
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Why the OS store was empty (a missing bundle file, say): paths only, never a secret.
        let why = loaded.errors.first().map_or_else(String::new, |e| format!(" ({e})"));
        Trust {
            source: format!(
                "the bundled Mozilla roots (webpki-roots, {} certificates), because the OS trust store had no certificate{why}",
                roots.len()
            ),
            roots,
        }
    })
}

/// Which roots a certificate was checked against, for the message of a certificate whose
/// issuer is not trusted.
fn trust_store_note(ca_given: bool) -> String {
    let extra = if ca_given { " plus the 'ca' option's certificates" } else { "" };
    format!("it was checked against {}{extra}", default_trust().source)
}

/// Where the README shows how to make a CA and a server certificate with openssl.
const RECIPE: &str = "the README's \"TLS trust\" section has the openssl commands";

/// Why the server's certificate was refused, in words, with what to do: never rustls's or
/// webpki's Debug text (`Other(OtherError(CaUsedAsEndEntity))`) for the common cases. `host` is
/// the endpoint's host; `ca_given`: the 'ca' option was passed.
pub fn refused_certificate(error: &rustls::Error, host: &str, ca_given: bool) -> String {
    let cert = match error {
        rustls::Error::InvalidCertificate(cert) => cert,
        rustls::Error::NoCertificatesPresented => return "the server presented no certificate".into(),
        other => return format!("the server's certificate was refused: {other}"),
    };
    let pass_ca = if ca_given {
        "the 'ca' option does not hold the CA that issued it: pass that CA (the root of the server's chain), or have the \
         server send the intermediate certificates between its own and that CA"
    } else {
        "for a private CA pass the 'ca' option"
    };
    match cert {
        CertificateError::UnknownIssuer => {
            format!("the server's certificate was not issued by a CA this client trusts; {}; {pass_ca}", trust_store_note(ca_given))
        }
        CertificateError::NotValidForName => format!("the server's certificate is not valid for the host '{host}' (its subjectAltName does not list it)"),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().take(10).map(|name| presented_name(name)).collect();
            let listed = if names.is_empty() {
                "it lists no name in subjectAltName (a common name alone does not count)".to_string()
            } else {
                format!("it is for {} only (subjectAltName)", names.join(", "))
            };
            format!(
                "the server's certificate is not valid for the host '{host}': {listed}; connect to a name the certificate \
                 lists, or serve one whose subjectAltName lists '{host}'"
            )
        }
        CertificateError::Expired => "the server's certificate has expired (or this machine's clock is wrong)".into(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired {} ago (or this machine's clock is wrong): the server needs a new one",
            span(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet (or this machine's clock is behind)".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is valid only {} from now: this machine's clock is behind, or the certificate was dated ahead",
            span(not_before.as_secs().saturating_sub(time.as_secs()))
        ),
        CertificateError::Revoked => "the server's certificate has been revoked".into(),
        CertificateError::BadSignature => {
            "the server's certificate's signature does not verify with its issuer's key (a corrupt or forged chain, or a \
             CA other than the one that signed it with the same name)"
                .into()
        }
        CertificateError::BadEncoding => "the server's certificate is malformed (not valid DER)".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not for TLS servers (its extendedKeyUsage lacks serverAuth)".into()
        }
        #[allow(deprecated)]
        CertificateError::UnsupportedSignatureAlgorithm
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "the server's certificate is signed with an algorithm this client does not accept".into()
        }
        CertificateError::UnhandledCriticalExtension => {
            "the server's certificate has a critical extension this client does not know".into()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => {
                let keep_ca = if ca_given { "keep passing the CA as 'ca'" } else { "pass the CA as the 'ca' option" };
                format!(
                    "the server's certificate is a CA certificate (basicConstraints CA:TRUE) used as the server's own, \
                     which TLS refuses; `openssl req -x509` makes one unless told otherwise. Issue a server (leaf) \
                     certificate from that CA for '{host}', serve it, and {keep_ca} ({RECIPE})"
                )
            }
            Some(webpki::Error::EndEntityUsedAsCa) => {
                "a certificate in the server's chain that signed another is not a CA certificate (no basicConstraints \
                 CA:TRUE): the server sends the wrong chain"
                    .into()
            }
            Some(webpki::Error::UnsupportedCertVersion) => {
                format!("the server's certificate is not an X.509 v3 certificate; issue it with extensions ({RECIPE})")
            }
            Some(webpki::Error::PathLenConstraintViolated | webpki::Error::NameConstraintViolation) => {
                "the server's certificate chain breaks a constraint of one of its CAs (path length or name constraints)".into()
            }
            Some(webpki::Error::MaximumPathDepthExceeded) => "the server's certificate chain is too long".into(),
            _ => format!("the server's certificate was refused ({})", other.0),
        },
        other => format!("the server's certificate was refused ({other})"),
    }
}

/// The server's TLS alert, when it refuses this client's certificate or wants one
/// (`identity_given`: the 'cert' option was passed), in words: what to tell the user.
pub fn client_certificate_refused(alert: &rustls::Error, identity_given: bool) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let rustls::Error::AlertReceived(alert) = alert else { return None };
    let why = match (alert, identity_given) {
        (Alert::CertificateRequired, false) => return Some("wants a client certificate (mutual TLS): pass it as the 'cert' and 'key' options".into()),
        (Alert::CertificateRequired, true) => "it wants one but did not take it",
        (Alert::UnknownCA, true) => "it was not issued by a CA the server trusts for clients (mosquitto's cafile, for one)",
        (Alert::CertificateExpired, true) => "it has expired (or the server's clock is wrong)",
        (Alert::CertificateRevoked, true) => "it has been revoked",
        (Alert::BadCertificate | Alert::UnsupportedCertificate | Alert::CertificateUnknown | Alert::AccessDenied, true) => {
            "the server did not accept it"
        }
        _ => return None,
    };
    Some(format!("refused the client certificate given as 'cert': {why}"))
}

/// A name from a certificate's subjectAltName as webpki presents it (`DnsName("a.example")`,
/// `IpAddress(127.0.0.1)`), as a person writes it.
fn presented_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| name.strip_prefix("IpAddress(").and_then(|n| n.strip_suffix(')')));
    let shown = inner.unwrap_or(name);
    // A server's certificate may hold anything: keep each name short.
    format!("'{}'", shortened(shown, 100))
}

/// `seconds` as a person reads a span of time.
fn span(seconds: u64) -> String {
    match seconds {
        0..=119 => format!("{seconds} s"),
        120..=7_199 => format!("{} min", seconds / 60),
        7_200..=172_799 => format!("{} h", seconds / 3_600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// rumqttc's TLS settings: the trusted roots plus `ca`, the client certificate if any, and the
/// ALPN protocols to offer.
pub fn client_config(ca: Option<&str>, identity: Option<&ClientIdentity>, alpn: &[&[u8]]) -> Result<TlsConfiguration> {
    let mut roots = default_trust().roots.clone();
    if let Some(pem) = ca {
        for cert in parse_certificates("ca", pem)? {
            roots.add(cert).map_err(|e| PubSubError::InvalidOption(format!("Option 'ca' holds an unusable certificate: {e}")))?;
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => identity.authenticate(builder)?,
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::OtherError;
    use std::time::Duration;

    fn at(seconds: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(seconds))
    }

    #[test]
    fn common_certificate_errors_are_told_in_words_never_as_rustls_debug_text() {
        let now = 1_800_000_000;
        let cases = vec![
            (CertificateError::UnknownIssuer, "the server's certificate was not issued by a CA this client trusts; it was checked against"),
            (CertificateError::NotValidForName, "not valid for the host 'broker.example.com'"),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("broker.example.com").unwrap().to_owned(),
                    presented: vec!["DnsName(\"other.example.com\")".into(), "IpAddress(10.0.0.1)".into()],
                },
                "not valid for the host 'broker.example.com': it is for 'other.example.com', '10.0.0.1' only (subjectAltName)",
            ),
            (CertificateError::Expired, "has expired"),
            (CertificateError::ExpiredContext { time: at(now), not_after: at(now - 3 * 86_400) }, "expired 3 days ago"),
            (CertificateError::NotValidYet, "is not valid yet"),
            (CertificateError::NotValidYetContext { time: at(now), not_before: at(now + 7_200) }, "valid only 2 h from now"),
            (CertificateError::BadSignature, "signature does not verify"),
            (CertificateError::Revoked, "has been revoked"),
            (CertificateError::InvalidPurpose, "lacks serverAuth"),
            (CertificateError::BadEncoding, "malformed"),
            (
                CertificateError::Other(OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity))),
                "is a CA certificate (basicConstraints CA:TRUE) used as the server's own, which TLS refuses",
            ),
            (CertificateError::Other(OtherError(Arc::new(webpki::Error::EndEntityUsedAsCa))), "is not a CA certificate"),
            (CertificateError::Other(OtherError(Arc::new(webpki::Error::UnsupportedCertVersion))), "is not an X.509 v3 certificate"),
            (CertificateError::Other(OtherError(Arc::new(webpki::Error::NameConstraintViolation))), "breaks a constraint of one of its CAs"),
            (CertificateError::Other(OtherError(Arc::new(webpki::Error::PathLenConstraintViolated))), "breaks a constraint of one of its CAs"),
            (CertificateError::Other(OtherError(Arc::new(webpki::Error::MaximumPathDepthExceeded))), "chain is too long"),
            (CertificateError::ExpiredContext { time: at(now), not_after: at(now - 119) }, "expired 119 s ago"),
            (CertificateError::ExpiredContext { time: at(now), not_after: at(now - 120) }, "expired 2 min ago"),
            (CertificateError::NotValidYetContext { time: at(now), not_before: at(now + 7_199) }, "valid only 119 min from now"),
        ];
        for (error, expected) in cases {
            let debug = format!("{error:?}");
            let words = refused_certificate(&rustls::Error::InvalidCertificate(error), "broker.example.com", true);
            assert!(words.contains(expected), "{words}");
            assert!(!words.contains(&debug) && !words.contains("Other(") && !words.contains("Context"), "{words}");
        }
    }

    #[test]
    fn the_ca_option_is_suggested_only_when_it_was_not_given() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(refused_certificate(&unknown, "h", false).ends_with("for a private CA pass the 'ca' option"));
        let given = refused_certificate(&unknown, "h", true);
        assert!(given.contains("the 'ca' option does not hold the CA that issued it") && !given.contains("pass the 'ca' option"), "{given}");
        let ca_as_server = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(webpki::Error::CaUsedAsEndEntity))));
        assert!(refused_certificate(&ca_as_server, "h", true).contains("keep passing the CA as 'ca'"));
        assert!(refused_certificate(&ca_as_server, "h", false).contains("pass the CA as the 'ca' option"));
    }
}
