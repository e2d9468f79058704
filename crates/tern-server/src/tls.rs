//! Built-in TLS (rustls, no OpenSSL): the server's certificate and key, loaded from PEM files and
//! reloaded without a restart when the files change or on SIGHUP.
//!
//! One certificate serves every listener: HTTPS and WSS on the HTTP port (ALPN `http/1.1`) and
//! TLS on the TCP port (ALPN `tern/1`). rustls offers TLS 1.3 first and TLS 1.2, with AEAD
//! cipher suites only. A reload builds the new key pair completely before it replaces the old
//! one, so a half-written or mismatched pair is refused (and logged) while the old one keeps
//! serving; connections already open keep the session they negotiated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// ALPN of tern's framed protocol on the TCP port (and, later, QUIC).
pub const ALPN_TERN: &[u8] = b"tern/1";

/// How often the certificate files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The server's TLS: its current certificate and an acceptor per listener.
pub struct Tls {
    certs: Arc<Certificates>,
    http: TlsAcceptor,
    tcp: TlsAcceptor,
}

/// The certificate files and what was last loaded from them.
#[derive(Debug)]
struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) when last loaded or tried.
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

/// Reads a PEM certificate chain and its private key, and checks they belong together.
fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the TLS certificate {} is not valid PEM: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("the TLS certificate file {} holds no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key_path.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key in {} is not usable: {e}", key_path.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        format!("the private key {} does not match the certificate {}: {e}", key_path.display(), cert_path.display())
    })?;
    Ok(pair)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Tls {
    /// Loads the certificate and key; an error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let seen = (modified(cert_path), modified(key_path));
        let pair = load_pair(cert_path, key_path)?;
        let certs = Arc::new(Certificates {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(seen),
        });
        let acceptor = |alpn: &[u8]| -> Result<TlsAcceptor, String> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self { http: acceptor(b"http/1.1")?, tcp: acceptor(ALPN_TERN)?, certs })
    }

    /// The TLS configuration of the QUIC listener: TLS 1.3 only (QUIC needs it), ALPN
    /// `tern/1`, the same certificates (reloaded with the others).
    pub fn quic(&self) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("QUIC TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.certs) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![ALPN_TERN.to_vec()];
        // QUIC's 0-RTT would let a replayed first flight re-send frames; not offered.
        config.max_early_data_size = 0;
        Ok(config)
    }

    /// The acceptor of the HTTP port (HTTPS and WSS).
    pub fn http(&self) -> &TlsAcceptor {
        &self.http
    }

    /// The acceptor of the TCP port.
    pub fn tcp(&self) -> &TlsAcceptor {
        &self.tcp
    }

    /// Reloads when the files change (checked every two seconds) or on SIGHUP, until `stop`.
    pub fn watch(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let certs = Arc::clone(&self.certs);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => false,
                    _ = hangup => true,
                };
                if forced || certs.changed() {
                    match certs.reload() {
                        Ok(()) => tracing::info!(cert = %certs.cert_path.display(), "TLS certificate reloaded"),
                        Err(why) => tracing::warn!(%why, "TLS certificate not reloaded; the previous one stays in use"),
                    }
                }
            }
        })
    }
}

impl Certificates {
    /// Whether either file's modification time differs from when it was last loaded or tried.
    fn changed(&self) -> bool {
        let now = (modified(&self.cert_path), modified(&self.key_path));
        *self.seen.lock() != now
    }

    /// Loads the files again. On failure the certificate in use stays, and the error says why.
    fn reload(&self) -> Result<(), String> {
        *self.seen.lock() = (modified(&self.cert_path), modified(&self.key_path));
        let pair = load_pair(&self.cert_path, &self.key_path)?;
        *self.current.write() = Arc::new(pair);
        Ok(())
    }
}
