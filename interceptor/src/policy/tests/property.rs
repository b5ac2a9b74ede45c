//! Property tests: for random rule sets and random requests, `decide` equals a naive
//! reference evaluation written from the documented semantics, and every shadowing the
//! whole-set check claims is real.

use std::{net::IpAddr, path::PathBuf};

use proptest::prelude::*;

use crate::policy::{Check, Effect, Operation, PolicySet, Resource, ResourceKind, Subject};

const PRINCIPALS: [&str; 4] = ["alice", "bob", "ANONYMOUS", "*"];
const GROUPS: [&str; 3] = ["g1", "g2", "g3"];
const CLIENT_GLOBS: [&str; 3] = ["app-*", "app-1", "cli?"];
const NETWORKS: [&str; 5] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.1.0/24",
    "fd00::/8",
    "192.168.1.7",
];
const TOPIC_GLOBS: [&str; 6] = ["*", "a.*", "a.b", "a.?", "[ab].x", "*.x"];
const NAME_GLOBS: [&str; 3] = ["g-*", "g-1", "*"];
const NAMES: [&str; 7] = ["a.b", "a.c", "b.x", "a.", "zz", "g-1", "g-2"];
const SOURCES: [&str; 6] = [
    "10.1.2.3",
    "10.2.0.1",
    "192.168.1.7",
    "::ffff:10.1.0.1",
    "fd00::1",
    "2001::1",
];
const CLIENT_IDS: [&str; 4] = ["app-1", "app-22", "cli1", "x"];
const KINDS: [ResourceKind; 4] = [
    ResourceKind::Topic,
    ResourceKind::Group,
    ResourceKind::TransactionalId,
    ResourceKind::Cluster,
];

fn pick<'a>(bits: u32, from: &[&'a str]) -> Vec<&'a str> {
    from.iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, s)| *s)
        .collect()
}

#[derive(Debug, Clone)]
struct RuleSpec {
    effect: Effect,
    principals: Vec<&'static str>,
    groups: Vec<&'static str>,
    client_ids: Option<Vec<&'static str>>,
    networks: Option<Vec<&'static str>>,
    topics: Vec<&'static str>,
    groups_res: Vec<&'static str>,
    txn_ids: Vec<&'static str>,
    cluster: bool,
    /// None: `["*"]`.
    ops: Option<Vec<Operation>>,
}

/// Decodes random words into a rule that validates (or None when it would not).
fn rule_spec(w: [u32; 4]) -> Option<RuleSpec> {
    let effect = [Effect::Allow, Effect::Allow, Effect::Deny, Effect::Approve][(w[0] & 3) as usize];
    let principals = pick(w[0] >> 2, &PRINCIPALS);
    let groups = pick(w[0] >> 6, &GROUPS);
    let client_ids = (w[0] & (1 << 9) != 0).then(|| pick(w[0] >> 10, &CLIENT_GLOBS));
    let networks = (w[0] & (1 << 13) != 0).then(|| pick(w[0] >> 14, &NETWORKS));
    let topics = pick(w[1], &TOPIC_GLOBS);
    let groups_res = pick(w[1] >> 8, &NAME_GLOBS);
    let txn_ids = pick(w[1] >> 12, &NAME_GLOBS);
    let cluster = w[1] & (1 << 16) != 0;
    let has = |k: ResourceKind| match k {
        ResourceKind::Topic => !topics.is_empty(),
        ResourceKind::Group => !groups_res.is_empty(),
        ResourceKind::TransactionalId => !txn_ids.is_empty(),
        ResourceKind::Cluster => cluster,
        // MQTT rules have their own tests (`policy::tests::mqtt`).
        ResourceKind::MqttTopic => false,
    };
    let ops = if w[2] & 1 != 0 {
        None
    } else {
        let ops: Vec<Operation> = Operation::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, op)| w[3] & (1 << i) != 0 && op.applies_to().iter().any(|k| has(*k)))
            .map(|(_, op)| op)
            .collect();
        Some(ops)
    };
    let applies = |k: ResourceKind| match &ops {
        None => Operation::ALL
            .iter()
            .any(|op| *op != Operation::ClusterAction && op.applies_to().contains(&k)),
        Some(ops) => ops.iter().any(|op| op.applies_to().contains(&k)),
    };
    let valid = (!principals.is_empty() || !groups.is_empty())
        && client_ids.as_ref().is_none_or(|c| !c.is_empty())
        && networks.as_ref().is_none_or(|n| !n.is_empty())
        && ops.as_ref().is_none_or(|o| !o.is_empty())
        && KINDS.iter().any(|k| has(*k))
        && KINDS.iter().all(|k| !has(*k) || applies(*k));
    valid.then_some(RuleSpec {
        effect,
        principals,
        groups,
        client_ids,
        networks,
        topics,
        groups_res,
        txn_ids,
        cluster,
        ops,
    })
}

fn yaml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn render(rules: &[RuleSpec], immutable: &[Vec<&'static str>]) -> String {
    let mut out = String::new();
    if !rules.is_empty() {
        out.push_str("rules:\n");
    }
    for (i, r) in rules.iter().enumerate() {
        out.push_str(&format!(
            "  - name: r{i}\n    effect: {}\n    subjects:\n",
            r.effect
        ));
        if !r.principals.is_empty() {
            out.push_str(&format!("      principals: {}\n", yaml_list(&r.principals)));
        }
        if !r.groups.is_empty() {
            out.push_str(&format!("      groups: {}\n", yaml_list(&r.groups)));
        }
        if let Some(c) = &r.client_ids {
            out.push_str(&format!("      client_ids: {}\n", yaml_list(c)));
        }
        if let Some(n) = &r.networks {
            out.push_str(&format!("      networks: {}\n", yaml_list(n)));
        }
        out.push_str("    resources:\n");
        for (field, globs) in [
            ("topics", &r.topics),
            ("groups", &r.groups_res),
            ("transactional_ids", &r.txn_ids),
        ] {
            if !globs.is_empty() {
                out.push_str(&format!("      {field}: {}\n", yaml_list(globs)));
            }
        }
        if r.cluster {
            out.push_str("      cluster: true\n");
        }
        let ops: Vec<&str> = match &r.ops {
            None => vec!["*"],
            Some(ops) => ops.iter().map(|o| o.as_str()).collect(),
        };
        out.push_str(&format!("    operations: {}\n", yaml_list(&ops)));
    }
    if !immutable.is_empty() {
        out.push_str("blocking:\n");
    }
    for (i, topics) in immutable.iter().enumerate() {
        out.push_str(&format!(
            "  - name: b{i}\n    topics: {}\n    immutable: true\n",
            yaml_list(topics)
        ));
    }
    out
}

/// Textbook recursive glob matching, independent of the compiled matcher.
fn glob_ref(pat: &[char], name: &[char]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| glob_ref(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && glob_ref(rest, &name[1..]),
        Some(('[', rest)) => {
            let close = rest.iter().position(|c| *c == ']').unwrap();
            !name.is_empty()
                && rest[..close].contains(&name[0])
                && glob_ref(&rest[close + 1..], &name[1..])
        }
        Some((c, rest)) => name.first() == Some(c) && glob_ref(rest, &name[1..]),
    }
}

fn glob_match(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_ref(&p, &n)
}

fn in_network(net: &str, ip: IpAddr) -> bool {
    let (addr, len) = net.split_once('/').unwrap_or((net, ""));
    let addr: IpAddr = addr.parse().unwrap();
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (addr, ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let len: u32 = len.parse().unwrap_or(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len: u32 = len.parse().unwrap_or(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

fn rule_matches(r: &RuleSpec, s: &Subject<'_>, op: Operation, res: Resource<'_>) -> bool {
    let anon = s.principal == "ANONYMOUS";
    let identity = r
        .principals
        .iter()
        .any(|p| *p == s.principal || (*p == "*" && !anon))
        || (!anon && s.groups.iter().any(|g| r.groups.contains(&g.as_str())));
    let client = r.client_ids.as_ref().is_none_or(|c| {
        s.client_id
            .is_some_and(|id| c.iter().any(|g| glob_match(g, id)))
    });
    let net = r
        .networks
        .as_ref()
        .is_none_or(|n| n.iter().any(|n| in_network(n, s.source)));
    let op_ok = match &r.ops {
        None => op != Operation::ClusterAction,
        Some(ops) => ops.contains(&op),
    } && op.applies_to().contains(&res.kind);
    let res_ok = match res.kind {
        ResourceKind::Topic => r.topics.iter().any(|g| glob_match(g, res.name)),
        ResourceKind::Group => r.groups_res.iter().any(|g| glob_match(g, res.name)),
        ResourceKind::TransactionalId => r.txn_ids.iter().any(|g| glob_match(g, res.name)),
        ResourceKind::Cluster => r.cluster,
        ResourceKind::MqttTopic => false,
    };
    identity && client && net && op_ok && res_ok
}

/// The documented semantics: deny, then approve (refuses), then allow (unless an immutable
/// rule covers a topic being changed), else default deny.
fn reference(
    rules: &[RuleSpec],
    immutable: &[Vec<&'static str>],
    s: &Subject<'_>,
    op: Operation,
    res: Resource<'_>,
) -> (Check, Option<String>) {
    for effect in [Effect::Deny, Effect::Approve, Effect::Allow] {
        let hit = rules
            .iter()
            .position(|r| r.effect == effect && rule_matches(r, s, op, res));
        if let Some(i) = hit {
            if effect != Effect::Allow {
                return (Check::Denied, Some(format!("r{i}")));
            }
            let changes = matches!(
                op,
                Operation::Delete
                    | Operation::DeleteRecords
                    | Operation::Alter
                    | Operation::AlterConfigs
            );
            if changes && res.kind == ResourceKind::Topic {
                if let Some(b) = immutable
                    .iter()
                    .position(|t| t.iter().any(|g| glob_match(g, res.name)))
                {
                    return (Check::Violation, Some(format!("b{b}")));
                }
            }
            return (Check::Allowed, Some(format!("r{i}")));
        }
    }
    (Check::Denied, None)
}

#[derive(Debug, Clone)]
struct Request {
    principal: &'static str,
    groups: Vec<String>,
    client_id: Option<&'static str>,
    source: IpAddr,
    op: Operation,
    kind: ResourceKind,
    name: &'static str,
}

fn request(w: u64) -> Request {
    let at = |shift: u32, n: usize| ((w >> shift) as usize) % n;
    let client = at(20, CLIENT_IDS.len() + 1);
    Request {
        principal: ["alice", "bob", "carol", "ANONYMOUS"][at(0, 4)],
        groups: pick((w >> 4) as u32 & 7, &GROUPS)
            .into_iter()
            .map(String::from)
            .collect(),
        client_id: CLIENT_IDS.get(client).copied(),
        source: SOURCES[at(8, SOURCES.len())].parse().unwrap(),
        op: Operation::ALL[at(12, Operation::ALL.len())],
        kind: KINDS[at(28, 4)],
        name: NAMES[at(32, NAMES.len())],
    }
}

impl Request {
    fn subject(&self) -> Subject<'_> {
        Subject {
            principal: self.principal,
            groups: &self.groups,
            client_id: self.client_id,
            source: self.source,
        }
    }

    fn resource(&self) -> Resource<'_> {
        match self.kind {
            ResourceKind::Cluster => Resource::cluster(),
            kind => Resource {
                kind,
                name: self.name,
            },
        }
    }
}

fn immutable_spec(w: u32) -> Vec<&'static str> {
    let t = pick(w, &TOPIC_GLOBS);
    if t.is_empty() {
        vec!["a.b"]
    } else {
        t
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decide_equals_the_reference(
        words in proptest::collection::vec(any::<[u32; 4]>(), 0..10),
        blocks in proptest::collection::vec(any::<u32>(), 0..3),
        requests in proptest::collection::vec(any::<u64>(), 1..40),
    ) {
        let rules: Vec<RuleSpec> = words.into_iter().filter_map(rule_spec).collect();
        let immutable: Vec<_> = blocks.into_iter().map(immutable_spec).collect();
        let src = render(&rules, &immutable);
        let set = PolicySet::from_files_unchecked(&[(PathBuf::from("p.yaml"), src.clone())])
            .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        for w in requests {
            let req = request(w);
            let d = set.decide(&req.subject(), req.op, req.resource());
            let want = reference(&rules, &immutable, &req.subject(), req.op, req.resource());
            prop_assert_eq!(
                (d.check, d.rule.map(|r| r.name.to_string())),
                want,
                "{:?}\n{}", req, src
            );
        }
    }

    #[test]
    fn claimed_shadowing_is_real(
        words in proptest::collection::vec(any::<[u32; 4]>(), 2..8),
        requests in proptest::collection::vec(any::<u64>(), 1..200),
    ) {
        let rules: Vec<RuleSpec> = words.into_iter().filter_map(rule_spec).collect();
        let src = render(&rules, &[]);
        let set = PolicySet::from_files_unchecked(&[(PathBuf::from("p.yaml"), src.clone())])
            .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
        let compiled = set.access_rules();
        for (a, ra) in compiled.iter().zip(&rules) {
            for (d, rd) in compiled.iter().zip(&rules) {
                if !d.covers(a) {
                    continue;
                }
                for w in &requests {
                    let req = request(*w);
                    if rule_matches(ra, &req.subject(), req.op, req.resource()) {
                        prop_assert!(
                            rule_matches(rd, &req.subject(), req.op, req.resource()),
                            "{} claims to cover {} but not {:?}\n{}", d.at.name, a.at.name, req, src
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_reference_helpers_work() {
    assert!(glob_match("[ab].x", "b.x") && !glob_match("[ab].x", "c.x"));
    assert!(glob_match("*.x", ".x") && glob_match("a.?", "a.b") && !glob_match("a.?", "a."));
    assert!(in_network("10.0.0.0/8", "::ffff:10.1.0.1".parse().unwrap()));
    assert!(in_network("192.168.1.7", "192.168.1.7".parse().unwrap()));
    assert!(!in_network("fd00::/8", "2001::1".parse().unwrap()));
    assert!(
        rule_spec([0b100, 1, 0, 1]).is_some(),
        "alice may produce to *"
    );
}

const FRAGMENTS: [&str; 24] = [
    "rules:",
    "blocking:",
    "\n",
    "  ",
    "- ",
    "name: ",
    "effect: ",
    "allow",
    "deny",
    "subjects:",
    "{principals: [a]}",
    "resources:",
    "topics: [",
    "]",
    "\"*\"",
    "operations: [produce]",
    "[",
    "{",
    "}",
    "&a ",
    "*a",
    "!!str ",
    "max_record_bytes: ",
    "forbidden_content: [{name: x, patterns: [y]}]",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever a file holds, loading it answers (a set or positioned errors) and never panics.
    #[test]
    fn any_text_loads_or_errors_without_panicking(
        pieces in proptest::collection::vec(0..FRAGMENTS.len(), 0..60),
        noise in ".{0,40}",
    ) {
        let mut text: String = pieces.iter().map(|i| FRAGMENTS[*i]).collect();
        text.push_str(&noise);
        if let Err(e) = PolicySet::from_files(&[(PathBuf::from("f.yaml"), text)]) {
            for err in e.0 {
                prop_assert!(err.line >= 1 && err.column >= 1, "{err}");
            }
        }
    }
}

#[test]
fn a_policy_set_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<PolicySet>();
    shared::<crate::policy::TopicLimits>();
    shared::<crate::policy::Decision>();
}
