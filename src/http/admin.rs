//! Operator routes: the cluster as this node sees it, and membership
//! changes (behind the admin token, see [`super::access`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::header::{self, AUTHORIZATION};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;

use super::discovery::Api;
use super::params::Params;
use super::reply;
use crate::auth::Operator;
use crate::clock::now;
use crate::cluster::evictor::EvictionState;
use crate::cluster::handover::Handover;
use crate::cluster::link::Link;
use crate::cluster::membership::{self, Change, Changed};
use crate::cluster::quorum;
use crate::cluster::repair::{self, Heard, Tell};
use crate::cluster::writer::WriteError;
use crate::local::{Digest, PartitionDigest};
use crate::raft::log_store::{LogStore, StorageStats};
use crate::raft::space::SpaceGuard;
use crate::raft::{Member, NodeId, Raft};
use crate::registry::eviction::Preservation;
use crate::registry::restore;
use crate::registry::{
    approx_instance_bytes, Command, Frozen, RegistryError, RegistrySnapshot, MAX_RESTORE_BYTES,
};
use crate::telemetry::{Metrics, Sample, ZoneSample};
use crate::zones::puller::{Contact, Contacts};

/// What `/admin/status` answers.
#[derive(Serialize)]
pub struct Status {
    pub id: NodeId,
    /// Why this node serves no reads because its registry differs from
    /// its cluster's, while it does (see `cluster::consistency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diverged: Option<String>,
    /// Why this node is out of the cluster (removed while away), while it
    /// is: it campaigns no more and serves no reads (`cluster::removal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// The cluster this node belongs to (its log's name), once named.
    pub cluster_id: Option<String>,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub voters: Vec<NodeId>,
    /// On the leader: milliseconds since a quorum last acknowledged it. A
    /// leader cut off from its quorum shows it growing.
    pub quorum_ack_ms: Option<u64>,
    /// Why this node sees no quorum (it leads and none acknowledged it
    /// within the lease, or it knows no leader); absent while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_quorum: Option<String>,
    pub members: BTreeMap<NodeId, MemberStatus>,
    pub protected: bool,
    pub instances: usize,
    pub held_polls: usize,
    /// Self-preservation as of the last eviction round (leader only).
    pub self_preservation: Option<Preservation>,
    /// Disk flushes and entries of this node's log since it started.
    pub storage: StorageStats,
    /// Other zones, when there are: what this zone holds of each, and (on
    /// the leader, which follows them) when each last answered.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, ZoneStatus>,
    /// Original discovery clusters followed (`[[upstream]]`), when there
    /// are: what is held of each, and how this node works the link.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, crate::upstream::report::UpstreamStatus>,
}

/// What this zone holds of another.
#[derive(Serialize)]
pub struct ZoneStatus {
    /// The origin's log index this zone's copy reflects.
    pub cursor: u64,
    pub instances: usize,
    /// Milliseconds since a batch from it was last applied (this zone's
    /// clock); none before the first.
    pub applied_ms_ago: Option<u64>,
    #[serde(flatten)]
    pub contact: Option<Contact>,
}

impl ZoneStatus {
    fn sample(&self, zone: String) -> ZoneSample {
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        let contact = self.contact.as_ref();
        ZoneSample {
            zone,
            cursor: self.cursor,
            instances: self.instances,
            applied_age: ms(self.applied_ms_ago),
            last_answer_age: ms(contact.and_then(|c| c.last_answer_ms)),
            behind: contact
                .and_then(|c| c.origin_index)
                .map(|i| i.saturating_sub(self.cursor)),
            failing: contact.map(|c| c.error.is_some()),
        }
    }
}

#[derive(Serialize)]
pub struct MemberStatus {
    #[serde(flatten)]
    pub member: Member,
    pub voter: bool,
    /// Known on the leader only: the last log index replicated to it, and
    /// how far behind the leader's log it is.
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
}

/// What the admin routes see.
#[derive(Clone)]
pub struct Admin {
    pub raft: Raft,
    pub api: Arc<Api>,
    pub log: LogStore,
    pub metrics: Arc<Metrics>,
    pub space: SpaceGuard,
    pub eviction: Arc<EvictionState>,
    pub link: Link,
    pub handover: Handover,
    /// This node's contact with other zones, as their follower.
    pub contacts: Arc<Contacts>,
    /// The links with original discovery clusters (`[[upstream]]`).
    pub upstreams: Arc<[Arc<crate::upstream::status::Link>]>,
    /// Who may see what (`security.public_status`).
    pub access: Arc<crate::auth::Access>,
    /// Places for backups being written at once (each holds a blocking
    /// thread while its reader reads).
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Where an operator's request for a repair goes.
    pub repair: Tell,
}

/// Backups written at once, at most.
pub const BACKUPS_AT_ONCE: usize = 2;

/// `/admin/status`: all of it to anyone by default; with
/// `security.public_status = false`, without the admin or metrics token,
/// the same less what maps the cluster's inside (see [`for_strangers`]).
pub async fn status(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    let insider = super::access::insider(&admin.access, &headers);
    let status = read_status(admin);
    if insider {
        return Json(status).into_response();
    }
    let mut value = serde_json::to_value(&status).unwrap_or_default();
    for_strangers(&mut value);
    Json(value).into_response()
}

/// Takes out of a status what a stranger has no use for and an attacker
/// would: the members' peer addresses, the storage figures, other zones'
/// last errors (which name their addresses).
fn for_strangers(status: &mut serde_json::Value) {
    if let Some(members) = status["members"].as_object_mut() {
        for member in members.values_mut() {
            if let Some(member) = member.as_object_mut() {
                member.remove("raft_addr");
            }
        }
    }
    if let Some(status) = status.as_object_mut() {
        status.remove("storage");
    }
    if let Some(zones) = status["zones"].as_object_mut() {
        for zone in zones.values_mut() {
            if let Some(zone) = zone.as_object_mut() {
                zone.remove("error");
            }
        }
    }
    if let Some(upstreams) = status["upstreams"].as_object_mut() {
        for upstream in upstreams.values_mut() {
            for side in ["import", "export"] {
                if let Some(side) = upstream[side].as_object_mut() {
                    side.remove("error");
                }
            }
        }
    }
}

fn read_status(
    Admin {
        raft,
        api,
        log,
        eviction,
        contacts,
        handover,
        upstreams,
        ..
    }: Admin,
) -> Status {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map_or(0, |l| l.index));
            let lag = matched.map(|i| m.last_log_index.unwrap_or(0).saturating_sub(i));
            let status = MemberStatus {
                member: member.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag,
            };
            (*id, status)
        })
        .collect();
    // Each reading in a statement of its own: a guard taken in a field of
    // the literal would live to its end, and `zones_status` reads the
    // registry again; a second read lock with a write waiting in between
    // deadlocks (parking_lot lets the writer go first).
    let instances = api.local.read().len();
    let zones = zones_status(&api, &contacts);
    let upstreams = crate::upstream::report::statuses(&api.local.read(), &upstreams);
    Status {
        id: m.id,
        diverged: api.protection.diverged(),
        removed: api.protection.removed(),
        cluster_id: api.local.read().log().map(str::to_string),
        state: format!("{:?}", m.state),
        leader: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        committed_index: log.committed_index(),
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        voters,
        quorum_ack_ms: m.millis_since_quorum_ack,
        no_quorum: quorum::lost(&m, handover.lease),
        members,
        protected: api.protection.is_on(),
        instances,
        held_polls: api.local.hub().held(),
        self_preservation: *eviction.preservation.lock(),
        storage: log.stats(),
        zones,
        upstreams,
    }
}

fn zones_status(api: &Api, contacts: &Contacts) -> BTreeMap<String, ZoneStatus> {
    let mut heard = contacts.all();
    let registry = api.local.read();
    let at = now();
    api.zones
        .others
        .keys()
        .map(|zone| {
            let partition = registry.partitions().get(zone);
            let status = ZoneStatus {
                cursor: partition.map_or(0, |p| p.cursor),
                instances: partition.map_or(0, |p| p.keys.len()),
                applied_ms_ago: partition
                    .filter(|p| p.applied_at > 0)
                    .map(|p| (at.saturating_sub(p.applied_at) / 1_000_000).max(0) as u64),
                contact: heard.remove(zone),
            };
            (zone.clone(), status)
        })
        .collect()
}

/// Every metric, in the Prometheus text format, with the readings of the
/// node's state taken now.
pub async fn metrics(
    State(Admin {
        raft,
        api,
        log,
        eviction,
        metrics,
        space,
        contacts,
        handover,
        upstreams,
        ..
    }): State<Admin>,
) -> impl IntoResponse {
    let m = raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    let follower_lag = m
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
        .collect();
    // Taken apart from the literal, as in `status`: see there.
    let by_env = api.local.read().counts_by_env();
    let zones = zones_status(&api, &contacts)
        .into_iter()
        .map(|(zone, z)| z.sample(zone))
        .collect();
    let upstreams = crate::upstream::report::samples(&crate::upstream::report::statuses(
        &api.local.read(),
        &upstreams,
    ));
    let rendered = api.local.read().rendered().kept();
    let sample = Sample {
        held_polls: api.local.hub().held(),
        rendered,
        by_env,
        self_preservation: eviction.preservation.lock().map(|p| p.protecting),
        protected: api.protection.is_on(),
        term: m.current_term,
        leader: m.current_leader,
        is_leader: m.current_leader == Some(m.id),
        quorum: quorum::lost(&m, handover.lease).is_none(),
        last_log_index: m.last_log_index,
        committed_index: log.committed_index(),
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        follower_lag,
        log_bytes_on_disk: log.bytes_on_disk(),
        disk_free_bytes: space.free(),
        zones,
        upstreams,
    };
    metrics.set(&sample);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// The changes this node applied after `after` (a sequence number of the
/// feed; 0 or absent: all it keeps), held like a poll until there is one.
pub async fn changes(
    State(Admin { api, .. }): State<Admin>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    p: Params,
) -> Response {
    let after = match p.number::<u64>("after") {
        Ok(after) => after.unwrap_or(0),
        Err(e) => return reply::error(&e),
    };
    // Held like a poll, and counted with them.
    let _held = match super::discovery::poll_room(&api, client.ip()) {
        Ok(share) => share,
        Err(r) => return r,
    };
    let (changes, latest) = api.local.feed().wait_after(after, api.poll_hold).await;
    Json(serde_json::json!({ "latest": latest, "changes": changes })).into_response()
}

/// What `discoveryctl backup` writes and `restore` reads.
#[derive(Serialize, serde::Deserialize)]
pub struct Backup {
    /// The format's version: 1.
    pub format: u32,
    /// The log index the registry was taken at, on the cluster it came
    /// from.
    pub applied_index: Option<u64>,
    pub registry: RegistrySnapshot,
}

/// A consistent copy of the registry: confirmed with the leader first
/// (read-index), so it holds every write acknowledged before it was asked.
/// Written while it is sent from the registry as it was then (its apps
/// shared, not copied): a backup of any size holds a few chunks per
/// reader, and at most [`BACKUPS_AT_ONCE`] are written at once.
pub async fn backup(State(Admin { api, backups, .. }): State<Admin>) -> Response {
    let Ok(place) = backups.try_acquire_owned() else {
        return reply::overloaded(&format!(
            "backup: {BACKUPS_AT_ONCE} backups are being written; try again when one is done"
        ));
    };
    if let Err(e) = api.reads.confirm().await {
        return reply::answer(-503, &format!("backup: {e}"), None);
    }
    let (applied_index, registry) = api.local.frozen();
    let backup = FrozenBackup {
        format: 1,
        applied_index,
        registry,
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::streamed::json(backup, place),
    )
        .into_response()
}

/// A [`Backup`] as it is written: the registry shared, not copied.
#[derive(Serialize)]
struct FrozenBackup {
    format: u32,
    applied_index: Option<u64>,
    registry: Frozen,
}

/// Replaces the whole registry with a backup's, through the log: every
/// node applies it at the same index.
pub async fn restore(
    State(Admin { api, .. }): State<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let backup: Backup = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reply::error(&RegistryError::bad(
                "backup",
                &format!("not a backup discoveryctl wrote: {e}"),
            ))
        }
    };
    if backup.format != 1 {
        return reply::error(&RegistryError::bad(
            "backup",
            &format!("format {} is not one this node reads (1)", backup.format),
        ));
    }
    let instances: usize = backup.registry.apps.iter().map(|a| a.instances.len()).sum();
    let total: usize = backup
        .registry
        .apps
        .iter()
        .flat_map(|a| &a.instances)
        .map(approx_instance_bytes)
        .sum();
    if total > MAX_RESTORE_BYTES {
        return reply::error(&RegistryError::bad(
            "backup",
            &format!(
                "about {} MiB, over the {} MiB a restore may carry: restore a copy of a data \
                 directory instead (docs/operations.md, Backup and restore)",
                total >> 20,
                MAX_RESTORE_BYTES >> 20
            ),
        ));
    }
    // In parts that each fit one log entry, one after the other: other
    // writes go through between them, and every replica stages the parts
    // until the last replaces the registry at once.
    let parts = restore::split(backup.registry, api.writer.entry_bytes());
    let of = parts.len() as u32;
    let id = now();
    let started = std::time::Instant::now();
    for (part, backup) in parts.into_iter().enumerate() {
        let command = Command::RestorePart {
            id,
            part: part as u32,
            of,
            instances,
            backup,
            at: now(),
        };
        match api.writer.write(command, operator(&headers).into()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) | Err(WriteError::Invalid(e)) => return reply::error(&e),
            Err(e) => {
                return reply::answer(
                    -503,
                    &format!(
                        "{e} (part {} of {of}; nothing is restored until the last: start again)",
                        part + 1
                    ),
                    None,
                )
            }
        }
    }
    tracing::warn!(
        instances,
        parts = of,
        took_ms = started.elapsed().as_millis() as u64,
        from_index = ?backup.applied_index,
        "registry restored from a backup"
    );
    reply::answer(0, &format!("restored {instances} instances"), None)
}

/// The registry's digest at the index this node has applied: replicas that
/// show the same index must show the same digest.
pub async fn digest(State(Admin { api, .. }): State<Admin>) -> Json<Digest> {
    let mut digest = api.local.digest();
    if !api.zones.others.is_empty() {
        let registry = api.local.read();
        let mut partitions = BTreeMap::new();
        let (instances, own) = registry.partition_digest(None);
        partitions.insert(
            api.zones.own.clone(),
            PartitionDigest {
                instances,
                digest: own,
                cursor: None,
            },
        );
        for zone in api.zones.others.keys() {
            let (instances, d) = registry.partition_digest(Some(zone));
            let cursor = registry.partitions().get(zone).map_or(0, |p| p.cursor);
            partitions.insert(
                zone.clone(),
                PartitionDigest {
                    instances,
                    digest: d,
                    cursor: Some(cursor),
                },
            );
        }
        digest.partitions = partitions;
    }
    Json(digest)
}

/// What an operator asks of `/admin/transfer-leader`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Transfer {
    /// The successor; the most caught-up voter when absent.
    pub to: Option<NodeId>,
}

/// Hands leadership to another voter without an election gap; any node
/// hands the request to the leader. Answers the new leader.
pub async fn transfer_leader(
    State(Admin { handover, .. }): State<Admin>,
    headers: HeaderMap,
    Json(transfer): Json<Transfer>,
) -> Json<Result<NodeId, String>> {
    Json(
        handover
            .at_leader(transfer.to, &operator(&headers))
            .await
            .map_err(|e| e.to_string()),
    )
}

/// Adds, promotes or removes a node; any node hands it to the leader.
pub async fn membership(
    State(Admin { raft, link, .. }): State<Admin>,
    headers: HeaderMap,
    Json(change): Json<Change>,
) -> Json<Result<Changed, String>> {
    Json(membership::apply(&raft, &link, change, &operator(&headers)).await)
}

/// Starts a repair of this node (see `cluster::repair`): it gives up its
/// vote, sets its data aside, rebuilds it from the cluster and gets its
/// vote back once a check finds it agrees.
pub async fn repair(
    State(Admin { raft, repair, .. }): State<Admin>,
) -> Json<Result<String, String>> {
    let me = raft.metrics().borrow().id;
    if let Some(refused) = repair::refusal(&raft, me) {
        return Json(Err(refused));
    }
    Json(match repair.try_send(Heard::Asked) {
        Ok(()) => Ok(format!(
            "node {me} gives up its vote, sets its data aside and rebuilds it from the \
             cluster; it serves again once a check finds it agrees"
        )),
        Err(_) => Err(format!("node {me} is busy repairing already")),
    })
}

/// The credential the admin layer let through, to hand on with a change.
pub fn operator(headers: &HeaderMap) -> Operator {
    let given = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    Operator(given.unwrap_or_default().to_string())
}
