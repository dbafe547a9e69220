//! Notifications for users (stream `NOTIFY`, work for the notify service, kept 30 days).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::subject::{Aggregate, Subject, Token};

/// A message for one user's inbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    pub user_id: Token,
    pub title: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// What kind of thing it is about (`storage`, `compute`, `auth`, …); users can mute a category.
    pub category: String,
    /// Narrows a mute within a category, e.g. a namespace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl super::Event for Notification {
    const TYPE: &'static str = "notify.notification.v1";
    const STREAM: &'static str = "NOTIFY";
    const SUBJECT_PATTERN: &'static str = "notify.{user_id}";
    const SUMMARY: &'static str = "A notification for one user's inbox.";
    fn subject(&self) -> Subject {
        Subject::from_parts(&["notify", self.user_id.as_str()])
    }
    fn aggregate(&self) -> Option<Aggregate> {
        None
    }
    fn aggregate_id(&self) -> Option<String> {
        Some(self.user_id.to_string())
    }
}
