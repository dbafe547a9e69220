//! The names and numbers of chunks: the handle the master assigns, the version that tells a current
//! replica from a stale one, and the summary a chunkserver sends in its heartbeats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A chunk's globally unique, immutable name, assigned by the master.
///
/// Written as exactly 16 lower-case hexadecimal digits — the form used in file names — so that every
/// handle has one spelling and two files can never name the same chunk. Serialized as that string too:
/// a JSON number would lose precision above 2^53 in many readers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHandle(pub u64);

impl fmt::Display for ChunkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ChunkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHandle({self})")
    }
}

impl FromStr for ChunkHandle {
    type Err = ParseHandleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `from_str_radix` alone would also take "+1", short forms and upper case: several names for one chunk.
        let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !canonical {
            return Err(ParseHandleError::new(s));
        }
        u64::from_str_radix(s, 16).map(ChunkHandle).map_err(|_| ParseHandleError::new(s))
    }
}

impl Serialize for ChunkHandle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkHandle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Text that is not a chunk handle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunk handle {input:?}: expected 16 lower-case hexadecimal digits")]
pub struct ParseHandleError {
    /// The offending text, cut to a few dozen characters so that a hostile input cannot bloat logs.
    input: String,
}

impl ParseHandleError {
    fn new(input: &str) -> Self {
        Self { input: input.chars().take(40).collect() }
    }
}

/// A chunk's version: the master bumps it each time it grants a new lease, so a replica that missed a
/// round of mutations (its server was down) is recognisably older and is never served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkVersion(pub u64);

impl fmt::Display for ChunkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a chunkserver says about one chunk in its heartbeat (the GFS paper's chunk report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Bytes stored, at most [`CHUNK_SIZE`](super::CHUNK_SIZE).
    pub length: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_round_trips_through_its_canonical_text() {
        for raw in [0, 1, 0xdead_beef, u64::MAX] {
            let handle = ChunkHandle(raw);
            let text = handle.to_string();
            assert_eq!(text.len(), 16);
            assert_eq!(text.parse::<ChunkHandle>(), Ok(handle));
        }
        assert_eq!(ChunkHandle(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn handle_rejects_every_other_spelling() {
        let long = "0".repeat(1000);
        for bad in ["", "ab", "00000000000000AB", "+000000000000001", "000000000000000g", "0000000000000000 ", &long] {
            let err = bad.parse::<ChunkHandle>().expect_err(bad);
            assert!(err.to_string().len() < 150, "error text is bounded: {err}");
        }
    }

    #[test]
    fn info_serializes_the_handle_as_text() {
        let info = ChunkInfo { handle: ChunkHandle(u64::MAX), version: ChunkVersion(7), length: 42 };
        let json = serde_json::to_string(&info).expect("serialize");
        assert_eq!(json, r#"{"handle":"ffffffffffffffff","version":7,"length":42}"#);
        assert_eq!(serde_json::from_str::<ChunkInfo>(&json).expect("deserialize"), info);
        assert!(serde_json::from_str::<ChunkInfo>(r#"{"handle":"FF","version":7,"length":42}"#).is_err());
    }
}
