//! The `proxy` option: connections through an HTTP proxy (a CONNECT tunnel), as networks that
//! let nothing out but through their proxy require. MQTT, TLS and WebSocket then run inside the
//! tunnel as they would on a direct connection (rumqttc's `proxy` feature).

use std::fmt;

use rumqttc::{Proxy, ProxyAuth, ProxyError, ProxyType};
use url::Url;

use async_http_proxy::HttpError;

use crate::errors::{causes, PubSubError, Result};
use crate::options::shown_url;
use crate::tls;

/// A proxy URL as given, taken apart: `http://[user:password@]host[:port]` or `https://…`.
#[derive(Clone)]
pub struct HttpProxy {
    /// The URL as messages show it: without its credentials.
    pub shown: String,
    host: String,
    port: u16,
    tls: bool,
    credentials: Option<(String, String)>,
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProxy").field("url", &self.shown).field("credentials", &self.credentials.as_ref().map(|_| "***")).finish()
    }
}

fn invalid(raw: &str, why: &str) -> PubSubError {
    PubSubError::InvalidOption(format!("Option 'proxy' ('{}') {why}", shown_url(raw)))
}

/// Parses the `proxy` option; an empty one (`HTTPS_PROXY=` in the environment) is no proxy.
pub fn parse(raw: &str) -> Result<Option<HttpProxy>> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    if !raw.contains("://") {
        return Err(invalid(raw, &format!("has no scheme: give its URL, e.g. 'http://{}'", shown_url(raw.trim()))));
    }
    let url = Url::parse(raw.trim()).map_err(|_| invalid(raw, "is not a URL: give the proxy's, e.g. 'http://proxy.example.com:3128'"))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        "socks" | "socks4" | "socks5" | "socks5h" => return Err(invalid(raw, "is a SOCKS proxy: only HTTP proxies (CONNECT) are supported")),
        other => return Err(invalid(raw, &format!("has the scheme '{other}': give an http:// or https:// URL"))),
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(invalid(raw, "has no host")),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(invalid(raw, "has a path or query: a proxy is given by its host and port only"));
    }
    let decode = |text: &str| percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
    let credentials = (!url.username().is_empty()).then(|| (decode(url.username()), decode(url.password().unwrap_or(""))));
    let port = url.port_or_known_default().unwrap_or(80);
    Ok(Some(HttpProxy {
        shown: shown_url(&format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default())),
        host,
        port,
        tls,
        credentials,
    }))
}

impl HttpProxy {
    /// rumqttc's setting; an https:// proxy is trusted as the broker is (the system's roots,
    /// the bundled ones and `ca`).
    pub fn to_rumqttc(&self, ca: Option<&str>) -> Result<Proxy> {
        Ok(Proxy {
            ty: if self.tls { ProxyType::Https(tls::client_config(ca, None, &[])?) } else { ProxyType::Http },
            auth: match &self.credentials {
                Some((username, password)) => ProxyAuth::Basic { username: username.clone(), password: password.clone() },
                None => ProxyAuth::None,
            },
            addr: self.host.clone(),
            port: self.port,
        })
    }

    /// What a failure to open the tunnel to `destination` means. What the proxy answered is
    /// never quoted: a server that echoes the request would echo its Proxy-Authorization.
    pub fn describe_failure(&self, error: &ProxyError, destination: &str, ca_given: bool) -> PubSubError {
        let proxy = &self.shown;
        match error {
            ProxyError::Io(io) | ProxyError::Proxy(HttpError::IoError(io)) => {
                PubSubError::Connection(format!("Connection to the proxy {proxy} failed: {io}"))
            }
            ProxyError::Proxy(HttpError::HttpCode200(407)) => PubSubError::NotAuthorized(match self.credentials {
                Some(_) => format!("The proxy {proxy} refused the user name or password in the 'proxy' URL (HTTP 407)"),
                None => format!(
                    "The proxy {proxy} wants a user name and password (HTTP 407): give them in the 'proxy' URL, \
                     e.g. 'http://user:password@host:port'"
                ),
            }),
            ProxyError::Proxy(HttpError::HttpCode200(403)) => {
                PubSubError::NotAuthorized(format!("The proxy {proxy} does not allow connections to {destination} (HTTP 403)"))
            }
            ProxyError::Proxy(HttpError::HttpCode200(status @ 300..=399)) => PubSubError::Connection(format!(
                "The proxy {proxy} answered CONNECT to {destination} with a redirect (HTTP {status}): it wants something else \
                 first (a login page, a captive portal), or is no HTTP proxy"
            )),
            ProxyError::Proxy(HttpError::HttpCode200(status)) => {
                PubSubError::Connection(format!("The proxy {proxy} could not open a connection to {destination} (HTTP {status})"))
            }
            ProxyError::Proxy(HttpError::EndOfFile) => PubSubError::Connection(format!("The proxy {proxy} closed the connection without answering CONNECT")),
            ProxyError::Proxy(_) => PubSubError::Connection(format!(
                "The proxy {proxy} did not answer CONNECT as an HTTP proxy does (is it an HTTP proxy's port?)"
            )),
            ProxyError::Tls(tls) => match causes(tls).find_map(|cause| cause.downcast_ref::<rustls::Error>()) {
                Some(refused @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)) => PubSubError::Untrusted(
                    format!("TLS to the proxy {proxy} failed: {}", tls::refused_certificate(refused, &self.host, ca_given)),
                ),
                _ => PubSubError::Connection(format!("TLS to the proxy {proxy} failed: {tls}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_is_taken_apart_and_shown_without_its_credentials() {
        let proxy = parse("http://me:p%40ss@proxy.example.com:3128").unwrap().unwrap();
        assert_eq!(proxy.shown, "http://proxy.example.com:3128");
        assert_eq!(proxy.credentials, Some(("me".into(), "p@ss".into())));
        assert!(!format!("{proxy:?}").contains("p@ss"));
        let https = parse("https://proxy.example.com").unwrap().unwrap();
        assert_eq!((https.port, https.tls, https.shown.as_str()), (443, true, "https://proxy.example.com:443"));
        assert_eq!(parse("http://[::1]:8080").unwrap().unwrap().host, "::1");
        assert!(parse(" ").unwrap().is_none(), "an empty HTTPS_PROXY is no proxy");
    }

    #[test]
    fn a_proxy_url_that_cannot_be_used_says_why_without_its_password() {
        for (raw, says) in [
            ("proxy.example.com:3128", "has no scheme: give its URL, e.g. 'http://proxy.example.com:3128'"),
            ("user:S3CRET@proxy:3128", "has no scheme"),
            ("http://", "is not a URL"),
            ("socks5://proxy:1080", "only HTTP proxies"),
            ("ftp://proxy:21", "give an http:// or https:// URL"),
            ("http://proxy:3128/path", "has a path or query"),
            ("http://user:S3CRET@proxy:3128/?x=1", "has a path or query"),
        ] {
            let message = parse(raw).unwrap_err().to_string();
            assert!(message.contains(says), "{message}");
            assert!(!message.contains("S3CRET"), "{message}");
        }
    }
}
