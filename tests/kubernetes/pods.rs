//! Pods as the kubelet would start them from rendered manifests, as
//! processes on this machine. From the YAML `kubectl kustomize` prints it
//! takes each StatefulSet's container: its command and arguments, its
//! environment (values with `$(VAR)` expanded as Kubernetes does, the
//! downward API's pod name, namespace and IP, Secret keys), its working
//! directory and what each volume mounts there (ConfigMaps, Secrets and
//! projected Secrets with `subPathExpr`, claims, emptyDirs), and its
//! probes. Process N gets pod N's name and files; what Kubernetes would
//! give differently is exactly this, and documented in docs/kubernetes.md:
//!
//! - the pod's IP is a loopback address of its own (127.0.S.10+N);
//! - the names the headless Service gives pods resolve to those addresses
//!   through `node.hosts_file` (DISCOVERY_NODE_HOSTS_FILE), the one
//!   variable added;
//! - mounts land under a directory that stands for the working directory
//!   (every mount must be below it), and `/bin/discovery` is the binary
//!   cargo built.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_yaml::Value as Yaml;

/// Whether the tests must run kubectl (CI), rather than skip without it.
pub fn kubectl_required() -> bool {
    std::env::var_os("DISCOVERY_REQUIRE_KUBECTL").is_some()
}

/// `kubectl kustomize` of an overlay of deploy/kubernetes, as text; none
/// (the test skips) without kubectl, unless it is required.
pub fn render(overlay: &str) -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes/overlays")
        .join(overlay);
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if !kubectl_required() => {
            eprintln!(
                "skipped: kubectl does not run ({e}); DISCOVERY_REQUIRE_KUBECTL=1 fails instead"
            );
            return None;
        }
        Err(e) => panic!("kubectl does not run: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 YAML"))
}

/// Every document of a YAML stream.
pub fn documents(text: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).expect("YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

use serde::Deserialize;

fn s(v: &Yaml) -> &str {
    v.as_str().unwrap_or_default()
}

fn seq(v: &Yaml) -> Vec<Yaml> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// Expands `$(VAR)` from `vars` as Kubernetes does: `$$` is `$`, an
/// unknown variable stays as written.
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Secrets by name, each key's bytes.
pub type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// The Secrets of YAML documents (`data` in base64).
pub fn secrets_of(text: &str) -> Secrets {
    documents(text)
        .iter()
        .filter(|d| s(&d["kind"]) == "Secret")
        .map(|d| {
            let data = d["data"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(s(v))
                        .expect("base64");
                    (s(k).to_string(), bytes)
                })
                .collect();
            (s(&d["metadata"]["name"]).to_string(), data)
        })
        .collect()
}

/// A rendered overlay, and what this machine stands in for: pods'
/// addresses, the name resolution, the volumes' storage.
pub struct World {
    pub docs: Vec<Yaml>,
    pub secrets: Secrets,
    pub dir: PathBuf,
    pub hosts_file: PathBuf,
    /// Each pod's address.
    pub ips: BTreeMap<String, Ipv4Addr>,
}

impl World {
    /// `docs` on addresses 127.0.`subnet`.10 and up, one per pod of each
    /// StatefulSet up to `most` (its replicas, or more to scale to).
    pub fn new(docs: Vec<Yaml>, secrets: Secrets, dir: &Path, subnet: u8, most: usize) -> World {
        let mut ips = BTreeMap::new();
        let mut hosts = String::new();
        let mut next = 10u8;
        for set in docs.iter().filter(|d| s(&d["kind"]) == "StatefulSet") {
            let name = s(&set["metadata"]["name"]);
            let ns = s(&set["metadata"]["namespace"]);
            let service = s(&set["spec"]["serviceName"]);
            for n in 0..most {
                let pod = format!("{name}-{n}");
                let ip = Ipv4Addr::new(127, 0, subnet, next);
                next += 1;
                hosts.push_str(&format!(
                    "{ip} {pod}.{service} {pod}.{service}.{ns}.svc {pod}.{service}.{ns}.svc.cluster.local\n"
                ));
                ips.insert(pod, ip);
            }
        }
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        World {
            docs,
            secrets,
            dir: dir.to_path_buf(),
            hosts_file,
            ips,
        }
    }

    pub fn statefulset(&self, name: &str) -> Yaml {
        self.docs
            .iter()
            .find(|d| s(&d["kind"]) == "StatefulSet" && s(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no StatefulSet {name}"))
            .clone()
    }

    fn config_map(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let doc = self
            .docs
            .iter()
            .find(|d| s(&d["kind"]) == "ConfigMap" && s(&d["metadata"]["name"]) == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        doc["data"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| (s(k).to_string(), s(v).as_bytes().to_vec()))
            .collect()
    }

    /// Pod `ordinal` of StatefulSet `set` (not started).
    pub fn pod(&self, set: &str, ordinal: usize) -> Pod {
        let spec = self.statefulset(set);
        let name = format!("{set}-{ordinal}");
        let ip = self.ips[&name];
        let root = self.dir.join("pods").join(&name);
        std::fs::create_dir_all(&root).unwrap();
        Pod {
            name,
            ip,
            spec,
            root,
            child: None,
        }
    }
}

/// One pod: its spec, its address, where its working directory stands,
/// its process while it runs.
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    spec: Yaml,
    /// Stands for the container's working directory.
    pub root: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Pod {
    fn container(&self) -> Yaml {
        seq(&self.spec["spec"]["template"]["spec"]["containers"])[0].clone()
    }

    pub fn namespace(&self) -> String {
        s(&self.spec["metadata"]["namespace"]).to_string()
    }

    /// The container's port named `name`.
    pub fn port(&self, name: &str) -> u16 {
        seq(&self.container()["ports"])
            .iter()
            .find(|p| s(&p["name"]) == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port {name}")) as u16
    }

    /// The container's environment as the kubelet makes it.
    fn env(&self, world: &World) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = Vec::new();
        for var in seq(&self.container()["env"]) {
            let name = s(&var["name"]).to_string();
            let value = if let Some(v) = var["value"].as_str() {
                expand(v, &vars)
            } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match field {
                    "metadata.name" => self.name.clone(),
                    "metadata.namespace" => self.namespace(),
                    "status.podIP" => self.ip.to_string(),
                    other => panic!("downward API field {other} is not emulated"),
                }
            } else if var["valueFrom"]["secretKeyRef"].is_mapping() {
                let r = &var["valueFrom"]["secretKeyRef"];
                let bytes = &world.secrets[s(&r["name"])][s(&r["key"])];
                String::from_utf8(bytes.clone()).unwrap()
            } else {
                panic!("env {name}: {var:?} is not emulated")
            };
            vars.push((name, value));
        }
        vars
    }

    /// Writes `files` (relative path, bytes, mode) under `dir`, afresh.
    fn fill(dir: &Path, files: &[(String, Vec<u8>)], mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        for (path, bytes) in files {
            let to = dir.join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(&to, bytes).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    /// Mounts every volume of the pod under its working directory: a new
    /// pod (emptyDirs empty), on its claims as they are.
    fn mount(&self, world: &World, env: &[(String, String)]) {
        let template = &self.spec["spec"]["template"]["spec"];
        let container = self.container();
        let working = s(&container["workingDir"]).to_string();
        assert!(
            working.starts_with('/'),
            "the container names its working directory"
        );
        let volumes = seq(&template["volumes"]);
        let claims = seq(&self.spec["spec"]["volumeClaimTemplates"]);
        for mount in seq(&container["volumeMounts"]) {
            let path = s(&mount["mountPath"]);
            let rel = path
                .strip_prefix(&format!("{working}/"))
                .unwrap_or_else(|| panic!("{path} is not under the working directory {working}"));
            let local = self.root.join(rel);
            let name = s(&mount["name"]);
            if claims.iter().any(|c| s(&c["metadata"]["name"]) == name) {
                std::fs::create_dir_all(&local).unwrap();
                continue;
            }
            let volume = volumes
                .iter()
                .find(|v| s(&v["name"]) == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let mode = |v: &Yaml| v["defaultMode"].as_u64().unwrap_or(0o644) as u32;
            let mut files: Vec<(String, Vec<u8>)> = Vec::new();
            let from_secret = |secret: &Yaml, files: &mut Vec<(String, Vec<u8>)>| {
                let secret_name = s(&secret["name"]).to_string();
                let secret_name = if secret_name.is_empty() {
                    s(&secret["secretName"]).to_string()
                } else {
                    secret_name
                };
                let Some(data) = world.secrets.get(&secret_name) else {
                    assert!(
                        secret["optional"].as_bool() == Some(true),
                        "Secret {secret_name} is missing"
                    );
                    return;
                };
                match secret["items"].as_sequence() {
                    Some(items) => {
                        for item in items {
                            files
                                .push((s(&item["path"]).to_string(), data[s(&item["key"])].clone()))
                        }
                    }
                    None => files.extend(data.iter().map(|(k, v)| (k.clone(), v.clone()))),
                }
            };
            let m = if volume["configMap"].is_mapping() {
                let data = world.config_map(s(&volume["configMap"]["name"]));
                files.extend(data);
                mode(&volume["configMap"])
            } else if volume["secret"].is_mapping() {
                from_secret(&volume["secret"], &mut files);
                mode(&volume["secret"])
            } else if volume["projected"].is_mapping() {
                for source in seq(&volume["projected"]["sources"]) {
                    from_secret(&source["secret"], &mut files);
                }
                mode(&volume["projected"])
            } else if volume["emptyDir"].is_mapping() {
                0o644
            } else {
                panic!("volume {name}: {volume:?} is not emulated")
            };
            if let Some(sub) = mount["subPathExpr"].as_str() {
                let sub = format!("{}/", expand(sub, env));
                files = files
                    .into_iter()
                    .filter_map(|(p, b)| p.strip_prefix(&sub).map(|p| (p.to_string(), b)))
                    .collect();
            }
            Self::fill(&local, &files, m);
        }
    }

    /// Starts the pod's container, logging to `<root>.log`.
    pub fn start(&mut self, world: &World) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        let env = self.env(world);
        self.mount(world, &env);
        let container = self.container();
        let mut argv: Vec<String> = seq(&container["command"])
            .iter()
            .chain(seq(&container["args"]).iter())
            .map(|a| expand(s(a), &env))
            .collect();
        assert_eq!(argv[0], "/bin/discovery", "the image's entry point");
        argv[0] = env!("CARGO_BIN_EXE_discovery").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().cloned())
            .env("DISCOVERY_NODE_HOSTS_FILE", &world.hosts_file)
            .current_dir(&self.root)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("the node starts");
        self.child = Some(child);
    }

    pub fn log(&self) -> PathBuf {
        self.root.with_extension("log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// What the kubelet does to stop a pod: SIGTERM, then SIGKILL after
    /// the grace period. Answers whether it exited within the grace.
    pub async fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let grace = self.spec["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        if let Some(pid) = child.id() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(grace), child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                let _ = child.kill().await;
                false
            }
        }
    }

    /// The machine under it dies.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Whether the process has exited on its own (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The pod's claim named `claim` (its directory), as the node sees it.
    pub fn claim(&self, claim: &str) -> PathBuf {
        let container = self.container();
        let working = s(&container["workingDir"]).to_string();
        let mount = seq(&container["volumeMounts"])
            .into_iter()
            .find(|m| s(&m["name"]) == claim)
            .unwrap_or_else(|| panic!("no mount of {claim}"));
        self.root.join(
            s(&mount["mountPath"])
                .strip_prefix(&format!("{working}/"))
                .unwrap(),
        )
    }

    /// A client of the pod's client port.
    pub fn client(&self) -> super::common::Client {
        super::common::Client {
            base: format!("http://{}:{}", self.ip, self.port("client")),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// What the readiness probe sees: its path answers 200.
    pub async fn ready(&self) -> bool {
        self.probe("readinessProbe").await
    }

    /// What the liveness probe sees.
    pub async fn live(&self) -> bool {
        self.probe("livenessProbe").await
    }

    async fn probe(&self, which: &str) -> bool {
        let get = &self.container()[which]["httpGet"];
        let port = match &get["port"] {
            Yaml::Number(n) => n.as_u64().unwrap() as u16,
            named => self.port(s(named)),
        };
        let url = format!("http://{}:{port}{}", self.ip, s(&get["path"]));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| (200..400).contains(&r.status().as_u16()))
    }

    /// Waits until the readiness probe passes.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.ready().await {
            if let Some(status) = self.exited() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready within {within:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[test]
fn expansion_follows_kubernetes() {
    let vars = vec![("A".to_string(), "x".to_string())];
    assert_eq!(expand("$(A).$(B)", &vars), "x.$(B)");
    assert_eq!(expand("$$(A) $ $(A", &vars), "$(A) $ $(A");
}
