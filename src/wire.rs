//! Binary frames: a version byte, then the value in postcard (serde's
//! compact, non-self-describing encoding). What peers send each other on
//! the hot calls, and how log entries and snapshots are stored. JSON stays
//! what every peer route reads too, so a node of an earlier build (JSON
//! only) and a node that does not know a frame's version are still
//! understood: they refuse the frame (415), and the sender speaks JSON to
//! them.
//!
//! postcard writes every field, in order, with no names: a value encodes
//! as its type stood when the frame was made. A change to any type that
//! travels in frames is a new [`VERSION`]; the recorded frames of each
//! earlier version (`tests/data/frames/`) must still decode, and a build
//! that makes a newer version answers a frame in the version it came in
//! (its asker may read no other). Fields that
//! JSON leaves out when empty (`skip_serializing_if`) must not be left out
//! of a frame: their types test with [`omitted`], which never omits while
//! a frame is being encoded.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of the frames this build makes.
pub const VERSION: u8 = 1;

/// The media type of a frame.
pub const MEDIA_TYPE: &str = "application/x-discovery-frame";

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    /// A version this build does not read: the sender should speak JSON.
    #[error("frame version {0} unknown here (this build reads {VERSION})")]
    UnknownVersion(u8),
    #[error("bad frame: {0}")]
    Malformed(String),
}

thread_local! {
    /// Set while this thread encodes a frame.
    static ENCODING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `encode` with fields JSON omits written ([`omitted`]).
fn encoding<R>(encode: impl FnOnce() -> R) -> R {
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            ENCODING.with(|e| e.set(false));
        }
    }
    ENCODING.with(|e| e.set(true));
    let _unset = Unset;
    encode()
}

/// Encodes `value` as a frame of this build's version.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, FrameError> {
    encoding(|| postcard::to_extend(value, vec![VERSION]))
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Writes `value` as a frame of this build's version to `out`, as it is
/// encoded (a snapshot: never whole in memory).
pub fn write<W: std::io::Write, T: Serialize + ?Sized>(
    mut out: W,
    value: &T,
) -> Result<(), FrameError> {
    out.write_all(&[VERSION])
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    encoding(|| postcard::to_io(value, out))
        .map(|_| ())
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The most bytes one string or byte string of a frame read from a stream
/// may take (each is read into this much room, then copied out).
const STREAMED_ITEM: usize = 16 << 20;

/// Reads a frame of any version this build reads from `input`, as it
/// streams: what is read is only ever one value's worth at a time.
pub fn read<R: std::io::Read, T: DeserializeOwned>(mut input: R) -> Result<T, FrameError> {
    let mut version = [0u8];
    input
        .read_exact(&mut version)
        .map_err(|_| FrameError::Empty)?;
    match version[0] {
        1 => {
            let mut room = vec![0u8; STREAMED_ITEM];
            let (value, _) = postcard::from_io((input, &mut room[..]))
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            Ok(value)
        }
        v => Err(FrameError::UnknownVersion(v)),
    }
}

/// Decodes a frame of any version this build reads.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = frame.split_first().ok_or(FrameError::Empty)?;
    match version {
        1 => {
            let (value, rest) = postcard::take_from_bytes(body)
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            if rest.is_empty() {
                Ok(value)
            } else {
                Err(FrameError::Malformed(format!(
                    "{} bytes after the value",
                    rest.len()
                )))
            }
        }
        v => Err(FrameError::UnknownVersion(v)),
    }
}

/// For `skip_serializing_if`: whether a field holding its default is left
/// out, which JSON does and a frame never does.
pub fn omitted<T: Default + PartialEq>(value: &T) -> bool {
    omits(*value == T::default())
}

/// Whether a field found `empty` is left out: never in a frame.
pub fn omits(empty: bool) -> bool {
    empty && !ENCODING.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        #[serde(default, skip_serializing_if = "omitted")]
        note: Option<String>,
        n: u64,
    }

    #[test]
    fn a_frame_comes_apart_as_it_went_in_fields_json_omits_included() {
        let sample = Sample {
            name: "a".into(),
            note: None,
            n: 300,
        };
        let frame = encode(&sample).unwrap();
        assert_eq!(frame[0], VERSION);
        assert_eq!(decode::<Sample>(&frame).unwrap(), sample);
        // JSON still leaves the empty field out, and reads it back.
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(json, r#"{"name":"a","n":300}"#);
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        // And a JSON encoding after a frame is unaffected by it.
        let with = Sample {
            note: Some("x".into()),
            ..sample
        };
        assert_eq!(decode::<Sample>(&encode(&with).unwrap()).unwrap(), with);
    }

    #[test]
    fn bad_frames_are_refused_not_misread() {
        assert_eq!(decode::<Sample>(&[]), Err(FrameError::Empty));
        assert_eq!(
            decode::<Sample>(&[9, 0]),
            Err(FrameError::UnknownVersion(9))
        );
        let frame = encode(&Sample {
            name: "abc".into(),
            note: None,
            n: 1,
        })
        .unwrap();
        for cut in 1..frame.len() {
            assert!(decode::<Sample>(&frame[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Sample>(&longer),
            Err(FrameError::Malformed(_))
        ));
        // A length far past the bytes there: refused, nothing reserved
        // for it.
        let mut huge = vec![VERSION];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Vec<u64>>(&huge).is_err());
        assert!(decode::<String>(&huge).is_err());
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use crate::registry::Metadata;

    #[test]
    fn a_count_far_past_the_bytes_there_reserves_nothing_for_it() {
        // A metadata map claiming 2^62 entries, then none: refused, not
        // allocated (nor a capacity overflow).
        let mut frame = vec![VERSION];
        frame.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        assert!(decode::<Metadata>(&frame).is_err());
    }
}
