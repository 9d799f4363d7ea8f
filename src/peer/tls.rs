//! TLS for both listeners, with rustls (no OpenSSL). Between peers it is
//! mutual: a node presents a certificate signed by the cluster CA and
//! accepts only peers that do, so a process without one can neither call a
//! node nor pose as one. The client port may serve HTTPS too, with a
//! certificate of its own and no client certificates asked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The files of a node's peer identity, all PEM.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The cluster CA: the only issuer whose certificates are accepted.
    pub ca: PathBuf,
    /// This node's certificate, signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The TLS configurations a node serves and calls its peers with.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: ClientConfig,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a private key from {}", path.display()))
}

fn roots(ca: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

impl PeerTls {
    /// Loads the identity: fails at start, naming the file, rather than at
    /// the first peer call.
    pub fn load(identity: &PeerIdentity) -> anyhow::Result<Self> {
        let roots = roots(&identity.ca)?;
        let certs = certificates(&identity.cert)?;
        let key = private_key(&identity.key)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("building the peer certificate verifier")?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(|| format!("{} does not match its key", identity.cert.display()))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .with_context(|| format!("{} does not match its key", identity.cert.display()))?;
        Ok(PeerTls {
            server: Arc::new(server),
            client,
        })
    }
}

/// HTTPS on the client port: this certificate, no client certificates.
pub fn client_port(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates(cert)?, private_key(key)?)
        .with_context(|| format!("{} does not match its key", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
