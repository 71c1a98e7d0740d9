//! TLS for wss:// and mqtts://: the OS trust store plus any CA the user gives, verification on.

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

fn native_roots() -> &'static RootCertStore {
    // Loading the OS store takes tens of milliseconds: do it once per process.
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        roots
    })
}

pub fn client_config(ca: Option<&str>) -> Result<TlsConfiguration> {
    let mut roots = native_roots().clone();
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
