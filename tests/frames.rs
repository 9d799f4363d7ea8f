//! The binary frames peers exchange (`raft_discovery::wire`) as a node of
//! an earlier build made them: the frames of each version were recorded
//! (`tests/data/frames/v<N>/`) and must still decode to the values they
//! were made from, or a rolling upgrade would mix nodes that cannot read
//! each other's appends. A change to a type that travels in frames shows
//! here as a frame of this version that no longer encodes the same: that
//! is a new frame version, and the recorded ones stay.
//!
//! A frame missing from the directory is recorded when the test runs with
//! `DISCOVERY_RECORD_FRAMES=1` (only ever for the version being made).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, Vote};
use raft_discovery::auth::Origin;
use raft_discovery::cluster::messages::{
    Committed, Forward, ForwardError, ForwardedRenews, Renews,
};
use raft_discovery::raft::{Member, NodeId, Proposal, ProposalResult, TypeConfig};
use raft_discovery::registry::upstream::Upstream;
use raft_discovery::registry::zones::{Partition, ZoneBatch, ZoneChange};
use raft_discovery::registry::{
    parse_metadata, Applied, Change, Command, Instance, InstanceKey, Registration, RegistryError,
    RegistrySnapshot, Renewal, Schedule, SchedulerRule, Status,
};
use raft_discovery::wire;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn key(host: &str) -> InstanceKey {
    InstanceKey {
        env: "prod".into(),
        appid: "main.account.service".into(),
        zone: "sh001".into(),
        hostname: host.into(),
    }
}

fn registration(host: &str) -> Registration {
    Registration {
        region: "sh".into(),
        zone: "sh001".into(),
        env: "prod".into(),
        appid: "main.account.service".into(),
        hostname: host.into(),
        addrs: vec!["http://10.0.0.1:8000".into(), "grpc://10.0.0.1:9000".into()],
        version: "v1.2.3".into(),
        metadata: parse_metadata(r#"{"weight":"10","color":"blue"}"#).unwrap(),
        status: Status::Up,
    }
}

fn instance(host: &str) -> Instance {
    let mut instance = Instance::new(registration(host), 1_700_000_000_000_000_001);
    instance.renew_timestamp = 1_700_000_030_000_000_000;
    instance.status = Status::Waiting;
    instance
}

const AT: i64 = 1_700_000_000_123_456_789;

/// One of every command, with every optional part present somewhere.
fn every_command() -> Vec<Command> {
    let mut snapshot = RegistrySnapshot {
        high_water: AT,
        ..RegistrySnapshot::default()
    };
    snapshot.apps.push(raft_discovery::registry::AppSnapshot {
        env: "prod".into(),
        appid: "main.account.service".into(),
        latest_timestamp: AT,
        instances: vec![instance("h1"), instance("h2")],
    });
    let mut partitions = BTreeMap::new();
    partitions.insert(
        "sh002".to_string(),
        Partition {
            cursor: 42,
            term: 3,
            log: Some("log-sh002".into()),
            applied_at: AT,
            keys: BTreeSet::from([key("remote")]),
            staged: None,
        },
    );
    let mut full = snapshot.clone();
    full.partitions = partitions;
    full.schedules = vec![Schedule {
        appid: "main.account.service".into(),
        env: Some("prod".into()),
        rules: vec![rule()],
    }];
    full.log = Some("log-sh001".into());
    full.upstreams.insert(
        "old".into(),
        Upstream {
            cursor: 7,
            applied_at: AT,
            keys: BTreeSet::from([key("imported")]),
            exported: BTreeMap::from([(key("h1"), AT)]),
        },
    );
    vec![
        Command::Register {
            registration: registration("h1"),
            at: AT,
        },
        Command::Renew {
            keys: vec![key("h1"), key("h2")],
            at: AT,
        },
        Command::Cancel {
            key: key("h2"),
            at: AT,
        },
        Command::Set {
            env: "prod".into(),
            appid: "main.account.service".into(),
            zone: "sh001".into(),
            changes: vec![
                Change {
                    hostname: "h1".into(),
                    status: Some(Status::Waiting),
                    metadata: None,
                },
                Change {
                    hostname: "h2".into(),
                    status: None,
                    metadata: Some(parse_metadata(r#"{"weight":"1"}"#).unwrap()),
                },
            ],
            at: AT,
        },
        Command::Evict {
            keys: vec![key("h3")],
            silent_since: AT - 90_000_000_000,
            at: AT,
        },
        Command::Restore {
            backup: snapshot.clone(),
            at: AT,
        },
        Command::RestorePart {
            id: AT,
            part: 1,
            of: 2,
            instances: 2,
            backup: full,
            at: AT,
        },
        Command::Schedule {
            appid: "main.account.service".into(),
            env: None,
            rules: Some(vec![rule()]),
            at: AT,
        },
        Command::ZoneApply {
            origin: "sh002".into(),
            to: 9,
            batch: ZoneBatch::Changes {
                from: 8,
                changes: vec![
                    ZoneChange::Upsert(instance("remote")),
                    ZoneChange::Renew {
                        key: key("remote"),
                        renew_timestamp: AT,
                    },
                    ZoneChange::Remove(key("gone")),
                ],
            },
            at: AT,
            term: 2,
            log: Some("log-sh002".into()),
        },
        Command::ZoneApply {
            origin: "sh002".into(),
            to: 10,
            batch: ZoneBatch::FullPart {
                part: 0,
                of: 1,
                instances: vec![instance("remote")],
            },
            at: AT,
            term: 0,
            log: None,
        },
        Command::NameLog {
            log: "log-sh001".into(),
        },
        Command::Check { round: 5 },
        Command::UpstreamApply {
            upstream: "old".into(),
            from: 6,
            changes: vec![ZoneChange::Upsert(instance("imported"))],
            at: AT,
        },
        Command::UpstreamExported {
            upstream: "old".into(),
            exported: vec![(key("h1"), AT)],
            withdrawn: vec![key("h9")],
            at: AT,
        },
        Command::UpstreamForget {
            upstream: "old".into(),
            at: AT,
        },
    ]
}

fn rule() -> SchedulerRule {
    SchedulerRule {
        src: "sh001".into(),
        dst: BTreeMap::from([("sh001".to_string(), 80), ("sh002".to_string(), 20)]),
    }
}

fn member(id: NodeId, rebuilding: bool) -> Member {
    Member {
        name: format!("node-{id}"),
        raft_addr: format!("10.0.0.{id}:7000"),
        api_addr: format!("10.0.0.{id}:7171"),
        zone: "sh001".into(),
        rebuilding,
    }
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(4, 1), index)
}

fn append() -> AppendEntriesRequest<TypeConfig> {
    let membership = Membership::new(
        vec![BTreeSet::from([1, 2, 3])],
        BTreeMap::from([
            (1, member(1, false)),
            (2, member(2, true)),
            (3, member(3, false)),
        ]),
    );
    AppendEntriesRequest {
        vote: Vote::new_committed(4, 1),
        prev_log_id: Some(log_id(99)),
        entries: vec![
            Entry {
                log_id: log_id(100),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(101),
                payload: EntryPayload::Membership(membership),
            },
            Entry {
                log_id: log_id(102),
                payload: EntryPayload::Normal(Proposal {
                    commands: every_command(),
                }),
            },
        ],
        leader_commit: Some(log_id(100)),
    }
}

fn forward() -> Forward {
    Forward {
        proposal: Proposal {
            commands: every_command()[..4].to_vec(),
        },
        origins: vec![
            Origin::Client("10.1.2.3".parse().unwrap()),
            Origin::Client("::1".parse().unwrap()),
            Origin::Operator("Bearer secret".into()),
            Origin::Cluster,
        ],
    }
}

/// Each framed message, by the name its frame is recorded under, as a
/// check that decodes the recorded frame and compares it with the value
/// it was made from (through its JSON: not every type compares).
type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;

fn case<T: Serialize + DeserializeOwned + 'static>(value: T) -> (Vec<u8>, Check) {
    let frame = wire::encode(&value).expect("encodes");
    let json = serde_json::to_value(&value).unwrap();
    let check: Check = Box::new(move |recorded| {
        let back: T = wire::decode(recorded).map_err(|e| e.to_string())?;
        let back = serde_json::to_value(&back).unwrap();
        if back == json {
            Ok(())
        } else {
            Err(format!("decoded {back}\nexpected {json}"))
        }
    });
    (frame, check)
}

fn cases() -> Vec<(&'static str, (Vec<u8>, Check))> {
    type AppendAnswer = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
    type VoteAnswer = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
    vec![
        ("append", case(append())),
        (
            "append-success",
            case::<AppendAnswer>(Ok(AppendEntriesResponse::Success)),
        ),
        (
            "append-partial",
            case::<AppendAnswer>(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(101))))),
        ),
        (
            "append-conflict",
            case::<AppendAnswer>(Ok(AppendEntriesResponse::Conflict)),
        ),
        (
            "append-higher-vote",
            case::<AppendAnswer>(Ok(AppendEntriesResponse::HigherVote(Vote::new(5, 2)))),
        ),
        (
            "append-fatal",
            case::<AppendAnswer>(Err(RaftError::Fatal(Fatal::Stopped))),
        ),
        (
            "vote",
            case(VoteRequest::<NodeId> {
                vote: Vote::new(5, 2),
                last_log_id: Some(log_id(102)),
            }),
        ),
        (
            "vote-answer",
            case::<VoteAnswer>(Ok(VoteResponse {
                vote: Vote::new(5, 2),
                vote_granted: true,
                last_log_id: Some(log_id(102)),
            })),
        ),
        (
            "snapshot-chunk",
            case(InstallSnapshotRequest::<TypeConfig> {
                vote: Vote::new_committed(4, 1),
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(100)),
                    last_membership: Default::default(),
                    snapshot_id: "4-1-100".into(),
                },
                offset: 0,
                data: b"{\"high_water\":1}".to_vec(),
                done: true,
            }),
        ),
        ("forward", case(forward())),
        (
            "forward-committed",
            case::<Result<Committed, ForwardError>>(Ok(Committed {
                result: ProposalResult {
                    outcomes: vec![
                        Ok(Applied::Done),
                        Ok(Applied::Renewed(vec![
                            Renewal::Renewed(Box::new(instance("h1"))),
                            Renewal::UnknownInstance,
                            Renewal::UnknownApp,
                            Renewal::Refused("not allowed".into()),
                        ])),
                        Ok(Applied::Evicted(vec![key("h3")])),
                        Err(RegistryError::bad("hostname", "too long")),
                        Err(RegistryError::NotFound),
                        Err(RegistryError::Forbidden("-403".into())),
                    ],
                },
                index: 102,
            })),
        ),
        (
            "forward-refused",
            case::<Result<Committed, ForwardError>>(Err(ForwardError::Invalid(
                RegistryError::bad("addrs", "empty"),
            ))),
        ),
        (
            "renews",
            case(Renews {
                keys: vec![key("h1"), key("h2")],
                from: vec![Origin::Client("10.1.2.3".parse().unwrap()), Origin::Cluster],
            }),
        ),
        (
            "renews-answered",
            case(ForwardedRenews::Answered(vec![
                Renewal::Renewed(Box::new(instance("h1"))),
                Renewal::UnknownApp,
            ])),
        ),
    ]
}

fn recorded(version: u8, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/frames")
        .join(format!("v{version}"))
        .join(format!("{name}.bin"))
}

#[test]
fn frames_an_earlier_build_made_still_decode() {
    let record = std::env::var_os("DISCOVERY_RECORD_FRAMES").is_some();
    let mut failures = Vec::new();
    for (name, (frame, check)) in cases() {
        // Every version this build reads, oldest first.
        for version in 1..=wire::VERSION {
            let path = recorded(version, name);
            if !path.exists() && record && version == wire::VERSION {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &frame).unwrap();
            }
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (recorded frames are kept)", path.display()));
            assert_eq!(bytes[0], version, "{}", path.display());
            if let Err(e) = check(&bytes) {
                failures.push(format!("{name} v{version}: {e}"));
            }
            if version == wire::VERSION && bytes != frame {
                failures.push(format!(
                    "{name}: this build encodes it unlike its recorded v{version} frame: \
                     a type that travels in frames changed; make it frame version {}",
                    version + 1
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn frames_are_smaller_than_json() {
    // Not a benchmark: the reason for frames, held to.
    let json = serde_json::to_vec(&append()).unwrap().len();
    let frame = wire::encode(&append()).unwrap().len();
    assert!(frame * 2 < json, "frame {frame} bytes, JSON {json}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Whatever bytes a peer sends as a frame, decoding answers an error
    /// or a value: it never panics, nor reserves memory a count claims.
    #[test]
    fn any_bytes_decode_to_a_value_or_an_error(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let mut frame = vec![wire::VERSION];
        frame.extend_from_slice(&body);
        let _ = wire::decode::<AppendEntriesRequest<TypeConfig>>(&frame);
        let _ = wire::decode::<Forward>(&frame);
        let _ = wire::decode::<Renews>(&frame);
        let _ = wire::decode::<VoteRequest<NodeId>>(&frame);
    }

    /// A recorded frame with bytes changed: the same.
    #[test]
    fn a_damaged_frame_decodes_to_a_value_or_an_error(at in 1usize..2335, to in proptest::prelude::any::<u8>()) {
        let mut frame = wire::encode(&append()).unwrap();
        let at = at % frame.len();
        frame[at] = to;
        let _ = wire::decode::<AppendEntriesRequest<TypeConfig>>(&frame);
    }
}
