//! From a verified token's claims to who the client is: principal, groups, and the standard
//! claims the audit log records.
//!
//! Claim paths are dotted (`realm_access.roles`), but a top-level claim whose name contains
//! dots (`https://example.com/groups`, common with some issuers) is found first.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::error::TokenError;

/// The value at `path`: the top-level claim of that exact name, else the dotted walk through
/// nested objects. `null` counts as absent.
pub(crate) fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    let found = match claims.get(path) {
        Some(value) => Some(value),
        None => path
            .split('.')
            .try_fold(claims, |value, segment| value.get(segment)),
    };
    found.filter(|value| !value.is_null())
}

/// The principal: a non-empty string.
pub(crate) fn principal(claims: &Value, path: &str) -> Result<String, TokenError> {
    match lookup(claims, path) {
        None => Err(TokenError::MissingClaim(path.to_owned())),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(TokenError::BadClaim(path.to_owned())),
    }
}

/// The union of the groups claims, first-seen order, without duplicates. Each claim is an
/// array of strings or a space-separated string (like `scope`); a missing claim adds nothing.
pub(crate) fn groups(claims: &Value, paths: &[String]) -> Result<Vec<String>, TokenError> {
    let mut groups: Vec<String> = Vec::new();
    let mut add = |group: &str| {
        if !group.is_empty() && !groups.iter().any(|g| g == group) {
            groups.push(group.to_owned());
        }
    };
    for path in paths {
        match lookup(claims, path) {
            None => {}
            Some(Value::String(s)) => s.split_whitespace().for_each(&mut add),
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(group) = item else {
                        return Err(TokenError::BadClaim(path.clone()));
                    };
                    add(group);
                }
            }
            Some(_) => return Err(TokenError::BadClaim(path.clone())),
        }
    }
    Ok(groups)
}

/// An optional top-level string claim; present with another type is an error.
pub(crate) fn optional_string(claims: &Value, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::BadClaim(name.to_owned())),
    }
}

/// `exp` as a time. jsonwebtoken has already checked it is there and in the future; this
/// reads it the same way (whole or fractional seconds, rounded).
pub(crate) fn expires_at(claims: &Value) -> Result<SystemTime, TokenError> {
    let bad = || TokenError::BadClaim("exp".into());
    let value = claims
        .get("exp")
        .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let secs = match (value.as_u64(), value.as_f64()) {
        (Some(secs), _) => secs,
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => f.round() as u64,
        _ => return Err(bad()),
    };
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lookup_walks_dotted_paths_and_prefers_literal_names() {
        let claims = json!({
            "realm_access": {"roles": ["a"]},
            "https://example.com/groups": ["g"],
            "a.b": 1,
            "a": {"b": 2},
            "n": null,
        });
        assert_eq!(lookup(&claims, "realm_access.roles"), Some(&json!(["a"])));
        assert_eq!(
            lookup(&claims, "https://example.com/groups"),
            Some(&json!(["g"]))
        );
        assert_eq!(lookup(&claims, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&claims, "realm_access.roles.x"), None);
        assert_eq!(lookup(&claims, "realm_access.nope"), None);
        assert_eq!(lookup(&claims, "n"), None);
        assert_eq!(lookup(&json!([1]), "0"), None);
    }

    #[test]
    fn principal_must_be_a_non_empty_string() {
        let claims = json!({"sub": "alice", "empty": "", "num": 1, "obj": {"id": "x"}});
        assert_eq!(principal(&claims, "sub").unwrap(), "alice");
        assert_eq!(principal(&claims, "obj.id").unwrap(), "x");
        assert_eq!(
            principal(&claims, "missing"),
            Err(TokenError::MissingClaim("missing".into()))
        );
        assert_eq!(
            principal(&claims, "empty"),
            Err(TokenError::BadClaim("empty".into()))
        );
        assert_eq!(
            principal(&claims, "num"),
            Err(TokenError::BadClaim("num".into()))
        );
    }

    #[test]
    fn groups_are_merged_deduplicated_in_order() {
        let claims = json!({
            "groups": ["b", "a", "b"],
            "scope": "openid  a kafka",
            "realm_access": {"roles": ["r", "a"]},
        });
        let all = paths(&["groups", "scope", "realm_access.roles", "missing"]);
        assert_eq!(
            groups(&claims, &all).unwrap(),
            vec!["b", "a", "openid", "kafka", "r"]
        );
        assert_eq!(groups(&claims, &[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn groups_of_another_type_are_refused() {
        for bad in [json!(1), json!({"a": 1}), json!(["a", 2]), json!(true)] {
            let claims = json!({ "groups": bad });
            assert_eq!(
                groups(&claims, &paths(&["groups"])),
                Err(TokenError::BadClaim("groups".into()))
            );
        }
    }

    #[test]
    fn expiry_reads_whole_and_fractional_seconds() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(expires_at(&json!({"exp": 1000})).unwrap(), at(1000));
        assert_eq!(expires_at(&json!({"exp": 999.6})).unwrap(), at(1000));
        for bad in [json!(-1), json!("1000"), json!(1e300)] {
            assert!(expires_at(&json!({ "exp": bad })).is_err());
        }
        assert!(expires_at(&json!({})).is_err());
        // Never panics, whatever the platform's SystemTime range.
        let _ = expires_at(&json!({"exp": u64::MAX}));
    }

    #[test]
    fn optional_strings() {
        let claims = json!({"client_id": "c", "azp": 5});
        assert_eq!(
            optional_string(&claims, "client_id").unwrap(),
            Some("c".into())
        );
        assert_eq!(optional_string(&claims, "sub").unwrap(), None);
        assert!(optional_string(&claims, "azp").is_err());
    }
}
