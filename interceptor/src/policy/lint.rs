//! Checks on the directory as a whole: rule names (access, blocking and masking) are unique, no rule repeats another, and no
//! allow (or approve) rule is made dead by a deny (or approve) rule that covers all of it.

use std::collections::{hash_map::Entry, HashMap};

use super::{
    masking::MaskingRule,
    model::{AccessRule, BlockRule, Effect, RuleRef},
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
    masks: &[MaskingRule],
    errors: &mut Vec<PolicyError>,
) {
    unique_names(access, blocks, masks, errors);
    duplicates(access, errors);
    shadowed(access, errors);
}

fn unique_names(
    access: &[AccessRule],
    blocks: &[BlockRule],
    masks: &[MaskingRule],
    errors: &mut Vec<PolicyError>,
) {
    // Masking rule names are also the first part of every token scope, so a token names its
    // rule unambiguously only if no other rule of any kind has the name.
    let all = access
        .iter()
        .map(|r| (&r.at, r.column))
        .chain(blocks.iter().map(|r| (&r.at, r.column)))
        .chain(masks.iter().map(|r| (&r.at, r.column)));
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
    let mut seen: HashMap<(Effect, String), &AccessRule> = HashMap::new();
    for rule in access {
        match seen.entry((rule.effect, rule.scope_key())) {
            Entry::Occupied(first) => {
                let first = first.get();
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
            }
            Entry::Vacant(slot) => {
                slot.insert(rule);
            }
        }
    }
}

fn shadowed(access: &[AccessRule], errors: &mut Vec<PolicyError>) {
    // A rule covering another must name one of its principals or groups, or every principal:
    // index the refusing rules by those, so that 10,000 rules are not compared pairwise.
    let mut everyone: Vec<&AccessRule> = Vec::new();
    let mut by_principal: HashMap<&str, Vec<&AccessRule>> = HashMap::new();
    let mut by_group: HashMap<&str, Vec<&AccessRule>> = HashMap::new();
    for d in access.iter().filter(|r| r.effect != Effect::Allow) {
        if d.subjects.any_principal {
            everyone.push(d);
        }
        for p in &d.subjects.principals {
            by_principal.entry(p).or_default().push(d);
        }
        for g in &d.subjects.groups {
            by_group.entry(g).or_default().push(d);
        }
    }
    for rule in access.iter().filter(|r| r.effect != Effect::Deny) {
        let s = &rule.subjects;
        let named: &[&AccessRule] = if s.any_principal {
            &[]
        } else if let Some(p) = s.principals.first() {
            by_principal.get(p.as_str()).map_or(&[], Vec::as_slice)
        } else if let Some(g) = s.groups.first() {
            by_group.get(g.as_str()).map_or(&[], Vec::as_slice)
        } else {
            &[]
        };
        // Deny beats approve and allow; approve (a refusal for now) beats allow.
        let cover = named
            .iter()
            .chain(&everyone)
            .find(|d| d.effect < rule.effect && d.covers(rule));
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
