//! The public discovery API: thin handlers that bind parameters, call the
//! registry or the write path, and render the answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use super::all;
use super::params::Params;
use super::reply;
use crate::auth::Origin;
use crate::clock::now;
use crate::cluster::catch_up::ReadBarrier;
use crate::cluster::protection::Protection;
use crate::cluster::renewer::Renewer;
use crate::cluster::writer::{WriteError, Writer};
use crate::fair::{Budget, NewInstances, Share, Shares};
use crate::local::LocalRegistry;
use crate::registry::{
    parse_metadata, AppKey, Change, Command, FetchMiss, Instance, InstanceKey, Outcome, PollView,
    Registration, RegistryError, Renewal, Status, StatusMask, Timestamp,
};
use crate::self_discovery::{self, SelfDiscovery};
use crate::telemetry::{Metrics, PollAnswer};
use crate::zones::router::{ZoneWrite, ZoneWritten, Zones};

/// What the handlers share.
pub struct Api {
    pub local: Arc<LocalRegistry>,
    pub writer: Writer,
    pub renewer: Renewer,
    /// Where writes for other zones' instances go.
    pub zones: Zones,
    pub nodes: Arc<SelfDiscovery>,
    pub protection: Arc<Protection>,
    pub poll_hold: Duration,
    /// Polls (and `/admin/changes` waits) held at once, in all and per
    /// client: past either, a poll answers overloaded at once.
    pub polls: Arc<Shares>,
    /// The pace of new instances per client and per app.
    pub new_instances: NewInstances,
    /// Bytes that `fetch/all` answers being sent may hold.
    pub unsent: Arc<Budget>,
    /// The node's own env, under which `fetch/all` lists the cluster's nodes.
    pub env: String,
    pub metrics: Arc<Metrics>,
    /// For reads that ask `consistent=1`.
    pub reads: ReadBarrier,
}

type Shared = State<Arc<Api>>;

/// The address a write came from, which the leader checks again.
type Client = ConnectInfo<SocketAddr>;

/// What `renew` answers for an instance the registry does not hold, as the
/// original renders its zero value.
const ZERO_INSTANCE: &[u8] = br#"{"region":"","zone":"","env":"","appid":"","hostname":"","addrs":null,"version":"","metadata":null,"status":0,"reg_timestamp":0,"up_timestamp":0,"renew_timestamp":0,"dirty_timestamp":0,"latest_timestamp":0}"#;

macro_rules! try_param {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return reply::error(&e),
        }
    };
}

/// A place for one more held poll from `client`, or a refusal at once
/// (past the cap, or past the client's share of it), so that the client
/// polls another node instead of waiting here.
pub fn poll_room(api: &Api, client: IpAddr) -> Result<Share, Response> {
    api.polls
        .take(client)
        .map_err(|refused| reply::overloaded(&format!("polls: {refused}")))
}

/// Refuses reads while the node is catching up.
fn guard(api: &Api) -> Result<(), Response> {
    match api.protection.reason() {
        Some(why) => Err(reply::protected(&why)),
        None => Ok(()),
    }
}

/// With `consistent=1`, waits until this node has applied everything the
/// leader had committed when the read arrived; `-503` when no leader
/// confirms in time. Without it (or `0`), answers at once from local state.
async fn consistent(api: &Api, p: &Params) -> Result<(), Response> {
    match p.one("consistent").map_err(|e| reply::error(&e))? {
        None | Some("0") | Some("false") => Ok(()),
        // Boxed: a held poll's future would otherwise keep room for this
        // one (a request to the leader) as long as it is held.
        Some("1") | Some("true") => Box::pin(api.reads.confirm())
            .await
            .map(|_| ())
            .map_err(|e| reply::answer(-503, &format!("consistent read: {e}"), None)),
        Some(other) => Err(reply::error(&RegistryError::bad(
            "consistent",
            &format!("{other:?}: 1 (confirm with the leader) or 0"),
        ))),
    }
}

/// Carries out a client's write here, or in the zone that owns the
/// instance.
async fn write(api: &Api, command: Command, zone: &str, from: IpAddr) -> Result<Outcome, Response> {
    let written = match api.zones.owner(zone) {
        None => api.writer.write(command, Origin::Client(from)).await,
        Some(owner) => match api
            .zones
            .hand_over(owner, ZoneWrite::Command(command))
            .await
        {
            Ok(ZoneWritten::Outcome(outcome)) => Ok(outcome),
            Ok(ZoneWritten::Renewal(_)) => Err(WriteError::ZoneUnreachable(format!(
                "zone {owner} answered a write with a renewal"
            ))),
            Err(e) => Err(e),
        },
    };
    written.map_err(|e| write_refused(&e))
}

/// Renews here, or in the zone that owns the instance.
async fn renew_in_owner(api: &Api, key: InstanceKey, from: IpAddr) -> Result<Renewal, WriteError> {
    match api.zones.owner(&key.zone) {
        None => api.renewer.renew(key, Origin::Client(from)).await,
        Some(owner) => {
            let owner = owner.to_string();
            match api.zones.hand_over(&owner, ZoneWrite::Renew(key)).await? {
                ZoneWritten::Renewal(renewal) => Ok(renewal),
                ZoneWritten::Outcome(_) => Err(WriteError::ZoneUnreachable(format!(
                    "zone {owner} answered a renew with an outcome"
                ))),
            }
        }
    }
}

fn write_refused(e: &WriteError) -> Response {
    match e {
        WriteError::NoQuorum(_)
        | WriteError::LeaderReplaced(_)
        | WriteError::Unknown(_)
        | WriteError::NotAppliedHere(_)
        | WriteError::DiskFull(_)
        | WriteError::ZoneUnreachable(_) => reply::answer(-503, &e.to_string(), None),
        WriteError::Unavailable(_) => reply::answer(-500, &e.to_string(), None),
        WriteError::Invalid(e) => reply::error(e),
    }
}

fn instance_key(p: &Params) -> Result<InstanceKey, RegistryError> {
    Ok(InstanceKey {
        zone: p.required("zone")?.to_string(),
        env: p.required("env")?.to_string(),
        appid: p.required("appid")?.to_string(),
        hostname: p.required("hostname")?.to_string(),
    })
}

fn registration(p: &Params) -> Result<Registration, RegistryError> {
    let key = instance_key(p)?;
    let status = Status::try_from(p.required_number::<u32>("status")?)?;
    let addrs: Vec<String> = p.list("addrs").into_iter().map(str::to_string).collect();
    Ok(Registration {
        region: p.one("region")?.unwrap_or_default().to_string(),
        zone: key.zone,
        env: key.env,
        appid: key.appid,
        hostname: key.hostname,
        addrs,
        version: p.one("version")?.unwrap_or_default().to_string(),
        metadata: parse_metadata(p.one("metadata")?.unwrap_or_default())?,
        status,
    })
}

pub async fn register(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    let registration = try_param!(registration(&p));
    let zone = registration.zone.clone();
    let known = api.local.read().get(&registration.key()).is_some();
    if !known {
        if let Err(why) = api.new_instances.take(
            client.ip(),
            &registration.env,
            &registration.appid,
            std::time::Instant::now(),
        ) {
            return reply::too_many(&why);
        }
    }
    match write(
        &api,
        Command::Register {
            registration,
            at: now(),
        },
        &zone,
        client.ip(),
    )
    .await
    {
        Ok(outcome) => done_or_error(outcome),
        Err(r) => r,
    }
}

pub async fn renew(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    let key = try_param!(instance_key(&p));
    match renew_in_owner(&api, key, client.ip()).await {
        Ok(Renewal::Renewed(instance)) => {
            api.metrics.renews.inc();
            reply::ok(&serde_json::to_vec(&instance).unwrap_or_default())
        }
        Ok(Renewal::UnknownInstance) => reply::answer(-404, "-404", Some(ZERO_INSTANCE)),
        Ok(Renewal::UnknownApp) => reply::answer(-404, "-404", Some(b"null")),
        Ok(Renewal::Refused(why)) => reply::answer(-403, &why, None),
        Err(e) => write_refused(&e),
    }
}

pub async fn cancel(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    let key = try_param!(instance_key(&p));
    let zone = key.zone.clone();
    match write(&api, Command::Cancel { key, at: now() }, &zone, client.ip()).await {
        Ok(outcome) => done_or_error(outcome),
        Err(r) => r,
    }
}

fn set_command(p: &Params) -> Result<Command, RegistryError> {
    let zone = p.required("zone")?.to_string();
    let env = p.required("env")?.to_string();
    let appid = p.required("appid")?.to_string();
    let hostnames = p.list("hostname");
    if hostnames.is_empty() {
        return Err(RegistryError::bad("hostname", "required"));
    }
    let statuses = p.list("status");
    let metadata = p.raw_list("metadata");
    let count_ok = |n: usize| n == 0 || n == hostnames.len();
    if !count_ok(statuses.len()) {
        return Err(RegistryError::bad(
            "status",
            "give none or one per hostname",
        ));
    }
    if !count_ok(metadata.len()) {
        return Err(RegistryError::bad(
            "metadata",
            "give none or one per hostname",
        ));
    }
    let mut changes = Vec::with_capacity(hostnames.len());
    for (i, hostname) in hostnames.iter().enumerate() {
        let status = match statuses.get(i) {
            Some(s) => {
                let n: u32 = s
                    .parse()
                    .map_err(|_| RegistryError::bad("status", &format!("{s:?} is not a number")))?;
                Some(Status::try_from(n)?)
            }
            None => None,
        };
        let metadata = metadata.get(i).map(|m| parse_metadata(m)).transpose()?;
        changes.push(Change {
            hostname: hostname.to_string(),
            status,
            metadata,
        });
    }
    Ok(Command::Set {
        env,
        appid,
        zone,
        changes,
        at: now(),
    })
}

pub async fn set(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    let command = try_param!(set_command(&p));
    let zone = match &command {
        Command::Set { zone, .. } => zone.clone(),
        _ => String::new(),
    };
    match write(&api, command, &zone, client.ip()).await {
        Ok(outcome) => done_or_error(outcome),
        Err(r) => r,
    }
}

fn done_or_error(outcome: Outcome) -> Response {
    match outcome {
        Ok(_) => reply::done(),
        Err(e) => reply::error(&e),
    }
}

/// The rendered fetch data of an app, the cluster's own included.
fn fetch_one(
    api: &Api,
    env: &str,
    appid: &str,
    zone: Option<&str>,
    mask: StatusMask,
) -> Result<Bytes, FetchMiss> {
    if appid == self_discovery::APPID {
        api.nodes.fetch(env, zone, mask)
    } else {
        api.local.read().fetch(env, appid, zone, mask)
    }
}

fn status_mask(p: &Params) -> Result<StatusMask, RegistryError> {
    StatusMask::new(p.required_number("status")?)
}

pub async fn fetch(State(api): Shared, p: Params) -> Response {
    if let Err(r) = guard(&api) {
        return r;
    }
    if let Err(r) = consistent(&api, &p).await {
        return r;
    }
    let env = try_param!(p.required("env"));
    let appid = try_param!(p.required("appid"));
    let mask = try_param!(status_mask(&p));
    let zone = try_param!(p.one("zone"));
    match fetch_one(&api, env, appid, zone, mask) {
        Ok(data) => reply::ok_shared(data),
        Err(FetchMiss::UnknownApp) => reply::answer(-404, "-404", Some(b"null")),
        Err(FetchMiss::UnknownZone { latest_timestamp }) => {
            let data = format!(r#"{{"instances":{{}},"latest_timestamp":{latest_timestamp}}}"#);
            reply::answer(-404, "-404", Some(data.as_bytes()))
        }
    }
}

pub async fn fetchs(State(api): Shared, p: Params) -> Response {
    if let Err(r) = guard(&api) {
        return r;
    }
    if let Err(r) = consistent(&api, &p).await {
        return r;
    }
    let env = try_param!(p.required("env"));
    let appids = p.list("appid");
    if appids.is_empty() {
        return reply::error(&RegistryError::bad("appid", "required"));
    }
    let mask = try_param!(status_mask(&p));
    let zone = try_param!(p.one("zone"));
    let found: BTreeMap<&str, Bytes> = appids
        .iter()
        .filter_map(|appid| Some((*appid, fetch_one(&api, env, appid, zone, mask).ok()?)))
        .collect();
    // The apps' shared encodings, between the keys, never copied.
    let mut pieces = Vec::with_capacity(found.len() * 2 + 1);
    let mut keys = Vec::from(&b"{"[..]);
    for (i, (appid, bytes)) in found.into_iter().enumerate() {
        if i > 0 {
            keys.push(b',');
        }
        keys.extend_from_slice(serde_json::to_string(appid).unwrap_or_default().as_bytes());
        keys.push(b':');
        pieces.push(Bytes::from(std::mem::take(&mut keys)));
        pieces.push(bytes);
    }
    keys.push(b'}');
    pieces.push(Bytes::from(keys));
    reply::ok_pieces(pieces)
}

pub async fn fetch_all(State(api): Shared, ConnectInfo(client): Client) -> Response {
    if let Err(r) = guard(&api) {
        return r;
    }
    let ours: Vec<Instance> = api.nodes.instances(&api.env);
    let (apps, instances) = {
        let registry = api.local.read();
        (registry.shared_apps(), registry.len())
    };
    // What the answer holds until it is read: bounded for all clients
    // together and for each; past it, a prompt -503 sends the client to
    // another node (or back later).
    let spend = match api.unsent.take(
        client.ip(),
        instances.saturating_mul(all::HELD_PER_INSTANCE),
    ) {
        Ok(spend) => spend,
        Err(refused) => {
            return reply::overloaded(&format!("fetch/all: bytes of answers unsent: {refused}"))
        }
    };
    reply::ok_streamed(all::body(apps, self_discovery::APPID, ours, spend))
}

pub async fn nodes(State(api): Shared) -> Response {
    if let Err(r) = guard(&api) {
        return r;
    }
    let data = api
        .nodes
        .with_nodes(|n| serde_json::to_vec(&n).unwrap_or_default());
    reply::ok(&data)
}

/// What a held poll ended with.
enum Held {
    Changed {
        data: Vec<(String, Bytes)>,
        missing: Vec<String>,
    },
    TimedOut,
}

/// Looks at every polled app once; returns the changed ones and the ones
/// that do not exist.
fn look(
    api: &Api,
    env: &str,
    zone: Option<&str>,
    apps: &[(String, Timestamp)],
) -> (Vec<(String, Bytes)>, Vec<String>) {
    let mut changed = Vec::new();
    let mut missing = Vec::new();
    let registry = api.local.read();
    for (appid, since) in apps {
        let view = if appid == self_discovery::APPID {
            api.nodes.poll(env, zone, *since)
        } else {
            registry.poll(env, appid, zone, *since)
        };
        match view {
            PollView::Changed(data) => changed.push((appid.clone(), data)),
            PollView::Unknown => missing.push(appid.clone()),
            PollView::Unchanged => {}
        }
    }
    (changed, missing)
}

/// Holds a poll until one of its apps changes or the hold time passes. The
/// watch is registered before the first look, so no change slips between.
async fn hold(api: &Api, env: &str, zone: Option<&str>, apps: &[(String, Timestamp)]) -> Held {
    let keys = apps
        .iter()
        .map(|(appid, _)| {
            if appid == self_discovery::APPID {
                self_discovery::watch_key()
            } else {
                AppKey::new(env, appid)
            }
        })
        .collect();
    let watch = api.local.hub().watch(keys);
    let deadline = Instant::now() + api.poll_hold;
    let mut woken = false;
    loop {
        let (data, missing) = look(api, env, zone, apps);
        if !data.is_empty() {
            if woken {
                let after = api.local.hub().since_last_wake();
                api.metrics.poll(PollAnswer::Woken, after);
            } else {
                api.metrics.poll(PollAnswer::AtOnce, None);
            }
            return Held::Changed { data, missing };
        }
        if api.local.hub().is_closed() {
            api.metrics.poll(PollAnswer::NotModified, None);
            return Held::TimedOut;
        }
        tokio::select! {
            _ = watch.changed() => woken = true,
            _ = tokio::time::sleep_until(deadline) => {
                api.metrics.poll(PollAnswer::NotModified, None);
                return Held::TimedOut;
            }
        }
    }
}

pub async fn polls(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    held_polls(&api, client, &p).await
}

/// `polls`, from the router or served outside it ([`super::lean`]).
pub async fn held_polls(api: &Api, client: SocketAddr, p: &Params) -> Response {
    if let Err(r) = guard(api) {
        return r;
    }
    let _held = match poll_room(api, client.ip()) {
        Ok(share) => share,
        Err(r) => return r,
    };
    let env = try_param!(p.required("env"));
    try_param!(p.required("hostname"));
    let appids = p.list("appid");
    if appids.is_empty() {
        return reply::error(&RegistryError::bad("appid", "required"));
    }
    let stamps = p.list("latest_timestamp");
    if stamps.len() != appids.len() {
        return reply::error(&RegistryError::bad(
            "latest_timestamp",
            &format!(
                "{} values for {} appids: give one per appid",
                stamps.len(),
                appids.len()
            ),
        ));
    }
    let mut apps = Vec::with_capacity(appids.len());
    for (appid, stamp) in appids.iter().zip(&stamps) {
        let since = try_param!(stamp.parse::<Timestamp>().map_err(|_| RegistryError::bad(
            "latest_timestamp",
            &format!("{stamp:?} is not a number")
        )));
        apps.push((appid.to_string(), since));
    }
    let zone = try_param!(p.one("zone"));
    // The first answer is consistent when asked: a change already there
    // is answered from a state that holds every acknowledged write.
    if let Err(r) = consistent(api, p).await {
        return r;
    }
    match hold(api, env, zone, &apps).await {
        Held::Changed { data, missing } => {
            let data: Vec<(&str, Bytes)> =
                data.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
            let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
            reply::polls(&data, &missing)
        }
        Held::TimedOut => reply::not_modified(),
    }
}

pub async fn poll(State(api): Shared, ConnectInfo(client): Client, p: Params) -> Response {
    held_poll(&api, client, &p).await
}

/// `poll`, from the router or served outside it ([`super::lean`]).
pub async fn held_poll(api: &Api, client: SocketAddr, p: &Params) -> Response {
    if let Err(r) = guard(api) {
        return r;
    }
    let _held = match poll_room(api, client.ip()) {
        Ok(share) => share,
        Err(r) => return r,
    };
    let env = try_param!(p.required("env"));
    try_param!(p.required("hostname"));
    let appid = try_param!(p.required("appid"));
    let since = try_param!(p.number::<Timestamp>("latest_timestamp")).unwrap_or(0);
    let apps = [(appid.to_string(), since)];
    let zone = try_param!(p.one("zone"));
    let (_, missing) = look(api, env, zone, &apps);
    if !missing.is_empty() {
        return reply::poll_unknown(appid);
    }
    match hold(api, env, zone, &apps).await {
        Held::Changed { mut data, .. } => match data.pop() {
            Some((_, bytes)) => reply::ok_shared(bytes),
            None => reply::not_modified(),
        },
        Held::TimedOut => reply::not_modified(),
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future `handler` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A held poll keeps its handler's future for as long as it is held:
    /// what is only needed before the hold (a consistent read's round trip
    /// to the leader, 2.1 KB more) must not be laid out in it.
    #[test]
    fn a_held_polls_future_stays_small() {
        for (name, size) in [
            ("polls", future_size(super::polls)),
            ("poll", future_size(super::poll)),
        ] {
            eprintln!("{name}: {size} B");
            assert!(size <= 1024, "the {name} handler's future is {size} B");
        }
    }
}
