//! Changing who is in the cluster at runtime: add a node as a learner (it
//! catches up, by snapshot when the log it needs is compacted), promote it
//! to voter, remove a node. Any node accepts a change and hands it to the
//! leader.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::ChangeMembers;

use super::bootstrap::BootstrapState;
use super::link::{Link, LinkError};
use crate::auth::Operator;
use crate::raft::{Member, NodeId, Raft};

pub use super::messages::{Change, Changed};

/// How long adding a learner waits for the node at the address given to
/// say who it is: a mistyped address is refused within this, nothing
/// committed.
const ASK_JOINER: Duration = Duration::from_secs(5);

/// How long adding a learner waits for it to catch up and serve reads
/// (documented in docs/operations.md): under the time a forwarded change
/// waits for the leader (below).
pub const JOIN_WAIT: Duration = Duration::from_secs(60);

/// How long a change handed to the leader may take: asking the joiner,
/// its catch-up, and then some.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

/// Carries out a change here if this node leads, else at the leader,
/// which checks the operator's credential again.
pub async fn apply(
    raft: &Raft,
    link: &Link,
    change: Change,
    operator: &Operator,
) -> Result<Changed, String> {
    match apply_here(raft, link, &change).await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_node: Some(leader),
            ..
        }))) => link
            .membership(&leader, &change, operator, FORWARD_TIMEOUT)
            .await
            .map_err(|e| format!("leader {leader} did not answer: {e}"))?,
        applied => finish(raft, link, applied).await,
    }
}

/// The leader's side of a change a peer handed it: carried out here only,
/// never handed on again.
pub async fn accept_forwarded(raft: &Raft, link: &Link, change: Change) -> Result<Changed, String> {
    finish(raft, link, apply_here(raft, link, &change).await).await
}

/// What the leader did with a change.
enum Done {
    Changed,
    /// A learner was added; it has caught up once it holds this index,
    /// and is waited for this long.
    Learner(NodeId, Member, u64, Duration),
    /// The node to remove is not a member: nothing to do, and the operator
    /// most likely mistyped the id.
    NotAMember(NodeId),
    /// The node to add was refused (it clashes with a member, it did not
    /// say who it is, or it is not the node asked for): nothing done, why.
    Refused(String),
}

/// Waits for a new learner to catch up, then answers the membership.
async fn finish(
    raft: &Raft,
    link: &Link,
    applied: Result<Done, WriteError>,
) -> Result<Changed, String> {
    match applied {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            Err("no leader: the cluster has no quorum".to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(Done::NotAMember(id)) => Err(format!("node {id} is not a member")),
        Ok(Done::Refused(why)) => Err(why),
        Ok(done) => {
            if let Done::Learner(id, member, index, wait) = done {
                joined(raft, link, (id, &member), index, wait).await?;
            }
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            Ok(Changed {
                voters: membership.voter_ids().collect(),
                nodes: membership.nodes().map(|(id, _)| *id).collect(),
            })
        }
    }
}

/// Carries out a change on this node, the leader.
async fn apply_here(raft: &Raft, link: &Link, change: &Change) -> Result<Done, WriteError> {
    match change {
        Change::AddLearner {
            id,
            member,
            wait_secs,
        } => {
            // Only the leader's view of the membership is current, and
            // only the leader asks the node: a follower hands it on.
            let m = raft.metrics().borrow().clone();
            if m.current_leader != Some(m.id) {
                let leader_node = m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                return Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                    ForwardToLeader {
                        leader_id: m.current_leader,
                        leader_node,
                    },
                )));
            }
            let members = || {
                let m = raft.metrics().borrow().clone();
                m.membership_config.membership().clone()
            };
            // What is asked, checked before anyone is contacted.
            match clash(members().nodes(), *id, member) {
                Some(Clash::Same) => return Ok(Done::Changed),
                Some(Clash::With(why)) => return Ok(Done::Refused(why)),
                None => {}
            }
            // The node must be there, and be the node asked for: a
            // mistyped address is refused now, nothing committed.
            let member = match ask_joiner(link, member).await {
                Err(e) => return Ok(Done::Refused(not_told(&member.raft_addr, &e))),
                Ok(state) => match resolve(*id, member, state.node) {
                    Ok(member) => member,
                    Err(why) => return Ok(Done::Refused(why)),
                },
            };
            // Again with what the node told (its address, its zone).
            match clash(members().nodes(), *id, &member) {
                Some(Clash::Same) => return Ok(Done::Changed),
                Some(Clash::With(why)) => return Ok(Done::Refused(why)),
                None => {}
            }
            // Not blocking: openraft would wait for the learner without a
            // bound; [`joined`] waits with one.
            let added = raft.add_learner(*id, member.clone(), false).await?;
            let wait = wait_secs.map_or(JOIN_WAIT, |s| Duration::from_secs(s).min(JOIN_WAIT));
            return Ok(Done::Learner(*id, member, added.log_id.index, wait));
        }
        Change::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await?;
        }
        Change::Remove { id } => {
            let (leads, is_member, is_voter) = {
                let m = raft.metrics().borrow().clone();
                let members = m.membership_config.membership();
                (
                    m.current_leader == Some(m.id),
                    members.get_node(id).is_some(),
                    members.voter_ids().any(|v| v == *id),
                )
            };
            // Only the leader's view of the membership is current; a
            // follower hands the change on.
            if leads && !is_member {
                return Ok(Done::NotAMember(*id));
            }
            if is_voter {
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([*id])), false)
                    .await?;
            }
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([*id])), false)
                .await?;
        }
    }
    Ok(Done::Changed)
}

/// How a node to add meets the members.
#[derive(Debug, PartialEq, Eq)]
pub enum Clash {
    /// It is a member already, exactly as asked (an add sent again).
    Same,
    /// Its id, name or an address is a member's: why, naming both.
    With(String),
}

/// Whether adding `member` as node `id` clashes with the members `nodes`:
/// an id already in use (with other details), or a name, peer address or
/// client address another member has. An operator who mistypes one would
/// otherwise be told the node joined while it did not, or publish two
/// nodes at one address.
pub fn clash<'a>(
    nodes: impl Iterator<Item = (&'a NodeId, &'a Member)>,
    id: NodeId,
    member: &Member,
) -> Option<Clash> {
    for (other, theirs) in nodes {
        // An empty name, client address or zone is the node's own (it is
        // asked): as asked, it matches any.
        let matches = |asked: &String, theirs: &String| asked.is_empty() || asked == theirs;
        if *other == id {
            if matches(&member.name, &theirs.name)
                && theirs.raft_addr == member.raft_addr
                && matches(&member.api_addr, &theirs.api_addr)
                && matches(&member.zone, &theirs.zone)
            {
                return Some(Clash::Same);
            }
            return Some(Clash::With(format!(
                "node {id} is already a member, as {} (peer address {}, client address {}): \
                 remove it first, or give the new node another id",
                theirs.name, theirs.raft_addr, theirs.api_addr
            )));
        }
        let same = [
            ("name", &theirs.name, &member.name),
            ("peer address", &theirs.raft_addr, &member.raft_addr),
            ("client address", &theirs.api_addr, &member.api_addr),
        ]
        .into_iter()
        .find(|(_, a, b)| !a.is_empty() && a == b);
        if let Some((what, value, _)) = same {
            return Some(Clash::With(format!(
                "node {other} already has the {what} {value}: give node {id} its own"
            )));
        }
        if !matches(&member.zone, &theirs.zone) {
            return Some(Clash::With(format!(
                "node {id} is of zone {}, and this cluster of zone {}: a zone is one cluster \
                 (another zone is linked with [zones], not added)",
                member.zone, theirs.zone
            )));
        }
    }
    None
}

/// Asks the node at `member`'s peer address who it is, for up to
/// [`ASK_JOINER`]: one that is still starting (its port not open yet) is
/// asked again.
async fn ask_joiner(link: &Link, member: &Member) -> Result<BootstrapState, LinkError> {
    let deadline = tokio::time::Instant::now() + ASK_JOINER;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match link.bootstrap_state(member, None, left).await {
            Err(LinkError::NotSent(_)) if left > ASK_AGAIN => {
                tokio::time::sleep(ASK_AGAIN).await;
            }
            told => return told,
        }
    }
}

/// How often a node not listening yet is asked again.
const ASK_AGAIN: Duration = Duration::from_millis(200);

/// Why a node could not be added when the node at its peer address did
/// not say who it is: nothing answered there, or something refused.
fn not_told(raft_addr: &str, error: &LinkError) -> String {
    match error {
        LinkError::NotSent(_) | LinkError::TimedOut => format!(
            "no node answers at peer address {raft_addr} within {}s ({error}): start it first \
             (with [cluster] join = true), or check --raft-addr; nothing was changed",
            ASK_JOINER.as_secs()
        ),
        LinkError::Refused(_) | LinkError::Failed(_) | LinkError::TooLarge => format!(
            "the node at peer address {raft_addr} did not say who it is ({error}): is it a \
             node of this cluster's zone, started with [cluster] join = true? nothing was \
             changed"
        ),
    }
}

/// The member to add: what was asked, its empty name, client address or
/// zone taken from what the node at the peer address says it is, `told`
/// (none from a node of an earlier build: then all must be given). A node
/// that is another id, or says otherwise than was asked, is refused:
/// clients would be sent where it does not serve.
pub fn resolve(
    id: NodeId,
    asked: &Member,
    told: Option<(NodeId, Member)>,
) -> Result<Member, String> {
    let at = &asked.raft_addr;
    let Some((their_id, theirs)) = told else {
        return match [
            ("--name", &asked.name),
            ("--api-addr", &asked.api_addr),
            ("--zone", &asked.zone),
        ]
        .into_iter()
        .find(|(_, v)| v.is_empty())
        {
            Some((flag, _)) => Err(format!(
                "the node at {at} does not say who it is (an earlier build): give {flag}"
            )),
            None => Ok(asked.clone()),
        };
    };
    if their_id != id {
        return Err(format!(
            "the node at {at} is node {their_id} ({}), not node {id}: check --id or --raft-addr",
            theirs.name
        ));
    }
    let mut member = asked.clone();
    for (flag, mine, own) in [
        ("--name", &mut member.name, &theirs.name),
        ("--api-addr", &mut member.api_addr, &theirs.api_addr),
        ("--zone", &mut member.zone, &theirs.zone),
    ] {
        if mine.is_empty() {
            own.clone_into(mine);
        } else if mine != own {
            return Err(format!(
                "{flag} {mine} is not what node {id} at {at} says it is ({own}): leave {flag} \
                 out to take the node's own, or fix the node's configuration"
            ));
        }
    }
    member.rebuilding = false;
    Ok(member)
}

/// Waits, up to `wait`, until the leader has replicated to learner `id`
/// everything up to `index` (the entry that added it, so everything
/// committed before too), and then until the learner serves reads.
async fn joined(
    raft: &Raft,
    link: &Link,
    (id, member): (NodeId, &Member),
    index: u64,
    wait: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let not_yet = |what: &str| {
        format!(
            "node {id} was added as a learner but {what} within {}s: it is not published in \
             infra.discovery until it serves; see its log, or take it out with \
             `discoveryctl remove --id {id}`",
            wait.as_secs()
        )
    };
    raft.wait(Some(wait))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .and_then(|matched| matched.as_ref())
                    .is_some_and(|log_id| log_id.index >= index)
            },
            "learner caught up",
        )
        .await
        .map_err(|_| not_yet("has not caught up"))?;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(not_yet("does not serve reads"));
        }
        if let Ok(true) = link.health(member, left.min(ASK_JOINER)).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20).min(left)).await;
    }
}

/// Checks this node's configuration (`me` as node `id`) against how the
/// membership stored in its data directory (`stored`) records it. Its
/// zone cannot change there (a zone is one cluster: the node would serve
/// one zone's registry as another's), so a different one is refused, why
/// and what to do said; a different name or address is what peers and
/// clients are still told, so each comes back as a warning to log.
pub fn restarted_as(
    id: NodeId,
    me: &Member,
    stored: &[(NodeId, Member)],
) -> Result<Vec<String>, String> {
    let Some((_, recorded)) = stored.iter().find(|(m, _)| *m == id) else {
        return Ok(Vec::new());
    };
    if recorded.zone != me.zone {
        return Err(format!(
            "this node (id {id}) is of zone {} in the cluster membership stored in its data \
             directory, not {} as configured (--zone, DISCOVERY_ZONE or [node] zone): a \
             node's zone is its cluster's and cannot change on restart. Start it with zone \
             {}; to move it to zone {}, remove it from this cluster (discoveryctl remove --id \
             {id}), set its data directory aside, and add it to that zone's cluster",
            recorded.zone, me.zone, recorded.zone, me.zone
        ));
    }
    Ok([
        ("name ([node] name)", &recorded.name, &me.name),
        (
            "client address ([node] advertise)",
            &recorded.api_addr,
            &me.api_addr,
        ),
        (
            "peer address ([node] raft_advertise)",
            &recorded.raft_addr,
            &me.raft_addr,
        ),
    ]
    .into_iter()
    .filter(|(_, was, now)| was != now)
    .map(|(what, was, now)| {
        format!(
            "this node's {what} is {now} as configured, but {was} in the cluster membership: \
             peers and clients are still told {was}; to change it, remove the node and add it \
             again"
        )
    })
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, raft: &str, api: &str) -> Member {
        Member {
            name: name.into(),
            raft_addr: raft.into(),
            api_addr: api.into(),
            zone: "sh001".into(),
            rebuilding: false,
        }
    }

    #[test]
    fn an_add_that_clashes_with_a_member_names_what_clashes() {
        let members = [
            (1, member("node1", "10.0.0.1:7271", "10.0.0.1:7171")),
            (2, member("node2", "10.0.0.2:7271", "10.0.0.2:7171")),
        ];
        let nodes = || members.iter().map(|(id, m)| (id, m));
        let new = member("node4", "10.0.0.4:7271", "10.0.0.4:7171");
        assert_eq!(clash(nodes(), 4, &new), None);
        // The id of a voter, with another node's details.
        let Some(Clash::With(why)) = clash(nodes(), 2, &new) else {
            panic!("id clash not found");
        };
        assert!(
            why.contains("node 2 is already a member, as node2"),
            "{why}"
        );
        // The same member again: nothing to do.
        assert_eq!(clash(nodes(), 2, &members[1].1), Some(Clash::Same));
        // Another id, a member's name or address.
        for (clashing, what) in [
            (
                member("node1", "10.0.0.4:7271", "10.0.0.4:7171"),
                "name node1",
            ),
            (
                member("node4", "10.0.0.2:7271", "10.0.0.4:7171"),
                "peer address 10.0.0.2:7271",
            ),
            (
                member("node4", "10.0.0.4:7271", "10.0.0.1:7171"),
                "client address 10.0.0.1:7171",
            ),
        ] {
            let Some(Clash::With(why)) = clash(nodes(), 4, &clashing) else {
                panic!("{what} clash not found");
            };
            assert!(why.contains(what), "{why}");
        }
    }

    #[test]
    fn a_node_of_another_zone_is_refused() {
        let members = [(1, member("node1", "10.0.0.1:7271", "10.0.0.1:7171"))];
        let mut other = member("node4", "10.0.0.4:7271", "10.0.0.4:7171");
        other.zone = "sh002".into();
        let Some(Clash::With(why)) = clash(members.iter().map(|(i, m)| (i, m)), 4, &other) else {
            panic!("zone clash not found");
        };
        assert!(
            why.contains("zone sh002") && why.contains("zone sh001"),
            "{why}"
        );
    }

    #[test]
    fn what_is_left_out_is_the_node_own_and_what_is_given_must_match() {
        let own = member("node4", "10.0.0.4:7271", "10.0.0.4:7171");
        let asked = Member {
            raft_addr: "10.0.0.4:7271".into(),
            ..Member::default()
        };
        assert_eq!(resolve(4, &asked, Some((4, own.clone()))), Ok(own.clone()));
        // Another node at that address.
        let why = resolve(5, &asked, Some((4, own.clone()))).unwrap_err();
        assert!(why.contains("is node 4 (node4), not node 5"), "{why}");
        // A client address the node does not advertise.
        let wrong = Member {
            api_addr: "10.0.0.4:7271".into(),
            ..asked.clone()
        };
        let why = resolve(4, &wrong, Some((4, own.clone()))).unwrap_err();
        assert!(why.contains("--api-addr 10.0.0.4:7271"), "{why}");
        // A node of an earlier build says nothing: all must be given.
        let why = resolve(4, &asked, None).unwrap_err();
        assert!(why.contains("give --name"), "{why}");
        assert_eq!(resolve(4, &own, None), Ok(own));
    }

    #[test]
    fn a_restart_in_another_zone_is_refused_and_other_changes_are_told() {
        let stored = [(3, member("node3", "10.0.0.3:7271", "10.0.0.3:7171"))];
        let same = member("node3", "10.0.0.3:7271", "10.0.0.3:7171");
        assert_eq!(restarted_as(3, &same, &stored), Ok(vec![]));
        // Not in the stored membership (a new node): nothing to compare.
        assert_eq!(restarted_as(4, &same, &stored), Ok(vec![]));
        let mut moved = same.clone();
        moved.zone = "second".into();
        let why = restarted_as(3, &moved, &stored).unwrap_err();
        assert!(
            why.contains("is of zone sh001 in the cluster membership stored in its data directory, not second"),
            "{why}"
        );
        let readdressed = member("node3", "10.0.0.3:7271", "10.0.0.9:7171");
        let told = restarted_as(3, &readdressed, &stored).unwrap();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("still told 10.0.0.3:7171"), "{told:?}");
    }

    #[test]
    fn a_node_not_told_is_refused_saying_whether_anything_answered() {
        let nothing = not_told("10.0.0.4:7271", &LinkError::NotSent("refused".into()));
        assert!(
            nothing.contains("no node answers at peer address 10.0.0.4:7271"),
            "{nothing}"
        );
        let refused = not_told(
            "10.0.0.4:7271",
            &LinkError::Refused("node 1 is not a member here".into()),
        );
        assert!(
            refused.contains("did not say who it is (refused: node 1 is not a member here)"),
            "{refused}"
        );
        assert!(refused.contains("nothing was changed"), "{refused}");
    }
}
