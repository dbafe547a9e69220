//! [`Retry`]: one operation's budget for trying again — a deadline, exponential backoff with jitter
//! (so that concurrent clients that failed together do not retry together), and every attempt bounded
//! by the time left, so an operation never outlives its deadline by more than one step's own timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::GfsError;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(super) struct Retry {
    started: Instant,
    deadline: Instant,
    backoff: Duration,
    attempts: u32,
    what: &'static str,
}

impl Retry {
    /// A budget of `budget` from now for the operation named `what` (for error messages).
    pub fn new(what: &'static str, budget: Duration) -> Retry {
        let started = Instant::now();
        Retry { started, deadline: started + budget, backoff: FIRST_BACKOFF, attempts: 0, what }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// After a failed attempt: sleeps before the next one, or gives up with `error` (its kind kept, its
    /// message saying how long we tried) when the next attempt could not start before the deadline.
    pub async fn wait(&mut self, error: GfsError) -> Result<(), GfsError> {
        self.attempts += 1;
        let pause = jittered(self.backoff);
        if pause >= self.remaining() {
            return Err(self.give_up(error));
        }
        tracing::debug!(what = self.what, attempts = self.attempts, %error, ?pause, "gfs client retrying");
        tokio::time::sleep(pause).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// Runs one attempt (a master call, a data-plane exchange) within the time left; past it, the
    /// attempt is dropped and the answer is a [`GfsError::Timeout`] that [`wait`](Self::wait) gives up on.
    pub async fn bounded<T>(&self, f: impl Future<Output = Result<T, GfsError>>) -> Result<T, GfsError> {
        match tokio::time::timeout(self.remaining(), f).await {
            Ok(result) => result,
            Err(_) => Err(GfsError::Timeout(format!("{}: the retry deadline passed during an attempt", self.what))),
        }
    }

    /// Fails once the deadline has passed (for loops that go on without waiting).
    pub fn check(&self) -> Result<(), GfsError> {
        if self.remaining().is_zero() {
            return Err(GfsError::Timeout(format!(
                "{} did not succeed within {:?} ({} attempts)",
                self.what,
                self.deadline - self.started,
                self.attempts
            )));
        }
        Ok(())
    }

    fn give_up(&self, error: GfsError) -> GfsError {
        error.context(format_args!(
            "{} gave up after {} attempts in {:?}",
            self.what,
            self.attempts.max(1),
            self.started.elapsed()
        ))
    }
}

/// Between half and all of `backoff`.
fn jittered(backoff: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let fraction = match SystemRandom::new().fill(&mut byte) {
        Ok(()) => 0.5 + f64::from(byte[0]) / 512.0,
        Err(_) => 0.75,
    };
    backoff.mul_f64(fraction)
}
