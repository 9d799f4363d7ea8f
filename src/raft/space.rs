//! Free space on the data directory's file system, checked before the log
//! grows.
//!
//! A store that meets a full disk mid-write fails for good: sled keeps
//! the I/O error until it is reopened, and openraft stops on any storage
//! error. So the node stops short of it, the way Elasticsearch's flood-stage
//! watermark does: below a reserve of free space it refuses new entries
//! (client writes here, appends from the leader on the peer route), keeps
//! serving reads, and takes writes again by itself as soon as space
//! returns. The reserve covers what must still fit while writes are
//! refused: votes, commit points, and the next snapshot, which is about
//! as large as the last one.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a write was refused for want of space.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "disk full: {free_mib:.1} MiB free in {dir}, writes resume above {needed_mib:.1} MiB \
     (storage.min_free_mb plus the last snapshot's size); reads go on"
)]
pub struct DiskFull {
    pub dir: String,
    pub free_mib: f64,
    pub needed_mib: f64,
}

/// The check; cheap to clone, every clone sees the same snapshot size.
#[derive(Clone)]
pub struct SpaceGuard {
    dir: PathBuf,
    min_free: u64,
    snapshot_bytes: Arc<AtomicU64>,
}

impl SpaceGuard {
    /// Guards the file system holding `dir`, keeping `min_free` bytes.
    pub fn new(dir: &Path, min_free: u64) -> Self {
        SpaceGuard {
            dir: dir.to_path_buf(),
            min_free,
            snapshot_bytes: Arc::default(),
        }
    }

    /// Records the size of the snapshot just written or restored: the next
    /// one needs about as much room.
    pub fn snapshot_written(&self, bytes: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The bytes that must stay free.
    pub fn needed(&self) -> u64 {
        self.min_free
            .saturating_add(self.snapshot_bytes.load(Ordering::Relaxed))
    }

    /// Free bytes now, if the file system answers.
    pub fn free(&self) -> Option<u64> {
        available_bytes(&self.dir).ok()
    }

    /// `Ok` when the log may grow. A file system that cannot be asked
    /// counts as having room: the write then meets the real error, if any.
    pub fn check(&self) -> Result<(), DiskFull> {
        let Ok(free) = available_bytes(&self.dir) else {
            return Ok(());
        };
        judge(free, self.needed(), &self.dir)
    }
}

/// The pure decision, apart from asking the file system.
fn judge(free: u64, needed: u64, dir: &Path) -> Result<(), DiskFull> {
    if free >= needed {
        return Ok(());
    }
    const MIB: f64 = (1u64 << 20) as f64;
    Err(DiskFull {
        dir: dir.display().to_string(),
        free_mib: free as f64 / MIB,
        needed_mib: needed as f64 / MIB,
    })
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub fn available_bytes(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statvfs only writes into the zeroed struct we own, and reads
    // the NUL-terminated path we hold for the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field widths differ by platform
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_reserve_plus_the_last_snapshot_writes_are_refused() {
        let dir = Path::new("/data");
        assert!(judge(10 << 20, 10 << 20, dir).is_ok());
        let full = judge((10 << 20) - 1, 10 << 20, dir).unwrap_err();
        assert_eq!(full.needed_mib, 10.0);
        let message = full.to_string();
        assert!(
            message.starts_with("disk full: 10.0 MiB free in /data"),
            "{message}"
        );
    }

    #[test]
    fn the_snapshot_size_raises_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let guard = SpaceGuard::new(dir.path(), 1 << 20);
        assert_eq!(guard.needed(), 1 << 20);
        guard.clone().snapshot_written(5 << 20);
        assert_eq!(guard.needed(), 6 << 20);
        assert!(guard.check().is_ok(), "a temp dir has 6 MiB free");
        let huge = SpaceGuard::new(dir.path(), u64::MAX);
        assert!(huge.check().is_err());
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(available_bytes(dir.path()).unwrap() > 0);
        assert!(available_bytes(&dir.path().join("missing")).is_err());
    }
}
