//! Writing files so that a crash leaves each whole or absent: a
//! temporary file written through a buffer and synced as it goes, renamed
//! over the old one, and the rename made durable. Used by the data
//! directory's records and by the snapshots.

use std::io::Write;
use std::path::Path;

/// Writes a file whole or not at all: a temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomically`], with the contents written by `fill` through
/// a buffer, so a large file (a snapshot) never sits whole in memory.
pub fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<Syncing>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, fill)?;
    move_into_place(&tmp, path)
}

/// A large file is synced to disk every this many bytes as it is written.
const SYNC_EVERY: u64 = 8 << 20;

/// Writes `path` through a buffer and syncs it to disk: as it goes, every
/// [`SYNC_EVERY`] bytes, so the disk never holds much of it unwritten. A
/// snapshot of a million instances is over 300 MB; synced only at the end,
/// the Raft log's own syncs, which the file system orders behind it, waited
/// half a second and writes with them.
pub fn write_synced(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<Syncing>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let file = Syncing {
        file: std::fs::File::create(path)?,
        unsynced: 0,
    };
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    fill(&mut writer)?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.file.sync_all()
}

/// A file that syncs its data every [`SYNC_EVERY`] bytes written.
pub struct Syncing {
    file: std::fs::File,
    unsynced: u64,
}

impl std::io::Write for Syncing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Renames a complete, synced file over `path` and makes the rename
/// durable.
pub fn move_into_place(from: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(from, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
