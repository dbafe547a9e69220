//! Subject-safe identifiers and the subjects built from them.
//!
//! A [`Token`] is the only way an id reaches a subject, so `.`, `*`, `>` or whitespace can never change
//! which messages a subject or filter matches. Services never format subject strings themselves: they
//! ask the [`catalog`](crate::catalog) for a [`Subject`] or an [`Aggregate`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest id we accept in a subject token.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a string cannot be used as a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("an id must not be empty")]
    Empty,
    #[error("an id is at most {MAX_TOKEN_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("an id may only contain ASCII letters, digits, '-' and '_'; found {0:?}")]
    BadChar(char),
}

/// A validated subject token: `[A-Za-z0-9_-]{1,128}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Token(String);

impl Token {
    /// Validates `s` as a subject token.
    pub fn new(s: impl Into<String>) -> Result<Self, SubjectError> {
        let s = s.into();
        if s.is_empty() {
            return Err(SubjectError::Empty);
        }
        if s.len() > MAX_TOKEN_LEN {
            return Err(SubjectError::TooLong(s.len()));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(SubjectError::BadChar(c));
        }
        Ok(Self(s))
    }

    /// A fresh random id: 16 characters of lowercase base32 (80 random bits), short enough for URLs.
    pub fn random() -> Self {
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        let bits = uuid::Uuid::new_v4().as_u128();
        let s = (0..16).map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect();
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Token {
    type Error = SubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl schemars::JsonSchema for Token {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Token".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,128}$",
            "description": "A subject-safe identifier"
        })
    }
}

/// A concrete subject an event is published on, e.g. `auth.user.k3j2….created`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    /// Joins already-validated parts. Only the catalog calls this, with literals and [`Token`]s.
    pub(crate) fn from_parts(parts: &[&str]) -> Self {
        Self(parts.join("."))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An aggregate: the unit of optimistic concurrency. Its events share the subject prefix `filter`
/// (`auth.user.{id}.>`), and appends check the last sequence stored under that filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    filter: String,
}

impl Aggregate {
    pub(crate) fn from_parts(parts: &[&str]) -> Self {
        Self { filter: format!("{}.>", parts.join(".")) }
    }

    /// The subject filter covering all of this aggregate's events.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Whether `subject` belongs to this aggregate.
    pub fn contains(&self, subject: &Subject) -> bool {
        match self.filter.strip_suffix('>') {
            Some(prefix) => subject.0.starts_with(prefix),
            None => subject.0 == self.filter,
        }
    }
}

/// Whether the NATS subject filter `filter` (with `*` and `>` wildcards) matches `subject`.
pub fn filter_matches(filter: &str, subject: &str) -> bool {
    let mut subject_parts = subject.split('.');
    for part in filter.split('.') {
        match (part, subject_parts.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_nats() {
        assert!(filter_matches("auth.user.>", "auth.user.u1.created"));
        assert!(!filter_matches("auth.user.>", "auth.user"));
        assert!(filter_matches("auth.session.*.revoked", "auth.session.s1.revoked"));
        assert!(!filter_matches("auth.session.*.revoked", "auth.session.s1.created"));
        assert!(!filter_matches("auth.session.*", "auth.session.s1.revoked"));
        assert!(filter_matches("notify.u1", "notify.u1"));
    }

    #[test]
    fn tokens_reject_subject_syntax() {
        assert_eq!(Token::new("a.b"), Err(SubjectError::BadChar('.')));
        assert_eq!(Token::new("a*"), Err(SubjectError::BadChar('*')));
        assert_eq!(Token::new(">"), Err(SubjectError::BadChar('>')));
        assert_eq!(Token::new("a b"), Err(SubjectError::BadChar(' ')));
        assert_eq!(Token::new(""), Err(SubjectError::Empty));
        assert_eq!(Token::new("x".repeat(129)), Err(SubjectError::TooLong(129)));
        assert!(Token::new("User_1-ok").is_ok());
    }

    #[test]
    fn random_tokens_are_valid_and_distinct() {
        let a = Token::random();
        let b = Token::random();
        assert_eq!(a.as_str().len(), 16);
        assert!(Token::new(a.as_str()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn tokens_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<Token>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<Token>("\"no.dots\"").is_err());
    }

    #[test]
    fn aggregates_contain_their_subjects() {
        let agg = Aggregate::from_parts(&["auth", "user", "u1"]);
        assert!(agg.contains(&Subject::from_parts(&["auth", "user", "u1", "created"])));
        assert!(!agg.contains(&Subject::from_parts(&["auth", "user", "u10", "created"])));
    }
}
