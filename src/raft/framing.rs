//! How a log entry is stored: a marker, the CRC-32 of its JSON, then the
//! JSON. The checksum is checked on every read and by the scrub
//! ([`super::scrub`]), so an entry changed on disk (a bit flip, an editor,
//! a restore gone wrong) is found instead of applied. Entries stored before
//! checksums start with `{` and are read unchecked.

use crate::raft::TypeConfig;
use openraft::Entry;

/// What a stored entry with a checksum starts with: no JSON document does.
const MARKER: [u8; 2] = [0xC5, 0x01];

/// The marker and the checksum.
const HEADER: usize = MARKER.len() + 4;

/// An entry as stored.
pub fn encode(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, serde_json::Error> {
    let mut raw = Vec::with_capacity(256);
    raw.extend_from_slice(&MARKER);
    raw.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut raw, entry)?;
    let sum = crc32fast::hash(&raw[HEADER..]);
    raw[MARKER.len()..HEADER].copy_from_slice(&sum.to_le_bytes());
    Ok(raw)
}

/// The JSON of a stored entry, once its checksum holds.
pub fn json(raw: &[u8]) -> Result<&[u8], String> {
    if !raw.starts_with(&MARKER) {
        return Ok(raw);
    }
    let Some(stored) = raw.get(MARKER.len()..HEADER) else {
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
    serde_json::from_slice(json(raw)?).map_err(|e| format!("not an entry: {e}"))
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
        for at in MARKER.len()..raw.len() {
            let mut flipped = raw.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped).is_err(), "byte {at} changed unnoticed");
        }
        assert!(decode(&raw[..raw.len() - 1]).is_err());
        assert!(decode(&raw[..3]).is_err());
    }

    #[test]
    fn entries_stored_before_checksums_still_read() {
        let legacy = serde_json::to_vec(&entry()).unwrap();
        assert_eq!(decode(&legacy).unwrap(), entry());
    }
}
