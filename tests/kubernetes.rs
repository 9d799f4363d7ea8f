//! The Kubernetes manifests of deploy/kubernetes: every overlay renders
//! (`kubectl kustomize`) and validates strictly against the API schemas of
//! the Kubernetes versions docs/kubernetes.md names (`kubernetes-validate`
//! from PyPI, installed into cargo's scratch directory); and nodes started
//! exactly as the rendered StatefulSets would start them (see `pods`) form
//! one cluster, turn ready only once caught up, keep their identity when
//! rescheduled, rejoin from an empty volume, and, as read replicas, join
//! and leave by themselves.
//!
//! Without kubectl these tests skip; DISCOVERY_REQUIRE_KUBECTL=1 (CI)
//! makes them fail instead.

mod common;
#[path = "kubernetes/pods.rs"]
mod pods;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{hostnames, Client};
use pods::{documents, render, secrets_of, Pod, World};
use raft_discovery::cluster::link::LinkError;
use raft_discovery::cluster::replica;
use raft_discovery::peer::client::{Hosts, PeerClient};
use raft_discovery::peer::identity::Identity;
use raft_discovery::peer::tls::{CertFiles, PeerTls};
use raft_discovery::raft::Member;
use serde_json::Value;

/// The Kubernetes versions docs/kubernetes.md says the manifests support.
const VERSIONS: [&str; 6] = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"];

/// The overlays, every directory of deploy/kubernetes/overlays.
const OVERLAYS: [&str; 3] = ["read-replicas", "three-voters", "two-zones"];

/// Where Python imports kubernetes-validate from, installing it first.
fn validator() -> PathBuf {
    common::python_package(
        "kubernetes-validate",
        "kubernetes_validate",
        "kubernetes-validate==1.37.0",
    )
}

/// Runs kubernetes-validate --strict on `files` for `version`: its output
/// when it refuses.
fn validate(files: &[PathBuf], version: &str) -> Result<(), String> {
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            version,
        ])
        .args(files)
        .env("PYTHONPATH", validator())
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/overlays");
    let found: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        found,
        OVERLAYS.map(String::from).into(),
        "an overlay is not tested"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for overlay in OVERLAYS {
        let Some(text) = render(overlay) else { return };
        assert!(!documents(&text).is_empty(), "{overlay} renders nothing");
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &text).unwrap();
        files.push(file);
    }
    for version in VERSIONS {
        if let Err(why) = validate(&files, version) {
            panic!("against Kubernetes {version}:\n{why}");
        }
    }
    // Strict means strict: a misspelt field fails.
    let text = std::fs::read_to_string(&files[1]).unwrap();
    let typo = text.replace(
        "terminationGracePeriodSeconds",
        "terminationGracePeriodSecond",
    );
    assert_ne!(typo, text);
    let file = dir.path().join("typo.yaml");
    std::fs::write(&file, typo).unwrap();
    assert!(
        validate(&[file], VERSIONS[0]).is_err(),
        "a misspelt field passed"
    );
}

/// A rendered overlay, its Secrets made with the documented command
/// (`discoveryctl certs kubernetes`) and the admin token's, on its own
/// loopback subnet.
fn world(overlay: &str, dir: &Path, subnet: u8, replicas: u64) -> Option<World> {
    let text = render(overlay)?;
    let docs = documents(&text);
    let ns = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .and_then(|d| d["metadata"]["namespace"].as_str())
        .expect("a namespace")
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["certs", "kubernetes", "--namespace", &ns, "--voters", "3"])
        .args(["--replicas", &replicas.to_string(), "--dir"])
        .arg(dir.join("certs"))
        .output()
        .expect("discoveryctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut secrets = secrets_of(&String::from_utf8(out.stdout).unwrap());
    secrets.insert(
        "discovery-admin".into(),
        [("token".to_string(), b"k8s-test-token".to_vec())].into(),
    );
    Some(World::new(docs, secrets, dir, subnet, 4))
}

/// A peer client holding `pod`'s certificate (node `id`), dialling pods'
/// names at the test's addresses.
fn replica_link(world: &World, dir: &Path, pod: &str, id: u64) -> PeerClient {
    let secret = &world.secrets[&format!("discovery-tls-{pod}")];
    let files = dir.join(format!("{pod}-tls"));
    std::fs::create_dir_all(&files).unwrap();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(files.join(key), &secret[key]).unwrap();
    }
    let tls = PeerTls::load(
        &CertFiles {
            ca: files.join("ca.crt"),
            cert: files.join("tls.crt"),
            key: files.join("tls.key"),
            link: None,
            zone_cas: Default::default(),
        },
        &Identity::Node {
            zone: "sh001".into(),
            id,
        },
    )
    .expect("the pod's certificate");
    PeerClient::resolving(Some(&tls), Hosts::read(&world.hosts_file).unwrap()).unwrap()
}

async fn status(pod: &Pod) -> Value {
    pod.client().status().await
}

/// Waits until `check` holds of `pod`'s status.
async fn wait_status(pod: &Pod, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Ok(answer)) = tokio::time::timeout(
            Duration::from_secs(5),
            pod.client()
                .http
                .get(pod.client().base + "/admin/status")
                .send(),
        )
        .await
        {
            if let Ok(v) = answer.json::<Value>().await {
                if check(&v) {
                    return v;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "{}: {what} never held; status {v}\n{}",
                        pod.name,
                        pod.log_text()
                    );
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: {what} never held\n{}",
            pod.name,
            pod.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(v: &Value) -> BTreeSet<u64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

fn members(v: &Value) -> BTreeSet<u64> {
    v["members"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.parse().ok())
        .collect()
}

async fn register_many(c: &Client, appid: &str, from: usize, to: usize) {
    for n in from..to {
        let a = c.register(appid, "sh001", &format!("host-{n}"), "1").await;
        assert_eq!(a.code(), 0, "register host-{n}: {}", a.text);
    }
}

fn expected(to: usize) -> BTreeSet<String> {
    (0..to).map(|n| format!("host-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_form_one_cluster_keep_identity_and_rejoin_from_an_empty_volume() {
    let dir = tempfile::tempdir().unwrap();
    let Some(world) = world("three-voters", dir.path(), 1, 0) else {
        return;
    };
    let mut pods: Vec<Pod> = (0..3).map(|n| world.pod("discovery", n)).collect();
    // podManagementPolicy: Parallel.
    for pod in &mut pods {
        pod.start(&world);
    }
    for pod in &mut pods {
        pod.wait_ready(Duration::from_secs(60)).await;
    }
    // One cluster: each pod node ordinal+1, named as its pod, one leader,
    // one cluster id, the three voters.
    let first = status(&pods[0]).await;
    let cluster = first["cluster_id"].clone();
    assert!(cluster.is_string(), "{first}");
    for (n, pod) in pods.iter().enumerate() {
        let v = wait_status(pod, "the three voters known", |v| {
            ids(&v["voters"]) == BTreeSet::from([1, 2, 3]) && v["leader"].is_u64()
        })
        .await;
        assert_eq!(v["id"], n as u64 + 1, "{v}");
        assert_eq!(v["cluster_id"], cluster, "{v}");
        assert_eq!(v["members"][(n + 1).to_string()]["name"], pod.name, "{v}");
        assert!(pod.live().await);
    }
    // Clients are told each pod's stable name.
    let nodes = pods[2].client().get("/discovery/nodes").await.json();
    let told: BTreeSet<String> = nodes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["addr"].as_str().unwrap().to_string())
        .collect();
    let ns = pods[0].namespace();
    assert_eq!(
        told,
        (0..3)
            .map(|n| format!("discovery-{n}.discovery-peer.{ns}.svc:7171"))
            .collect::<BTreeSet<_>>(),
        "{nodes}"
    );
    register_many(&pods[1].client(), "k8s.app", 0, 50).await;

    // Rescheduled: the process stops (SIGTERM, as the kubelet does) and
    // starts again on its claim: the same node, the same cluster, nothing
    // added to the membership.
    assert!(
        pods[1].terminate().await,
        "discovery-1 outlived its grace period"
    );
    pods[1].start(&world);
    pods[1].wait_ready(Duration::from_secs(60)).await;
    let v = status(&pods[1]).await;
    assert_eq!(
        (v["id"].clone(), v["cluster_id"].clone()),
        (2.into(), cluster.clone()),
        "{v}"
    );
    assert_eq!(members(&v), BTreeSet::from([1, 2, 3]), "{v}");
    assert_eq!(hostnames(&pods[1].client(), "k8s.app").await, expected(50));

    // Readiness follows the catch-up: discovery-2 is away while writes go
    // on, and from the first moment its probe passes it serves them all.
    assert!(pods[2].terminate().await);
    register_many(&pods[0].client(), "k8s.app", 50, 150).await;
    pods[2].start(&world);
    pods[2].wait_ready(Duration::from_secs(60)).await;
    assert_eq!(
        hostnames(&pods[2].client(), "k8s.app").await,
        expected(150),
        "ready before it caught up"
    );

    // An empty volume (the claim deleted, the pod rescheduled): it does not
    // form a cluster of its own, gives its vote up, rebuilds from the
    // cluster as a learner, and votes again.
    pods[2].kill().await;
    let claim = pods[2].claim("data");
    std::fs::remove_dir_all(&claim).unwrap();
    register_many(&pods[0].client(), "k8s.app", 150, 160).await;
    pods[2].start(&world);
    pods[2].wait_ready(Duration::from_secs(60)).await;
    assert_eq!(hostnames(&pods[2].client(), "k8s.app").await, expected(160));
    let v = wait_status(&pods[2], "a voter again, of the same cluster", |v| {
        ids(&v["voters"]) == BTreeSet::from([1, 2, 3])
            && v["members"]["3"]["rebuilding"] != true
            && v["cluster_id"] == cluster
    })
    .await;
    assert_eq!(v["id"], 3, "{v}");
    assert!(
        pods[2]
            .log_text()
            .contains("this voter's data directory is empty and its cluster exists"),
        "it did not rebuild as a learner:\n{}",
        pods[2].log_text()
    );
    for pod in &pods[..2] {
        let v = status(pod).await;
        assert_eq!(v["cluster_id"], cluster, "{v}");
        assert_eq!(members(&v), BTreeSet::from([1, 2, 3]), "{v}");
    }
    // Writes go on with all three.
    register_many(&pods[2].client(), "k8s.app", 160, 170).await;
    assert_eq!(hostnames(&pods[0].client(), "k8s.app").await, expected(170));
    // A backup as docs/kubernetes.md takes it: discoveryctl in the pod,
    // with the pod's environment (its admin token), to standard output.
    let backup = Command::new(env!("CARGO_BIN_EXE_discoveryctl"))
        .args(["--node", &format!("{}:7171", pods[0].ip), "backup", "-"])
        .env("DISCOVERY_ADMIN_TOKEN", "k8s-test-token")
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let backup: Value = serde_json::from_slice(&backup.stdout).expect("a backup on stdout");
    let apps = backup["registry"]["apps"].as_array().expect("apps");
    let app = apps
        .iter()
        .find(|a| a["appid"] == "k8s.app")
        .expect("the app");
    assert_eq!(app["instances"].as_array().unwrap().len(), 170);
    for pod in &mut pods {
        pod.terminate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_replicas_join_serve_polls_and_leave_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let Some(world) = world("read-replicas", dir.path(), 2, 3) else {
        return;
    };
    let set = world.statefulset("discovery-replica");
    let replicas = set["spec"]["replicas"].as_u64().unwrap() as usize;
    assert!(replicas >= 2, "the overlay runs {replicas} replicas");
    let mut voters: Vec<Pod> = (0..3).map(|n| world.pod("discovery", n)).collect();
    let mut learners: Vec<Pod> = (0..replicas)
        .map(|n| world.pod("discovery-replica", n))
        .collect();
    for pod in voters.iter_mut().chain(learners.iter_mut()) {
        pod.start(&world);
    }
    for pod in voters.iter_mut().chain(learners.iter_mut()) {
        pod.wait_ready(Duration::from_secs(90)).await;
    }
    let learner_ids: BTreeSet<u64> = (0..replicas as u64).map(|n| 101 + n).collect();
    let all: BTreeSet<u64> = [1, 2, 3].into_iter().chain(learner_ids.clone()).collect();
    let v = wait_status(&voters[0], "the replicas added", |v| {
        members(v) == all && ids(&v["voters"]) == BTreeSet::from([1, 2, 3])
    })
    .await;
    assert_eq!(v["members"]["101"]["name"], "discovery-replica-0", "{v}");

    // A replica serves polls: one held on replica 1 wakes with a register
    // made through replica 0 (forwarded to the leader).
    let r0 = learners[0].client();
    let r1 = learners[1].client();
    register_many(&r0, "k8s.replicated", 0, 1).await;
    common::wait_listed(&r1, "k8s.replicated", "host-0").await;
    let latest = r1.latest("k8s.replicated").await;
    let poll = tokio::spawn({
        let r1 = r1.clone();
        async move {
            r1.get(&format!(
                "/discovery/poll?env=dev&appid=k8s.replicated&latest_timestamp={latest}&hostname=k8s-test"
            ))
            .await
        }
    });
    common::wait_held(&r1, 1).await;
    register_many(&r0, "k8s.replicated", 1, 2).await;
    let woken = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll woke")
        .unwrap();
    assert_eq!(woken.code(), 0, "{}", woken.text);
    assert!(woken.text.contains("host-1"), "{}", woken.text);

    // What a replica's certificate can do, run as an attack: speak for
    // another node (refused by the guard), ask in a loop (one request a
    // second is taken); and a voter's cannot use the route at all (its id
    // is no replica's), all refused before the log.
    let leader = v["leader"].as_u64().expect("a leader");
    let at = format!(
        "discovery-{}.discovery-peer.{}.svc:7271",
        leader - 1,
        voters[0].namespace()
    );
    let spare = replica_link(&world, dir.path(), "discovery-replica-2", 103);
    let ask = |node: u64, step: replica::Step| {
        let spare = spare.clone();
        let at = at.clone();
        async move {
            let to = Member {
                name: String::new(),
                raft_addr: at,
                api_addr: String::new(),
                zone: "sh001".into(),
                rebuilding: false,
            };
            let request = replica::Request { node, step };
            spare
                .post::<_, Result<(), String>>(
                    &to,
                    "/internal/replica",
                    &request,
                    Duration::from_secs(5),
                )
                .await
        }
    };
    match ask(101, replica::Step::Leave).await {
        Err(LinkError::Refused(why)) => {
            assert!(why.contains("claims to come from node 101"), "{why}")
        }
        other => panic!("a request for another node: {other:?}"),
    }
    assert_eq!(
        ask(103, replica::Step::Leave).await,
        Ok(Ok(())),
        "a no-op leave"
    );
    match ask(103, replica::Step::Leave).await {
        Ok(Err(why)) => assert!(why.contains("asked less than 1s ago"), "{why}"),
        other => panic!("a second request at once: {other:?}"),
    }
    let voter = replica_link(&world, dir.path(), "discovery-1", 2);
    let to = Member {
        name: String::new(),
        raft_addr: at.clone(),
        api_addr: String::new(),
        zone: "sh001".into(),
        rebuilding: false,
    };
    let request = replica::Request {
        node: 2,
        step: replica::Step::Leave,
    };
    match voter
        .post::<_, Result<(), String>>(&to, "/internal/replica", &request, Duration::from_secs(5))
        .await
    {
        Ok(Err(why)) => assert!(
            why.contains("not among the ids read replicas may take"),
            "{why}"
        ),
        other => panic!("a voter leaving as a replica: {other:?}"),
    }
    let v = status(&voters[0]).await;
    assert_eq!(members(&v), all, "{v}");
    assert_eq!(ids(&v["voters"]), BTreeSet::from([1, 2, 3]), "{v}");

    // Scaling in: the highest ordinal gets SIGTERM and leaves.
    let last = learners.len() - 1;
    let gone = 101 + last as u64;
    assert!(
        learners[last].terminate().await,
        "the replica outlived its grace"
    );
    let remaining: BTreeSet<u64> = all.iter().copied().filter(|id| *id != gone).collect();
    wait_status(&voters[1], "the replica removed", |v| {
        members(v) == remaining
    })
    .await;
    assert!(learners[last]
        .log_text()
        .contains("left the cluster: this read replica stops"));

    // Scaling out again: a new pod (empty data) joins by itself.
    learners[last].start(&world);
    learners[last].wait_ready(Duration::from_secs(60)).await;
    wait_status(&voters[2], "the replica back", |v| members(v) == all).await;
    assert_eq!(
        hostnames(&learners[last].client(), "k8s.replicated").await,
        expected(2)
    );
    for pod in learners.iter_mut().chain(voters.iter_mut()) {
        pod.terminate().await;
    }
}
