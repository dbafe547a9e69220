//! The GFS master's metadata: namespaces, files, chunk handles and versions, as a pure state machine
//! over the `GFS` event stream.
//!
//! The master keeps no metadata of its own on disk (the original died with its disk): every change is
//! an event of [`edd_events::catalog::gfs`] in JetStream, and [`MasterState`] is what those events add
//! up to. A master starts from the latest [`snapshot`](MasterState::snapshot) and applies the events
//! after its sequence; a standby does the same continuously. Chunk *locations* are not here: they come
//! from chunkserver reports and live only in memory, as in the GFS paper.
//!
//! How a command uses it: build the event, [`MasterState::check`] it (or the `check_*` helper that
//! computes it), append it to the log fenced on [`MasterState::last_seq`]
//! ([`edd_events::catalog::gfs::metadata_log`]), then apply it at the sequence the append returned.
//!
//! Modules: `names` (namespace and path rules), `error`, `event` (the events as one enum), `state` (the
//! state machine, its checks and queries), `snapshot` (snapshot and restore).

mod error;
mod event;
mod names;
pub mod service;
mod snapshot;
mod state;

#[cfg(test)]
mod tests;

pub use error::{ApplyError, MetaError};
pub use event::MetaEvent;
pub use names::{validate_namespace, validate_path, validate_prefix, MAX_NAMESPACE_LEN, MAX_PATH_LEN};
pub use snapshot::{SnapshotError, FORMAT as SNAPSHOT_FORMAT};
pub use state::{ChunkView, FileMeta, MasterState, Namespace, Page, MAX_LIST_LIMIT};
