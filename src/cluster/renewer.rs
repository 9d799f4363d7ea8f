//! The renew path. Renews are heartbeats: 100,000 instances renewing every
//! 30 s send ~3,300 a second, forever. None of them costs a log entry, a
//! disk flush or a poll wake-up of its own:
//!
//! - the leader answers a renew from its applied registry (so an unknown
//!   instance gets an exact `-404`) and notes it in a pending set;
//! - every `batch` interval the leader proposes the pending set as one
//!   `Renew` command, which every replica applies: renew timestamps
//!   converge, and a leader change loses at most one interval of renews;
//! - a follower gathers the renews it receives and hands them to the
//!   leader in batches, one request per batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::batches::keys_in_entries;
use super::link::Link;
use super::writer::{another_leader, WriteError, Writer};
use crate::auth::{Access, Origin};
use crate::local::LocalRegistry;
use openraft::RaftMetrics;

use crate::raft::{Member, NodeId, Raft};
use crate::registry::{key_ok, Command, InstanceKey, Limits, RegistryError, Renewal, Timestamp};

pub use super::messages::{ForwardedRenews, Renews};

/// The most renews one batch carries.
const MAX_BATCH: usize = 4096;

/// What a leader reads: [`Renews`], or the bare list of keys an earlier
/// build sends (in JSON: frames are [`Renews`] only).
#[derive(Debug)]
pub enum ForwardRenews {
    Renews(Renews),
    Keys(Vec<InstanceKey>),
}

impl<'de> Deserialize<'de> for ForwardRenews {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Renews(Renews),
            Keys(Vec<InstanceKey>),
        }
        if !d.is_human_readable() {
            return Renews::deserialize(d).map(ForwardRenews::Renews);
        }
        Ok(match Either::deserialize(d)? {
            Either::Renews(renews) => ForwardRenews::Renews(renews),
            Either::Keys(keys) => ForwardRenews::Keys(keys),
        })
    }
}

impl From<ForwardRenews> for Renews {
    fn from(forwarded: ForwardRenews) -> Self {
        match forwarded {
            ForwardRenews::Renews(renews) => renews,
            ForwardRenews::Keys(keys) => Renews {
                keys,
                from: Vec::new(),
            },
        }
    }
}

/// Renews accepted by this node as leader and not yet proposed, and a count
/// of renews per time bucket for self-preservation.
pub struct RenewLedger {
    pending: Mutex<HashMap<InstanceKey, Timestamp>>,
    seen: Mutex<VecDeque<(Instant, u64)>>,
    bucket: Duration,
    window: Duration,
}

impl RenewLedger {
    /// Counts renews over `window`, in twenty buckets.
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(RenewLedger {
            pending: Mutex::new(HashMap::new()),
            seen: Mutex::new(VecDeque::new()),
            bucket: (window / 20).max(Duration::from_millis(10)),
            window,
        })
    }

    /// Answers renews from the applied registry and notes the known ones.
    pub fn accept(
        &self,
        local: &LocalRegistry,
        keys: &[InstanceKey],
        now: Timestamp,
    ) -> Vec<Renewal> {
        let answers: Vec<Renewal> = {
            let registry = local.read();
            keys.iter()
                .map(|key| match registry.get(key) {
                    Some(instance) => {
                        let mut renewed = instance.clone();
                        renewed.renew_timestamp = renewed.renew_timestamp.max(now);
                        Renewal::Renewed(Box::new(renewed))
                    }
                    None if registry.app(&key.env, &key.appid).is_some() => {
                        Renewal::UnknownInstance
                    }
                    None => Renewal::UnknownApp,
                })
                .collect()
        };
        let mut renewed = 0;
        {
            let mut pending = self.pending.lock();
            for (key, answer) in keys.iter().zip(&answers) {
                if matches!(answer, Renewal::Renewed(_)) {
                    pending.insert(key.clone(), now);
                    renewed += 1;
                }
            }
        }
        self.count(renewed);
        answers
    }

    fn count(&self, n: u64) {
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let mut seen = self.seen.lock();
        match seen.back_mut() {
            Some((start, count)) if now.duration_since(*start) < self.bucket => *count += n,
            _ => seen.push_back((now, n)),
        }
        while seen
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) > self.window)
        {
            seen.pop_front();
        }
    }

    /// Renews accepted over the last window.
    pub fn seen_in_window(&self) -> u64 {
        let now = Instant::now();
        let seen = self.seen.lock();
        seen.iter()
            .filter(|(start, _)| now.duration_since(*start) <= self.window)
            .map(|(_, n)| n)
            .sum()
    }

    /// A copy of the renews not yet proposed.
    pub fn pending(&self) -> HashMap<InstanceKey, Timestamp> {
        self.pending.lock().clone()
    }

    /// Takes the renews not yet proposed.
    fn take(&self) -> Vec<InstanceKey> {
        let mut pending = self.pending.lock();
        let keys: Vec<InstanceKey> = pending.drain().map(|(k, _)| k).collect();
        keys
    }

    /// Forgets everything (this node stopped leading).
    fn clear(&self) {
        self.pending.lock().clear();
        self.seen.lock().clear();
    }
}

/// Whether this node leads with a quorum that answered recently.
pub fn leads(raft: &Raft, me: NodeId, quorum_within: Duration) -> bool {
    leads_with_all_applied(&raft.metrics().borrow(), me, quorum_within)
}

/// Leading is not enough to answer renews from the applied registry: a new
/// leader holds every committed entry in its log but may not have applied
/// them yet, and would answer `-404` for an instance registered a moment
/// ago. Once it has applied an entry of its own term (the one it commits on
/// taking over), everything committed before it is applied too.
fn leads_with_all_applied(
    m: &RaftMetrics<NodeId, Member>,
    me: NodeId,
    quorum_within: Duration,
) -> bool {
    m.current_leader == Some(me)
        && m.last_applied
            .is_some_and(|applied| applied.leader_id.term == m.current_term)
        && m.millis_since_quorum_ack
            .is_some_and(|ms| u128::from(ms) <= quorum_within.as_millis())
}

type Reply = oneshot::Sender<Result<Renewal, WriteError>>;

/// A renew on its way: the key, its sender, who waits for the answer.
type Queued = (InstanceKey, Origin, Reply);

/// A handle to the renew path; cheap to clone.
#[derive(Clone)]
pub struct Renewer {
    queue: mpsc::UnboundedSender<Queued>,
    limits: Limits,
}

/// What the renew path needs to run.
#[derive(Clone)]
pub struct RenewSettings {
    pub me: NodeId,
    /// How often the leader proposes the renews it collected.
    pub batch: Duration,
    /// How long a renew waits for a leader before `-503`.
    pub wait_for_leader: Duration,
    /// A leader whose quorum has not answered for this long does not
    /// accept renews.
    pub quorum_within: Duration,
    /// What a renewed key is checked against.
    pub limits: Limits,
}

impl Renewer {
    /// Starts the gathering task and the leader's proposing task; both end
    /// at shutdown.
    pub fn start(
        raft: Raft,
        local: Arc<LocalRegistry>,
        ledger: Arc<RenewLedger>,
        writer: Writer,
        link: Link,
        settings: RenewSettings,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (queue, renews) = mpsc::unbounded_channel();
        let path = Arc::new(Path {
            raft: raft.clone(),
            local,
            ledger: ledger.clone(),
            link,
            settings: settings.clone(),
        });
        tokio::spawn(gather(renews, path));
        let limits = settings.limits;
        tokio::spawn(propose_pending(raft, ledger, writer, settings, stop));
        Renewer { queue, limits }
    }

    /// Checks the key, then renews it here or at the leader, which checks
    /// `origin` again.
    pub async fn renew(&self, key: InstanceKey, origin: Origin) -> Result<Renewal, WriteError> {
        key_ok(&key, &self.limits).map_err(WriteError::Invalid)?;
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((key, origin, tx))
            .map_err(|_| WriteError::Unavailable("renew path stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::Unavailable("renew dropped".into()))?
    }
}

struct Path {
    raft: Raft,
    local: Arc<LocalRegistry>,
    ledger: Arc<RenewLedger>,
    link: Link,
    settings: RenewSettings,
}

async fn gather(mut renews: mpsc::UnboundedReceiver<Queued>, path: Arc<Path>) {
    let mut batch = Vec::new();
    while renews.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut keys = Vec::with_capacity(batch.len());
        let mut from = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (key, origin, reply) in batch.drain(..) {
            keys.push(key);
            from.push(origin);
            replies.push(reply);
        }
        let path = path.clone();
        tokio::spawn(async move {
            match path.renew(keys, from).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

impl Path {
    /// Answers here when leading, else at the leader; waits a bounded time
    /// for one.
    async fn renew(
        &self,
        keys: Vec<InstanceKey>,
        from: Vec<Origin>,
    ) -> Result<Vec<Renewal>, WriteError> {
        let deadline = Instant::now() + self.settings.wait_for_leader;
        let renews = Renews { keys, from };
        loop {
            if leads(&self.raft, self.settings.me, self.settings.quorum_within) {
                let now = crate::clock::now();
                return Ok(self.ledger.accept(&self.local, &renews.keys, now));
            }
            if let Some(answers) = self.forward(&renews, deadline).await {
                return Ok(answers);
            }
            if Instant::now() >= deadline {
                return Err(WriteError::NoQuorum(self.settings.wait_for_leader));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Hands the renews to the leader; `None` when there is none to reach.
    async fn forward(&self, renews: &Renews, deadline: Instant) -> Option<Vec<Renewal>> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.filter(|l| *l != self.settings.me)?;
        let member = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let exchange = async {
            self.link
                .renew(&member, renews, remaining.max(Duration::from_millis(100)))
                .await
                .ok()
        };
        // Renews are heartbeats, safe to send again: a leader that stops
        // answering is dropped for the next one as soon as one is known.
        let answer = tokio::select! {
            answer = exchange => answer?,
            _ = another_leader(&self.raft, leader) => return None,
        };
        match answer {
            ForwardedRenews::Answered(answers) => Some(answers),
            ForwardedRenews::NotLeader | ForwardedRenews::Invalid(_) => None,
        }
    }
}

/// The leader's side of forwarded renews, each key checked as a client's
/// and each sender against this node's `allow_write_from`: a refused one
/// is answered `Refused` in its place, the others are renewed.
pub fn accept_forwarded(
    raft: &Raft,
    local: &LocalRegistry,
    ledger: &RenewLedger,
    settings: &RenewSettings,
    access: &Access,
    renews: Renews,
) -> ForwardedRenews {
    let Renews { keys, from } = renews;
    if let Err(e) = keys.iter().try_for_each(|k| key_ok(k, &settings.limits)) {
        return ForwardedRenews::Invalid(e);
    }
    if !from.is_empty() && from.len() != keys.len() {
        return ForwardedRenews::Invalid(RegistryError::bad("from", "one sender per key"));
    }
    if !leads(raft, settings.me, settings.quorum_within) {
        return ForwardedRenews::NotLeader;
    }
    let checks: Vec<Result<(), RegistryError>> = if from.is_empty() {
        vec![Ok(()); keys.len()]
    } else {
        from.iter().map(|o| access.check(o)).collect()
    };
    let allowed: Vec<InstanceKey> = keys
        .into_iter()
        .zip(&checks)
        .filter(|(_, check)| check.is_ok())
        .map(|(key, _)| key)
        .collect();
    let mut renewed = ledger
        .accept(local, &allowed, crate::clock::now())
        .into_iter();
    let answers = checks
        .into_iter()
        .map(|check| match check {
            Ok(()) => renewed.next().unwrap_or(Renewal::UnknownInstance),
            Err(refused) => Renewal::Refused(refused.to_string()),
        })
        .collect();
    ForwardedRenews::Answered(answers)
}

/// Every `batch` interval, proposes the renews the leader collected as one
/// command; a node that stops leading drops what it had.
async fn propose_pending(
    raft: Raft,
    ledger: Arc<RenewLedger>,
    writer: Writer,
    settings: RenewSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(settings.batch);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown::stopped(&mut stop) => return,
        }
        if raft.metrics().borrow().current_leader != Some(settings.me) {
            ledger.clear();
            continue;
        }
        let keys = ledger.take();
        if keys.is_empty() {
            continue;
        }
        let at = crate::clock::now();
        let runs = keys_in_entries(keys, settings.limits.entry_bytes);
        let writes = runs.into_iter().map(|keys| {
            let count = keys.len();
            let writer = &writer;
            async move {
                if let Err(e) = writer
                    .write(Command::Renew { keys, at }, Origin::Cluster)
                    .await
                {
                    tracing::warn!(count, "renews not replicated: {e}");
                }
            }
        });
        futures::future::join_all(writes).await;
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    const QUORUM: Duration = Duration::from_millis(500);

    fn leader(term: u64, applied_term: u64) -> RaftMetrics<NodeId, Member> {
        let mut m = RaftMetrics::new_initial(1);
        m.current_term = term;
        m.current_leader = Some(1);
        m.millis_since_quorum_ack = Some(10);
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(applied_term, 1), 42));
        m
    }

    #[test]
    fn a_new_leader_answers_renews_only_once_it_applied_its_own_term() {
        assert!(!leads_with_all_applied(&leader(3, 2), 1, QUORUM));
        assert!(leads_with_all_applied(&leader(3, 3), 1, QUORUM));
    }

    #[test]
    fn neither_a_follower_nor_a_leader_without_a_recent_quorum_answers() {
        assert!(!leads_with_all_applied(&leader(3, 3), 2, QUORUM));
        let mut stale = leader(3, 3);
        stale.millis_since_quorum_ack = Some(600);
        assert!(!leads_with_all_applied(&stale, 1, QUORUM));
        let mut nothing_applied = leader(3, 3);
        nothing_applied.last_applied = None;
        assert!(!leads_with_all_applied(&nothing_applied, 1, QUORUM));
    }

    #[test]
    fn renews_decode_from_this_build_and_from_an_earlier_one() {
        let key = InstanceKey {
            env: "dev".into(),
            appid: "a".into(),
            zone: "z".into(),
            hostname: "h".into(),
        };
        let now = Renews {
            keys: vec![key.clone()],
            from: vec![Origin::Client("10.0.0.1".parse().unwrap())],
        };
        let wire = serde_json::to_string(&now).unwrap();
        let read: Renews = serde_json::from_str::<ForwardRenews>(&wire).unwrap().into();
        assert_eq!((read.keys, read.from), (now.keys, now.from));
        let earlier = serde_json::to_string(&vec![key.clone()]).unwrap();
        let read: Renews = serde_json::from_str::<ForwardRenews>(&earlier)
            .unwrap()
            .into();
        assert_eq!((read.keys, read.from.len()), (vec![key], 0));
    }
}
