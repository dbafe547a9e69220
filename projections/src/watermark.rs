//! How far something has applied the log, and waiting for a position: the one `wait_for` every
//! reader of the log offers (a projection, the authorizer's memory, the gateway's route table, the
//! notification fanout's mutes), so a command can answer only once its own effect is visible.

use std::time::Duration;

use tokio::sync::watch;

/// A named position in a stream that only moves forward. Clones follow the same position.
#[derive(Clone, Debug)]
pub struct Watermark {
    name: &'static str,
    position: watch::Receiver<u64>,
}

/// Waiting for a position failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{name} reached {position}, not {wanted}, within {timeout:?}")]
    Timeout { name: &'static str, wanted: u64, position: u64, timeout: Duration },
}

impl Watermark {
    /// Follows `position` (the stream sequence applied so far) under `name`, for errors and logs.
    pub fn new(name: &'static str, position: watch::Receiver<u64>) -> Self {
        Self { name, position }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The last position this process knows of.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// A receiver that changes whenever the position moves; closed when its writer stops.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.position.clone()
    }

    /// Resolves once stream sequence `seq` is applied, or fails after `timeout` (also when the
    /// writer has stopped short of it).
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.position.clone();
        let reached = tokio::time::timeout(timeout, async { rx.wait_for(|p| *p >= seq).await.is_ok() }).await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(WaitError::Timeout { name: self.name, wanted: seq, position: self.position(), timeout }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_position_is_reached_and_times_out_short_of_it() {
        let (tx, rx) = watch::channel(0);
        let mark = Watermark::new("test", rx);
        let waiting = tokio::spawn({
            let mark = mark.clone();
            async move { mark.wait_for(3, Duration::from_secs(30)).await }
        });
        tx.send_replace(2);
        tx.send_replace(3);
        assert!(waiting.await.unwrap().is_ok());
        let err = mark.wait_for(4, Duration::from_millis(20)).await.unwrap_err();
        assert!(err.to_string().contains("reached 3, not 4"), "{err}");
        drop(tx);
        assert!(mark.wait_for(9, Duration::from_secs(30)).await.is_err(), "a stopped writer never reaches 9");
    }
}
