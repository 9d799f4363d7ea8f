//! What a data directory must be for a node to start on it: this node's
//! (the `node_id` file), with its log (sled), and a snapshot covering
//! whatever the log compacted away. A directory that is not is refused,
//! naming the file, instead of being served from empty or foreign state.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::log_store::Records;
use super::state_machine::{StateMachine, BUILDING_FILE, INCOMING_FILE, SNAPSHOT_FILE};
use super::NodeId;

use super::durable::write_atomically;

/// The file that names the node a data directory belongs to. A backup
/// restored onto another node goes without it.
const OWNER_FILE: &str = "node_id";

/// Refuses a data directory that is another node's, whose log is gone, or
/// whose log was compacted past the snapshot it holds: starting over it
/// would serve an empty or foreign registry as if it were the cluster's.
/// A directory without an owner is claimed for this node. A node that
/// set its data aside to rebuild it from its cluster (`rebuilding`) starts
/// without a log on purpose.
pub fn check(
    dir: &Path,
    id: NodeId,
    log: &Records,
    state: &StateMachine,
    rebuilding: bool,
) -> anyhow::Result<()> {
    let sled = dir.join("sled");
    let marker = dir.join(OWNER_FILE);
    let recorded = match std::fs::read_to_string(&marker) {
        Ok(text) => Some(text.trim().parse::<NodeId>().map_err(|_| {
            anyhow::anyhow!("{} is corrupt: {text:?} is not a node id", marker.display())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => anyhow::bail!("reading {}: {e}", marker.display()),
    };
    match recorded {
        Some(owner) if owner != id => anyhow::bail!(
            "{} says this data directory belongs to node {owner}, and this node is configured \
             as node {id}: refusing to start (point data_dir at this node's own directory; to \
             restore another node's backup here, remove that file from the copy)",
            marker.display()
        ),
        Some(_) if log.is_empty() && !rebuilding => anyhow::bail!(
            "{} holds no log, but {} says node {id} kept its log here: the log was lost or \
             replaced; refusing to start empty over it (restore it, or move the data \
             directory away and add this node back as a new one)",
            sled.display(),
            marker.display()
        ),
        Some(_) => {}
        None => write_atomically(&marker, id.to_string().as_bytes())
            .with_context(|| format!("writing {}", marker.display()))?,
    }
    let purged = log
        .purged_index()
        .map_err(|e| anyhow::anyhow!("{}: {e}", sled.display()))?;
    if let Some(purged) = purged {
        let covered = state.applied_index();
        anyhow::ensure!(
            covered.is_some_and(|i| i >= purged),
            "{}: the log was compacted up to index {purged}, but {} covers {}: the entries \
             in between are gone; refusing to start without them (restore the snapshot, \
             or move the data directory away and add this node back as a new one)",
            sled.display(),
            dir.join(SNAPSHOT_FILE).display(),
            covered.map_or("nothing (missing)".to_string(), |i| format!(
                "only up to {i}"
            )),
        );
    }
    Ok(())
}

/// Whether a node has started on this data directory before (it names its
/// owner).
pub fn claimed(dir: &Path) -> bool {
    dir.join(OWNER_FILE).exists()
}

/// The file that names the cluster a data directory belongs to (see
/// [`crate::cluster::identity`]); written once the cluster's name is
/// applied here.
const CLUSTER_FILE: &str = "cluster_id";

/// The cluster this data directory records belonging to, if any.
pub fn recorded_cluster(dir: &Path) -> anyhow::Result<Option<String>> {
    let file = dir.join(CLUSTER_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let id = text.trim();
            anyhow::ensure!(
                !id.is_empty()
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "{} is corrupt: {text:?} is not a cluster id",
                file.display()
            );
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!("reading {}: {e}", file.display()),
    }
}

/// Records that this data directory belongs to cluster `id`.
pub fn record_cluster(dir: &Path, id: &str) -> std::io::Result<()> {
    write_atomically(&dir.join(CLUSTER_FILE), id.as_bytes())
}

/// The file that says this node rebuilds its data from its cluster (see
/// `crate::cluster::repair`): written once the node no longer votes, just
/// before it stops to set its data aside; removed once a check finds it
/// agrees with its cluster again. While it is there, the node starts as a
/// learner waiting to be replicated to, whatever its configuration says.
const REBUILD_FILE: &str = "rebuilding";

/// Where data set aside for a rebuild goes, one directory per rebuild,
/// for an operator to inspect.
pub const SET_ASIDE_DIR: &str = "set-aside";

/// How many set-aside copies are kept: the oldest goes first, so repeated
/// repairs cannot fill the disk.
const SET_ASIDE_KEEP: usize = 2;

/// A rebuild under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuild {
    /// Why: the divergence found, or an operator's request.
    pub why: String,
    /// Rebuilds in a row not yet ended by an agreeing check, this one
    /// included.
    pub attempts: u32,
    /// Whether the old data has been set aside (done when the node starts
    /// again, before it opens its log).
    pub set_aside: bool,
}

/// The rebuild under way in this data directory, if any.
pub fn rebuilding(dir: &Path) -> anyhow::Result<Option<Rebuild>> {
    let file = dir.join(REBUILD_FILE);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is corrupt", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!("reading {}: {e}", file.display()),
    }
}

/// Records a rebuild under way.
pub fn mark_rebuild(dir: &Path, rebuild: &Rebuild) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(rebuild).map_err(std::io::Error::other)?;
    write_atomically(&dir.join(REBUILD_FILE), &bytes)
}

/// The rebuild is over: the node agrees with its cluster.
pub fn rebuilt(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(REBUILD_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Moves this node's log and snapshot out of the way, into a directory of
/// their own under [`SET_ASIDE_DIR`] (the oldest beyond
/// [`SET_ASIDE_KEEP`] removed), and records that it is done: the node then
/// opens an empty log. Done again after a crash half-way, it moves what is
/// left. Answers where the data went.
pub fn set_aside(dir: &Path, rebuild: &mut Rebuild) -> anyhow::Result<PathBuf> {
    let aside = dir.join(SET_ASIDE_DIR);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = aside.join(format!("{secs}-attempt-{}", rebuild.attempts));
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    for name in ["sled", SNAPSHOT_FILE, INCOMING_FILE, BUILDING_FILE] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, to.join(name))
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::File::open(dir)?.sync_all()?;
    rebuild.set_aside = true;
    mark_rebuild(dir, rebuild)
        .with_context(|| format!("recording the rebuild in {}", dir.display()))?;
    let mut kept: Vec<PathBuf> = std::fs::read_dir(&aside)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    // Named by time first: the oldest sort first.
    kept.sort();
    while kept.len() > SET_ASIDE_KEEP {
        let oldest = kept.remove(0);
        if let Err(e) = std::fs::remove_dir_all(&oldest) {
            tracing::warn!("removing {}: {e}", oldest.display());
        }
    }
    Ok(to)
}
