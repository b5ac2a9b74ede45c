//! The policy file schema: from a YAML tree to rules, with an error (file, line, column) for
//! everything that is not exactly right. Parsing goes on after an error so that one run reports
//! every problem of a file.

use std::{collections::HashMap, net::IpAddr, str::FromStr, sync::Arc};

use ipnet::IpNet;

use super::{
    content::ContentRule,
    glob::{Glob, NameKind},
    masking::MaskingRule,
    masking_schema,
    model::{AccessRule, BlockRule, Effect, OpSet, Resources, RuleRef, Subjects},
    yaml::{self, Key, Mark, Node, Value},
    Operation, PolicyError, ResourceKind,
};

/// Longest list accepted anywhere in a file.
const MAX_LIST: usize = 10_000;
/// Longest principal, group, rule or pattern text accepted.
pub(super) const MAX_NAME_CHARS: usize = 1024;
const MAX_RULE_NAME_CHARS: usize = 128;
/// Kafka's own cap on a request's size fields (an i32).
const MAX_SIZE_LIMIT: u64 = i32::MAX as u64;

const FILE_FIELDS: &[&str] = &["description", "rules", "blocking", "masking"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "description",
    "effect",
    "subjects",
    "resources",
    "operations",
];
const SUBJECT_FIELDS: &[&str] = &["principals", "groups", "client_ids", "networks"];
const RESOURCE_FIELDS: &[&str] = &[
    "topics",
    "groups",
    "transactional_ids",
    "cluster",
    "mqtt_topics",
];
const BLOCK_FIELDS: &[&str] = &[
    "name",
    "description",
    "topics",
    "mqtt_topics",
    "immutable",
    "max_record_bytes",
    "max_batch_bytes",
    "forbidden_content",
];
const CONTENT_FIELDS: &[&str] = &["name", "patterns", "case_insensitive", "in"];

/// Collects the problems of one file.
pub(crate) struct Ctx<'a> {
    pub file: Arc<str>,
    pub errors: &'a mut Vec<PolicyError>,
    pub warnings: &'a mut Vec<PolicyError>,
    pub budget: &'a mut Budget,
}

impl Ctx<'_> {
    pub(super) fn error(&mut self, at: Mark, message: impl Into<String>) {
        self.errors.push(PolicyError::new(
            self.file.as_ref(),
            at.line,
            at.column,
            message,
        ));
    }

    fn warn(&mut self, at: Mark, message: impl Into<String>) {
        self.warnings.push(PolicyError::new(
            self.file.as_ref(),
            at.line,
            at.column,
            message,
        ));
    }

    /// Takes one rule from the budget; false (reported once) when it is spent.
    pub(super) fn take_rule(&mut self, at: Mark) -> bool {
        if self.budget.left > 0 {
            self.budget.left -= 1;
            return true;
        }
        if !self.budget.reported {
            self.budget.reported = true;
            let max = self.budget.max;
            self.error(at, format!("more than {max} rules in the directory"));
        }
        false
    }

    /// Takes one masking rule from its own budget; false (reported once) when it is spent.
    pub(super) fn take_masking_rule(&mut self, at: Mark) -> bool {
        if self.budget.masking_left > 0 {
            self.budget.masking_left -= 1;
            return true;
        }
        if !self.budget.masking_reported {
            self.budget.masking_reported = true;
            let max = self.budget.max_masking;
            self.error(
                at,
                format!("more than {max} masking rules in the directory"),
            );
        }
        false
    }
}

/// How many rules a directory may still hold: bounds memory for a huge directory.
pub(crate) struct Budget {
    pub max: usize,
    pub left: usize,
    pub reported: bool,
    /// Masking rules have a budget of their own within `max`: the proxy walks them for every
    /// produced and fetched partition.
    pub max_masking: usize,
    pub masking_left: usize,
    pub masking_reported: bool,
}

impl Budget {
    pub fn new(max: usize, max_masking: usize) -> Self {
        Self {
            max,
            left: max,
            reported: false,
            max_masking,
            masking_left: max_masking,
            masking_reported: false,
        }
    }
}

/// The rules of one file.
#[derive(Default)]
pub(crate) struct FileRules {
    pub access: Vec<AccessRule>,
    pub blocks: Vec<BlockRule>,
    pub masks: Vec<MaskingRule>,
}

pub(crate) fn parse_file(ctx: &mut Ctx<'_>, src: &str) -> FileRules {
    let parsed = yaml::parse(src);
    let syntax_errors = !parsed.errors.is_empty();
    for (mark, msg) in parsed.errors {
        ctx.error(mark, msg);
    }
    let mut out = FileRules::default();
    let Some(root) = parsed.root.filter(|r| !r.is_null()) else {
        if !syntax_errors {
            ctx.warn(Mark { line: 1, column: 1 }, "file holds no rules");
        }
        return out;
    };
    let Some(f) = fields(ctx, &root, "a policy file", FILE_FIELDS) else {
        return out;
    };
    if let Some(d) = f.get("description") {
        string(ctx, d, "description");
    }
    let rules = f.get("rules");
    let blocking = f.get("blocking");
    let masking = f.get("masking");
    if rules.is_none() && blocking.is_none() && masking.is_none() {
        ctx.warn(
            root.mark,
            "file holds no rules (neither `rules` nor `blocking` nor `masking`)",
        );
    }
    for node in rules.and_then(|n| list(ctx, n, "rules")).unwrap_or(&[]) {
        if !ctx.take_rule(node.mark) {
            return out;
        }
        if let Some(rule) = access_rule(ctx, node) {
            out.access.push(rule);
        }
    }
    for node in blocking
        .and_then(|n| list(ctx, n, "blocking"))
        .unwrap_or(&[])
    {
        if !ctx.take_rule(node.mark) {
            return out;
        }
        if let Some(rule) = block_rule(ctx, node) {
            out.blocks.push(rule);
        }
    }
    for node in masking.and_then(|n| list(ctx, n, "masking")).unwrap_or(&[]) {
        if !ctx.take_rule(node.mark) || !ctx.take_masking_rule(node.mark) {
            return out;
        }
        if let Some(rule) = masking_schema::masking_rule(ctx, node) {
            out.masks.push(rule);
        }
    }
    out
}

fn access_rule(ctx: &mut Ctx<'_>, node: &Node) -> Option<AccessRule> {
    let f = fields(ctx, node, "a rule", RULE_FIELDS)?;
    let name = f
        .require(ctx, "name", "rule")
        .and_then(|n| rule_name(ctx, n));
    if let Some(d) = f.get("description") {
        string(ctx, d, "description");
    }
    let effect = f.require(ctx, "effect", "rule").and_then(|n| {
        let text = string(ctx, n, "effect")?;
        match text {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            "approve" => Some(Effect::Approve),
            other => {
                ctx.error(
                    n.mark,
                    format!("unknown effect `{other}` (one of: allow, deny, approve)"),
                );
                None
            }
        }
    });
    let subjects = f
        .require(ctx, "subjects", "rule")
        .and_then(|n| subjects(ctx, n));
    let resources = f
        .require(ctx, "resources", "rule")
        .and_then(|n| resources(ctx, n));
    let operations = f
        .require(ctx, "operations", "rule")
        .and_then(|n| operations(ctx, n, resources.as_ref()));
    let (resources, _) = resources?;
    Some(AccessRule {
        at: RuleRef {
            name: name?,
            file: ctx.file.clone(),
            line: node.mark.line,
        },
        column: node.mark.column,
        effect: effect?,
        subjects: subjects?,
        resources,
        operations: operations?,
    })
}

pub(super) fn rule_name(ctx: &mut Ctx<'_>, node: &Node) -> Option<Arc<str>> {
    checked_name(ctx, node, "rule name")
}

/// A name that audit events and token scopes carry: letters, digits, `.`, `_`, `-`.
pub(super) fn checked_name(ctx: &mut Ctx<'_>, node: &Node, what: &str) -> Option<Arc<str>> {
    let text = string(ctx, node, "name")?;
    let problem = if text.is_empty() {
        Some("is empty".to_string())
    } else if text.chars().count() > MAX_RULE_NAME_CHARS {
        Some(format!("is longer than {MAX_RULE_NAME_CHARS} characters"))
    } else {
        text.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("contains {c:?} (use letters, digits, `.`, `_`, `-`)"))
    };
    match problem {
        Some(p) => {
            ctx.error(node.mark, format!("{what} `{text}` {p}"));
            None
        }
        None => Some(text.into()),
    }
}

fn subjects(ctx: &mut Ctx<'_>, node: &Node) -> Option<Subjects> {
    subjects_named(ctx, node, "subjects")
}

/// A subjects mapping under the key `field` (`subjects`, or a masking rule's `reveal`).
pub(super) fn subjects_named(ctx: &mut Ctx<'_>, node: &Node, field: &str) -> Option<Subjects> {
    let f = fields(ctx, node, &format!("`{field}`"), SUBJECT_FIELDS)?;
    let mut ok = true;
    let mut any_principal = false;
    let mut principals = Vec::new();
    if let Some(items) = f.get("principals").map(|n| strings(ctx, n, "principals")) {
        for (mark, p) in items.unwrap_or_default() {
            if p == "*" {
                any_principal = true;
            } else if let Some(problem) = identity_problem(p) {
                ctx.error(mark, format!("principal `{p}` {problem}"));
                ok = false;
            } else {
                principals.push(p.to_string());
            }
        }
    }
    let mut groups = Vec::new();
    if let Some(items) = f.get("groups").map(|n| strings(ctx, n, "groups")) {
        for (mark, g) in items.unwrap_or_default() {
            if g == "*" {
                ctx.error(
                    mark,
                    "`groups: [\"*\"]` is not a thing: use `principals: [\"*\"]` for every \
                     authenticated principal",
                );
                ok = false;
            } else if let Some(problem) = identity_problem(g) {
                ctx.error(mark, format!("group `{g}` {problem}"));
                ok = false;
            } else {
                groups.push(g.to_string());
            }
        }
    }
    if f.get("principals").is_none() && f.get("groups").is_none() {
        ctx.error(
            f.mark,
            format!(
                "`{field}` names no principals and no groups (use `principals: [\"*\"]` for \
                 every authenticated principal)"
            ),
        );
        ok = false;
    }
    let client_ids = f
        .get("client_ids")
        .map(|n| globs(ctx, n, "client_ids", NameKind::Free));
    let networks = f.get("networks").map(|n| networks(ctx, n));
    let client_ids = client_ids.map(|c| c.ok_or(())).transpose();
    let networks = networks.map(|c| c.ok_or(())).transpose();
    match (ok, client_ids, networks) {
        (true, Ok(client_ids), Ok(networks)) => Some(Subjects {
            principals,
            any_principal,
            groups,
            client_ids,
            networks,
        }),
        _ => None,
    }
}

fn identity_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("is too long")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.contains('*') {
        Some("contains `*`: principals and groups are exact names (`*` alone means every authenticated principal)")
    } else {
        None
    }
}

fn networks(ctx: &mut Ctx<'_>, node: &Node) -> Option<Vec<IpNet>> {
    let items = strings(ctx, node, "networks")?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (mark, text) in items {
        match parse_network(text) {
            Ok(net) => out.push(net),
            Err(e) => {
                ctx.error(mark, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A CIDR block (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub(crate) fn parse_network(text: &str) -> Result<IpNet, String> {
    if !text.contains('/') {
        return IpAddr::from_str(text)
            .map(|ip| IpNet::from(ip.to_canonical()))
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"));
    }
    let net = IpNet::from_str(text)
        .map_err(|_| format!("`{text}` is not a CIDR block (like 10.0.0.0/8 or fd00::/8)"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set: did you mean `{}`?",
            net.trunc()
        ));
    }
    Ok(net)
}

fn resources(ctx: &mut Ctx<'_>, node: &Node) -> Option<(Resources, Vec<(ResourceKind, Mark)>)> {
    let f = fields(ctx, node, "`resources`", RESOURCE_FIELDS)?;
    let mut kinds = Vec::new();
    let mut ok = true;
    let mut kind_globs =
        |ctx: &mut Ctx<'_>, field: &str, kind: ResourceKind, names: NameKind| match f
            .get_entry(field)
        {
            None => Vec::new(),
            Some((key, n)) => match globs(ctx, n, field, names) {
                Some(g) => {
                    kinds.push((kind, key.mark));
                    g
                }
                None => {
                    ok = false;
                    Vec::new()
                }
            },
        };
    let topics = kind_globs(ctx, "topics", ResourceKind::Topic, NameKind::Topic);
    let groups = kind_globs(ctx, "groups", ResourceKind::Group, NameKind::Free);
    let transactional_ids = kind_globs(
        ctx,
        "transactional_ids",
        ResourceKind::TransactionalId,
        NameKind::Free,
    );
    let mqtt_topics = match f.get_entry("mqtt_topics") {
        None => Vec::new(),
        Some((key, n)) => match mqtt_filters(ctx, n, "mqtt_topics") {
            Some(filters) => {
                kinds.push((ResourceKind::MqttTopic, key.mark));
                filters
            }
            None => {
                ok = false;
                Vec::new()
            }
        },
    };
    let mut cluster = false;
    if let Some((key, n)) = f.get_entry("cluster") {
        match boolean(ctx, n, "cluster") {
            Some(b) => {
                cluster = b;
                if b {
                    kinds.push((ResourceKind::Cluster, key.mark));
                }
            }
            None => ok = false,
        }
    }
    if ok && kinds.is_empty() {
        ctx.error(
            f.mark,
            "`resources` names nothing (topics, groups, transactional_ids, mqtt_topics or \
             cluster: true)",
        );
        return None;
    }
    ok.then_some((
        Resources {
            topics,
            groups,
            transactional_ids,
            cluster,
            mqtt_topics,
        },
        kinds,
    ))
}

/// The rule's operations, each checked against the rule's resource kinds (when those parsed).
fn operations(
    ctx: &mut Ctx<'_>,
    node: &Node,
    resources: Option<&(Resources, Vec<(ResourceKind, Mark)>)>,
) -> Option<OpSet> {
    let items = strings(ctx, node, "operations")?;
    let kinds: Option<Vec<ResourceKind>> =
        resources.map(|(_, k)| k.iter().map(|(kind, _)| *kind).collect());
    let mut ops = OpSet::default();
    let mut ok = true;
    for (mark, name) in &items {
        if *name == "*" {
            // Every operation that applies to the rule's resources, except the
            // broker-to-broker one: no client needs it, so it must be named to be granted.
            for op in Operation::ALL {
                let applies = kinds
                    .as_ref()
                    .is_none_or(|k| op.applies_to().iter().any(|a| k.contains(a)));
                if op != Operation::ClusterAction && applies {
                    ops.insert(op);
                }
            }
            continue;
        }
        match Operation::from_str(name) {
            Err(e) => {
                ctx.error(*mark, e);
                ok = false;
            }
            Ok(op) => {
                if let Some(kinds) = &kinds {
                    if !op.applies_to().iter().any(|a| kinds.contains(a)) {
                        let to: Vec<_> = op.applies_to().iter().map(|k| k.as_str()).collect();
                        ctx.error(
                            *mark,
                            format!(
                                "operation `{op}` applies to none of this rule's resources \
                                 (it applies to: {})",
                                to.join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
                ops.insert(op);
            }
        }
    }
    if let (true, Some((_, kinds))) = (ok, resources) {
        for (kind, mark) in kinds {
            if !ops.iter().any(|op| op.applies_to().contains(kind)) {
                ctx.error(
                    *mark,
                    format!("none of this rule's operations applies to a {kind}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(ops)
}

fn block_rule(ctx: &mut Ctx<'_>, node: &Node) -> Option<BlockRule> {
    let f = fields(ctx, node, "a blocking rule", BLOCK_FIELDS)?;
    let name = f
        .require(ctx, "name", "blocking rule")
        .and_then(|n| rule_name(ctx, n));
    if let Some(d) = f.get("description") {
        string(ctx, d, "description");
    }
    let (topics, mqtt_topics) = topic_lists(ctx, &f, "blocking rule");
    let mut ok = true;
    let immutable = match f.get("immutable").map(|n| boolean(ctx, n, "immutable")) {
        None => false,
        Some(Some(b)) => b,
        Some(None) => {
            ok = false;
            false
        }
    };
    let mut size = |ctx: &mut Ctx<'_>, field: &str| match f.get(field).map(|n| size(ctx, n, field))
    {
        None => None,
        Some(Some(v)) => Some(v),
        Some(None) => {
            ok = false;
            None
        }
    };
    let max_record_bytes = size(ctx, "max_record_bytes");
    let max_batch_bytes = size(ctx, "max_batch_bytes");
    let at = name.map(|name| RuleRef {
        name,
        file: ctx.file.clone(),
        line: node.mark.line,
    });
    let content = match (f.get("forbidden_content"), &at) {
        (None, _) => Some(Vec::new()),
        (Some(n), Some(at)) => forbidden_content(ctx, n, at),
        // Checked anyway for its own errors, with a stand-in for the missing name.
        (Some(n), None) => {
            let stand_in = RuleRef {
                name: "".into(),
                file: ctx.file.clone(),
                line: node.mark.line,
            };
            forbidden_content(ctx, n, &stand_in);
            None
        }
    };
    let content = content?;
    if ok
        && !immutable
        && max_record_bytes.is_none()
        && max_batch_bytes.is_none()
        && content.is_empty()
    {
        ctx.error(
            f.mark,
            "blocking rule does nothing (set immutable: true, max_record_bytes, max_batch_bytes \
             or forbidden_content)",
        );
        return None;
    }
    if ok && immutable && topics.as_ref().is_some_and(Vec::is_empty) {
        ctx.error(
            f.mark,
            "`immutable` is about Kafka topics (deletion, configuration): this rule names only \
             mqtt_topics",
        );
        return None;
    }
    if !ok {
        return None;
    }
    Some(BlockRule {
        at: at?,
        column: node.mark.column,
        topics: topics?,
        mqtt_topics: mqtt_topics?,
        immutable,
        max_record_bytes,
        max_batch_bytes,
        content,
    })
}

fn forbidden_content(ctx: &mut Ctx<'_>, node: &Node, rule: &RuleRef) -> Option<Vec<ContentRule>> {
    let items = list(ctx, node, "forbidden_content")?;
    let mut out = Vec::with_capacity(items.len());
    let mut names: Vec<(String, Mark)> = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(f) = fields(ctx, item, "a forbidden_content entry", CONTENT_FIELDS) else {
            ok = false;
            continue;
        };
        let name = f
            .require(ctx, "name", "forbidden_content entry")
            .and_then(|n| Some((n.mark, rule_name(ctx, n)?)));
        if let Some((mark, name)) = &name {
            if let Some((_, first)) = names.iter().find(|(n, _)| **n == **name) {
                ctx.error(
                    *mark,
                    format!(
                        "`{name}` is already the name of an entry of this rule (line {})",
                        first.line
                    ),
                );
                ok = false;
            }
            names.push((name.to_string(), *mark));
        }
        let patterns = f
            .require(ctx, "patterns", "forbidden_content entry")
            .and_then(|n| {
                let items = strings(ctx, n, "patterns")?;
                let mut ok = true;
                for (mark, p) in &items {
                    if p.is_empty() {
                        ctx.error(*mark, "empty pattern (it would match every record)");
                        ok = false;
                    } else if p.len() > MAX_NAME_CHARS {
                        ctx.error(*mark, format!("pattern longer than {MAX_NAME_CHARS} bytes"));
                        ok = false;
                    }
                }
                ok.then(|| items.iter().map(|(_, p)| p.to_string()).collect::<Vec<_>>())
            });
        let case_insensitive = match f.get("case_insensitive") {
            None => Some(false),
            Some(n) => boolean(ctx, n, "case_insensitive"),
        };
        let places = match f.get("in") {
            None => Some((true, true, true)),
            Some(n) => places(ctx, n),
        };
        let (Some((_, name)), Some(patterns), Some(ci), Some(places)) =
            (name, patterns, case_insensitive, places)
        else {
            ok = false;
            continue;
        };
        match ContentRule::new(rule.clone(), name, patterns, ci, places) {
            Ok(c) => out.push(c),
            Err(e) => {
                ctx.error(item.mark, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// An `in:` list: which parts of a record (key, value, headers), as (key, value, headers).
pub(super) fn places(ctx: &mut Ctx<'_>, node: &Node) -> Option<(bool, bool, bool)> {
    let items = strings(ctx, node, "in")?;
    let (mut k, mut v, mut h, mut ok) = (false, false, false, true);
    for (mark, p) in items {
        match p {
            "key" => k = true,
            "value" => v = true,
            "headers" => h = true,
            other => {
                ctx.error(
                    mark,
                    format!("unknown place `{other}` (one of: key, value, headers)"),
                );
                ok = false;
            }
        }
    }
    ok.then_some((k, v, h))
}

/// A mapping's entries, after every key was checked against the allowed ones.
pub(super) struct Fields<'n> {
    pub mark: Mark,
    entries: &'n [(Key, Node)],
}

impl<'n> Fields<'n> {
    pub(super) fn get_entry(&self, name: &str) -> Option<(&'n Key, &'n Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == name)
            .map(|(k, v)| (k, v))
    }

    pub(super) fn get(&self, name: &str) -> Option<&'n Node> {
        self.get_entry(name).map(|(_, v)| v)
    }

    pub(super) fn require(&self, ctx: &mut Ctx<'_>, name: &str, what: &str) -> Option<&'n Node> {
        let found = self.get(name);
        if found.is_none() {
            ctx.error(self.mark, format!("{what} has no `{name}`"));
        }
        found
    }
}

pub(super) fn fields<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    what: &str,
    allowed: &[&str],
) -> Option<Fields<'n>> {
    let Value::Map(entries) = &node.value else {
        ctx.error(
            node.mark,
            format!("{what} must be a mapping, found {}", node.kind_name()),
        );
        return None;
    };
    for (key, _) in entries {
        if !allowed.contains(&key.text.as_str()) {
            let hint = allowed
                .iter()
                .find(|a| edit_distance(a, &key.text) <= 2)
                .map(|a| format!("did you mean `{a}`? "))
                .unwrap_or_default();
            ctx.error(
                key.mark,
                format!(
                    "unknown field `{}` in {what} ({hint}expected one of: {})",
                    key.text,
                    allowed.join(", ")
                ),
            );
        }
    }
    Some(Fields {
        mark: node.mark,
        entries,
    })
}

pub(super) fn string<'n>(ctx: &mut Ctx<'_>, node: &'n Node, field: &str) -> Option<&'n str> {
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => Some(text),
        _ => {
            ctx.error(
                node.mark,
                format!("`{field}` must be a string, found {}", node.kind_name()),
            );
            None
        }
    }
}

pub(super) fn boolean(ctx: &mut Ctx<'_>, node: &Node, field: &str) -> Option<bool> {
    match &node.value {
        Value::Scalar { text, plain: true } if text == "true" => Some(true),
        Value::Scalar { text, plain: true } if text == "false" => Some(false),
        _ => {
            ctx.error(node.mark, format!("`{field}` must be true or false"));
            None
        }
    }
}

/// A byte count: `1048576`, `512 KiB`, `1MiB`, `1 MB` (powers of 1024 for KiB/MiB/GiB, of
/// 1000 for KB/MB/GB).
fn size(ctx: &mut Ctx<'_>, node: &Node, field: &str) -> Option<u64> {
    let parsed = match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => parse_size(text),
        _ => Err(format!("found {}", node.kind_name())),
    };
    match parsed {
        Ok(0) => {
            ctx.error(node.mark, format!("`{field}` must be at least 1 byte"));
            None
        }
        Ok(v) if v > MAX_SIZE_LIMIT => {
            ctx.error(
                node.mark,
                format!("`{field}` is above Kafka's largest size ({MAX_SIZE_LIMIT} bytes)"),
            );
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            ctx.error(
                node.mark,
                format!("`{field}` must be a byte count like 1048576 or \"1 MiB\": {e}"),
            );
            None
        }
    }
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let mult: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A non-empty list, or an error saying what was found instead.
pub(super) fn list<'n>(ctx: &mut Ctx<'_>, node: &'n Node, field: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) if items.is_empty() => {
            ctx.error(
                node.mark,
                format!("`{field}` is an empty list: list at least one entry, or leave it out"),
            );
            None
        }
        Value::Seq(items) if items.len() > MAX_LIST => {
            ctx.error(
                node.mark,
                format!("`{field}` has more than {MAX_LIST} entries"),
            );
            None
        }
        Value::Seq(items) => Some(items),
        _ => {
            ctx.error(
                node.mark,
                format!(
                    "`{field}` must be a list (like [a, b] or lines starting with `- `), found {}",
                    node.kind_name()
                ),
            );
            None
        }
    }
}

/// A non-empty list of strings; an entry listed twice is a warning.
pub(super) fn strings<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    field: &str,
) -> Option<Vec<(Mark, &'n str)>> {
    let items = list(ctx, node, field)?;
    let mut out: Vec<(Mark, &str)> = Vec::with_capacity(items.len());
    // A map, so a long list is not checked for repeats in quadratic time.
    let mut seen: HashMap<&str, Mark> = HashMap::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match string(ctx, item, field) {
            Some(s) => {
                if let Some(first) = seen.get(s) {
                    let msg = format!(
                        "`{s}` is listed twice in `{field}` (first at line {})",
                        first.line
                    );
                    ctx.warn(item.mark, msg);
                } else {
                    seen.insert(s, item.mark);
                    out.push((item.mark, s));
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A list of MQTT topic filters, each checked (wildcards placed right, no NUL).
pub(super) fn mqtt_filters(
    ctx: &mut Ctx<'_>,
    node: &Node,
    field: &str,
) -> Option<Vec<crate::mqtt::topic::TopicFilter>> {
    let items = strings(ctx, node, field)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (mark, text) in items {
        match crate::mqtt::topic::TopicFilter::parse(text) {
            Ok(filter) => out.push(filter),
            Err(e) => {
                ctx.error(mark, format!("`{text}` is not an MQTT topic filter: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `topics` (Kafka globs) and `mqtt_topics` (MQTT filters) of a blocking or masking rule: at
/// least one of the two. Each `None` when its list has an error (or both are missing).
pub(super) fn topic_lists(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    what: &str,
) -> (
    Option<Vec<Glob>>,
    Option<Vec<crate::mqtt::topic::TopicFilter>>,
) {
    let (kafka, mqtt) = (f.get("topics"), f.get("mqtt_topics"));
    if kafka.is_none() && mqtt.is_none() {
        ctx.error(
            f.mark,
            format!("a {what} needs `topics` (Kafka) or `mqtt_topics` (MQTT), or both"),
        );
        return (None, None);
    }
    let topics = match kafka {
        None => Some(Vec::new()),
        Some(n) => globs(ctx, n, "topics", NameKind::Topic),
    };
    let mqtt_topics = match mqtt {
        None => Some(Vec::new()),
        Some(n) => mqtt_filters(ctx, n, "mqtt_topics"),
    };
    (topics, mqtt_topics)
}

pub(super) fn globs(
    ctx: &mut Ctx<'_>,
    node: &Node,
    field: &str,
    kind: NameKind,
) -> Option<Vec<Glob>> {
    let items = strings(ctx, node, field)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (mark, text) in items {
        match Glob::parse(text, kind) {
            Ok(g) => out.push(g),
            Err(e) => {
                ctx.error(mark, format!("bad pattern `{text}` in `{field}`: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Levenshtein distance, for "did you mean" hints on short field names.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().take(64).enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
