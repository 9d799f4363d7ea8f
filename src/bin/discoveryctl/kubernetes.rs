//! `discoveryctl certs kubernetes`: a zone's certificates as the Secrets
//! the manifests of `deploy/kubernetes` mount, printed as YAML for
//! `kubectl apply -f -`. Certificates already made in the directory are
//! kept (pass `--reissue` to make the nodes' anew, the CA kept), so the
//! same command serves the first install, scaling read replicas up, and
//! rotation.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use raft_discovery::peer::certs;

/// What the Secrets are for: the StatefulSets' pods and their names.
#[derive(clap::Args)]
pub struct Kubernetes {
    /// The namespace the manifests are applied to (their names carry it).
    #[arg(long, default_value = "discovery")]
    namespace: String,
    /// The zone (node.zone); each zone has its own CA.
    #[arg(long, default_value = "sh001")]
    zone: String,
    /// What the overlay prefixes names with (`sh001-` in
    /// overlays/two-zones).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Voters: pods `discovery-0` .. of the StatefulSet `discovery`, ids
    /// from 1.
    #[arg(long, default_value_t = 3)]
    voters: u64,
    /// Read replicas: pods `discovery-replica-0` .., ids from 101.
    #[arg(long, default_value_t = 0)]
    replicas: u64,
    /// Also the zone's link certificate, as the Secret
    /// `discovery-link-ZONE`.
    #[arg(long)]
    link: bool,
    /// Also `discovery-zone-cas`, each named zone's CA certificate
    /// (ZONE=PATH, repeated), which the other zones trust for its link.
    #[arg(long = "zone-ca", value_name = "ZONE=PATH")]
    zone_cas: Vec<String>,
    /// Make every node's certificate anew (rotation); the CA is kept.
    #[arg(long)]
    reissue: bool,
    /// Where the zone's CA (and its key: keep it off the cluster) and the
    /// certificates are kept.
    #[arg(long, default_value = "certs")]
    dir: PathBuf,
    #[arg(long, default_value_t = 825)]
    days: i64,
}

/// The headless Service and the StatefulSets of `deploy/kubernetes`.
const PEER_SERVICE: &str = "discovery-peer";
const VOTERS: (&str, u64) = ("discovery", 1);
const REPLICAS: (&str, u64) = ("discovery-replica", 101);

/// Each pod's name and node id.
fn pods(k: &Kubernetes) -> Vec<(String, u64)> {
    [(VOTERS, k.voters), (REPLICAS, k.replicas)]
        .into_iter()
        .flat_map(|((name, base), count)| {
            (0..count).map(move |n| (format!("{}{name}-{n}", k.prefix), base + n))
        })
        .collect()
}

/// The names peers dial pod `pod` by: short, in the namespace, and whole.
fn hosts(k: &Kubernetes, pod: &str) -> Vec<String> {
    let service = format!("{}{PEER_SERVICE}", k.prefix);
    let ns = &k.namespace;
    vec![
        format!("{pod}.{service}"),
        format!("{pod}.{service}.{ns}.svc"),
        format!("{pod}.{service}.{ns}.svc.cluster.local"),
    ]
}

pub fn run(k: Kubernetes) -> anyhow::Result<()> {
    let pods = pods(&k);
    if k.voters + k.replicas > 0 || k.link {
        if k.reissue {
            for (pod, _) in &pods {
                for file in [format!("{pod}.pem"), format!("{pod}-key.pem")] {
                    match std::fs::remove_file(k.dir.join(&file)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).context(file)
                        }
                        _ => {}
                    }
                }
            }
        }
        let nodes: Vec<certs::NodeSpec> = pods
            .iter()
            .map(|(pod, id)| certs::NodeSpec {
                name: pod.clone(),
                id: *id,
                hosts: hosts(&k, pod),
            })
            .collect();
        for made in certs::ensure_cluster(&k.dir, &k.dir, &k.zone, &nodes, k.link, k.days)? {
            eprintln!("made {}", made.display());
        }
    }
    let mut out = String::new();
    let read = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = k.dir.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    for (pod, _) in &pods {
        let data = [
            ("ca.crt", read("ca.pem")?),
            ("tls.crt", read(&format!("{pod}.pem"))?),
            ("tls.key", read(&format!("{pod}-key.pem"))?),
        ];
        out.push_str(&secret(
            &format!("discovery-tls-{pod}"),
            &k.namespace,
            &data,
        ));
    }
    if k.link {
        let data = [
            ("tls.crt", read("link.pem")?),
            ("tls.key", read("link-key.pem")?),
        ];
        let name = format!("discovery-link-{}", k.zone);
        out.push_str(&secret(&name, &k.namespace, &data));
    }
    if !k.zone_cas.is_empty() {
        let mut data = Vec::new();
        for spec in &k.zone_cas {
            let (zone, path) = spec
                .split_once('=')
                .with_context(|| format!("--zone-ca {spec:?}: expected ZONE=PATH"))?;
            let pem = std::fs::read(Path::new(path)).with_context(|| format!("reading {path}"))?;
            data.push((format!("{zone}.crt"), pem));
        }
        let data: Vec<(&str, Vec<u8>)> =
            data.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        out.push_str(&secret("discovery-zone-cas", &k.namespace, &data));
    }
    print!("{out}");
    Ok(())
}

/// One Secret as a YAML document.
fn secret(name: &str, namespace: &str, data: &[(&str, Vec<u8>)]) -> String {
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         labels:\n    app.kubernetes.io/part-of: raft-discovery\ntype: Opaque\ndata:\n"
    );
    for (key, value) in data {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        yaml.push_str(&format!("  {key}: {encoded}\n"));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(prefix: &str, voters: u64, replicas: u64) -> Kubernetes {
        Kubernetes {
            namespace: "ns".into(),
            zone: "sh001".into(),
            prefix: prefix.into(),
            voters,
            replicas,
            link: false,
            zone_cas: Vec::new(),
            reissue: false,
            dir: PathBuf::from("certs"),
            days: 1,
        }
    }

    #[test]
    fn pods_are_named_and_numbered_as_the_statefulsets_make_them() {
        assert_eq!(
            pods(&k("", 3, 2)),
            vec![
                ("discovery-0".to_string(), 1),
                ("discovery-1".to_string(), 2),
                ("discovery-2".to_string(), 3),
                ("discovery-replica-0".to_string(), 101),
                ("discovery-replica-1".to_string(), 102),
            ]
        );
        assert_eq!(
            hosts(&k("sh002-", 1, 0), "sh002-discovery-0")[1],
            "sh002-discovery-0.sh002-discovery-peer.ns.svc"
        );
    }

    #[test]
    fn a_secret_carries_each_file_in_base64() {
        let yaml = secret("s", "ns", &[("tls.crt", b"abc".to_vec())]);
        assert!(yaml.contains("  name: s\n  namespace: ns\n"));
        assert!(yaml.ends_with("data:\n  tls.crt: YWJj\n"));
    }
}
