//! How the SDK verifies servers: TLS (rustls) with the system's root certificates, plus a
//! private CA when one is named — `TERN_CA=/path/ca.pem`, or [`use_ca_file`] before the first
//! connection or request. Certificates are always verified; there is no switch to turn that off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;

/// ALPN of tern's framed protocol on the TCP port.
pub const ALPN_TERN: &[u8] = b"tern/1";

static CA_FILE: OnceLock<PathBuf> = OnceLock::new();
static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();

/// Trusts the CA certificate(s) in `path` (PEM) as well as the system's roots. Call it before
/// the first connection or request; it fails if the file cannot be used, or if roots were
/// already loaded.
pub fn use_ca_file(path: &Path) -> Result<(), Error> {
    load_ca(path)?;
    CA_FILE.set(path.to_owned()).map_err(|_| Error::Transport("a CA file was already chosen".into()))?;
    if ROOTS.get().is_some() {
        return Err(Error::Transport("use_ca_file must be called before the first connection".into()));
    }
    Ok(())
}

fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Transport(format!("cannot read the CA file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Transport(format!("the CA file {} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// The trusted roots: the system's, and the private CA if one was named.
fn roots() -> Result<Arc<RootCertStore>, Error> {
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            // Unreadable system certificates are skipped; a private CA may be all there is.
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
            let ca = CA_FILE.get().cloned().or_else(|| std::env::var_os("TERN_CA").map(PathBuf::from));
            if let Some(path) = ca {
                for cert in load_ca(&path).map_err(|e| e.to_string())? {
                    store.add(cert).map_err(|e| format!("the CA file {} is not usable: {e}", path.display()))?;
                }
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(Error::Transport)
}

/// A client configuration offering `alpn`.
pub(crate) fn config(alpn: &[u8]) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Transport(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// Opens TLS over `tcp` to `host`, verifying its certificate against the SDK's roots (for
/// tools that dial themselves, like `tern bench`).
pub async fn connect(tcp: TcpStream, host: &str, alpn: &[u8]) -> Result<TlsStream<TcpStream>, Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Transport(format!("{host:?} is not a valid server name: {e}")))?;
    TlsConnector::from(Arc::new(config(alpn)?))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Transport(format!("TLS with {host} failed: {e}")))
}

/// A client stream over QUIC to `host:port`, the certificate verified like TLS's: one
/// bidirectional stream on a connection of its own (on a UDP socket of its own).
pub(crate) async fn quic(host: &str, port: u16) -> Result<crate::conn::QuicStream, Error> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Error::Transport(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| Error::Transport(format!("{host} resolves to no address")))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config(ALPN_TERN)?)
        .map_err(|e| Error::Transport(format!("QUIC TLS setup failed: {e}")))?;
    let mut transport = quinn::TransportConfig::default();
    // Keeps NAT bindings open between tern's own heartbeats.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let endpoint = quinn::Endpoint::client(local).map_err(|e| Error::Transport(format!("no UDP socket: {e}")))?;
    let conn = endpoint
        .connect_with(cfg, addr, bare)
        .map_err(|e| Error::Transport(format!("QUIC connect to {host}:{port} failed: {e}")))?
        .await
        .map_err(|e| Error::Transport(format!("QUIC connect to {host}:{port} failed: {e}")))?;
    let (send, recv) =
        conn.open_bi().await.map_err(|e| Error::Transport(format!("QUIC stream to {host}:{port} failed: {e}")))?;
    Ok(crate::conn::QuicStream { send, recv, conn, _endpoint: endpoint })
}
