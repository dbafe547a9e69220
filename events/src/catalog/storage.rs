//! Events of the storage service (stream `STORAGE`): namespaces, files and share links.
//!
//! A namespace's aggregate is `storage.ns.{ns_key}.>` where `ns_key` is [`namespace_key`] of its
//! name, so creating it with "no events yet" (or "exactly the deletion I saw") *is* the uniqueness
//! claim: two users racing for a name cannot both win. Each incarnation of a name gets a fresh
//! `ns_id`, and files live under `storage.file.{ns_id}.{file_key}.>`, so a re-created namespace
//! never inherits its predecessor's files. The bytes of a file live in GFS (`blob`); events carry
//! only its description.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::aggregate_event;
use crate::subject::{Aggregate, Subject, Token};

/// Who may read a namespace's files without credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only the owner (and tokens the owner granted).
    Private,
    /// Anyone with the link may read a file; the namespace is still never listed to others.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
        }
    }
}

/// The subject-safe key of a namespace name: lowercase hex of its lowercased bytes, so names are
/// unique regardless of case (`Photos` and `photos` are the same namespace).
pub fn namespace_key(name: &str) -> String {
    name.to_lowercase().bytes().map(|b| format!("{b:02x}")).collect()
}

/// The subject-safe key of a file path within a namespace: the first 128 bits of its SHA-256, hex.
pub fn file_key(path: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_bytes());
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A namespace was created (the first event of its aggregate, or the first after its deletion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceCreated {
    /// [`namespace_key`] of `name`.
    pub ns_key: Token,
    /// This incarnation of the name.
    pub ns_id: Token,
    /// As the owner wrote it.
    pub name: String,
    pub owner: Token,
    pub visibility: Visibility,
}
aggregate_event!(
    NamespaceCreated,
    "storage.ns.created.v1",
    "STORAGE",
    "storage.ns.{ns_key}.created",
    "A user created a storage namespace (the name is unique, case-insensitively).",
    ["storage", "ns"],
    ns_key,
    "created"
);

/// A namespace's visibility changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceUpdated {
    pub ns_key: Token,
    pub ns_id: Token,
    pub visibility: Visibility,
}
aggregate_event!(
    NamespaceUpdated,
    "storage.ns.updated.v1",
    "STORAGE",
    "storage.ns.{ns_key}.updated",
    "A namespace was made public or private.",
    ["storage", "ns"],
    ns_key,
    "updated"
);

/// A namespace and every file in it were deleted; their GFS data is removed after this event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceDeleted {
    pub ns_key: Token,
    pub ns_id: Token,
    pub name: String,
    pub owner: Token,
    /// `requested` (by its owner or an administrator) or `user_deleted`.
    pub reason: String,
    /// Files and bytes it held when deleted.
    pub files: u64,
    pub bytes: u64,
}
aggregate_event!(
    NamespaceDeleted,
    "storage.ns.deleted.v1",
    "STORAGE",
    "storage.ns.{ns_key}.deleted",
    "A namespace was deleted with all its files (by its owner, or because the owner was deleted).",
    ["storage", "ns"],
    ns_key,
    "deleted"
);

/// A file was uploaded (created, or replaced with `overwrite`). Its bytes are the GFS file `blob`,
/// written completely before this event; the previous blob, if any, is deleted after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileUploaded {
    pub ns_id: Token,
    /// [`file_key`] of `path`.
    pub file_key: Token,
    pub namespace: String,
    pub path: String,
    pub owner: Token,
    /// The GFS path holding the bytes (in the GFS namespace `storage`).
    pub blob: String,
    /// The GFS file id of `blob`, which reads use.
    pub blob_id: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub content_type: String,
}

/// A file was deleted; its blob is removed from GFS after this event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileDeleted {
    pub ns_id: Token,
    pub file_key: Token,
    pub namespace: String,
    pub path: String,
    pub owner: Token,
    pub blob: String,
    pub size: u64,
}

fn file_subject(ns_id: &Token, file_key: &Token, verb: &str) -> Subject {
    Subject::from_parts(&["storage", "file", ns_id.as_str(), file_key.as_str(), verb])
}

fn file_aggregate(ns_id: &Token, file_key: &Token) -> Aggregate {
    Aggregate::from_parts(&["storage", "file", ns_id.as_str(), file_key.as_str()])
}

impl super::Event for FileUploaded {
    const TYPE: &'static str = "storage.file.uploaded.v1";
    const STREAM: &'static str = "STORAGE";
    const SUBJECT_PATTERN: &'static str = "storage.file.{ns_id}.{file_key}.uploaded";
    const SUMMARY: &'static str = "A file was uploaded into a namespace (new, or replacing the previous one).";
    fn subject(&self) -> Subject {
        file_subject(&self.ns_id, &self.file_key, "uploaded")
    }
    fn aggregate(&self) -> Option<Aggregate> {
        Some(file_aggregate(&self.ns_id, &self.file_key))
    }
    fn aggregate_id(&self) -> Option<String> {
        Some(format!("{}/{}", self.namespace, self.path))
    }
}

impl super::Event for FileDeleted {
    const TYPE: &'static str = "storage.file.deleted.v1";
    const STREAM: &'static str = "STORAGE";
    const SUBJECT_PATTERN: &'static str = "storage.file.{ns_id}.{file_key}.deleted";
    const SUMMARY: &'static str = "A file was deleted from a namespace.";
    fn subject(&self) -> Subject {
        file_subject(&self.ns_id, &self.file_key, "deleted")
    }
    fn aggregate(&self) -> Option<Aggregate> {
        Some(file_aggregate(&self.ns_id, &self.file_key))
    }
    fn aggregate_id(&self) -> Option<String> {
        Some(format!("{}/{}", self.namespace, self.path))
    }
}

/// A share link for one stored file: whoever holds the link's key may read it until `expires_at`,
/// and only as long as the file at `path` is still the bytes the link was made for (`blob`): an
/// overwrite or a delete ends the link. Only the key's SHA-256 is recorded; the key itself is shown
/// once, to its creator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShareCreated {
    pub share_id: Token,
    pub ns_id: Token,
    pub namespace: String,
    pub path: String,
    pub owner: Token,
    /// Lowercase hex SHA-256 of the link's key.
    pub key_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub expires_at: OffsetDateTime,
    /// The GFS path of the bytes the link serves ([`FileUploaded::blob`] of the file it was made
    /// for). Absent from links recorded before links named their bytes: such a link is to the file
    /// that was at `path` when the link was created, which the catalog resolves when it applies it.
    #[serde(default)]
    pub blob: Option<String>,
}
aggregate_event!(
    ShareCreated,
    "storage.share.created.v1",
    "STORAGE",
    "storage.share.{share_id}.created",
    "A user created an expiring share link for one file.",
    ["storage", "share"],
    share_id,
    "created"
);

/// A share link stops working before its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShareRevoked {
    pub share_id: Token,
    pub owner: Token,
}
aggregate_event!(
    ShareRevoked,
    "storage.share.revoked.v1",
    "STORAGE",
    "storage.share.{share_id}.revoked",
    "A share link was revoked.",
    ["storage", "share"],
    share_id,
    "revoked"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn keys_are_subject_safe_and_names_case_insensitive() {
        assert_eq!(namespace_key("Photos"), namespace_key("photos"));
        assert!(Token::new(namespace_key(&"a.b-c_".repeat(10))).is_ok());
        assert!(Token::new(file_key("a/b c/../*>.txt")).is_ok());
        assert_ne!(file_key("a"), file_key("A"));
    }

    #[test]
    fn a_share_recorded_before_links_named_their_bytes_still_decodes() {
        let old = serde_json::json!({
            "share_id": "s1", "ns_id": "n1", "namespace": "ns", "path": "a.txt", "owner": "u1",
            "key_sha256": "00", "expires_at": "2026-01-01T00:00:00Z",
        });
        let share: ShareCreated = serde_json::from_value(old).unwrap();
        assert_eq!(share.blob, None);
        let mut new = serde_json::to_value(&share).unwrap();
        new["blob"] = "/n1/b".into();
        assert_eq!(serde_json::from_value::<ShareCreated>(new).unwrap().blob.as_deref(), Some("/n1/b"));
    }

    #[test]
    fn file_events_share_one_aggregate_per_path() {
        let ns_id = Token::new("n1").unwrap();
        let key = Token::new(file_key("x/y")).unwrap();
        let up = FileUploaded {
            ns_id: ns_id.clone(),
            file_key: key.clone(),
            namespace: "ns".into(),
            path: "x/y".into(),
            owner: Token::new("u1").unwrap(),
            blob: "b".into(),
            blob_id: "1".into(),
            size: 1,
            sha256: "00".into(),
            content_type: "text/plain".into(),
        };
        let del = FileDeleted {
            ns_id,
            file_key: key,
            namespace: "ns".into(),
            path: "x/y".into(),
            owner: Token::new("u1").unwrap(),
            blob: "b".into(),
            size: 1,
        };
        assert_eq!(up.aggregate(), del.aggregate());
        assert!(up.aggregate().unwrap().contains(&del.subject()));
    }
}
