//! What users do with their notifications (stream `INBOX`, kept forever): read marks and mutes.
//!
//! Notifications themselves are work items in `NOTIFY` (30 days); the notify service projects both
//! streams into `notifications_db`, so a rebuild gives back the same inboxes, read marks and mutes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::aggregate_event;
use crate::subject::Token;

/// A user marked notifications read: the ones listed in `ids`, and with `up_to` every one up to
/// and including that id (read-all). Ids are the notifications' `NOTIFY` stream sequences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationsRead {
    pub user_id: Token,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<u64>,
}
aggregate_event!(
    NotificationsRead,
    "inbox.read.v1",
    "INBOX",
    "inbox.{user_id}.read",
    "A user marked notifications as read (some, or all up to one).",
    ["inbox"],
    user_id,
    "read"
);

/// A user muted a category, or one scope within it (`scope: None` mutes the whole category).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MuteSet {
    pub user_id: Token,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
aggregate_event!(
    MuteSet,
    "inbox.muted.v1",
    "INBOX",
    "inbox.{user_id}.muted",
    "A user muted a notification category (or one scope of it).",
    ["inbox"],
    user_id,
    "muted"
);

/// A mute was lifted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MuteRemoved {
    pub user_id: Token,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
aggregate_event!(
    MuteRemoved,
    "inbox.unmuted.v1",
    "INBOX",
    "inbox.{user_id}.unmuted",
    "A user lifted a mute.",
    ["inbox"],
    user_id,
    "unmuted"
);
