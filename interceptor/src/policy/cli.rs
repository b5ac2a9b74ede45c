//! The text of `interceptor policy check DIR` and `interceptor policy explain` (the command
//! line itself is parsed in `main.rs`).

use std::{fmt::Write, net::IpAddr, path::Path};

use super::{
    set::load_report, Check, MaskingRule, Operation, PolicyErrors, PolicySet, Resource,
    ResourceKind, Subject,
};

/// Validates a policy directory offline. Returns the report to print and whether the directory
/// is valid (the exit code for CI). Errors read `file:line:col: message`.
pub fn check(dir: &Path) -> (String, bool) {
    let report = load_report(dir);
    let mut out = String::new();
    for e in &report.errors {
        let _ = writeln!(out, "{e}");
    }
    for w in &report.warnings {
        let _ = writeln!(
            out,
            "{}:{}:{}: warning: {}",
            w.file.display(),
            w.line,
            w.column,
            w.message
        );
    }
    for (name, why) in &report.ignored {
        let _ = writeln!(out, "ignored: {name} ({why})");
    }
    match (&report.set, report.errors.len()) {
        (Some(set), 0) => {
            let _ = writeln!(
                out,
                "{}: valid, version {}, {} file(s), {} rule(s), {} warning(s)",
                dir.display(),
                set.version(),
                set.file_count(),
                set.rule_count(),
                report.warnings.len()
            );
            (out, true)
        }
        (_, n) => {
            let _ = writeln!(out, "{}: invalid, {n} error(s)", dir.display());
            (out, false)
        }
    }
}

/// Loads the directory and says how it decides one request, and why.
pub fn explain(
    dir: &Path,
    principal: &str,
    groups: &[String],
    client_id: Option<&str>,
    source: IpAddr,
    op: Operation,
    resource: Resource,
) -> Result<String, PolicyErrors> {
    let set = PolicySet::load_dir(dir)?;
    let subject = Subject {
        principal,
        groups,
        client_id,
        source,
    };
    let mut out = format!("policy:   {} ({})\n", dir.display(), set.version());
    let explanation = set.explain(&subject, op, resource);
    out.push_str(&explanation.to_string());
    // Masking only matters for records that flow: a refused request has none.
    if explanation.decision.check == Check::Allowed && resource.kind == ResourceKind::Topic {
        masking(&mut out, &set, &subject, op, resource.name);
    }
    if !op.applies_to().contains(&resource.kind) {
        let _ = writeln!(
            out,
            "note: `{op}` never applies to a {}, so no rule can allow it",
            resource.kind
        );
    }
    Ok(out)
}

/// The masking rules a produce or consume of `topic` goes through, when there are any.
fn masking(out: &mut String, set: &PolicySet, subject: &Subject<'_>, op: Operation, topic: &str) {
    let line = |out: &mut String, label: &str, r: &MaskingRule| {
        let _ = writeln!(out, "  {label:<7} {}: {}", r.at, r.summary());
    };
    match op {
        Operation::Produce => {
            let rules = set.produce_masking(topic);
            if !rules.is_empty() {
                let _ = writeln!(out, "masking before the broker stores the records:");
                for r in &rules {
                    line(out, "mask", r);
                }
            }
        }
        Operation::Consume => {
            let m = set.fetch_masking(topic, subject);
            let stored = set.produce_masking(topic);
            if !m.is_empty() || !stored.is_empty() {
                let _ = writeln!(out, "masking of the records fetched:");
                for r in &stored {
                    let revealed = m.reveal.iter().any(|x| std::sync::Arc::ptr_eq(x, r));
                    line(out, if revealed { "reveal" } else { "stored" }, r);
                }
                for r in &m.mask {
                    line(out, "mask", r);
                }
            }
        }
        _ => {}
    }
}
