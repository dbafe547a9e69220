//! Who may publish what: the one declaration of each component's subjects. The consumers' origin
//! check ([`check`]) reads it, and so do the NATS permissions generated for each component's
//! identity, so the two cannot drift.
//!
//! A component publishes with the envelope `source` set to its name, or `name/instance` (the GFS
//! master: `gfs-master/<id>`).

use crate::{catalog, envelope::RawEvent, subject::filter_matches};

/// A component and the subjects it alone (with the other rows naming the same subjects) may
/// publish on.
#[derive(Clone, Copy, Debug)]
pub struct Publisher {
    pub component: &'static str,
    pub subjects: &'static [&'static str],
}

/// Every component that writes to the log, with its subjects (ARCHITECTURE §6). `log.error.*` is
/// each component's own error channel; `projections` is the projection runner inside every
/// service, raising `log.error.projections` and dead-lettering what it quarantines.
pub const PUBLISHERS: &[Publisher] = &[
    Publisher { component: "auth", subjects: &["auth.>", "notify.>", "log.error.auth"] },
    Publisher { component: "gateway", subjects: &["gateway.>", "log.error.gateway"] },
    Publisher { component: "storage", subjects: &["storage.>", "notify.>", "log.error.storage"] },
    Publisher { component: "notify", subjects: &["inbox.>", "log.error.notify"] },
    Publisher { component: "gfs-master", subjects: &["gfs.>", "log.error.gfs-master"] },
    Publisher { component: "projections", subjects: &["log.error.projections", "deadletter.>"] },
];

/// Whether `source` (a component, or `component/instance`) may publish on `subject`.
pub fn may_publish(source: &str, subject: &str) -> bool {
    let component = source.split_once('/').map_or(source, |(c, _)| c);
    PUBLISHERS
        .iter()
        .filter(|p| p.component == component)
        .any(|p| p.subjects.iter().any(|f| filter_matches(f, subject)))
}

/// The component that publishes on `subject` (the first declared), for tools and test fixtures
/// that write an event as its owner would.
pub fn publisher_of(subject: &str) -> Option<&'static str> {
    PUBLISHERS.iter().find(|p| p.subjects.iter().any(|f| filter_matches(f, subject))).map(|p| p.component)
}

/// Why a stored message is not an event of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Foreign {
    #[error("not a CloudEvents envelope: {0}")]
    NotAnEnvelope(String),
    #[error("source {origin:?} may not publish on {subject}")]
    WrongSource { origin: String, subject: String },
    #[error("type {ty} does not belong on {subject} (its subjects are {pattern})")]
    WrongSubject { ty: String, subject: String, pattern: &'static str },
    #[error("{ty} payload does not decode: {error}")]
    BadPayload { ty: String, error: String },
}

/// Parses a stored message and checks that it is one of ours: a CloudEvents envelope, from the
/// component that owns its subject, and — when its type is in the catalog — of a type that belongs
/// on that subject, with a payload of that type. A type the catalog does not know (a newer
/// version) passes: its consumers skip and count it.
///
/// A message that fails is *not an event*: consumers quarantine it instead of applying it or
/// halting on it, the same way on every replay, so one garbage publish cannot stop a projection.
pub fn check(stream_seq: u64, subject: &str, payload: &[u8]) -> Result<RawEvent, Foreign> {
    let event = RawEvent::parse(stream_seq, subject, payload).map_err(|e| Foreign::NotAnEnvelope(e.to_string()))?;
    let source = &event.envelope.source;
    if !may_publish(source, subject) {
        return Err(Foreign::WrongSource { origin: source.clone(), subject: subject.to_owned() });
    }
    if let Some(info) = catalog::lookup(event.ty()) {
        if !filter_matches(&info.filter(), subject) {
            return Err(Foreign::WrongSubject {
                ty: info.ty.to_owned(),
                subject: subject.to_owned(),
                pattern: info.subject_pattern,
            });
        }
        (info.decodes)(&event.envelope.data).map_err(|error| Foreign::BadPayload { ty: info.ty.to_owned(), error })?;
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog::auth::UserCreated, Envelope, Event, Token};

    fn user() -> UserCreated {
        UserCreated {
            user_id: Token::new("u1").unwrap(),
            username: "ada".into(),
            display_name: "Ada".into(),
            is_admin: false,
        }
    }

    fn bytes<T: serde::Serialize>(e: &Envelope<T>) -> Vec<u8> {
        serde_json::to_vec(e).unwrap()
    }

    #[test]
    fn an_event_from_its_owner_passes() {
        let e = user();
        let subject = e.subject().as_str().to_owned();
        assert!(check(1, &subject, &bytes(&Envelope::new("auth", e))).is_ok());
        assert!(may_publish("gfs-master/m1", "gfs.file.f1.created"));
        assert_eq!(publisher_of("storage.ns.x.created"), Some("storage"));
    }

    #[test]
    fn garbage_foreign_sources_misplaced_types_and_bad_payloads_are_foreign() {
        let e = user();
        let subject = e.subject().as_str().to_owned();
        assert!(matches!(check(1, "auth.key.evil.added", b"{}"), Err(Foreign::NotAnEnvelope(_))));
        assert!(matches!(
            check(1, &subject, &bytes(&Envelope::new("storage", user()))),
            Err(Foreign::WrongSource { .. })
        ));
        assert!(matches!(
            check(1, "auth.key.k1.added", &bytes(&Envelope::new("auth", user()))),
            Err(Foreign::WrongSubject { .. })
        ));
        let mut bad = serde_json::to_value(Envelope::new("auth", user())).unwrap();
        bad["data"] = serde_json::json!({"user_id": 7});
        assert!(matches!(check(1, &subject, &serde_json::to_vec(&bad).unwrap()), Err(Foreign::BadPayload { .. })));
    }

    #[test]
    fn an_unknown_type_from_the_owner_passes_for_its_consumers_to_skip() {
        let mut newer = serde_json::to_value(Envelope::new("auth", user())).unwrap();
        newer["type"] = "auth.user.created.v9".into();
        assert!(check(1, "auth.user.u1.created", &serde_json::to_vec(&newer).unwrap()).is_ok());
    }

    #[test]
    fn every_catalog_subject_has_a_publisher() {
        for info in catalog::all() {
            let subject = info.filter().replace('*', "x");
            // Telemetry (CLUSTER, LOGS) comes from every component, or from ones not built yet.
            if info.stream != "CLUSTER" && info.stream != "LOGS" {
                assert!(publisher_of(&subject).is_some(), "{} has no publisher", info.ty);
            }
        }
    }
}
