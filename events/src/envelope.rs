//! The CloudEvents 1.0 envelope (structured JSON mode) every event travels in.
//!
//! Besides the required attributes we carry three extensions: `correlationid` (the request that started
//! the work), `causationid` (the event that caused this one) and `actor` (who did it). The event `id` is a
//! UUIDv7, which sorts by time and doubles as the `Nats-Msg-Id` de-duplication key.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::catalog::Event;

/// The CloudEvents spec version we write.
pub const SPEC_VERSION: &str = "1.0";

/// One event: CloudEvents attributes around a payload `data` of type `T`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub specversion: String,
    pub id: Uuid,
    /// The service that emitted the event, e.g. `auth`.
    pub source: String,
    /// Versioned event type, e.g. `auth.user.created.v1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The aggregate id the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub datacontenttype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub data: T,
}

impl<E: Event> Envelope<E> {
    /// Wraps a payload in a fresh envelope: new UUIDv7 id, the current time.
    pub fn new(source: impl Into<String>, data: E) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7(),
            source: source.into(),
            ty: E::TYPE.to_owned(),
            subject: data.aggregate_id(),
            time: OffsetDateTime::now_utc(),
            datacontenttype: "application/json".to_owned(),
            correlationid: None,
            causationid: None,
            actor: None,
            data,
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlationid = Some(id.into());
        self
    }

    /// Marks this event as caused by `cause`, inheriting its correlation id.
    pub fn caused_by<T>(mut self, cause: &Envelope<T>) -> Self {
        self.causationid = Some(cause.id.to_string());
        self.correlationid = cause.correlationid.clone().or_else(|| Some(cause.id.to_string()));
        self
    }
}

/// Why a stored message could not be read as an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message at stream sequence {seq} on {subject} is not a CloudEvents envelope: {source}")]
    Envelope { seq: u64, subject: String, source: serde_json::Error },
    #[error("event {id} of type {ty} has a payload that does not match its schema: {source}")]
    Payload { id: Uuid, ty: String, source: serde_json::Error },
    #[error("event {id} has type {actual}, expected {expected}")]
    WrongType { id: Uuid, actual: String, expected: &'static str },
}

/// An event as read back from a stream: its position, its subject and its envelope with the payload
/// still as JSON, so a consumer can look at `type` before choosing what to decode it into.
#[derive(Clone, Debug)]
pub struct RawEvent {
    pub stream_seq: u64,
    pub subject: String,
    pub envelope: Envelope<serde_json::Value>,
}

impl RawEvent {
    /// Parses the bytes of a stored message.
    pub fn parse(stream_seq: u64, subject: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        let envelope = serde_json::from_slice(payload).map_err(|source| DecodeError::Envelope {
            seq: stream_seq,
            subject: subject.to_owned(),
            source,
        })?;
        Ok(Self { stream_seq, subject: subject.to_owned(), envelope })
    }

    /// The versioned CloudEvents type.
    pub fn ty(&self) -> &str {
        &self.envelope.ty
    }

    /// Whether this event is of type `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.envelope.ty == E::TYPE
    }

    /// Decodes the payload as `E`, checking the type first.
    pub fn decode<E: DeserializeOwned + Event>(&self) -> Result<E, DecodeError> {
        if !self.is::<E>() {
            return Err(DecodeError::WrongType {
                id: self.envelope.id,
                actual: self.envelope.ty.clone(),
                expected: E::TYPE,
            });
        }
        // Deserializing from a borrowed `Value` spares a deep copy of the payload per event.
        E::deserialize(&self.envelope.data).map_err(|source| DecodeError::Payload {
            id: self.envelope.id,
            ty: self.envelope.ty.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::auth::UserCreated;
    use crate::subject::Token;

    fn user() -> UserCreated {
        UserCreated {
            user_id: Token::new("u1").unwrap(),
            username: "ada".into(),
            display_name: "Ada".into(),
            is_admin: false,
        }
    }

    #[test]
    fn envelope_round_trips_with_cloudevents_attributes() {
        let env = Envelope::new("auth", user()).actor("admin").correlation("req-1");
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "auth.user.created.v1");
        assert_eq!(json["subject"], "u1");
        assert_eq!(json["actor"], "admin");
        assert_eq!(json["correlationid"], "req-1");
        assert_eq!(env.id.get_version_num(), 7);

        let bytes = serde_json::to_vec(&env).unwrap();
        let raw = RawEvent::parse(9, "auth.user.u1.created", &bytes).unwrap();
        assert!(raw.is::<UserCreated>());
        assert_eq!(raw.decode::<UserCreated>().unwrap(), user());
    }

    #[test]
    fn malformed_messages_are_clear_errors() {
        let err = RawEvent::parse(3, "auth.user.x.created", b"{not json").unwrap_err();
        assert!(err.to_string().contains("stream sequence 3"), "{err}");
    }

    #[test]
    fn causation_inherits_correlation() {
        let cause = Envelope::new("auth", user()).correlation("req-7");
        let effect = Envelope::new("auth", user()).caused_by(&cause);
        assert_eq!(effect.causationid, Some(cause.id.to_string()));
        assert_eq!(effect.correlationid.as_deref(), Some("req-7"));
    }
}
