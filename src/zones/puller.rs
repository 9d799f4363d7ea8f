//! The receiving side: while this node leads its zone, it follows each
//! other zone's stream from where this zone's partition of it stands (the
//! cursor, in the replicated state) and proposes what comes through this
//! zone's own log. A new leader on either side resumes at the cursor; a
//! batch proposed twice is refused by the cursor check, so nothing is
//! applied twice and nothing skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::watch;

use super::router::Zones;
use super::{ZoneAnswer, ZoneCursor};
use crate::auth::Origin;
use crate::clock::now;
use crate::cluster::batches::in_entries;
use crate::cluster::leader_watch::leading;
use crate::cluster::writer::Writer;
use crate::local::LocalRegistry;
use crate::raft::{NodeId, Raft};
use crate::registry::zones::ZoneBatch;
use crate::registry::{approx_instance_bytes, Command, Instance};
use crate::shutdown::stopped;
use crate::telemetry::ZoneLabels;

/// How long an origin holds a receiver's request when it has nothing new.
pub const HOLD: Duration = Duration::from_secs(10);

/// When this node last heard from each other zone, and what it heard: for
/// status and metrics (this node's view, as leader).
#[derive(Default)]
pub struct Contacts {
    inner: Mutex<BTreeMap<String, Seen>>,
    /// The metrics of batches and full copies applied, by zone.
    batches: Family<ZoneLabels, Counter>,
    full_copies: Family<ZoneLabels, Counter>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Contact {
    /// Milliseconds since the zone last answered; none yet when absent.
    pub last_answer_ms: Option<u64>,
    /// The last failure to reach it, while it lasts.
    pub error: Option<String>,
    /// The origin's applied index as it last said.
    pub origin_index: Option<u64>,
    /// Batches of changes, and full copies, this node applied from it
    /// while leading.
    pub batches: u64,
    pub full_copies: u64,
}

#[derive(Default)]
struct Seen {
    at: Option<Instant>,
    error: Option<String>,
    index: Option<u64>,
    batches: u64,
    full_copies: u64,
}

impl Contacts {
    fn answered(&self, zone: &str, index: u64) {
        let mut inner = self.inner.lock();
        let c = inner.entry(zone.to_string()).or_default();
        c.at = Some(Instant::now());
        c.error = None;
        c.index = Some(index);
    }

    /// Contacts that also count into these metrics.
    pub fn counting(
        batches: Family<ZoneLabels, Counter>,
        full_copies: Family<ZoneLabels, Counter>,
    ) -> Self {
        Contacts {
            inner: Mutex::default(),
            batches,
            full_copies,
        }
    }

    fn applied(&self, zone: &str, full: bool) {
        let mut inner = self.inner.lock();
        let c = inner.entry(zone.to_string()).or_default();
        let labels = ZoneLabels {
            zone: zone.to_string(),
        };
        if full {
            c.full_copies += 1;
            self.full_copies.get_or_create(&labels).inc();
        } else {
            c.batches += 1;
            self.batches.get_or_create(&labels).inc();
        }
    }

    fn failed(&self, zone: &str, error: String) {
        self.inner.lock().entry(zone.to_string()).or_default().error = Some(error);
    }

    /// Every other zone this node followed.
    pub fn all(&self) -> BTreeMap<String, Contact> {
        self.inner
            .lock()
            .iter()
            .map(|(zone, c)| {
                (
                    zone.clone(),
                    Contact {
                        last_answer_ms: c.at.map(|at| at.elapsed().as_millis() as u64),
                        error: c.error.clone(),
                        origin_index: c.index,
                        batches: c.batches,
                        full_copies: c.full_copies,
                    },
                )
            })
            .collect()
    }
}

/// A full copy as the parts it is proposed in: each one log entry of at
/// most `entry_bytes`; the last puts them all in force at once.
fn full_parts(instances: Vec<Instance>, entry_bytes: usize) -> Vec<ZoneBatch> {
    let mut chunks = in_entries(instances, approx_instance_bytes, entry_bytes);
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let of = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(part, instances)| ZoneBatch::FullPart {
            part: part as u32,
            of,
            instances,
        })
        .collect()
}

/// What following a zone needs.
pub struct Follow {
    pub raft: Raft,
    pub me: NodeId,
    pub local: Arc<LocalRegistry>,
    pub writer: Writer,
    pub zones: Zones,
    pub contacts: Arc<Contacts>,
    /// The pause after a failure.
    pub retry: Duration,
}

impl Follow {
    /// Follows `zone` while this node leads, until the node stops.
    pub async fn run(self: Arc<Self>, zone: String, mut stop: watch::Receiver<bool>) {
        let nodes = self.zones.others.get(&zone).cloned().unwrap_or_default();
        if nodes.is_empty() {
            return;
        }
        let entry_bytes = self.writer.entry_bytes();
        let mut next = 0;
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = leading(&self.raft, self.me) => {}
            }
            let cursor = self.cursor(&zone);
            let node = &nodes[next % nodes.len()];
            let answer = tokio::select! {
                _ = stopped(&mut stop) => return,
                a = self.zones.link.zone_changes(node, &cursor, entry_bytes, HOLD, HOLD + Duration::from_secs(5)) => a,
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    self.contacts
                        .failed(&zone, format!("{}: {e}", node.raft_addr));
                    next += 1;
                    tokio::time::sleep(self.retry).await;
                    continue;
                }
            };
            let (to, term, log, batches) = match answer {
                ZoneAnswer::Nothing { at } => {
                    self.contacts.answered(&zone, at);
                    continue;
                }
                ZoneAnswer::Changes {
                    from,
                    to,
                    changes,
                    term,
                    log,
                } => {
                    self.contacts.answered(&zone, to);
                    if from != cursor.after {
                        continue;
                    }
                    (to, term, log, vec![ZoneBatch::Changes { from, changes }])
                }
                ZoneAnswer::Full {
                    to,
                    instances,
                    term,
                    log,
                } => {
                    self.contacts.answered(&zone, to);
                    if cursor.log.is_some() && log != cursor.log {
                        tracing::warn!(
                            zone,
                            was = cursor.log.as_deref().unwrap_or_default(),
                            now = log.as_deref().unwrap_or_default(),
                            "zone's log changed (rebuilt or restored): copying it whole"
                        );
                    }
                    (to, term, log, full_parts(instances, entry_bytes))
                }
            };
            let full = matches!(batches[0], ZoneBatch::FullPart { .. });
            let mut applied = true;
            for batch in batches {
                let command = Command::ZoneApply {
                    origin: zone.clone(),
                    to,
                    batch,
                    at: now(),
                    term,
                    log: log.clone(),
                };
                match self.writer.write(command, Origin::Cluster).await {
                    Ok(Ok(_)) => {}
                    // Applied meanwhile by another leader: the cursor moved.
                    Ok(Err(e)) => {
                        tracing::debug!(zone, "zone batch not applied: {e}");
                        applied = false;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(zone, "zone batch not proposed: {e}");
                        applied = false;
                        tokio::time::sleep(self.retry).await;
                        break;
                    }
                }
            }
            if applied {
                self.contacts.applied(&zone, full);
            }
        }
    }

    fn cursor(&self, zone: &str) -> ZoneCursor {
        self.local
            .read()
            .partitions()
            .get(zone)
            .map(|p| ZoneCursor {
                after: p.cursor,
                term: p.term,
                log: p.log.clone(),
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{parse_metadata, Registration, Status};

    /// An instance of about 4 KB: large metadata, as a limit allows.
    fn heavy(host: usize) -> Instance {
        let meta = format!(r#"{{"blob":"{}"}}"#, "x".repeat(4000));
        Instance::new(
            Registration {
                region: "sh".into(),
                zone: "z2".into(),
                env: "prod".into(),
                appid: "heavy.app".into(),
                hostname: format!("host-{host:05}"),
                addrs: vec![format!("http://10.0.0.1:{host}")],
                version: "v1".into(),
                metadata: parse_metadata(&meta).unwrap(),
                status: Status::Up,
            },
            100,
        )
    }

    #[test]
    fn a_full_copy_is_proposed_in_parts_that_each_fit_an_entry() {
        let entry_bytes = 64 << 10;
        let instances: Vec<Instance> = (0..1000).map(heavy).collect();
        let parts = full_parts(instances.clone(), entry_bytes);
        // 1,000 instances of 4 KB: no longer one part of a thousand.
        assert!(parts.len() > 60, "{} parts", parts.len());
        let mut back = Vec::new();
        for (n, batch) in parts.into_iter().enumerate() {
            let ZoneBatch::FullPart {
                part,
                of,
                instances,
            } = &batch
            else {
                panic!("not a part: {batch:?}");
            };
            assert_eq!(*part as usize, n);
            assert!(*of > 60);
            back.extend(instances.iter().cloned());
            let command = Command::ZoneApply {
                origin: "z2".into(),
                to: 9,
                batch,
                at: 100,
                term: 1,
                log: Some("log-1".into()),
            };
            assert!(command.approx_bytes() <= entry_bytes);
        }
        assert_eq!(back, instances, "every instance, in order");
        // An empty zone is still one part, which empties the partition.
        assert_eq!(full_parts(Vec::new(), entry_bytes).len(), 1);
    }
}
