//! Error logs raised by components (stream `LOGS`, kept 14 days); the alerting service consumes them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::subject::{Aggregate, Subject, Token};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorLogged {
    /// The component, e.g. `projections` or `storage`.
    pub source: Token,
    /// `ERROR` or `FATAL`.
    pub level: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: OffsetDateTime,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl super::Event for ErrorLogged {
    const TYPE: &'static str = "log.error.v1";
    const STREAM: &'static str = "LOGS";
    const SUBJECT_PATTERN: &'static str = "log.error.{source}";
    const SUMMARY: &'static str = "An ERROR-or-worse log line from a component.";
    fn subject(&self) -> Subject {
        Subject::from_parts(&["log", "error", self.source.as_str()])
    }
    fn aggregate(&self) -> Option<Aggregate> {
        None
    }
    fn aggregate_id(&self) -> Option<String> {
        None
    }
}
