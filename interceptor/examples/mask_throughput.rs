//! Mask engine throughput, one core: (a) all built-in detectors over clean records, (b) a JSON
//! rule masking two fields (one tokenized, one partial), (c) revealing (b)'s output. Prints one
//! JSON line of medians: `cargo run --release -p interceptor --example mask_throughput`.
//! Details per run go to stderr.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use interceptor::mask::{
    Action, CollectingTokens, Detector, DetectorSpec, FieldSpec, MacKey, OnMalformed, Part, Parts,
    Payload, Rule, RuleSpec, Stats,
};

const TOTAL: usize = 64 << 20;
const RUNS: usize = 7;

/// xorshift64*: reproducible data without a seeded RNG dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "order",
    "was",
    "shipped",
    "from",
    "warehouse",
    "after",
    "payment",
    "confirmation",
    "customer",
    "requested",
    "delivery",
    "window",
    "between",
    "and",
    "please",
    "leave",
    "parcel",
    "at",
    "reception",
    "status",
    "updated",
    "by",
    "system",
    "retry",
    "scheduled",
    "item",
    "quantity",
    "discount",
    "applied",
    "invoice",
    "generated",
    "for",
    "account",
    "region",
];

fn prose(r: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(r.pick(WORDS));
        if r.below(9) == 0 {
            s.push_str(&format!(" {}", r.below(1000)));
        }
    }
    s
}

fn uuid(r: &mut Rng) -> String {
    let a = r.next();
    let b = r.next();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn luhn_card(r: &mut Rng) -> String {
    let mut d: Vec<u8> = vec![4];
    for _ in 0..14 {
        d.push(r.below(10) as u8);
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    d.push(((10 - sum % 10) % 10) as u8);
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

/// One ~1 KiB record. `pii`: with a customer email and a card number in their fields.
fn record(r: &mut Rng, pii: bool) -> Vec<u8> {
    let ts = 1_700_000_000_000u64 + r.below(10_000_000_000);
    let (email, card) = if pii {
        (
            format!("user{}@example{}.com", r.below(100_000), r.below(50)),
            luhn_card(r),
        )
    } else {
        (format!("user-{}", r.below(100_000)), "none".to_string())
    };
    let mut s = format!(
        r#"{{"id":"{}","ts":{},"type":"{}","version":"2.{}.{}","customer":{{"id":{},"email":"{}","tier":"{}","since":"2021-0{}-1{}T10:3{}:00Z"}},"payment":{{"card":"{}","amount":{}.{:02},"currency":"EUR","attempt":{}}},"items":["#,
        uuid(r),
        ts,
        r.pick(&["order.created", "order.updated", "order.shipped"]),
        r.below(10),
        r.below(100),
        r.below(10_000_000),
        email,
        r.pick(&["gold", "silver", "bronze"]),
        1 + r.below(9),
        r.below(10),
        r.below(10),
        card,
        r.below(10_000),
        r.below(100),
        r.below(4),
    );
    for i in 0..3 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"sku":"SKU-{}","qty":{},"price":{}.{:02},"warehouse":"wh-{}"}}"#,
            r.below(1_000_000),
            1 + r.below(5),
            r.below(500),
            r.below(100),
            r.below(40)
        ));
    }
    s.push_str(r#"],"note":""#);
    while s.len() < 960 {
        s.push_str(&prose(r, 8));
        s.push_str(". ");
    }
    s.push_str(&format!(r#"","trace":"{}"}}"#, uuid(r)));
    s.into_bytes()
}

fn rule(payload: Payload, fields: Vec<FieldSpec>, detectors: Vec<DetectorSpec>) -> Rule {
    Rule::compile(RuleSpec {
        name: Arc::from("bench"),
        payload,
        parts: Parts {
            key: false,
            value: true,
            headers: false,
        },
        on_malformed: OnMalformed::Reject,
        fields,
        detectors,
    })
    .expect("bench rule compiles")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let gen = |r: &mut Rng, pii: bool| {
        let mut v = Vec::new();
        let mut total = 0;
        while total < TOTAL {
            let rec = record(r, pii);
            total += rec.len();
            v.push(rec);
        }
        (v, total)
    };
    let (clean, clean_bytes) = gen(&mut r, false);
    let (pii, pii_bytes) = gen(&mut r, true);
    eprintln!(
        "{} clean records ({} MiB), {} records with PII, avg {} bytes",
        clean.len(),
        clean_bytes >> 20,
        pii.len(),
        pii_bytes / pii.len()
    );

    let scan = rule(
        Payload::Any,
        vec![],
        Detector::builtins()
            .into_iter()
            .map(|detector| DetectorSpec {
                detector,
                action: Action::Redact {
                    replacement: "x".into(),
                },
            })
            .collect(),
    );
    let masker = rule(
        Payload::Json,
        vec![
            FieldSpec {
                path: "$.customer.email".into(),
                action: Action::Tokenize {
                    format_preserving: false,
                },
            },
            FieldSpec {
                path: "$.payment.card".into(),
                action: Action::Partial {
                    keep_first: 0,
                    keep_last: 4,
                    mask_char: '*',
                },
            },
        ],
        vec![],
    );
    let key = MacKey([7; 32]);
    let counters = HashMap::new();

    let (mut scan_gbs, mut mask_mbs, mut reveal_mbs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..RUNS {
        // (a) detector scan on clean data
        let mut stats = Stats::default();
        let mut tokens = CollectingTokens {
            key: &key,
            counters: &counters,
            new: Vec::new(),
        };
        let t = Instant::now();
        let mut changed = 0;
        for rec in &clean {
            if scan
                .mask(Part::Value, rec, &mut tokens, &mut stats)
                .unwrap()
                .is_some()
            {
                changed += 1;
            }
        }
        let a = clean_bytes as f64 / t.elapsed().as_secs_f64() / 1e9;
        assert_eq!(changed, 0, "clean data must have no matches");

        // (b) masking rewrite: two fields per record. The tokens each record made are kept
        // as the proxy keeps them (a list handed to the vault); the stand-in vault below is
        // filled after the clock stops: the vault's own cost is measured by its tests.
        let mut masked = Vec::with_capacity(pii.len());
        let mut made = Vec::with_capacity(pii.len());
        let t = Instant::now();
        for rec in &pii {
            let mut tokens = CollectingTokens {
                key: &key,
                counters: &counters,
                new: Vec::new(),
            };
            let out = masker
                .mask(Part::Value, rec, &mut tokens, &mut stats)
                .unwrap()
                .expect("two fields masked");
            masked.push(out);
            made.push(tokens.new);
        }
        let b = pii_bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
        let vault: HashMap<String, Vec<u8>> = made
            .into_iter()
            .flatten()
            .map(|nt| (nt.token, nt.value))
            .collect();

        // (c) reveal
        let masked_bytes: usize = masked.iter().map(Vec::len).sum();
        let t = Instant::now();
        let mut revealed = 0;
        for rec in &masked {
            if masker
                .reveal(Part::Value, rec, &vault, &mut stats)
                .is_some()
            {
                revealed += 1;
            }
        }
        let c = masked_bytes as f64 / t.elapsed().as_secs_f64() / 1e6;
        assert_eq!(revealed, masked.len());
        eprintln!("run {run}: scan {a:.2} GB/s, mask {b:.0} MB/s, reveal {c:.0} MB/s");
        scan_gbs.push(a);
        mask_mbs.push(b);
        reveal_mbs.push(c);
    }
    println!(
        "{{\"detector_scan_gb_s\": {:.3}, \"mask_rewrite_mb_s\": {:.1}, \"reveal_mb_s\": {:.1}, \"runs\": {}}}",
        median(scan_gbs),
        median(mask_mbs),
        median(reveal_mbs),
        RUNS
    );
}
