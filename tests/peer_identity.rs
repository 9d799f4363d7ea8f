//! A certificate is an identity, and every peer request is checked against
//! it: a certificate of the cluster's CA for a node that is no member, a
//! member's certificate speaking for another node, a zone link's
//! certificate on a Raft route are all refused, and change nothing.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Timings, ADMIN_TOKEN};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use raft_discovery::auth::Origin;
use raft_discovery::cluster::messages::{Forward, Renews};
use raft_discovery::peer::certs::Issued;
use raft_discovery::peer::identity::Identity;
use raft_discovery::peer::paths;
use raft_discovery::raft::{NodeId, Proposal, TypeConfig};
use raft_discovery::registry::{Command, Metadata, Registration, Status};
use raft_discovery::wire;
use serde_json::{json, Value};

/// An HTTPS client trusting the cluster's CA, presenting `identity`.
fn peer_client(cluster: &Cluster, identity: Option<&Issued>) -> reqwest::Client {
    common::tls_client(&cluster.pki.ca_path(), identity)
}

/// A certificate of the cluster's own CA for `identity`.
fn cert_of(cluster: &Cluster, identity: Identity) -> Issued {
    cluster.pki.issued("someone", &identity)
}

fn node(id: NodeId) -> Identity {
    Identity::Node {
        zone: "sh001".into(),
        id,
    }
}

fn register(appid: &str, hostname: &str) -> Command {
    Command::Register {
        registration: Registration {
            region: "sh".into(),
            zone: "sh001".into(),
            env: "dev".into(),
            appid: appid.into(),
            hostname: hostname.into(),
            addrs: vec!["http://10.6.6.6:80".into()],
            version: String::new(),
            metadata: Metadata::new(),
            status: Status::Up,
        },
        at: raft_discovery::clock::now(),
    }
}

/// An append from `leader` in `term`, after `index`, carrying a forged
/// registration.
fn forged_append(term: u64, leader: NodeId, index: u64) -> Vec<u8> {
    serde_json::to_vec(&forged_append_request(term, leader, index)).unwrap()
}

fn forged_append_request(
    term: u64,
    leader: NodeId,
    index: u64,
) -> openraft::raft::AppendEntriesRequest<TypeConfig> {
    let at = |i| LogId::new(CommittedLeaderId::new(term, leader), i);
    let entry = Entry::<TypeConfig> {
        log_id: at(index + 1),
        payload: EntryPayload::Normal(Proposal {
            commands: vec![register("forged.app", "evil")],
        }),
    };
    openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: Some(at(index)),
        entries: vec![entry],
        leader_commit: Some(at(index + 1)),
    }
}

fn forged_vote(term: u64, candidate: NodeId, index: u64) -> Vec<u8> {
    serde_json::to_vec(&forged_vote_request(term, candidate, index)).unwrap()
}

fn forged_vote_request(
    term: u64,
    candidate: NodeId,
    index: u64,
) -> openraft::raft::VoteRequest<NodeId> {
    openraft::raft::VoteRequest::<NodeId> {
        vote: Vote::new(term, candidate),
        last_log_id: Some(LogId::new(
            CommittedLeaderId::new(term, candidate),
            index + 1_000,
        )),
    }
}

/// The routes that take binary frames (`raft_discovery::wire`), with a
/// forged body of each as a frame: what a peer of this build sends.
fn framed_routes(term: u64, claimed: NodeId, index: u64) -> Vec<(&'static str, Vec<u8>)> {
    let snapshot: openraft::raft::InstallSnapshotRequest<TypeConfig> =
        serde_json::from_slice(&forged_snapshot(term, claimed)).unwrap();
    let forward = Forward {
        proposal: Proposal {
            commands: vec![register("forged.app", "evil")],
        },
        origins: vec![Origin::Cluster],
    };
    vec![
        (
            paths::APPEND,
            wire::encode(&forged_append_request(term, claimed, index)).unwrap(),
        ),
        (
            paths::VOTE,
            wire::encode(&forged_vote_request(term + 1, claimed, index)).unwrap(),
        ),
        (paths::SNAPSHOT, wire::encode(&snapshot).unwrap()),
        (paths::PROPOSE, wire::encode(&forward).unwrap()),
        (paths::RENEW, wire::encode(&Renews::default()).unwrap()),
    ]
}

/// A whole snapshot's framed header from `leader`, then junk.
fn forged_full_snapshot(term: u64, leader: NodeId) -> Vec<u8> {
    let header = json!({
        "vote": {"leader_id": {"term": term, "node_id": leader}, "committed": true},
        "meta": {"last_log_id": null,
                 "last_membership": {"log_id": null, "membership": {"configs": [], "nodes": {}}},
                 "snapshot_id": "forged"}
    })
    .to_string();
    let mut body = (header.len() as u64).to_be_bytes().to_vec();
    body.extend_from_slice(header.as_bytes());
    body.extend_from_slice(&[0; 64]);
    body
}

fn forged_snapshot(term: u64, leader: NodeId) -> Vec<u8> {
    json!({
        "vote": {"leader_id": {"term": term, "node_id": leader}, "committed": true},
        "meta": {"last_log_id": null,
                 "last_membership": {"log_id": null, "membership": {"configs": [], "nodes": {}}},
                 "snapshot_id": "forged"},
        "offset": 0, "data": [], "done": true
    })
    .to_string()
    .into_bytes()
}

/// Every peer route with a body that speaks for `claimed` in `term` (the
/// routes whose body names no sender get what a sender would send).
fn every_route(term: u64, claimed: NodeId, index: u64) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let proposal = Proposal {
        commands: vec![register("forged.app", "evil")],
    };
    let get = None;
    let post = |body: Vec<u8>| Some(body);
    let routes = vec![
        (paths::APPEND, post(forged_append(term, claimed, index))),
        (paths::VOTE, post(forged_vote(term + 1, claimed, index))),
        (paths::SNAPSHOT, post(forged_snapshot(term, claimed))),
        (paths::FULL_SNAPSHOT, post(forged_full_snapshot(term, claimed))),
        (paths::PROPOSE, post(serde_json::to_vec(&proposal).unwrap())),
        (
            paths::RENEW,
            post(br#"[{"env":"dev","appid":"a","zone":"sh001","hostname":"h"}]"#.to_vec()),
        ),
        (
            paths::MEMBERSHIP,
            post(br#"{"change":"add_learner","id":9,"name":"evil","raft_addr":"127.0.0.1:1","api_addr":"127.0.0.1:2","zone":"sh001"}"#.to_vec()),
        ),
        (paths::BOOTSTRAP, get.clone()),
        (paths::READ_INDEX, get.clone()),
        (paths::CHECK, get.clone()),
        (
            paths::REPAIR,
            post(format!(r#"{{"node":{claimed},"step":"demote"}}"#).into_bytes()),
        ),
        (paths::HEALTH, get.clone()),
        (
            paths::ELECT,
            post(format!(r#"{{"from":{claimed},"last_log_index":{index}}}"#).into_bytes()),
        ),
        (paths::TRANSFER_LEADER, post(b"null".to_vec())),
        (
            paths::REPLICA,
            post(format!(r#"{{"node":{claimed},"step":"leave"}}"#).into_bytes()),
        ),
        (paths::ZONE_CHANGES, None),
        (
            paths::ZONE_WRITE,
            post(serde_json::to_vec(&json!({"Command": register("forged.app", "evil")})).unwrap()),
        ),
        (paths::ZONE_NODES, get),
    ];
    assert_eq!(routes.len(), paths::ALL.len(), "a route is missing here");
    routes
}

async fn call(
    client: &reqwest::Client,
    node: &str,
    path: &str,
    body: &Option<Vec<u8>>,
) -> Result<u16, String> {
    let url = match path {
        paths::ZONE_CHANGES => format!("https://{node}{path}?after=0&hold_ms=0"),
        _ => format!("https://{node}{path}"),
    };
    let request = match body {
        Some(body) => client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone()),
        None => client.get(url),
    };
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// What must not change: who is in, who leads, in which term, and the
/// registry on every node.
async fn state(cluster: &Cluster) -> Value {
    let mut nodes = Vec::new();
    for i in 0..cluster.slots.len() {
        let s = cluster.status(i).await.expect("status");
        let digest: Value = cluster.client(i).get("/admin/digest").await.json();
        nodes.push(json!({
            "members": s["members"].as_object().unwrap().keys().collect::<Vec<_>>(),
            "voters": s["voters"], "leader": s["leader"], "term": s["term"],
            "digest": digest["digest"],
        }));
    }
    Value::Array(nodes)
}

#[tokio::test]
async fn every_peer_route_refuses_callers_its_certificate_does_not_allow() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let leader_id = cluster.slots[leader].id;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    assert_eq!(
        cluster
            .client(leader)
            .register("real.app", "sh001", "h1", "1")
            .await
            .code(),
        0
    );
    let status = cluster.status(leader).await.unwrap();
    let term = status["term"].as_u64().unwrap();
    let index = status["last_log_index"].as_u64().unwrap();
    for i in 0..3 {
        cluster.wait_applied(i, index).await;
    }
    let before = state(&cluster).await;

    // (a) the CA signed it, for a node that is no member;
    // (b) a member's certificate (the other follower's) whose bodies speak
    //     for the leader;
    // (c) zone links: another zone's, which this cluster does not follow,
    //     and this zone's own, which may call no node of its zone.
    let stranger = cert_of(&cluster, node(9));
    let member = cert_of(&cluster, node(cluster.slots[other].id));
    let link_b = cert_of(
        &cluster,
        Identity::Link {
            zone: "sh002".into(),
        },
    );
    let link_a = cert_of(
        &cluster,
        Identity::Link {
            zone: "sh001".into(),
        },
    );
    let callers = [
        (
            "a non-member",
            peer_client(&cluster, Some(&stranger)),
            node(9),
        ),
        (
            "a member speaking for the leader",
            peer_client(&cluster, Some(&member)),
            node(leader_id),
        ),
        (
            "another zone's link",
            peer_client(&cluster, Some(&link_b)),
            node(leader_id),
        ),
        (
            "this zone's link",
            peer_client(&cluster, Some(&link_a)),
            node(leader_id),
        ),
    ];
    // A member may hand on proposals and renews and ask the startup
    // questions: its body names no sender to forge.
    let open_to_members = [
        paths::PROPOSE,
        paths::RENEW,
        paths::BOOTSTRAP,
        paths::READ_INDEX,
        paths::CHECK,
        paths::HEALTH,
    ];
    for target in [leader, follower] {
        let addr = cluster.peer_addr(target);
        for (who, client, claimed) in &callers {
            let Identity::Node { id: claimed, .. } = claimed else {
                unreachable!()
            };
            for (path, body) in every_route(term, *claimed, index) {
                if *who == "a member speaking for the leader" && open_to_members.contains(&path) {
                    continue;
                }
                // Any node of the zone may ask for itself (below).
                if *who == "a non-member" && path == paths::REPLICA {
                    continue;
                }
                // Twice: the second refusal is not logged again.
                for _ in 0..2 {
                    let answer = call(client, &addr, path, &body).await;
                    assert_eq!(answer, Ok(403), "{who} -> node {target}: {path}");
                }
            }
            // The same forgeries as binary frames: decoded, then checked
            // the same.
            for (path, frame) in framed_routes(term, *claimed, index) {
                if *who == "a member speaking for the leader" && open_to_members.contains(&path) {
                    continue;
                }
                let answer = client
                    .post(format!("https://{addr}{path}"))
                    .header("content-type", wire::MEDIA_TYPE)
                    .body(frame)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string());
                assert_eq!(answer, Ok(403), "{who} -> node {target}: {path} (frame)");
            }
        }
        // (d) no certificate: no handshake at all.
        let anonymous = peer_client(&cluster, None);
        for (path, body) in every_route(term, leader_id, index) {
            assert!(
                call(&anonymous, &addr, path, &body).await.is_err(),
                "{path}"
            );
        }
    }

    // The non-member asking to join or leave as a read replica, for
    // itself: heard, and refused before the log (no id is kept for
    // replicas here).
    let (_, stranger_client, _) = &callers[0];
    for step in ["join", "leave"] {
        let body = json!({"node": 9, "step": step, "member": {
            "name": "evil", "raft_addr": "127.0.0.1:1", "api_addr": "127.0.0.1:2", "zone": "sh001",
            "rebuilding": false}});
        let answer: Value = stranger_client
            .post(format!(
                "https://{}{}",
                cluster.peer_addr(leader),
                paths::REPLICA
            ))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            answer["Err"]
                .as_str()
                .is_some_and(|e| e.contains("not among the ids read replicas may take")),
            "{answer}"
        );
    }
    assert_eq!(
        state(&cluster).await,
        before,
        "a refused call changed something"
    );
    for i in 0..3 {
        assert_eq!(cluster.client(i).fetch("forged.app", 3).await.code(), -404);
    }
    let log = cluster.log(follower);
    let refusals = log
        .matches("peer refused: node 9: node 9 is not a member here")
        .count();
    assert_eq!(refusals, 1, "refusals of one peer are logged once:\n{log}");
    assert!(
        log.contains("an append claims to come from node")
            && log.contains("a vote request claims to come from node")
            && log.contains("the link of zone sh001")
            && log.contains("a zone's link may not call"),
        "{log}"
    );
    // A member's own calls pass, so the refusals above were the rules'.
    let member_client = peer_client(&cluster, Some(&member));
    let addr = cluster.peer_addr(leader);
    assert_eq!(
        call(&member_client, &addr, paths::HEALTH, &None).await,
        Ok(200)
    );
    let mine = every_route(term, cluster.slots[other].id, index);
    let (_, proposal) = mine.iter().find(|(p, _)| *p == paths::PROPOSE).unwrap();
    assert_eq!(
        call(&member_client, &addr, paths::PROPOSE, proposal).await,
        Ok(200)
    );
}

#[tokio::test]
async fn a_forged_append_and_vote_are_refused_and_later_writes_leave_every_replica_equal() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let leader_id = cluster.slots[leader].id;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    for h in 0..5 {
        let c = cluster
            .client(leader)
            .register("real.app", "sh001", &format!("h{h}"), "1")
            .await;
        assert_eq!(c.code(), 0);
    }
    let status = cluster.status(leader).await.unwrap();
    let term = status["term"].as_u64().unwrap();
    let index = status["last_log_index"].as_u64().unwrap();

    // node `other`'s key, used to pose as the leader towards `follower`:
    // the entry would follow the follower's log exactly.
    let thief = peer_client(
        &cluster,
        Some(&cert_of(&cluster, node(cluster.slots[other].id))),
    );
    let addr = cluster.peer_addr(follower);
    let append = Some(forged_append(term, leader_id, index));
    assert_eq!(call(&thief, &addr, paths::APPEND, &append).await, Ok(403));
    // And as a candidate that is not itself, with a longer log.
    let vote = Some(forged_vote(term + 1, leader_id, index));
    assert_eq!(call(&thief, &addr, paths::VOTE, &vote).await, Ok(403));

    // Writes go on through every node; every replica ends equal.
    for i in 0..30 {
        let c = cluster
            .client(i % 3)
            .register("after.app", "sh001", &format!("h{i}"), "1")
            .await;
        assert_eq!(c.code(), 0, "write {i}");
    }
    let index = cluster.status(leader).await.unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    let mut digests = Vec::new();
    for i in 0..3 {
        cluster.wait_applied(i, index).await;
        let d: Value = cluster.client(i).get("/admin/digest").await.json();
        assert_eq!(d["applied_index"].as_u64(), Some(index), "{d}");
        digests.push(d["digest"].clone());
        assert_eq!(cluster.client(i).fetch("forged.app", 3).await.code(), -404);
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let after = cluster.status(leader).await.unwrap();
    assert_eq!(
        after["term"].as_u64(),
        Some(term),
        "the forged vote moved the term"
    );
    assert_eq!(after["leader"].as_u64(), Some(leader_id));
}

#[tokio::test]
async fn admin_changes_handed_on_need_the_operators_token() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let member = cert_of(&cluster, node(cluster.slots[follower].id));
    let client = peer_client(&cluster, Some(&member));
    let url = format!("https://{}{}", cluster.peer_addr(leader), paths::MEMBERSHIP);
    let remove_nobody = br#"{"change":"remove","id":99}"#.to_vec();
    for auth in [None, Some("Bearer wrong"), Some(ADMIN_TOKEN)] {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(remove_nobody.clone());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 403, "{auth:?}");
    }
    let answer = client
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(remove_nobody)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert!(text.contains("99"), "{text}");

    // Through a follower's client port, with the token, a change reaches
    // the leader with the operator's credential and is carried out.
    let target = cluster.slots[(leader + 2) % 3].id;
    let moved = cluster.transfer_leader(follower, target).await;
    assert_eq!(moved, json!({ "Ok": target }));
}

#[tokio::test]
async fn a_node_refuses_to_start_with_the_certificate_of_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::cluster::Pki::new(&dir.path().join("certs"));
    let (cert, key) = pki.issue("node2", &node(2));
    let config = dir.path().join("node1.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\nzone = \"sh001\"\nlisten = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("data").display(),
            pki.ca_path().display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_discovery"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is the certificate of node 2 of zone sh001 (discovery://sh001/node/2), but this node is configured as node 1 of zone sh001"),
        "{err}"
    );
}

/// A client of node `i` whose connections come from `source`.
fn client_from(cluster: &Cluster, i: usize, source: [u8; 4]) -> common::Client {
    common::Client::from_source(&cluster.client(i).base, source)
}

#[tokio::test]
async fn the_leader_checks_the_allow_list_again_for_a_write_a_follower_hands_it() {
    // Node 1 takes writes from 127.0.0.1 only; nodes 2 and 3 (wrongly)
    // from everyone.
    let cluster = Cluster::start_prepared(
        3,
        Timings::default(),
        common::cluster::Hosts::default(),
        |c| {
            for i in 0..3 {
                let nets = if i == 0 {
                    "\"127.0.0.1/32\""
                } else {
                    "\"0.0.0.0/0\""
                };
                let path = c.config_of(i);
                let text = std::fs::read_to_string(path).unwrap().replace(
                    &format!("admin_token = \"{ADMIN_TOKEN}\""),
                    &format!("admin_token = \"{ADMIN_TOKEN}\"\nallow_write_from = [{nets}]"),
                );
                std::fs::write(path, text).unwrap();
            }
        },
    )
    .await;
    let leader = cluster.leader().await;
    if cluster.slots[leader].id != 1 {
        let moved = cluster.transfer_leader(leader, 1).await;
        assert_eq!(moved, json!({ "Ok": 1 }));
    }
    assert_eq!(cluster.slots[cluster.leader().await].id, 1);

    // From 127.0.0.2 through node 2: node 2 lets it through, the leader
    // does not; nothing is applied anywhere.
    let outside = client_from(&cluster, 1, [127, 0, 0, 2]);
    let refused = outside.register("acl.app", "sh001", "h-out", "1").await;
    assert_eq!(refused.code(), -403, "{}", refused.text);
    let message = refused.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("127.0.0.2") && !message.contains("127.0.0.1/32"),
        "{message}"
    );
    // From 127.0.0.1 through the same node: applied.
    let inside = client_from(&cluster, 1, [127, 0, 0, 1]);
    assert_eq!(
        inside
            .register("acl.app", "sh001", "h-in", "1")
            .await
            .code(),
        0
    );
    for i in 0..3 {
        let hosts = common::hostnames(&cluster.client(i), "acl.app").await;
        assert_eq!(hosts, ["h-in".to_string()].into(), "node {i}");
    }
    // Renews are handed to the leader in batches of their own: checked the
    // same way.
    let key = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "acl.app"),
        ("hostname", "h-in"),
    ];
    let renewed = outside.post("/discovery/renew", &key).await;
    assert_eq!(renewed.code(), -403, "{}", renewed.text);
    assert_eq!(inside.post("/discovery/renew", &key).await.code(), 0);
    // A write refused in a batch does not fail the others merged with it.
    let mut writes = Vec::new();
    for n in 0..20 {
        let (client, host) = if n % 2 == 0 {
            (client_from(&cluster, 2, [127, 0, 0, 2]), format!("out{n}"))
        } else {
            (client_from(&cluster, 2, [127, 0, 0, 1]), format!("in{n}"))
        };
        writes.push(tokio::spawn(async move {
            (
                host.clone(),
                client
                    .register("batch.app", "sh001", &host, "1")
                    .await
                    .code(),
            )
        }));
    }
    for w in writes {
        let (host, code) = w.await.unwrap();
        let want = if host.starts_with("out") { -403 } else { 0 };
        assert_eq!(code, want, "{host}");
    }
    let hosts = common::hostnames(&cluster.client(0), "batch.app").await;
    assert_eq!(hosts.len(), 10, "{hosts:?}");
    assert!(hosts.iter().all(|h| h.starts_with("in")), "{hosts:?}");
}

/// The certificate node `i`'s peer listener serves a new connection with.
async fn served_certificate(cluster: &Cluster, i: usize) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(cluster.pki.ca_path()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let me = cert_of(cluster, node(cluster.slots[(i + 1) % 3].id));
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(me.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(me.key.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(cluster.peer_addr(i))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_node_takes_a_reissued_certificate_on_sighup_and_keeps_its_own_when_the_new_one_is_wrong()
{
    let cluster = Cluster::start(3, Timings::default()).await;
    let i = 1;
    let id = cluster.slots[i].id;
    let before = served_certificate(&cluster, i).await;

    // Re-issued in place, as `discoveryctl certs node --replace` does.
    let fresh = cluster.pki.issued(&format!("node{id}"), &node(id));
    raft_discovery::peer::certs::replace(&cluster.pki.dir, &format!("node{id}"), &fresh).unwrap();
    // SAFETY: signalling our own child process by its pid.
    assert_eq!(
        unsafe { libc::kill(cluster.pid(i) as i32, libc::SIGHUP) },
        0
    );
    // New connections get the new certificate (the reload logs at info,
    // which tests do not keep).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = served_certificate(&cluster, i).await;
    while after == before {
        assert!(
            Instant::now() < deadline,
            "never reloaded: {}",
            cluster.log(i)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = served_certificate(&cluster, i).await;
    }
    assert_eq!(after, pem_der(&fresh.cert));

    // A certificate of another node's identity is refused: the node keeps
    // the one it has and says why.
    let wrong = cluster.pki.issued(&format!("node{id}"), &node(id + 10));
    raft_discovery::peer::certs::replace(&cluster.pki.dir, &format!("node{id}"), &wrong).unwrap();
    assert_eq!(
        unsafe { libc::kill(cluster.pid(i) as i32, libc::SIGHUP) },
        0
    );
    while !cluster.log(i).contains("peer certificates not reloaded") {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "{}",
            cluster.log(i)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.log(i).contains("is the certificate of node"),
        "{}",
        cluster.log(i)
    );
    assert_eq!(served_certificate(&cluster, i).await, pem_der(&fresh.cert));

    // The cluster wrote on throughout, through the rotated node too.
    let r = cluster
        .client(i)
        .register("rotated.app", "sh001", "h1", "1")
        .await;
    assert_eq!(r.code(), 0, "{}", r.text);
}

/// Asking for every app's digest costs the asked node a copy of them all:
/// a member that holds such a question open gets `503` at once for
/// another (one per address, four in all), and plain checks go on.
#[tokio::test]
async fn a_member_asking_for_every_apps_digest_at_once_is_refused_past_its_share() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let target = cluster.peer_addr(leader);
    let member = cert_of(&cluster, node(cluster.slots[(leader + 1) % 3].id));
    let client = peer_client(&cluster, Some(&member));
    // An index no check has reached: each question is held up to 2 s.
    let url = |apps: bool, hold_ms: u64| {
        format!(
            "https://{target}{}?index=1000000&apps={apps}&hold_ms={hold_ms}",
            paths::CHECK
        )
    };
    let held = tokio::spawn({
        let (client, url) = (client.clone(), url(true, 2_000));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    let second = client.get(url(true, 2_000)).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 503);
    assert!(asked.elapsed() < std::time::Duration::from_secs(1));
    let why = second.text().await.unwrap();
    assert!(why.contains("every app's digest"), "{why}");
    let plain = client.get(url(false, 0)).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 200);
    assert_eq!(held.await.unwrap(), 200);
    // Its share given back, the member is answered again.
    let again = client.get(url(true, 0)).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
}

/// A node being added (it belongs to no cluster yet) tells any node of its
/// zone who it is and whether it serves, as the leader adding it asks: a
/// constant, small answer (no registry, no secret). A zone's link is still
/// refused there, and a joined node still refuses a node that is no member.
#[tokio::test]
async fn a_node_being_added_says_who_it_is_to_its_zone_only() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let joiner = cluster.new_joiner(4);
    let stranger = peer_client(&cluster, Some(&cert_of(&cluster, node(9))));
    let link = peer_client(
        &cluster,
        Some(&cert_of(
            &cluster,
            Identity::Link {
                zone: "sh002".into(),
            },
        )),
    );
    let url = |i: usize, path: &str| format!("https://{}{path}", cluster.peer_addr(i));
    let deadline = Instant::now() + Duration::from_secs(10);
    let told = loop {
        match stranger.get(url(joiner, paths::BOOTSTRAP)).send().await {
            Ok(answer) => break answer,
            Err(e) => assert!(Instant::now() < deadline, "node 4 never listened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(told.status(), 200);
    let told: Value = told.json().await.unwrap();
    assert_eq!(told["initialized"], false, "{told}");
    assert_eq!(told["node"][0], 4, "{told}");
    assert_eq!(told["node"][1]["name"], "node4", "{told}");
    assert_eq!(
        told["node"][1]["api_addr"],
        cluster.addr(joiner).as_str(),
        "{told}"
    );
    // Not added yet: it answers, and says it does not serve.
    let health = stranger
        .get(url(joiner, paths::HEALTH))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(health.text().await.unwrap(), "catching up");
    for path in [paths::BOOTSTRAP, paths::HEALTH] {
        let by_link = link.get(url(joiner, path)).send().await.unwrap();
        assert_eq!(by_link.status(), 403, "{path}");
        let joined = stranger.get(url(0, path)).send().await.unwrap();
        assert_eq!(joined.status(), 403, "{path}");
        assert!(
            joined
                .text()
                .await
                .unwrap()
                .contains("node 9 is not a member here"),
            "{path}"
        );
    }
}
