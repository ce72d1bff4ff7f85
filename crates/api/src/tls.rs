//! HTTPS for `kartu serve`: rustls (ring provider) with a certificate that can be replaced
//! without a restart. [`ReloadingCert`] holds the certificate chain and key read from two PEM
//! files and hands them to every handshake; on SIGHUP ([`reload_on_sighup`]) it reads the
//! files again. A new pair that does not load (unreadable, not PEM, key and certificate that
//! do not match, a key file others may read) is logged and the old certificate stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::SetupError;

/// The server's certificate and key, read from `cert` and `key` (PEM) and read again by
/// [`ReloadingCert::reload`].
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
    reloaded: AtomicU64,
    refused: AtomicU64,
}

/// A loaded pair and what the logs say about it.
struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// The crypto provider of the TLS connections `kartu serve` accepts: ring, as the clients
/// (ureq) use. rustls marks it deprecated because it has no post-quantum key exchange; its
/// alternative (aws-lc-rs) needs cmake and a long C build on every machine, and the
/// classical suites (X25519, ECDHE with AES-GCM and ChaCha20) stay what most clients offer.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<Loaded, String> {
    files::check_private(key_path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("reading the certificate {}: {e}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate {} is not PEM: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no CERTIFICATE block", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("the key {} holds no PEM private key: {e}", key_path.display()))?;
    let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, certs[0].as_ref()));
    let key = CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!("{} and {} do not make a certificate and its key: {e}", cert_path.display(), key_path.display())
    })?;
    Ok(Loaded { key: Arc::new(key), fingerprint })
}

impl ReloadingCert {
    /// Reads the pair; an error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ReloadingCert>, SetupError> {
        let provider = provider();
        let loaded = read(cert_path, key_path, &provider).map_err(SetupError)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(loaded),
            reloaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    /// Reads the files again. On success the next handshake uses the new pair and its
    /// fingerprint is returned; on failure the pair in use stays and the error says why.
    pub fn reload(&self) -> Result<String, String> {
        let loaded = read(&self.cert_path, &self.key_path, &self.provider).inspect_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
        })?;
        let fingerprint = loaded.fingerprint.clone();
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        self.reloaded.fetch_add(1, Ordering::Relaxed);
        Ok(fingerprint)
    }

    /// Reloads since start: (done, refused because the new files did not load).
    pub fn reloads(&self) -> (u64, u64) {
        (self.reloaded.load(Ordering::Relaxed), self.refused.load(Ordering::Relaxed))
    }

    /// SHA-256 of the end-entity certificate in use, hex.
    pub fn fingerprint(&self) -> String {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).fingerprint.clone()
    }

    /// A rustls server configuration that asks this for its certificate at every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, SetupError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).key.clone())
    }
}

/// Reloads `cert` at every SIGHUP until the runtime stops (without a certificate, says
/// there is nothing to reload). `hangup` must be registered before the server announces
/// itself, so that a SIGHUP sent right after start is not the default action (which ends
/// the process).
pub async fn reload_on_sighup(cert: Option<Arc<ReloadingCert>>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        let Some(cert) = &cert else {
            tracing::warn!("SIGHUP: plain HTTP, no TLS certificate to reload; nothing done");
            continue;
        };
        match cert.reload() {
            Ok(fingerprint) => {
                tracing::info!(cert = %cert.cert_path.display(), sha256 = %fingerprint, "SIGHUP: TLS certificate reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, sha256 = %cert.fingerprint(), "SIGHUP: the new TLS certificate does not load; the old one stays")
            }
        }
    }
}
