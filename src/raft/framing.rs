//! How a log entry is stored: a marker, the CRC-32 of the entry's bytes,
//! then the entry as a binary frame ([`crate::wire`], as peers send it).
//! The checksum is checked on every read and by the scrub
//! ([`super::scrub`]), so an entry changed on disk (a bit flip, an editor,
//! a restore gone wrong) is found instead of applied.
//!
//! Earlier builds stored the entry as JSON, behind a marker of its own, or
//! (before checksums) bare, starting with `{`: both are still read, so a
//! log written by them carries on. Their builds cannot read a frame: a
//! node that wrote its log with this build is not started again on an
//! earlier one (operations.md, "Upgrades").

use crate::raft::TypeConfig;
use crate::wire;
use openraft::Entry;

/// What an entry stored as a frame starts with: no JSON document does.
const FRAMED: [u8; 2] = [0xC5, 0x02];

/// What an entry stored as JSON with a checksum (earlier builds) starts
/// with.
const JSON: [u8; 2] = [0xC5, 0x01];

/// The marker and the checksum.
const HEADER: usize = FRAMED.len() + 4;

/// An entry as stored.
pub fn encode(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, wire::FrameError> {
    let mut raw = Vec::with_capacity(256);
    raw.extend_from_slice(&FRAMED);
    raw.extend_from_slice(&[0; 4]);
    raw.extend_from_slice(&wire::encode(entry)?);
    let sum = crc32fast::hash(&raw[HEADER..]);
    raw[FRAMED.len()..HEADER].copy_from_slice(&sum.to_le_bytes());
    Ok(raw)
}

/// The bytes behind the marker, once their checksum holds.
fn checked(raw: &[u8]) -> Result<&[u8], String> {
    let Some(stored) = raw.get(FRAMED.len()..HEADER) else {
        return Err(format!("cut short at {} bytes", raw.len()));
    };
    let stored = u32::from_le_bytes(stored.try_into().unwrap_or_default());
    let body = &raw[HEADER..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(body)
}

/// A stored entry, checked and decoded.
pub fn decode(raw: &[u8]) -> Result<Entry<TypeConfig>, String> {
    if raw.starts_with(&FRAMED) {
        return wire::decode(checked(raw)?).map_err(|e| format!("not an entry: {e}"));
    }
    let json = if raw.starts_with(&JSON) {
        checked(raw)?
    } else {
        raw
    };
    serde_json::from_slice(json).map_err(|e| format!("not an entry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry() -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let raw = encode(&entry()).unwrap();
        assert_eq!(decode(&raw).unwrap(), entry());
    }

    #[test]
    fn any_changed_byte_is_found() {
        let raw = encode(&entry()).unwrap();
        for at in FRAMED.len()..raw.len() {
            let mut flipped = raw.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped).is_err(), "byte {at} changed unnoticed");
        }
        assert!(decode(&raw[..raw.len() - 1]).is_err());
        assert!(decode(&raw[..3]).is_err());
    }

    #[test]
    fn entries_earlier_builds_stored_still_read() {
        // Before checksums: bare JSON.
        let legacy = serde_json::to_vec(&entry()).unwrap();
        assert_eq!(decode(&legacy).unwrap(), entry());
        // JSON behind its checksum, as the builds before frames stored it.
        let mut json = JSON.to_vec();
        json.extend_from_slice(&crc32fast::hash(&legacy).to_le_bytes());
        json.extend_from_slice(&legacy);
        assert_eq!(decode(&json).unwrap(), entry());
        json[HEADER] ^= 0x10;
        assert!(decode(&json).unwrap_err().contains("checksum mismatch"));
    }

    #[test]
    fn an_entry_is_stored_as_a_frame() {
        let raw = encode(&entry()).unwrap();
        assert!(raw.starts_with(&FRAMED));
        assert_eq!(raw[HEADER], wire::VERSION);
        assert!(raw.len() < serde_json::to_vec(&entry()).unwrap().len());
    }
}
