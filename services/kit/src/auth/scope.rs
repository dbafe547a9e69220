//! Permission scopes: `<root>.<user_id>[.<resource>[.<id>]]` → actions.
//!
//! A grant on a prefix covers everything below it: `storage.u1` with `["read"]` allows reading
//! `storage.u1.files.f9`. The user segment of every grant must be the granting user's own id, so a
//! token can never reach another user's resources, whatever its scopes say.

use edd_events::{catalog::auth::ScopeMap, Token};

/// Most entries one scope map may hold.
pub const MAX_SCOPES: usize = 64;
/// Longest scope string and most actions per entry (every action is named once).
pub const MAX_SCOPE_LEN: usize = 256;
pub const MAX_ACTIONS: usize = 8;

/// A resource and the actions on it.
pub type Resource = (&'static str, &'static [&'static str]);

/// The roots, their resources and each resource's actions (after the seeds' inventory).
pub const VOCABULARY: &[(&str, &[Resource])] = &[
    (
        "compute",
        &[
            ("containers", &["create", "read", "update", "delete"]),
            ("keys", &["create", "read", "delete"]),
            ("ingress", &["create", "read", "update", "delete"]),
        ],
    ),
    ("storage", &[("namespaces", &["create", "read", "update", "delete"]), ("files", &["create", "read", "delete"])]),
    ("networking", &[("routes", &["create", "read", "update", "delete"]), ("domains", &["create", "read", "delete"])]),
    ("registry", &[("repos", &["create", "read", "write", "delete"])]),
    ("notifications", &[("inbox", &["read", "update"])]),
];

/// Why a scope map was refused; names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {scope:?}: {reason}")]
    Invalid { scope: String, reason: String },
    #[error("at most {MAX_SCOPES} scopes may be granted, got {0}")]
    TooMany(usize),
    #[error("grant at least one scope")]
    Empty,
}

impl ScopeError {
    /// The offending entry, when there is one.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Invalid { scope, .. } => Some(scope),
            _ => None,
        }
    }
}

fn invalid(scope: &str, reason: impl Into<String>) -> ScopeError {
    ScopeError::Invalid { scope: scope.to_owned(), reason: reason.into() }
}

/// Checks that `map` is a well-formed grant by `owner`: known roots, resources and actions, and the
/// owner's own user id in every entry.
pub fn validate(map: &ScopeMap, owner: &Token) -> Result<(), ScopeError> {
    if map.is_empty() {
        return Err(ScopeError::Empty);
    }
    if map.len() > MAX_SCOPES {
        return Err(ScopeError::TooMany(map.len()));
    }
    for (scope, actions) in map {
        if scope.len() > MAX_SCOPE_LEN {
            let head: String = scope.chars().take(64).collect();
            return Err(invalid(&head, format!("longer than {MAX_SCOPE_LEN} bytes")));
        }
        if actions.len() > MAX_ACTIONS {
            return Err(invalid(scope, format!("at most {MAX_ACTIONS} actions, each named once")));
        }
        let parts: Vec<&str> = scope.split('.').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(invalid(scope, "expected <root>.<user_id>[.<resource>[.<id>]]"));
        }
        let Some((_, resources)) = VOCABULARY.iter().find(|(root, _)| *root == parts[0]) else {
            let roots: Vec<&str> = VOCABULARY.iter().map(|(r, _)| *r).collect();
            return Err(invalid(scope, format!("unknown root {:?}; one of {}", parts[0], roots.join(", "))));
        };
        if parts[1] != owner.as_str() {
            return Err(invalid(scope, "the user segment must be your own user id"));
        }
        let allowed: Vec<&str> = match parts.get(2) {
            None => {
                let mut all: Vec<&str> = resources.iter().flat_map(|(_, a)| a.iter().copied()).collect();
                all.sort_unstable();
                all.dedup();
                all
            }
            Some(resource) => match resources.iter().find(|(r, _)| r == resource) {
                Some((_, actions)) => actions.to_vec(),
                None => {
                    let names: Vec<&str> = resources.iter().map(|(r, _)| *r).collect();
                    return Err(invalid(
                        scope,
                        format!("unknown resource {resource:?} under {}; one of {}", parts[0], names.join(", ")),
                    ));
                }
            },
        };
        if let Some(id) = parts.get(3) {
            if Token::new(*id).is_err() {
                return Err(invalid(scope, "resource ids are letters, digits, '-' and '_'"));
            }
        }
        if actions.is_empty() {
            return Err(invalid(scope, "grant at least one action"));
        }
        if let Some(bad) = actions.iter().find(|a| !allowed.contains(&a.as_str())) {
            return Err(invalid(scope, format!("unknown action {bad:?}; one of {}", allowed.join(", "))));
        }
    }
    Ok(())
}

/// Whether `grant` is `scope` or a prefix of it at a segment boundary.
pub fn covers(grant: &str, scope: &str) -> bool {
    scope == grant || (scope.starts_with(grant) && scope.as_bytes().get(grant.len()) == Some(&b'.'))
}

/// Whether `grants` allow `action` on `scope`.
pub fn allows(grants: &ScopeMap, scope: &str, action: &str) -> bool {
    grants.iter().any(|(grant, actions)| covers(grant, scope) && actions.iter().any(|a| a == action))
}

/// Builds `<root>.<user>[.<resource>[.<id>]]`.
pub fn scope(root: &str, user: &Token, resource: Option<&str>, id: Option<&str>) -> String {
    let mut s = format!("{root}.{user}");
    for part in [resource, id].into_iter().flatten() {
        s.push('.');
        s.push_str(part);
    }
    s
}

/// The entries of `map` under `root` (all of them when `root` is `None`): what a service keeps.
pub fn restrict(map: &ScopeMap, root: Option<&str>) -> ScopeMap {
    match root {
        None => map.clone(),
        Some(root) => {
            map.iter().filter(|(scope, _)| covers(root, scope)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[&str])]) -> ScopeMap {
        entries.iter().map(|(k, v)| (k.to_string(), v.iter().map(|a| a.to_string()).collect())).collect()
    }

    fn u1() -> Token {
        Token::new("u1").unwrap()
    }

    #[test]
    fn accepts_the_seed_examples() {
        let m = map(&[("compute.u1.containers", &["create", "read", "delete"]), ("storage.u1.files", &["read"])]);
        assert_eq!(validate(&m, &u1()), Ok(()));
        assert_eq!(validate(&map(&[("registry.u1", &["write"])]), &u1()), Ok(()));
        assert_eq!(validate(&map(&[("storage.u1.files.f-9", &["read"])]), &u1()), Ok(()));
    }

    #[test]
    fn names_the_bad_entry() {
        let cases: &[(&str, &[&str])] = &[
            ("storage", &["read"]),
            ("billing.u1", &["read"]),
            ("storage.u2.files", &["read"]),
            ("storage.u1.pictures", &["read"]),
            ("storage.u1.files", &["write"]),
            ("storage.u1.files", &[]),
            ("storage.u1.files.a*b", &["read"]),
            ("storage.u1.files.x.y", &["read"]),
            ("storage.u1.files", &["read"; 9]),
        ];
        for (scope, actions) in cases {
            let err = validate(&map(&[(scope, actions)]), &u1()).unwrap_err();
            assert_eq!(err.scope(), Some(*scope), "{err}");
        }
        assert_eq!(validate(&ScopeMap::new(), &u1()), Err(ScopeError::Empty));
    }

    #[test]
    fn a_prefix_grant_covers_what_is_below_it_and_nothing_beside_it() {
        let grants = map(&[("storage.u1.files", &["read"])]);
        assert!(allows(&grants, "storage.u1.files", "read"));
        assert!(allows(&grants, "storage.u1.files.f1", "read"));
        assert!(!allows(&grants, "storage.u1.files.f1", "delete"));
        assert!(!allows(&grants, "storage.u1.filesystem", "read"));
        assert!(!allows(&grants, "storage.u1", "read"));
        assert!(!allows(&grants, "storage.u10.files", "read"));
        assert!(!allows(&grants, "compute.u1.files", "read"));
    }

    #[test]
    fn restrict_keeps_one_root() {
        let m = map(&[("storage.u1", &["read"]), ("storagex.u1", &["read"]), ("compute.u1", &["read"])]);
        assert_eq!(restrict(&m, Some("storage")).keys().collect::<Vec<_>>(), vec!["storage.u1"]);
        assert_eq!(restrict(&m, None).len(), 3);
    }
}
