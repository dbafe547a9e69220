//! Limits on password guessing: a sliding window of failures per client address, and a progressive
//! delay per (username, client address).
//!
//! An attempt is **reserved before** the password is verified and given back only when it
//! succeeds: the check and the count are one step under one lock, so requests sent in parallel
//! cannot all pass the check while the first Argon2 verifications are still running. At most the
//! budget's worth of verifications run for one key, however many requests arrive at once.
//!
//! There is no lock on a username alone: anyone could spend it and keep its owner out. A username
//! is slowed per client instead ([`Backoff`]): the client that guesses waits longer after each
//! failure, while the owner, from another address, signs in at once.
//!
//! In memory, per replica: an attacker spread over replicas gets `replicas ×` the budget, which is
//! still bounded; a shared limiter would put PostgreSQL on every failed login.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Keys tracked before expired entries are swept.
const SWEEP_AT: usize = 10_000;

/// Whole seconds to wait for `wait`, at least 1 (a `Retry-After`).
fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// At most `limit` attempts per key in any `window`; an attempt counts from its reservation until
/// the window has passed it, unless it is released (it succeeded).
pub struct SlidingWindow {
    limit: u32,
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, hits: Mutex::new(HashMap::new()) }
    }

    /// Takes one attempt from `key`'s budget, now; `Err(seconds)` when the budget is spent: how
    /// long until the oldest attempt leaves the window. The `Ok` value releases the attempt.
    pub fn reserve(&self, key: &str) -> Result<Instant, u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() >= SWEEP_AT {
            let window = self.window;
            hits.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let times = hits.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.limit as usize {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(seconds(self.window.saturating_sub(now.duration_since(oldest))));
        }
        times.push_back(now);
        Ok(now)
    }

    /// Gives back the attempt reserved at `at` (it succeeded, so it is no failure).
    pub fn release(&self, key: &str, at: Instant) {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = hits.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                hits.remove(key);
            }
        }
    }
}

/// A progressive delay per key: `free` failures, then each further attempt waits `base`, doubled
/// for every failure past `free`, at most `window`, after the last one. Failures are forgotten a
/// `window` after the last; a success forgets them at once.
pub struct Backoff {
    free: u32,
    base: Duration,
    window: Duration,
    entries: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    last: Instant,
}

impl Backoff {
    pub fn new(free: u32, base: Duration, window: Duration) -> Self {
        Self { free, base, window, entries: Mutex::new(HashMap::new()) }
    }

    /// How long after the last of `count` failures the next attempt may come.
    fn delay(&self, count: u32) -> Duration {
        match count.checked_sub(self.free) {
            None => Duration::ZERO,
            Some(past) => self.base.saturating_mul(2u32.saturating_pow(past)).min(self.window),
        }
    }

    /// Counts an attempt for `key` as a failure now, unless it comes too soon after the last
    /// failure: then `Err(seconds)` until it may come. [`Self::succeeded`] takes it back.
    pub fn reserve(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= SWEEP_AT {
            let window = self.window;
            entries.retain(|_, f| now.duration_since(f.last) < window);
        }
        let failures = entries.entry(key.to_owned()).or_insert(Failures { count: 0, last: now });
        if now.duration_since(failures.last) >= self.window {
            failures.count = 0;
        }
        let ready_at = failures.last + self.delay(failures.count);
        if now < ready_at {
            return Err(seconds(ready_at - now));
        }
        failures.count += 1;
        failures.last = now;
        Ok(())
    }

    /// The attempt succeeded: `key`'s failures are forgotten.
    pub fn succeeded(&self, key: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The limits every password check passes: [`SlidingWindow`] per client, [`Backoff`] per
/// (username, client).
pub struct PasswordLimits {
    per_client: SlidingWindow,
    per_user_client: Backoff,
}

/// A reserved password check: a failure unless [`Attempt::succeeded`] says otherwise.
#[must_use = "an attempt that is dropped counts as a failure"]
pub struct Attempt<'a> {
    limits: &'a PasswordLimits,
    client: String,
    user_client: String,
    at: Instant,
}

impl PasswordLimits {
    /// `per_client` failures per client in `window`; `free` failures per (username, client)
    /// before the delay starts at 1 s.
    pub fn new(per_client: u32, free: u32, window: Duration) -> Self {
        Self {
            per_client: SlidingWindow::new(per_client, window),
            per_user_client: Backoff::new(free, Duration::from_secs(1), window),
        }
    }

    /// Reserves one check of `username`'s password by `client` (a [`crate::api::Client`]'s
    /// bucket); `Err(seconds)` to wait when either limit says no.
    pub fn attempt(&self, username: &str, client: &str) -> Result<Attempt<'_>, u64> {
        let at = self.per_client.reserve(client)?;
        // A username cannot end in an address, so the key is one (username, client) pair's own.
        let user_client = format!("{username}\n{client}");
        if let Err(wait) = self.per_user_client.reserve(&user_client) {
            self.per_client.release(client, at);
            return Err(wait);
        }
        Ok(Attempt { limits: self, client: client.to_owned(), user_client, at })
    }
}

impl Attempt<'_> {
    /// The password was right: the attempt is given back and the pair's delay forgotten.
    pub fn succeeded(self) {
        self.limits.per_client.release(&self.client, self.at);
        self.limits.per_user_client.succeeded(&self.user_client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let w = SlidingWindow::new(2, Duration::from_millis(50));
        assert!(w.reserve("ip").is_ok());
        assert!(w.reserve("ip").is_ok());
        assert_eq!(w.reserve("ip"), Err(1));
        assert!(w.reserve("other").is_ok());
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.reserve("ip").is_err() {
            assert!(Instant::now() < deadline, "window never slid");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_released_attempt_gives_its_budget_back() {
        let w = SlidingWindow::new(2, Duration::from_secs(60));
        let first = w.reserve("ip").unwrap();
        w.reserve("ip").unwrap();
        assert!(w.reserve("ip").is_err());
        w.release("ip", first);
        assert!(w.reserve("ip").is_ok());
        assert!(w.reserve("ip").is_err());
    }

    #[test]
    fn parallel_attempts_cannot_overspend_the_budget() {
        let w = std::sync::Arc::new(SlidingWindow::new(20, Duration::from_secs(60)));
        let passed: usize = (0..8)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || (0..250).filter(|_| w.reserve("ip").is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(passed, 20);
    }

    #[test]
    fn the_delay_grows_after_the_free_failures_and_a_success_resets_it() {
        let b = Backoff::new(2, Duration::from_secs(1), Duration::from_secs(900));
        assert_eq!(
            (0..8).map(|n| b.delay(n).as_secs()).collect::<Vec<_>>(),
            [0, 0, 1, 2, 4, 8, 16, 32],
            "free failures, then 1 s doubling"
        );
        assert_eq!(b.delay(40), Duration::from_secs(900), "at most the window");
        b.reserve("ada|1.2.3.4").unwrap();
        b.reserve("ada|1.2.3.4").unwrap();
        assert_eq!(b.reserve("ada|1.2.3.4"), Err(1), "the third attempt waits");
        assert!(b.reserve("ada|5.6.7.8").is_ok(), "another client does not");
        b.succeeded("ada|1.2.3.4");
        assert!(b.reserve("ada|1.2.3.4").is_ok());
    }

    #[test]
    fn an_attempt_refused_by_the_delay_costs_the_client_nothing() {
        let limits = PasswordLimits::new(3, 1, Duration::from_secs(900));
        drop(limits.attempt("ada", "1.2.3.4").unwrap());
        assert_eq!(limits.attempt("ada", "1.2.3.4").err(), Some(1), "ada waits at 1.2.3.4");
        assert_eq!(limits.attempt("ada", "1.2.3.4").err(), Some(1));
        // The client's budget (3) still has 2: the waits took nothing from it.
        drop(limits.attempt("bob", "1.2.3.4").unwrap());
        limits.attempt("eve", "1.2.3.4").unwrap().succeeded();
        drop(limits.attempt("cyd", "1.2.3.4").unwrap());
        assert!(limits.attempt("dan", "1.2.3.4").is_err(), "3 failures spent the client's budget");
        assert!(limits.attempt("ada", "5.6.7.8").is_ok(), "ada from elsewhere is not slowed");
    }

    #[test]
    fn failures_are_forgotten_a_window_after_the_last() {
        let b = Backoff::new(1, Duration::from_secs(60), Duration::from_millis(50));
        b.reserve("k").unwrap();
        assert!(b.reserve("k").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.reserve("k").is_ok());
    }
}
