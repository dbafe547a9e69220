//! The events of the GFS log as one enum, so the state machine matches on types rather than strings,
//! and a command can check the very event it is about to append ([`super::MasterState::check`]).

use edd_events::catalog::gfs as ev;
use edd_events::{Event, RawEvent};

use super::error::ApplyError;

/// One metadata event (see [`edd_events::catalog::gfs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaEvent {
    NamespaceCreated(ev::NamespaceCreated),
    NamespaceDeleted(ev::NamespaceDeleted),
    FileCreated(ev::FileCreated),
    FileRenamed(ev::FileRenamed),
    FileDeleted(ev::FileDeleted),
    ChunkAdded(ev::ChunkAdded),
    LengthSet(ev::LengthSet),
    VersionBumped(ev::VersionBumped),
    ChunkDeleted(ev::ChunkDeleted),
}

impl MetaEvent {
    /// Decodes an event read from the `GFS` stream at `seq`.
    pub fn decode(seq: u64, raw: &RawEvent) -> Result<Self, ApplyError> {
        fn typed<E: Event>(seq: u64, raw: &RawEvent) -> Result<E, ApplyError> {
            raw.decode::<E>().map_err(|source| ApplyError::Decode { seq, source })
        }
        Ok(match raw.ty() {
            ev::NamespaceCreated::TYPE => Self::NamespaceCreated(typed(seq, raw)?),
            ev::NamespaceDeleted::TYPE => Self::NamespaceDeleted(typed(seq, raw)?),
            ev::FileCreated::TYPE => Self::FileCreated(typed(seq, raw)?),
            ev::FileRenamed::TYPE => Self::FileRenamed(typed(seq, raw)?),
            ev::FileDeleted::TYPE => Self::FileDeleted(typed(seq, raw)?),
            ev::ChunkAdded::TYPE => Self::ChunkAdded(typed(seq, raw)?),
            ev::LengthSet::TYPE => Self::LengthSet(typed(seq, raw)?),
            ev::VersionBumped::TYPE => Self::VersionBumped(typed(seq, raw)?),
            ev::ChunkDeleted::TYPE => Self::ChunkDeleted(typed(seq, raw)?),
            other => return Err(ApplyError::UnknownType { seq, ty: other.to_owned() }),
        })
    }

    /// The versioned CloudEvents type.
    pub fn ty(&self) -> &'static str {
        match self {
            Self::NamespaceCreated(_) => ev::NamespaceCreated::TYPE,
            Self::NamespaceDeleted(_) => ev::NamespaceDeleted::TYPE,
            Self::FileCreated(_) => ev::FileCreated::TYPE,
            Self::FileRenamed(_) => ev::FileRenamed::TYPE,
            Self::FileDeleted(_) => ev::FileDeleted::TYPE,
            Self::ChunkAdded(_) => ev::ChunkAdded::TYPE,
            Self::LengthSet(_) => ev::LengthSet::TYPE,
            Self::VersionBumped(_) => ev::VersionBumped::TYPE,
            Self::ChunkDeleted(_) => ev::ChunkDeleted::TYPE,
        }
    }
}

macro_rules! from_payload {
    ($($variant:ident),+) => {
        $(impl From<ev::$variant> for MetaEvent {
            fn from(e: ev::$variant) -> Self {
                Self::$variant(e)
            }
        })+
    };
}
from_payload!(
    NamespaceCreated,
    NamespaceDeleted,
    FileCreated,
    FileRenamed,
    FileDeleted,
    ChunkAdded,
    LengthSet,
    VersionBumped,
    ChunkDeleted
);
