//! Checks on the directory as a whole: rule names are unique, no rule repeats another, and no
//! allow (or approve) rule is made dead by a deny (or approve) rule that covers all of it.

use std::collections::HashMap;

use super::{
    model::{AccessRule, BlockRule, Effect, OpSet, RuleRef},
    PolicyError,
};

fn error_at(at: &RuleRef, column: usize, message: String) -> PolicyError {
    PolicyError::new(at.file.as_ref(), at.line, column, message)
}

fn place(at: &RuleRef) -> String {
    format!("{}:{}", at.file, at.line)
}

pub(crate) fn check_set(
    access: &[AccessRule],
    blocks: &[BlockRule],
    errors: &mut Vec<PolicyError>,
) {
    unique_names(access, blocks, errors);
    duplicates(access, errors);
    shadowed(access, errors);
}

fn unique_names(access: &[AccessRule], blocks: &[BlockRule], errors: &mut Vec<PolicyError>) {
    let all = access
        .iter()
        .map(|r| (&r.at, r.column))
        .chain(blocks.iter().map(|r| (&r.at, r.column)));
    let mut seen: HashMap<&str, (&RuleRef, usize)> = HashMap::new();
    for (at, column) in all {
        match seen.get(at.name.as_ref()) {
            Some((first, first_column)) => {
                errors.push(error_at(
                    first,
                    *first_column,
                    format!("rule name `{}` is used again at {}", at.name, place(at)),
                ));
                errors.push(error_at(
                    at,
                    column,
                    format!(
                        "rule name `{}` is already used at {}",
                        at.name,
                        place(first)
                    ),
                ));
            }
            None => {
                seen.insert(&at.name, (at, column));
            }
        }
    }
}

fn duplicates(access: &[AccessRule], errors: &mut Vec<PolicyError>) {
    let mut by_shape: HashMap<(Effect, OpSet), Vec<&AccessRule>> = HashMap::new();
    for rule in access {
        let earlier = by_shape.entry((rule.effect, rule.operations)).or_default();
        if let Some(first) = earlier.iter().find(|e| e.same_scope(rule)) {
            errors.push(error_at(
                &rule.at,
                rule.column,
                format!(
                    "rule `{}` repeats rule `{}` ({}): same effect, subjects, resources and \
                     operations",
                    rule.at.name,
                    first.at.name,
                    place(&first.at)
                ),
            ));
        } else {
            earlier.push(rule);
        }
    }
}

fn shadowed(access: &[AccessRule], errors: &mut Vec<PolicyError>) {
    let refusing: Vec<&AccessRule> = access
        .iter()
        .filter(|r| r.effect != Effect::Allow)
        .collect();
    for rule in access.iter().filter(|r| r.effect != Effect::Deny) {
        // Deny beats approve and allow; approve (a refusal for now) beats allow.
        let cover = refusing.iter().find(|d| {
            d.effect < rule.effect && rule.operations.is_subset(d.operations) && d.covers(rule)
        });
        if let Some(d) = cover {
            errors.push(error_at(
                &rule.at,
                rule.column,
                format!(
                    "{} rule `{}` can never take effect: {} rule `{}` ({}) covers all of its \
                     subjects, resources and operations",
                    rule.effect,
                    rule.at.name,
                    d.effect,
                    d.at.name,
                    place(&d.at)
                ),
            ));
        }
    }
}
