//! The standby's follower: while this master is not active it applies every event the active one
//! appends, as it is stored, so that a takeover only has the last few events to catch up on.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::error::MasterError;
use super::journal::{apply_stored, FollowError};
use super::node::{Master, Role};

/// Pause before reopening the event stream after it failed.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// Follows the log whenever this master stands by, until `stop`. An event that cannot be applied ends
/// the master: a state that skipped one would diverge from the log.
pub(super) async fn run_follower(master: Arc<Master>, mut stop: watch::Receiver<bool>) -> Result<(), MasterError> {
    let mut role = master.role.subscribe();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            _ = role.wait_for(|r| matches!(r, Role::Standby { .. })) => {}
        }
        let from = master.meta.read().await.last_seq() + 1;
        let mut events = match master.journal.events_from(from).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "GFS standby cannot read the log; retrying");
                pause(&mut stop).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                // The active master applies its own events; the takeover caught up already.
                _ = role.wait_for(|r| matches!(r, Role::Active { .. })) => break,
                next = events.next() => next,
            };
            let stored = match next {
                Some(Ok(stored)) => stored,
                Some(Err(error)) => {
                    tracing::warn!(%error, "GFS standby lost the log; reopening");
                    pause(&mut stop).await;
                    break;
                }
                None => break,
            };
            let _writer = master.writer.lock().await;
            let applied = apply_stored(&mut *master.meta.write().await, &stored);
            match applied {
                Ok(true) => master.applied(1),
                Ok(false) => {}
                Err(FollowError::Broken(detail)) => return Err(MasterError::Log(detail)),
                Err(FollowError::Unavailable(detail)) => tracing::warn!(%detail, "GFS standby could not apply"),
            }
        }
    }
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        () = tokio::time::sleep(REOPEN_PAUSE) => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
}
