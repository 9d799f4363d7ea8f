//! Making the cluster's certificates, so a new user needs no openssl
//! recipe: a CA per zone, then one certificate per node signed by it, each
//! usable both to serve peers and to call them, and the zone's link
//! certificate, for calling other zones only. Every certificate carries
//! its holder's [`Identity`] as a URI subject-alternative name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::identity::Identity;
use crate::raft::NodeId;

/// The CA's files in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// How long a certificate is valid, from a day before now (clocks differ)
/// to `days` after.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days);
}

/// A new cluster CA named `name`.
pub fn new_ca(name: &str, days: i64) -> anyhow::Result<Issued> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `identity`, named `name`, for `hosts` (names or IP
/// addresses peers dial it by), signed by the CA, valid from `not_before`
/// to `not_after`. A node's both serves its peers and calls them; a link's
/// only calls.
pub fn node_cert_between(
    ca: &Issued,
    identity: &Identity,
    name: &str,
    hosts: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> anyhow::Result<Issued> {
    let ca_key = KeyPair::from_pem(&ca.key).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).context("reading the CA")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("{hosts:?} are not valid host names"))?;
    params.subject_alt_names.push(SanType::URI(
        identity
            .uri()
            .try_into()
            .context("the identity is not an ASCII URI")?,
    ));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match identity {
        Identity::Node { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Identity::Link { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `identity` valid for `days` from now.
pub fn node_cert(
    ca: &Issued,
    identity: &Identity,
    name: &str,
    hosts: &[String],
    days: i64,
) -> anyhow::Result<Issued> {
    let now = OffsetDateTime::now_utc();
    node_cert_between(
        ca,
        identity,
        name,
        hosts,
        now - Duration::days(1),
        now + Duration::days(days),
    )
}

/// Writes a certificate and its key as `<stem>.pem` and `<stem>-key.pem`
/// in `dir`, the key readable by its owner only. Refuses to overwrite.
pub fn write(dir: &Path, stem: &str, issued: &Issued) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    for path in [&cert, &key] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists already: remove it to make a new one",
            path.display()
        );
    }
    write_file(&key, &issued.key, 0o600)?;
    write_file(&cert, &issued.cert, 0o644)?;
    Ok((cert, key))
}

/// Writes a certificate and its key over the ones in `dir` (re-issuing
/// one), each file replaced whole at once (written beside, then renamed):
/// a node that reloads meanwhile reads the old pair or the new one. The
/// key goes first, so a node reading between the two renames finds a
/// certificate that does not match its key and keeps the ones it has.
pub fn replace(dir: &Path, stem: &str, issued: &Issued) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}-key.pem"));
    for (path, text, mode) in [(&key, &issued.key, 0o600), (&cert, &issued.cert, 0o644)] {
        let beside = dir.join(format!(
            ".{}.new",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_file(&beside);
        write_file(&beside, text, mode)?;
        std::fs::rename(&beside, path)
            .with_context(|| format!("moving {} into place", path.display()))?;
    }
    Ok((cert, key))
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads the CA a directory holds.
pub fn read_ca(dir: &Path) -> anyhow::Result<Issued> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (make the CA first: discoveryctl certs init)",
                path.display()
            )
        })
    };
    Ok(Issued {
        cert: read(CA_CERT)?,
        key: read(CA_KEY)?,
    })
}

/// The identity the first certificate of a PEM file carries.
pub fn identity_of(path: &Path) -> anyhow::Result<Identity> {
    Ok(describe(path)?.0)
}

/// The identity the first certificate of a PEM file carries, and when it
/// expires.
pub fn describe(path: &Path) -> anyhow::Result<(Identity, String)> {
    let cert = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading a certificate from {}", path.display()))?;
    let at = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    Ok((
        Identity::of_certificate(&cert).map_err(at)?,
        not_after(&cert).map_err(at)?,
    ))
}

/// When a certificate (DER) expires.
pub fn not_after(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(cert.validity().not_after.to_string())
}

/// One node a zone's certificates are made for.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub id: NodeId,
    /// The names and addresses its peers dial it by.
    pub hosts: Vec<String>,
}

/// Makes what a zone lacks, and leaves what it has: the zone's CA in
/// `ca_dir` unless there is one, its certificate copied to `dir`, each
/// node's certificate in `dir` unless one carrying the node's identity
/// exists (one without, from before identities, is made anew), and with
/// `link`, the zone's link certificate `link.pem`. For setups that run it
/// on every start (the compose clusters). Returns what it made.
pub fn ensure_cluster(
    ca_dir: &Path,
    dir: &Path,
    zone: &str,
    nodes: &[NodeSpec],
    link: bool,
    days: i64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    if !ca_dir.join(CA_CERT).exists() {
        let (cert, _) = write(
            ca_dir,
            "ca",
            &new_ca(&format!("raft-discovery CA of zone {zone}"), 3650)?,
        )?;
        made.push(cert);
    }
    let ca = read_ca(ca_dir)?;
    let shared = dir.join(CA_CERT);
    if ca_dir.join(CA_CERT) != shared {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&shared, &ca.cert)
            .with_context(|| format!("writing {}", shared.display()))?;
    }
    let zone = zone.to_string();
    let mut wanted: Vec<(&str, Identity, &[String])> = nodes
        .iter()
        .map(|n| {
            let id = Identity::Node {
                zone: zone.clone(),
                id: n.id,
            };
            (n.name.as_str(), id, n.hosts.as_slice())
        })
        .collect();
    if link {
        wanted.push(("link", Identity::Link { zone: zone.clone() }, &[]));
    }
    for (name, identity, hosts) in wanted {
        let cert = dir.join(format!("{name}.pem"));
        if cert.exists() {
            if identity_of(&cert).is_ok_and(|had| had == identity) {
                continue;
            }
            std::fs::remove_file(&cert).with_context(|| format!("replacing {}", cert.display()))?;
            let _ = std::fs::remove_file(dir.join(format!("{name}-key.pem")));
        }
        let (cert, _) = write(dir, name, &node_cert(&ca, &identity, name, hosts, days)?)?;
        made.push(cert);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_is_signed_by_its_ca() {
        let ca = new_ca("test CA", 30).unwrap();
        let me = Identity::Node {
            zone: "sh001".into(),
            id: 1,
        };
        let hosts = ["127.0.0.1".into(), "node1".into()];
        let node = node_cert(&ca, &me, "node1", &hosts, 30).unwrap();
        assert!(node.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write(dir.path(), "node1", &node).unwrap();
        assert!(cert.exists() && key.exists());
        assert_eq!(identity_of(&cert).unwrap(), me);
        assert!(write(dir.path(), "node1", &node).is_err(), "overwrote");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others");
    }

    #[test]
    fn ensure_cluster_makes_only_what_is_missing() {
        let ca_dir = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![NodeSpec {
            name: "node1".into(),
            id: 1,
            hosts: vec!["raft-node1".into()],
        }];
        let made = ensure_cluster(ca_dir.path(), dir.path(), "sh001", &nodes, true, 30).unwrap();
        assert_eq!(made.len(), 3, "{made:?}");
        assert!(dir.path().join(CA_CERT).exists());
        assert!(!dir.path().join(CA_KEY).exists(), "the CA key left its dir");
        assert_eq!(
            identity_of(&dir.path().join("link.pem")).unwrap(),
            Identity::Link {
                zone: "sh001".into()
            }
        );
        let again = ensure_cluster(ca_dir.path(), dir.path(), "sh001", &nodes, true, 30).unwrap();
        assert!(again.is_empty(), "{again:?}");
        // A certificate of another identity (another id, or none at all)
        // is made anew.
        let renumbered = vec![NodeSpec {
            id: 7,
            ..nodes[0].clone()
        }];
        let made =
            ensure_cluster(ca_dir.path(), dir.path(), "sh001", &renumbered, false, 30).unwrap();
        assert_eq!(made, vec![dir.path().join("node1.pem")]);
        assert_eq!(
            identity_of(&made[0]).unwrap(),
            Identity::Node {
                zone: "sh001".into(),
                id: 7
            }
        );
    }
}
