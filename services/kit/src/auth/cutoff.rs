//! "Every session of this user issued before T is void": the per-user watermark that
//! `auth.user.{id}.sessions_revoked` sets, so that revoking all of a user's sessions is one event
//! and one comparison, however many sessions there are.
//!
//! A [`Cutoff`] summarizes any number of such events. Each event voids the sessions with
//! `iat < before` except the one it names in `keep`. Merging is commutative and idempotent, and
//! only ever refuses more than the events it summarizes (never less), so the fast path, the
//! projection and a reload may apply the same events in any order, or twice, and agree on what is
//! refused.

/// What one user's `sessions_revoked` events say, as one O(1) value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cutoff {
    /// Sessions issued before this (Unix seconds) are void...
    pub before: i64,
    /// ...except this one...
    pub keep: Option<String>,
    /// ...as long as it was issued at or after this: the latest `before` of an event that did not
    /// spare it (`i64::MIN` when every event spared it).
    pub keep_floor: i64,
}

impl Cutoff {
    /// One event's cutoff. `before` is rounded up to a whole second (the auth service always sends
    /// one), since a token's `iat` is whole seconds and the event voids what was issued earlier.
    pub fn of_event(before: time::OffsetDateTime, keep: Option<String>) -> Self {
        let secs = before.unix_timestamp() + i64::from(before.nanosecond() > 0);
        Self { before: secs, keep, keep_floor: i64::MIN }
    }

    /// Whether the session `sid`, issued at `iat` (Unix seconds), is void.
    pub fn voids(&self, sid: &str, iat: i64) -> bool {
        iat < self.before && !(self.keep.as_deref() == Some(sid) && iat >= self.keep_floor)
    }

    /// Both summaries in one: void whatever either voids.
    pub fn merge(self, other: Self) -> Self {
        if self.keep == other.keep {
            return Self {
                before: self.before.max(other.before),
                keep: self.keep,
                keep_floor: self.keep_floor.max(other.keep_floor),
            };
        }
        // Different survivors: the later one's stands, and it survives only what the other
        // summary's events (every one of them earlier than `other.before`) did not void.
        let (main, other) = if self.before >= other.before { (self, other) } else { (other, self) };
        Self {
            before: main.before,
            keep: main.keep,
            keep_floor: main.keep_floor.max(other.before).max(other.keep_floor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(before: i64, keep: Option<&str>) -> Cutoff {
        Cutoff { before, keep: keep.map(str::to_owned), keep_floor: i64::MIN }
    }

    /// The definition: void when some event voids it.
    fn voided_by_any(events: &[Cutoff], sid: &str, iat: i64) -> bool {
        events.iter().any(|e| iat < e.before && e.keep.as_deref() != Some(sid))
    }

    #[test]
    fn voids_what_was_issued_before_except_the_kept_session() {
        let c = event(100, Some("s1"));
        assert!(c.voids("s2", 99));
        assert!(!c.voids("s2", 100), "issued at the cutoff: after the request was answered");
        assert!(!c.voids("s1", 50));
        assert!(Cutoff::of_event(time::OffsetDateTime::from_unix_timestamp(100).unwrap(), None).voids("s", 99));
        let fractional = time::OffsetDateTime::from_unix_timestamp(100).unwrap() + time::Duration::milliseconds(1);
        assert_eq!(Cutoff::of_event(fractional, None).before, 101);
    }

    #[test]
    fn a_later_event_keeping_another_session_ends_the_first_one() {
        let c = event(100, Some("s1")).merge(event(200, Some("s2")));
        assert!(c.voids("s1", 50), "s1 was spared at 100 but not at 200");
        assert!(!c.voids("s2", 150));
        assert!(c.voids("s2", 99), "s2 issued before 100 was voided by the first event");
        assert!(!c.voids("s3", 200));
    }

    #[test]
    fn merging_in_any_order_never_refuses_less_than_the_events() {
        let events = [
            event(10, None),
            event(20, Some("a")),
            event(30, Some("a")),
            event(25, Some("b")),
            event(40, Some("b")),
            event(35, None),
        ];
        // Every order of every subset of up to 4 events (with repetitions), against every session.
        let mut orders: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..4 {
            orders = orders
                .into_iter()
                .flat_map(|o| {
                    (0..events.len()).map(move |i| {
                        let mut o = o.clone();
                        o.push(i);
                        o
                    })
                })
                .collect();
        }
        for order in orders {
            let chosen: Vec<Cutoff> = order.iter().map(|&i| events[i].clone()).collect();
            let merged = chosen.iter().cloned().reduce(Cutoff::merge).unwrap();
            for sid in ["a", "b", "c"] {
                for iat in 0..50 {
                    if voided_by_any(&chosen, sid, iat) {
                        assert!(merged.voids(sid, iat), "{order:?}: {sid}@{iat} should be void");
                    }
                }
            }
            // Sessions issued after every event stay valid, and the latest survivor survives.
            assert!(!merged.voids("c", 40));
            let last = chosen.iter().max_by_key(|e| e.before).unwrap();
            if let Some(keep) = &last.keep {
                if chosen.iter().all(|e| e.keep.as_ref() == Some(keep)) {
                    assert!(!merged.voids(keep, 0), "{order:?}");
                }
            }
        }
    }
}
