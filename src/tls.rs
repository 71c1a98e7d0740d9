//! TLS for wss:// and mqtts://: the OS trust store plus any CA the user gives, verification on.
//! When the OS store has no certificate at all (slim or distroless images without a CA bundle),
//! the bundled Mozilla roots stand in for it, as Node's own bundled roots do for Node's clients.

use std::sync::{Arc, OnceLock};

use rumqttc::TlsConfiguration;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::errors::{PubSubError, Result};

/// Parses PEM text into certificates; an empty or unreadable bundle is an option error.
pub fn parse_ca(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| PubSubError::InvalidOption(format!("Option 'ca' is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PubSubError::InvalidOption("Option 'ca' holds no PEM certificate".into()));
    }
    Ok(certs)
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

/// Which roots a certificate was checked against, for the message of a refused certificate.
pub fn trust_store_note(ca_given: bool) -> String {
    let extra = if ca_given { " plus the 'ca' option's certificates" } else { "" };
    format!(
        "the certificate was checked against {}{extra}; for a private CA pass the 'ca' option",
        default_trust().source
    )
}

pub fn client_config(ca: Option<&str>) -> Result<TlsConfiguration> {
    let mut roots = default_trust().roots.clone();
    if let Some(pem) = ca {
        for cert in parse_ca(pem)? {
            roots
                .add(cert)
                .map_err(|e| PubSubError::InvalidOption(format!("Option 'ca' holds an unusable certificate: {e}")))?;
        }
    }
    let config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
