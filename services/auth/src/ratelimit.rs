//! Sliding-window counters for failed logins, per client IP and per username.
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

pub struct SlidingWindow {
    limit: u32,
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, hits: Mutex::new(HashMap::new()) }
    }

    /// `Err(seconds)` when `key` has used up its budget: how long until the oldest hit leaves the window.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = hits.get_mut(key) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() < self.limit as usize {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = self.window.saturating_sub(now.duration_since(oldest));
        Err(wait.as_secs().max(1))
    }

    /// Counts one failure against `key`.
    pub fn record(&self, key: &str) {
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() >= SWEEP_AT {
            let window = self.window;
            hits.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let times = hits.entry(key.to_owned()).or_default();
        times.push_back(now);
        // Never keep more than the limit needs.
        while times.len() > self.limit as usize {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let w = SlidingWindow::new(2, Duration::from_millis(50));
        assert!(w.check("ip").is_ok());
        w.record("ip");
        w.record("ip");
        assert_eq!(w.check("ip"), Err(1));
        assert!(w.check("other").is_ok());
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.check("ip").is_err() {
            assert!(Instant::now() < deadline, "window never slid");
            std::thread::yield_now();
        }
    }
}
