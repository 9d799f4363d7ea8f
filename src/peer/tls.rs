//! TLS for both listeners, with rustls (no OpenSSL). Between peers it is
//! mutual: a node presents a certificate of its zone's CA and accepts only
//! peers that present one of that CA (its zone's nodes) or of another
//! zone's CA it is told to trust (that zone's link); after the handshake
//! the certificate's [`Identity`] says who the caller is ([`Caller`]).
//! The client port may serve HTTPS too, with a certificate of its own and
//! no client certificates asked for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::identity::{Caller, Identity};

/// The files of a node's peer identity, all PEM.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// This zone's CA: the issuer of its nodes' certificates.
    pub ca: PathBuf,
    /// This node's certificate, signed by the CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// This zone's link certificate and key, shown to other zones' nodes;
    /// none when the node follows no other zone.
    pub link: Option<(PathBuf, PathBuf)>,
    /// Each other zone's CA, trusted for that zone's link (and its nodes'
    /// server certificates) only.
    pub zone_cas: BTreeMap<String, PathBuf>,
}

/// The TLS configurations a node serves and calls its peers with.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    /// Calls this zone's nodes: trusts this zone's CA, shows the node's
    /// certificate.
    pub client: ClientConfig,
    /// Calls other zones' nodes: trusts their CAs, shows the link's
    /// certificate.
    pub link: Option<ClientConfig>,
    /// Who a handshake's certificate proves the caller to be.
    pub callers: Arc<Callers>,
    /// This node's certificate's identity, and when it expires.
    pub me: Identity,
    pub expires: String,
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

fn roots(cas: &[&Path]) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        for cert in certificates(ca)? {
            roots
                .add(cert)
                .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
        }
    }
    Ok(Arc::new(roots))
}

fn verifier(cas: &[&Path]) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    WebPkiClientVerifier::builder_with_provider(roots(cas)?, provider())
        .build()
        .context("building the peer certificate verifier")
}

/// Reads a certificate file's identity and checks it is `expected`.
fn check_identity(
    certs: &[CertificateDer<'static>],
    path: &Path,
    expected: &Identity,
) -> anyhow::Result<String> {
    let found = Identity::of_certificate(&certs[0])
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        &found == expected,
        "{} is the certificate of {found} ({}), but this node is configured as {expected} ({}): \
         check node.id and node.zone, or make its certificate with \
         `discoveryctl certs node NAME --id ID --zone ZONE`",
        path.display(),
        found.uri(),
        expected.uri(),
    );
    super::certs::not_after(&certs[0]).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl PeerTls {
    /// Loads the files and checks that this node's certificate is that of
    /// `me` (and the link's that of this zone's link): fails at start,
    /// naming the file, rather than at the first peer call.
    pub fn load(files: &CertFiles, me: &Identity) -> anyhow::Result<Self> {
        let certs = certificates(&files.cert)?;
        let expires = check_identity(&certs, &files.cert, me)?;
        let key = private_key(&files.key)?;
        let zone_cas: Vec<&Path> = files.zone_cas.values().map(PathBuf::as_path).collect();
        let mut accepted = vec![files.ca.as_path()];
        accepted.extend(&zone_cas);
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier(&accepted)?)
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(|| format!("{} does not match its key", files.cert.display()))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots(&[&files.ca])?)
            .with_client_auth_cert(certs, key)
            .with_context(|| format!("{} does not match its key", files.cert.display()))?;
        let link = match &files.link {
            None => None,
            Some((cert, key)) => {
                let certs = certificates(cert)?;
                let link = Identity::Link {
                    zone: me.zone().to_string(),
                };
                check_identity(&certs, cert, &link)?;
                let config = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots(&zone_cas)?)
                    .with_client_auth_cert(certs, private_key(key)?)
                    .with_context(|| format!("{} does not match its key", cert.display()))?;
                Some(config)
            }
        };
        let mut zones = Vec::new();
        for (zone, ca) in &files.zone_cas {
            zones.push((zone.clone(), verifier(&[ca])?));
        }
        let callers = Arc::new(Callers {
            zone: me.zone().to_string(),
            own: verifier(&[&files.ca])?,
            zones,
        });
        Ok(PeerTls {
            server: Arc::new(server),
            client,
            link,
            callers,
            me: me.clone(),
            expires,
        })
    }
}

/// Tells who a peer's certificate chain (accepted by the handshake)
/// proves it is: which CA it chains to decides what its identity may be.
pub struct Callers {
    /// This node's zone.
    zone: String,
    /// This zone's CA.
    own: Arc<dyn ClientCertVerifier>,
    /// Each other zone's CA.
    zones: Vec<(String, Arc<dyn ClientCertVerifier>)>,
}

impl Callers {
    /// The caller a handshake's chain (end entity first) proves.
    pub fn caller(&self, chain: &[CertificateDer<'static>]) -> Caller {
        let Some((end, intermediates)) = chain.split_first() else {
            return Caller::nobody("no certificate".into());
        };
        let identity = match Identity::of_certificate(end) {
            Ok(identity) => identity,
            Err(e) => return Caller::nobody(e),
        };
        let now = UnixTime::now();
        let chains =
            |v: &Arc<dyn ClientCertVerifier>| v.verify_client_cert(end, intermediates, now).is_ok();
        if chains(&self.own) {
            return match identity {
                Identity::Node { zone, id } if zone == self.zone => Caller::Node(id),
                Identity::Link { zone } if zone != self.zone => Caller::Link(zone),
                other => Caller::nobody(format!(
                    "{other}: this zone's CA vouches for this zone's ({}) nodes and \
                     for other zones' links only",
                    self.zone
                )),
            };
        }
        for (zone, verifier) in &self.zones {
            if chains(verifier) {
                return match identity {
                    Identity::Link { zone: named } if &named == zone => Caller::Link(named),
                    other => Caller::nobody(format!(
                        "{other}: the CA of zone {zone} is trusted for zone {zone}'s link only"
                    )),
                };
            }
        }
        Caller::nobody(format!("{identity}: no trusted CA issued this certificate"))
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
