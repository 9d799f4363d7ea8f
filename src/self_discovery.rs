//! The cluster's own nodes, published as the app `infra.discovery` in every
//! env, and listed by `/discovery/nodes`.
//!
//! This is each node's own view (membership from the Raft log, liveness as
//! this node sees it), not replicated state; its timestamp moves whenever
//! that view changes so that SDKs polling `infra.discovery` follow it.
//!
//! With several zones, `infra.discovery` also lists the other zones' nodes
//! as each zone last told this node (the original copied every zone's
//! self-registration everywhere; SDKs keep the nodes of their own zone),
//! while `/discovery/nodes` lists this zone's only, as the original's did.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::poll::PollHub;
use crate::registry::rendered::Answers;
use crate::registry::{
    App, AppKey, FetchMiss, Instance, Metadata, Name, PollView, Status, StatusMask, Timestamp,
};

/// The appid under which the cluster publishes itself.
pub const APPID: &str = crate::registry::CLUSTER_APPID;

/// The key held polls of `infra.discovery` watch, whatever their env.
pub fn watch_key() -> AppKey {
    AppKey::new("", APPID)
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// `host:port` clients reach it on.
    pub api_addr: String,
    pub zone: String,
    pub region: String,
    pub up: bool,
    /// When this node first saw it: its registration time.
    pub since: Timestamp,
}

/// An entry of `/discovery/nodes`.
#[derive(Serialize)]
pub struct NodeStatus<'a> {
    pub addr: &'a str,
    /// `0` up, `1` lost.
    pub status: u8,
    pub zone: &'a str,
}

/// The published view of the cluster's members.
/// The app is made for each read: its answer is not kept.
static UNKEPT: Answers = Answers::new(0);

pub struct SelfDiscovery {
    state: RwLock<State>,
    hub: Arc<PollHub>,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeView>,
    /// Other zones' nodes, as each last told this node.
    zones: BTreeMap<String, Vec<NodeView>>,
    latest_timestamp: Timestamp,
    renewed: Timestamp,
}

impl SelfDiscovery {
    pub fn new(hub: Arc<PollHub>) -> Arc<Self> {
        Arc::new(SelfDiscovery {
            state: RwLock::new(State::default()),
            hub,
        })
    }

    /// Replaces the view; when it differs (a member added or removed, or
    /// one's liveness changed) the timestamp moves and polls wake.
    pub fn update(&self, nodes: Vec<NodeView>, now: Timestamp) {
        self.replace(None, nodes, now);
    }

    /// Replaces what zone `zone` last said of its nodes, likewise.
    pub fn update_zone(&self, zone: &str, nodes: Vec<NodeView>, now: Timestamp) {
        self.replace(Some(zone), nodes, now);
    }

    fn replace(&self, zone: Option<&str>, mut nodes: Vec<NodeView>, now: Timestamp) {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let changed = {
            let mut state = self.state.write();
            state.renewed = now;
            let held = match zone {
                None => &mut state.nodes,
                Some(zone) => state.zones.entry(zone.to_string()).or_default(),
            };
            let same = held.len() == nodes.len()
                && held.iter().zip(&nodes).all(|(a, b)| {
                    (&a.name, &a.api_addr, &a.zone, a.up) == (&b.name, &b.api_addr, &b.zone, b.up)
                });
            if !same {
                *held = nodes;
                state.latest_timestamp = now.max(state.latest_timestamp + 1);
            }
            !same
        };
        if changed {
            self.hub.notify(&[watch_key()]);
        }
    }

    /// This zone's members as this node sees them (what another zone is
    /// told).
    pub fn own(&self) -> Vec<NodeView> {
        self.state.read().nodes.clone()
    }

    /// Whether any member has been published yet.
    pub fn has_members(&self) -> bool {
        !self.state.read().nodes.is_empty()
    }

    /// The instances of the live members, this zone's and the other
    /// zones', as seen in `env`.
    pub fn instances(&self, env: &str) -> Vec<Instance> {
        let state = self.state.read();
        state
            .nodes
            .iter()
            .chain(state.zones.values().flatten())
            .filter(|n| n.up)
            .map(|n| Instance {
                region: n.region.as_str().into(),
                zone: n.zone.as_str().into(),
                env: env.into(),
                appid: APPID.into(),
                hostname: n.name.as_str().into(),
                addrs: vec![format!("http://{}", n.api_addr)].into(),
                version: Name::default(),
                metadata: Metadata::new(),
                status: Status::Up,
                reg_timestamp: n.since,
                up_timestamp: n.since,
                renew_timestamp: state.renewed,
                dirty_timestamp: n.since,
                latest_timestamp: n.since,
            })
            .collect()
    }

    fn app(&self, env: &str) -> App {
        let mut app = App::default();
        for instance in self.instances(env) {
            app.insert(instance);
        }
        app.set_latest_timestamp(self.state.read().latest_timestamp);
        app
    }

    /// `fetch` of `infra.discovery` in `env`.
    pub fn fetch(
        &self,
        env: &str,
        zone: Option<&str>,
        mask: StatusMask,
    ) -> Result<Bytes, FetchMiss> {
        let app = self.app(env);
        if app.is_empty() {
            return Err(FetchMiss::UnknownApp);
        }
        app.render(zone, mask, None, &UNKEPT)
            .ok_or(FetchMiss::UnknownZone {
                latest_timestamp: app.latest_timestamp(),
            })
    }

    /// What a poll of `infra.discovery` holding `since` sees.
    pub fn poll(&self, env: &str, zone: Option<&str>, since: Timestamp) -> PollView {
        let app = self.app(env);
        if app.is_empty() {
            PollView::Unknown
        } else if app.latest_timestamp() <= since || !app.has_up(zone) {
            PollView::Unchanged
        } else {
            app.render(zone, StatusMask::UP, None, &UNKEPT)
                .map_or(PollView::Unchanged, PollView::Changed)
        }
    }

    /// Every member with its liveness, for `/discovery/nodes`.
    pub fn with_nodes<R>(&self, f: impl FnOnce(Vec<NodeStatus>) -> R) -> R {
        let state = self.state.read();
        f(state
            .nodes
            .iter()
            .map(|n| NodeStatus {
                addr: &n.api_addr,
                status: if n.up { 0 } else { 1 },
                zone: &n.zone,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(name: &str, up: bool) -> NodeView {
        NodeView {
            name: name.into(),
            api_addr: format!("{name}:7171"),
            zone: "z1".into(),
            region: "r".into(),
            up,
            since: 5,
        }
    }

    #[tokio::test]
    async fn liveness_change_moves_the_timestamp_and_wakes_polls() {
        let hub = PollHub::new();
        let sd = SelfDiscovery::new(hub.clone());
        sd.update(vec![node("a", true), node("b", true)], 100);
        let PollView::Changed(_) = sd.poll("any-env", None, 0) else {
            panic!("expected the members")
        };
        assert_eq!(sd.poll("prod", None, 100), PollView::Unchanged);
        let watch = hub.watch(vec![watch_key()]);
        sd.update(vec![node("b", true), node("a", true)], 150);
        assert_eq!(
            sd.poll("prod", None, 100),
            PollView::Unchanged,
            "same view, same timestamp"
        );
        sd.update(vec![node("a", true), node("b", false)], 200);
        tokio::time::timeout(Duration::from_secs(1), watch.changed())
            .await
            .expect("woken");
        assert_eq!(sd.instances("prod").len(), 1);
        assert_eq!(
            sd.instances("prod")[0].addrs[..],
            ["http://a:7171".to_string()]
        );
        assert_eq!(sd.instances("prod")[0].env, "prod");
        sd.with_nodes(|n| assert_eq!(n.iter().map(|s| s.status).collect::<Vec<_>>(), vec![0, 1]));
    }
}
