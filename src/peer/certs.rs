//! Making the cluster's certificates, so a new user needs no openssl
//! recipe: a CA, then one certificate per node signed by it, each usable
//! both to serve peers and to call them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

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

/// A node certificate for `hosts` (names or IP addresses peers dial it
/// by), signed by the CA, valid from `not_before` to `not_after`.
pub fn node_cert_between(
    ca: &Issued,
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
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Each node both serves its peers and calls them.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A node certificate valid for `days` from now.
pub fn node_cert(ca: &Issued, name: &str, hosts: &[String], days: i64) -> anyhow::Result<Issued> {
    let now = OffsetDateTime::now_utc();
    node_cert_between(
        ca,
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

/// Makes what a cluster lacks, and leaves what it has: the CA in `ca_dir`
/// unless there is one, its certificate copied to `dir`, and each node's
/// certificate in `dir` unless it exists. For setups that run it on every
/// start (the compose cluster). Returns what it made.
pub fn ensure_cluster(
    ca_dir: &Path,
    dir: &Path,
    nodes: &[(String, Vec<String>)],
    days: i64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    if !ca_dir.join(CA_CERT).exists() {
        let (cert, _) = write(ca_dir, "ca", &new_ca("raft-discovery cluster CA", 3650)?)?;
        made.push(cert);
    }
    let ca = read_ca(ca_dir)?;
    let shared = dir.join(CA_CERT);
    if ca_dir.join(CA_CERT) != shared {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&shared, &ca.cert)
            .with_context(|| format!("writing {}", shared.display()))?;
    }
    for (name, hosts) in nodes {
        if !dir.join(format!("{name}.pem")).exists() {
            let (cert, _) = write(dir, name, &node_cert(&ca, name, hosts, days)?)?;
            made.push(cert);
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_is_signed_by_its_ca() {
        let ca = new_ca("test CA", 30).unwrap();
        let node = node_cert(&ca, "node1", &["127.0.0.1".into(), "node1".into()], 30).unwrap();
        assert!(node.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write(dir.path(), "node1", &node).unwrap();
        assert!(cert.exists() && key.exists());
        assert!(write(dir.path(), "node1", &node).is_err(), "overwrote");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others");
    }

    #[test]
    fn ensure_cluster_makes_only_what_is_missing() {
        let ca_dir = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![("node1".to_string(), vec!["raft-node1".to_string()])];
        let made = ensure_cluster(ca_dir.path(), dir.path(), &nodes, 30).unwrap();
        assert_eq!(made.len(), 2);
        assert!(dir.path().join(CA_CERT).exists());
        assert!(!dir.path().join(CA_KEY).exists(), "the CA key left its dir");
        let again = ensure_cluster(ca_dir.path(), dir.path(), &nodes, 30).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
}
