//! The peer surface is reachable only by holders of a certificate from the
//! cluster CA, on its own port; and even they can propose nothing a client
//! could not.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Pki, Timings};
use common::tls_client;
use futures::StreamExt;
use raft_discovery::cluster::renewer::ForwardedRenews;
use raft_discovery::cluster::writer::{Committed, ForwardError};
use raft_discovery::peer::certs::{self, Issued};
use raft_discovery::peer::identity::Identity;
use raft_discovery::peer::paths;
use raft_discovery::raft::Proposal;
use raft_discovery::registry::{Command, InstanceKey, Metadata, Registration, Status};
use serde_json::Value;
use time::OffsetDateTime;

/// A certificate of the cluster's CA for member `id`, as a thief of that
/// node's key would hold.
fn as_member(cluster: &Cluster, id: u64) -> Issued {
    let me = Identity::Node {
        zone: cluster.zone.clone(),
        id,
    };
    cluster.pki.issued(&format!("node{id}"), &me)
}

async fn digest(cluster: &Cluster, i: usize) -> Value {
    cluster.client(i).get("/admin/digest").await.json()
}

/// Each request a peer could make that changes something, with a body.
fn peer_writes() -> Vec<(&'static str, Vec<u8>)> {
    let forged = Proposal {
        commands: vec![register("forged.app", 9_000_000_000_000_000_000)],
    };
    vec![
        (paths::APPEND, br#"{"vote":{"leader_id":{"term":99,"node_id":9},"committed":true},"prev_log_id":null,"entries":[],"leader_commit":null}"#.to_vec()),
        (paths::VOTE, br#"{"vote":{"leader_id":{"term":99,"node_id":9},"committed":false},"last_log_id":null}"#.to_vec()),
        (paths::PROPOSE, serde_json::to_vec(&forged).unwrap()),
        (paths::FULL_SNAPSHOT, vec![0; 64]),
        (paths::MEMBERSHIP, br#"{"change":"remove","id":1}"#.to_vec()),
    ]
}

fn register(appid: &str, at: i64) -> Command {
    Command::Register {
        registration: Registration {
            region: "sh".into(),
            zone: "sh001".into(),
            env: "dev".into(),
            appid: appid.into(),
            hostname: "evil".into(),
            addrs: vec!["http://10.6.6.6:80".into()],
            version: String::new(),
            metadata: Metadata::new(),
            status: Status::Up,
        },
        at,
    }
}

#[tokio::test]
async fn peer_routes_are_not_served_on_the_client_port_and_need_the_cluster_certificate() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let c = cluster.client(leader);
    for path in paths::ALL {
        for answer in [c.get(path).await, c.post(path, &[]).await] {
            assert_eq!(answer.status, 404, "{path} on the client port: {answer:?}");
        }
    }

    let before = digest(&cluster, leader).await;
    let term = cluster.status(leader).await.unwrap()["term"].clone();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::named(other_dir.path(), "another CA");
    let node9 = Identity::Node {
        zone: "sh001".into(),
        id: 9,
    };
    let foreign = certs::node_cert(&other.ca, &node9, "node9", &["127.0.0.1".into()], 30).unwrap();
    let now = OffsetDateTime::now_utc();
    let expired = certs::node_cert_between(
        &cluster.pki.ca,
        &node9,
        "node9",
        &["127.0.0.1".into()],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let ca = cluster.pki.ca_path();
    let refused = [
        ("no certificate", tls_client(&ca, None)),
        ("another CA", tls_client(&ca, Some(&foreign))),
        ("expired", tls_client(&ca, Some(&expired))),
    ];
    let base = format!("https://{}", cluster.peer_addr(leader));
    for (who, client) in &refused {
        for (path, body) in peer_writes() {
            let sent = client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            assert!(sent.is_err(), "{who}: {path} answered {sent:?}");
        }
    }
    // Plain HTTP on the peer port gets no answer either.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://{}{}",
            cluster.peer_addr(leader),
            paths::PROPOSE
        ))
        .body("{}")
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.as_ref().unwrap().status().is_success(),
        "{plain:?}"
    );

    // The same requests with a member's certificate are heard: the
    // refusals above were the handshake's.
    let member = as_member(&cluster, 1);
    let heard = tls_client(&ca, Some(&member))
        .get(format!("{base}{}", paths::HEALTH))
        .send()
        .await
        .expect("a cluster certificate is accepted");
    assert_eq!(heard.text().await.unwrap(), "ok");

    assert_eq!(digest(&cluster, leader).await, before, "registry changed");
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status["term"], term, "an election was forced: {status}");
    assert_eq!(status["members"].as_object().unwrap().len(), 3);
    let log = cluster.log(leader);
    for reason in [
        "peer sent no certificates",
        "invalid peer certificate: UnknownIssuer",
        "invalid peer certificate: certificate expired",
    ] {
        assert!(
            log.contains("TLS handshake refused") && log.contains(reason),
            "the leader did not log {reason:?}:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let mut cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    assert_eq!(
        cluster
            .client(leader)
            .register("join.app", "sh001", "h1", "1")
            .await
            .code(),
        0
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::named(other_dir.path(), "another CA");
    cluster.impostor(victim, &other);
    let term = cluster.status(leader).await.unwrap()["term"].clone();
    let before = digest(&cluster, leader).await;

    // Given time to join, the impostor learns nothing: the leader cannot
    // replicate to it, nor it ask the others anything.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if let Some(s) = cluster.status(victim).await {
            assert!(s["applied_index"].is_null(), "the impostor applied: {s}");
            assert!(s["leader"].is_null(), "the impostor knows a leader: {s}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cluster goes on with its two genuine nodes, undisturbed.
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status["term"], term, "{status}");
    assert_eq!(digest(&cluster, leader).await, before);
    assert_eq!(
        cluster
            .client(leader)
            .register("join.app", "sh001", "h2", "1")
            .await
            .code(),
        0
    );
    let refused_by_leader = cluster.log(leader).contains("TLS handshake refused");
    let refused_by_impostor = cluster.log(victim).contains("TLS handshake refused");
    assert!(
        refused_by_leader && refused_by_impostor,
        "handshakes not refused both ways:\nleader:\n{}\nimpostor:\n{}",
        cluster.log(leader),
        cluster.log(victim)
    );
}

#[tokio::test]
async fn the_leader_refuses_forged_commands_from_an_authenticated_peer() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let member = as_member(&cluster, cluster.slots[(leader + 1) % 3].id);
    let peer = tls_client(&cluster.pki.ca_path(), Some(&member));
    let base = format!("https://{}", cluster.peer_addr(leader));
    let before = digest(&cluster, leader).await;
    let now = raft_discovery::clock::now();

    let forged = [
        (
            "a future timestamp",
            register("forged.app", 9_000_000_000_000_000_000),
        ),
        ("an empty appid", register("", now)),
        ("the cluster's own app", register("infra.discovery", now)),
    ];
    for (what, command) in forged {
        let proposal = Proposal {
            commands: vec![register("fine.app", now), command],
        };
        let answer: Result<Committed, ForwardError> = peer
            .post(format!("{base}{}", paths::PROPOSE))
            .json(&proposal)
            .send()
            .await
            .expect("an authenticated peer is heard")
            .json()
            .await
            .expect("a proposal answer");
        assert!(
            matches!(answer, Err(ForwardError::Invalid(_))),
            "{what}: {answer:?}"
        );
    }
    let renews: ForwardedRenews = peer
        .post(format!("{base}{}", paths::RENEW))
        .json(&[InstanceKey {
            env: "dev".into(),
            appid: String::new(),
            zone: "sh001".into(),
            hostname: "h1".into(),
        }])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(matches!(renews, ForwardedRenews::Invalid(_)), "{renews:?}");

    // Nothing of a refused proposal was applied, its valid command neither.
    assert_eq!(digest(&cluster, leader).await, before);
    for appid in ["forged.app", "fine.app"] {
        assert_eq!(cluster.client(leader).fetch(appid, 3).await.code(), -404);
    }
    // A well-formed proposal from the same peer goes through: the refusals
    // were the rules', not the transport's.
    let fine = Proposal {
        commands: vec![register("fine.app", now)],
    };
    let answer: Result<Committed, ForwardError> = peer
        .post(format!("{base}{}", paths::PROPOSE))
        .json(&fine)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.is_ok(), "{answer:?}");
}

/// A process's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

#[tokio::test]
async fn peer_bodies_are_bounded_and_a_snapshot_streams_to_disk() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    // The leader's identity: only the leader may send snapshots.
    let leader_id = cluster.slots[leader].id;
    let member = as_member(&cluster, leader_id);
    let peer = tls_client(&cluster.pki.ca_path(), Some(&member));
    let base = format!("https://{}", cluster.peer_addr(follower));

    // A vote is a few hundred bytes: past 1 MiB it is refused unread. The
    // body sends one byte past 1 MiB and then stays open: the server has
    // read every byte sent when it refuses, so it closes with nothing
    // unread (no reset) while the client is not writing, and the client
    // reads the early 413. (Sending on past the limit, the client could
    // still be writing when the server closes, and fail with a broken
    // pipe instead: CI saw it.)
    let chunks = [vec![b' '; 1 << 20], vec![b' ']].map(|c| Ok::<_, std::io::Error>(c.into()));
    let endless = futures::stream::iter(chunks).chain(futures::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    let vote = peer
        .post(format!("{base}{}", paths::VOTE))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(endless))
        .send()
        .await
        .unwrap();
    assert_eq!(vote.status(), 413);

    // A 256 MiB snapshot passes through the follower without being held
    // in memory: its peak resident size grows by far less than that. The
    // header carries a stale vote, so the follower refuses to install it
    // once it has arrived.
    let pid = cluster.pid(follower);
    let before = peak_rss(pid);
    let header = format!(
        r#"{{"vote":{{"leader_id":{{"term":0,"node_id":{leader_id}}},"committed":false}},"meta":{{"last_log_id":null,"last_membership":{{"log_id":null,"membership":{{"configs":[],"nodes":{{}}}}}},"snapshot_id":"junk"}}}}"#
    );
    let header = header.as_bytes();
    let mut head = (header.len() as u64).to_be_bytes().to_vec();
    head.extend_from_slice(header);
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    let body = futures::stream::iter(
        std::iter::once(bytes::Bytes::from(head))
            .chain(std::iter::repeat_n(chunk, 256))
            .map(Ok::<_, std::io::Error>),
    );
    // A client of its own: the refused vote's connection is closed.
    let sent = tls_client(&cluster.pki.ca_path(), Some(&member))
        .post(format!("{base}{}", paths::FULL_SNAPSHOT))
        .timeout(Duration::from_secs(60))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let answer = sent.text().await.unwrap();
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "peak memory grew by {} MiB receiving 256 MiB ({answer})",
        grown >> 20
    );
    let log = cluster.log(follower);
    assert!(
        log.contains("snapshot received") && log.contains(&(256u64 << 20).to_string()),
        "the whole body did not reach the disk:\n{log}"
    );
    assert!(answer.contains("\"Ok\""), "{answer}");
    let dir = cluster.data_dir_of(cluster.slots[follower].id);
    assert!(
        !dir.join("snapshot.incoming").exists(),
        "a refused snapshot was kept"
    );
    // The follower still follows, and the cluster still writes.
    let c = cluster.client(follower);
    assert_eq!(
        c.register("after.snapshot", "sh001", "h1", "1")
            .await
            .code(),
        0
    );
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Sockets to the peer port that never start a handshake hold at most a
/// quarter of the handshake cap from their address, for at most the
/// handshake time; the rest are closed at once, the cluster keeps its
/// leader and its writes, and the node logs one line a minute of it.
#[tokio::test]
async fn peer_sockets_that_never_shake_hands_are_bounded_and_cost_one_log_line() {
    let cluster = Cluster::start(3, Timings::default()).await;
    let leader = cluster.leader().await;
    let term = cluster.status(leader).await.unwrap()["term"].clone();
    let target: std::net::SocketAddr = cluster.peer_addr(leader).parse().unwrap();
    let mut sockets = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 5], 0)))
            .unwrap();
        sockets.push(socket.connect(target).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0;
    for s in &mut sockets {
        if !closed(s, Duration::from_millis(20)).await {
            open += 1;
        }
    }
    // 64 handshakes at once, 16 from one address.
    assert!(open <= 16, "{open} of 300 sockets still open");
    // Meanwhile the cluster writes through a follower, without an election.
    let follower = (leader + 1) % 3;
    for i in 0..20 {
        let answer = cluster
            .client(follower)
            .register("during.app", "sh001", &format!("h{i}"), "1")
            .await;
        assert_eq!(answer.code(), 0, "{}", answer.text);
    }
    assert_eq!(cluster.status(leader).await.unwrap()["term"], term);
    // Past the handshake time (5 s) every one is closed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for s in &mut sockets {
        assert!(
            closed(s, Duration::from_millis(500)).await,
            "a socket outlived the handshake time"
        );
    }
    let log = cluster.log(leader);
    let lines = log.lines().filter(|l| l.contains("TLS handshake")).count();
    assert!(lines <= 3, "{lines} lines of handshake warnings:\n{log}");
}
