//! The one check in front of every peer route: the caller the handshake
//! proved ([`Caller`]) against what the route allows, given this node's
//! membership. A route missing from [`rule`] is refused to everyone, so a
//! route added later cannot forget its check. What only a body can say
//! (the candidate of a vote, the leader of an append) is checked by the
//! route against the same caller, with [`Guard::claims`].
//!
//! A refusal answers 403 with the reason, changes nothing, and is logged
//! once per caller and reason, not once per request.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use openraft::Membership;
use parking_lot::Mutex;

use super::identity::Caller;
use super::paths;
use crate::auth::AdminToken;
use crate::cluster::founding::Founding;
use crate::cluster::identity::{self, ClusterId, HEADER as CLUSTER_HEADER};
use crate::raft::{Member, NodeId, Raft};
use crate::shutdown::Faults;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Replication (appends, snapshots): a member, and the body's leader
    /// must be the caller; any node of the zone while this node belongs
    /// to no cluster yet (it is being added).
    Replication,
    /// Votes: a voter, and the body's candidate must be the caller.
    Vote,
    /// The leader asking this node to campaign: the leader this node
    /// follows.
    Leader,
    /// Proposals and renews handed to the leader: a member.
    Member,
    /// Admin changes handed to the leader: a member carrying the
    /// operator's admin token.
    Admin,
    /// Questions a node asks while it starts or is being added (bootstrap,
    /// read index, health): a member or a configured member; any node of
    /// the zone while this node belongs to no cluster yet (the leader
    /// adding it asks who it is).
    Joining,
    /// Another zone: its link.
    Link,
    /// A node's request for itself, member or not (a read replica
    /// joining): any node of this zone; the route checks that the body is
    /// for the caller.
    Itself,
}

/// The rule of each peer route; none for anything else.
pub fn rule(path: &str) -> Option<Rule> {
    Some(match path {
        paths::APPEND | paths::SNAPSHOT | paths::FULL_SNAPSHOT => Rule::Replication,
        paths::VOTE => Rule::Vote,
        paths::ELECT => Rule::Leader,
        paths::PROPOSE | paths::RENEW | paths::CHECK | paths::REPAIR => Rule::Member,
        paths::MEMBERSHIP | paths::TRANSFER_LEADER => Rule::Admin,
        paths::BOOTSTRAP | paths::READ_INDEX | paths::HEALTH => Rule::Joining,
        paths::ZONE_CHANGES | paths::ZONE_WRITE | paths::ZONE_NODES => Rule::Link,
        paths::REPLICA => Rule::Itself,
        _ => return None,
    })
}

/// What this node knows of its cluster when a request arrives, borrowed
/// from where it is kept (nothing is copied per request).
#[derive(Debug)]
pub struct View<'a> {
    /// The membership this node has applied: voters (of every joint
    /// config) and learners.
    pub membership: &'a Membership<NodeId, Member>,
    /// The configured initial members (`[cluster] members`).
    pub configured: &'a BTreeSet<NodeId>,
    /// The leader this node follows.
    pub leader: Option<NodeId>,
    /// Other zones this node follows (`[zones]`): their links may call.
    pub zones: &'a BTreeSet<String>,
}

/// Whether `caller` may call a route of `rule`; why not if not.
pub fn decide(rule: Rule, caller: &Caller, view: &View) -> Result<(), String> {
    let id = match caller {
        Caller::Unproven => return Ok(()),
        Caller::Nobody(why) => return Err(why.to_string()),
        Caller::Link(zone) => {
            return match rule {
                Rule::Link if view.zones.contains(zone) => Ok(()),
                Rule::Link => Err(format!("zone {zone} is not one this node follows")),
                _ => Err(format!("a zone's link may not call a {rule:?} route")),
            }
        }
        Caller::Node(id) => *id,
    };
    let membership = view.membership;
    let voter = membership
        .get_joint_config()
        .iter()
        .any(|c| c.contains(&id));
    let member = membership.get_node(&id).is_some();
    // A node that belongs to no cluster yet.
    let unjoined = membership.nodes().next().is_none();
    let allowed = match rule {
        Rule::Replication => unjoined || member,
        Rule::Vote => voter || (unjoined && view.configured.contains(&id)),
        Rule::Leader => view.leader == Some(id),
        Rule::Member | Rule::Admin => member,
        Rule::Joining => unjoined || member || view.configured.contains(&id),
        Rule::Link => return Err(format!("node {id} is no zone link")),
        Rule::Itself => true,
    };
    if allowed {
        return Ok(());
    }
    Err(match rule {
        Rule::Vote => format!("node {id} is not a voter here"),
        Rule::Leader => format!("node {id} is not the leader this node follows"),
        _ => format!("node {id} is not a member here"),
    })
}

/// The most distinct refusals logged; past them, one line says so.
const LOGGED: usize = 1024;

/// The peer surface's gatekeeper.
pub struct Guard {
    raft: Raft,
    configured: BTreeSet<NodeId>,
    zones: BTreeSet<String>,
    admin: AdminToken,
    /// Peers talk plain HTTP: nothing is proven, everyone is trusted.
    insecure: bool,
    /// This node's cluster, once known: a node of another may not call
    /// the cluster's own routes.
    cluster: ClusterId,
    /// The members that called as nodes of another cluster: when they
    /// are most of the cluster, this node's data is the foreign one.
    foreign_callers: Mutex<BTreeSet<NodeId>>,
    faults: Faults,
    /// Whether this pristine voter still decides: then it takes no
    /// replication and casts no vote (see `cluster::founding`).
    founding: Arc<Founding>,
    logged: Mutex<HashSet<String>>,
}

/// What a guard is made of: the node's view and what it answers with.
pub struct Guarding {
    pub raft: Raft,
    /// The configured initial members (`[cluster] members`).
    pub configured: BTreeSet<NodeId>,
    /// Other zones this node follows (`[zones]`).
    pub zones: BTreeSet<String>,
    pub admin: AdminToken,
    /// Peers talk plain HTTP.
    pub insecure: bool,
    pub cluster: ClusterId,
    pub faults: Faults,
    pub founding: Arc<Founding>,
}

impl Guard {
    pub fn new(g: Guarding) -> Arc<Self> {
        Arc::new(Guard {
            raft: g.raft,
            configured: g.configured,
            zones: g.zones,
            admin: g.admin,
            insecure: g.insecure,
            cluster: g.cluster,
            foreign_callers: Mutex::new(BTreeSet::new()),
            faults: g.faults,
            founding: g.founding,
            logged: Mutex::new(HashSet::new()),
        })
    }

    /// Decides under this node's current view, read in place.
    fn decide(&self, rule: Rule, caller: &Caller) -> Result<(), String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let view = View {
            membership: m.membership_config.membership(),
            configured: &self.configured,
            leader: m.current_leader,
            zones: &self.zones,
        };
        decide(rule, caller, &view)
    }

    /// The caller a request carries; without one (no TLS) only an insecure
    /// cluster trusts it.
    fn caller(&self, request: &Request) -> Caller {
        match request.extensions().get::<Caller>() {
            Some(caller) => caller.clone(),
            None if self.insecure => Caller::Unproven,
            None => Caller::nobody("no certificate was checked".into()),
        }
    }

    /// Checks that a body's claim (a vote's candidate, an append's
    /// leader) is the caller itself.
    pub fn claims(
        &self,
        caller: &Caller,
        what: &str,
        claimed: Option<NodeId>,
    ) -> Result<(), (StatusCode, String)> {
        match caller {
            Caller::Node(id) if claimed == Some(*id) => Ok(()),
            Caller::Unproven => Ok(()),
            _ => {
                let claimed = claimed.map_or("nobody".to_string(), |c| format!("node {c}"));
                Err(self.refuse(caller, &format!("{what} claims to come from {claimed}")))
            }
        }
    }

    /// Logs a refusal the first time this caller gets it, and answers 403.
    fn refuse(&self, caller: &Caller, why: &str) -> (StatusCode, String) {
        self.log_once(caller, why, false);
        (StatusCode::FORBIDDEN, format!("refused: {why}"))
    }

    /// A call from a node of another cluster: an operator's error (a data
    /// directory copied from elsewhere), said at ERROR, once per caller
    /// and cluster.
    fn foreign(&self, caller: &Caller, mine: &str, theirs: &str) -> (StatusCode, String) {
        let why = format!(
            "a node of cluster {theirs} called this node of cluster {mine}: its data \
             directory is another cluster's"
        );
        self.log_once(caller, &why, true);
        if let Caller::Node(id) = caller {
            let mut foreign = self.foreign_callers.lock();
            foreign.insert(*id);
            let voters = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count();
            if identity::foreign(foreign.len(), voters.max(self.configured.len())) {
                self.faults.raise(format!(
                    "nodes {foreign:?} of the configured cluster belong to cluster {theirs}, and \
                     this node's data directory to cluster {mine}: this node's data is another \
                     cluster's (point data_dir at this node's own directory, or move it away \
                     and add this node back as a new one)"
                ));
            }
        }
        (StatusCode::CONFLICT, format!("refused: {why}"))
    }

    fn log_once(&self, caller: &Caller, why: &str, error: bool) {
        let line = format!("{caller}: {why}");
        let mut logged = self.logged.lock();
        if logged.len() < LOGGED {
            if logged.insert(line.clone()) {
                if error {
                    tracing::error!("peer refused: {line} (logged once)");
                } else {
                    tracing::warn!("peer refused: {line} (logged once)");
                }
            }
        } else if logged.len() == LOGGED {
            logged.insert(String::new());
            tracing::warn!(
                "peer refused: {line}; {LOGGED} kinds of refusal logged, no more will be"
            );
        }
    }
}

/// The middleware: every peer request passes here first.
pub async fn check(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let caller = guard.caller(&request);
    let Some(rule) = rule(request.uri().path()) else {
        if matches!(caller, Caller::Node(_) | Caller::Unproven) {
            return StatusCode::NOT_FOUND.into_response();
        }
        return guard.refuse(&caller, "no such route").into_response();
    };
    // Not refused (nothing is wrong with the caller): not yet.
    if guard.founding.deciding() && matches!(rule, Rule::Replication | Rule::Vote | Rule::Leader) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this node started on an empty data directory and has not yet learnt whether \
             it founds its cluster or rejoins it",
        )
            .into_response();
    }
    // Other zones (other clusters) stream and hand writes; a node may ask
    // which cluster this one is. The cluster's own routes are its own.
    if !matches!(rule, Rule::Link | Rule::Joining) {
        let theirs = request
            .headers()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Some(mine) = guard.cluster.refuses(theirs) {
            let theirs = theirs.unwrap_or_default();
            return guard.foreign(&caller, &mine, theirs).into_response();
        }
    }
    let decided = guard.decide(rule, &caller).and_then(|()| {
        // Admin changes need the operator's token whoever hands them on.
        if rule != Rule::Admin {
            return Ok(());
        }
        let header = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        guard
            .admin
            .check(header)
            .map_err(|e| format!("an admin change handed on without the operator's token: {e}"))
    });
    match decided {
        Ok(()) => {
            // The routes see the caller as resolved here.
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(why) => guard.refuse(&caller, &why).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> BTreeSet<NodeId> {
        [1, 2, 3].into()
    }

    fn zones() -> BTreeSet<String> {
        ["sh002".to_string()].into()
    }

    /// Voters 1 to 3, learner 4.
    fn membership() -> Membership<NodeId, Member> {
        let nodes: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        Membership::new(vec![[1, 2, 3].into()], nodes)
    }

    fn view<'a>(
        membership: &'a Membership<NodeId, Member>,
        configured: &'a BTreeSet<NodeId>,
        zones: &'a BTreeSet<String>,
    ) -> View<'a> {
        View {
            membership,
            configured,
            leader: Some(1),
            zones,
        }
    }

    #[test]
    fn every_peer_route_has_a_rule() {
        for path in paths::ALL {
            assert!(rule(path).is_some(), "{path}");
        }
        assert_eq!(rule("/internal/anything-new"), None);
    }

    #[test]
    fn a_node_that_is_no_member_may_call_nothing_but_ask_to_join() {
        let stranger = Caller::Node(9);
        let (m, c, z) = (membership(), configured(), zones());
        // A read replica asks for itself (the route checks the body).
        assert!(decide(Rule::Itself, &stranger, &view(&m, &c, &z)).is_ok());
        let link = Caller::Link("sh002".into());
        assert!(decide(Rule::Itself, &link, &view(&m, &c, &z)).is_err());
        for path in paths::ALL.into_iter().filter(|p| *p != paths::REPLICA) {
            let rule = rule(path).unwrap();
            assert!(
                decide(
                    rule,
                    &stranger,
                    &view(&membership(), &configured(), &zones())
                )
                .is_err(),
                "{path}"
            );
        }
    }

    #[test]
    fn learners_replicate_and_forward_but_do_not_vote_or_lead() {
        let learner = Caller::Node(4);
        let (m, c, z) = (membership(), configured(), zones());
        let v = view(&m, &c, &z);
        assert!(decide(Rule::Member, &learner, &v).is_ok());
        assert!(decide(Rule::Joining, &learner, &v).is_ok());
        assert!(decide(Rule::Vote, &learner, &v).is_err());
        assert!(decide(Rule::Leader, &learner, &v).is_err());
        assert!(decide(Rule::Leader, &Caller::Node(1), &v).is_ok());
        assert!(decide(Rule::Leader, &Caller::Node(2), &v).is_err());
    }

    #[test]
    fn links_reach_the_zone_routes_only_and_nodes_never_do() {
        let link = Caller::Link("sh002".into());
        for path in paths::ALL {
            let rule = rule(path).unwrap();
            let allowed =
                decide(rule, &link, &view(&membership(), &configured(), &zones())).is_ok();
            assert_eq!(allowed, rule == Rule::Link, "{path}");
            assert!(
                rule != Rule::Link
                    || decide(
                        rule,
                        &Caller::Node(1),
                        &view(&membership(), &configured(), &zones())
                    )
                    .is_err(),
                "{path}"
            );
        }
        let unknown = Caller::Link("sh009".into());
        assert!(decide(
            Rule::Link,
            &unknown,
            &view(&membership(), &configured(), &zones())
        )
        .is_err());
    }

    #[test]
    fn a_node_being_added_takes_replication_from_any_node_of_its_zone() {
        let (configured, zones) = (configured(), BTreeSet::new());
        let none = Membership::new(vec![], BTreeSet::<NodeId>::new());
        let empty = View {
            membership: &none,
            configured: &configured,
            leader: None,
            zones: &zones,
        };
        assert!(decide(Rule::Replication, &Caller::Node(7), &empty).is_ok());
        assert!(decide(Rule::Vote, &Caller::Node(2), &empty).is_ok());
        assert!(decide(Rule::Vote, &Caller::Node(7), &empty).is_err());
        assert!(decide(Rule::Member, &Caller::Node(7), &empty).is_err());
        // The leader adding it asks who it is and whether it serves.
        assert!(decide(Rule::Joining, &Caller::Node(7), &empty).is_ok());
    }
}
