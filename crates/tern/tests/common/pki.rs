//! A private CA and certificates for TLS test servers (rcgen); the SDK trusts the CA
//! process-wide once it is made.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::TestServer;

/// The CA every test server's certificate is signed by.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    /// Its PEM file (for the CLI's `--ca`).
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "tern test CA");
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        tern_client::tls::use_ca_file(&path).unwrap();
        Ca { cert, key, path, _dir: dir }
    })
}

/// A leaf certificate for `names`, signed by the CA (`signed`) or by itself: (cert PEM, key PEM).
pub fn leaf(names: &[&str], common_name: &str, signed: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    let cert = if signed {
        let ca = ca();
        params.signed_by(&key, &ca.cert, &ca.key).unwrap()
    } else {
        params.self_signed(&key).unwrap()
    };
    (cert.pem(), key.serialize_pem())
}

/// Writes a certificate pair to `dir`; returns the paths.
pub fn write_pair(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

pub async fn tls_server(files: &(PathBuf, PathBuf)) -> TestServer {
    let (cert, key) = (files.0.display().to_string(), files.1.display().to_string());
    TestServer::with(move |c| {
        c.server.tls_cert = cert;
        c.server.tls_key = key;
    })
    .await
}

/// A server with a CA-signed certificate for `localhost` and 127.0.0.1 (QUIC on, on the TCP
/// port's number), its certificate files kept in the server's directory.
pub async fn localhost_tls_server(tweak: impl FnOnce(&mut tern_server::Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let pair = leaf(&["localhost", "127.0.0.1"], "localhost", true);
    let (cert, key) = write_pair(dir.path(), &pair);
    let srv = TestServer::with(move |c| {
        c.server.tls_cert = cert.display().to_string();
        c.server.tls_key = key.display().to_string();
        tweak(c);
    })
    .await;
    // The files are loaded; the directory may go.
    drop(dir);
    srv
}
