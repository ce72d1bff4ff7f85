//! The HTTP(S) transport of every Kartu client (`kartu terminal`, `kartu audit verify --url`,
//! `kartu audit watch`, `kartu demo`): ureq over rustls (ring), trusting either the
//! system's root certificates (else Mozilla's, webpki-roots) or only the CA certificates of
//! a PEM file.
//!
//! A failed request is one of two things ([`Failure`]): the server could not be reached (a
//! refused or reset connection, a timeout, a network or a name that does not answer) — a
//! terminal may decide offline — or the connection itself is wrong (a TLS or certificate
//! error, a plain-HTTP server at an `https://` URL or the other way round, a malformed URL):
//! that is a configuration error, said as such, never "offline".

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// The environment variable naming a CA file, for the commands that take `--ca-file`.
pub const CA_FILE_ENV: &str = "KARTU_CA_FILE";

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server could not be reached: a terminal may decide offline.
    Offline(String),
    /// The connection is wrong (TLS, certificate, URL, protocol): an error, never offline.
    Broken(String),
}

impl Failure {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Failure::Offline(m) | Failure::Broken(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Reads the CA certificates of a PEM file (at least one).
pub fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("reading the CA file {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("the CA file {} is not PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("the CA file {} holds no CERTIFICATE block", path.display()));
    }
    Ok(certs)
}

/// A client that keeps 4xx/5xx answers as responses. With `ca_file`, only the CA
/// certificates in it are trusted for `https://`; without, the system's roots (the
/// machine's store, e.g. /etc/ssl/certs, where an IT department adds its own CA), or
/// Mozilla's roots on a machine without a store.
pub fn agent(ca_file: Option<&Path>, timeout: Option<Duration>) -> Result<ureq::Agent, String> {
    let roots = match ca_file {
        Some(path) => RootCerts::Specific(Arc::new(read_ca_file(path)?)),
        None => system_roots(),
    };
    let tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(roots).build();
    Ok(ureq::Agent::config_builder().http_status_as_error(false).timeout_global(timeout).tls_config(tls).build().into())
}

/// The machine's trusted roots, or Mozilla's when it has none.
fn system_roots() -> RootCerts {
    let native = rustls_native_certs::load_native_certs();
    let certs: Vec<Certificate<'static>> =
        native.certs.iter().map(|der| Certificate::from_der(der.as_ref()).to_owned()).collect();
    if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(certs))
    }
}

/// Checks a server's base URL: `http://` or `https://` and a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("{url:?}: unknown scheme {other:?}; use https:// (or http:// on loopback)")),
        None => return Err(format!("{url:?} has no scheme; use https://HOST[:PORT]")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// The rustls error inside an I/O error (rustls' streams wrap theirs so), if any.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = match e.get_ref() {
        Some(inner) => Some(inner),
        None => None,
    };
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

fn tls_failure(url: &str, e: &rustls::Error) -> Failure {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            "; the server's certificate is not trusted by this client: give --ca-file (KARTU_CA_FILE) with the CA \
             that signed it, or check the URL's host name"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "; the server does not speak TLS here: is it plain HTTP (http://)?"
        }
        _ => "",
    };
    Failure::Broken(format!("TLS with {url} failed: {e}{hint}"))
}

/// Sorts a failed request into [`Failure::Offline`] or [`Failure::Broken`], with a message.
pub fn classify(url: &str, e: &ureq::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(t) => Failure::Offline(format!("{url}: no answer in time ({t})")),
        ureq::Error::HostNotFound => Failure::Offline(format!("{url}: the host name does not resolve")),
        ureq::Error::Rustls(r) => tls_failure(url, r),
        ureq::Error::Tls(m) => Failure::Broken(format!("TLS with {url} failed: {m}")),
        ureq::Error::Pem(p) => Failure::Broken(format!("TLS with {url}: {p:?}")),
        ureq::Error::BadUri(m) => Failure::Broken(format!("bad URL {url}: {m}")),
        ureq::Error::Http(h) => Failure::Broken(format!("bad request to {url}: {h}")),
        ureq::Error::Protocol(p) => Failure::Broken(format!(
            "{url} did not answer in HTTP ({p}); is it an HTTPS server addressed with http://, or not Kartu?"
        )),
        ureq::Error::Io(io) => {
            if let Some(r) = rustls_error(io) {
                return tls_failure(url, r);
            }
            match io.kind() {
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::TimedOut
                | K::WouldBlock
                | K::NotConnected
                | K::BrokenPipe
                | K::NetworkUnreachable
                | K::HostUnreachable
                | K::NetworkDown
                | K::AddrNotAvailable => Failure::Offline(format!("{url}: {io}")),
                K::UnexpectedEof => Failure::Broken(format!(
                    "{url} closed the connection without an answer; is it an HTTPS server addressed with http://?"
                )),
                _ => Failure::Broken(format!("{url}: {io}")),
            }
        }
        other => Failure::Broken(format!("{url}: {other}")),
    }
}
