//! Every full-file YAML example in `docs/policy.md` (a ```yaml block whose first line is
//! `# file: NAME`) is a valid policy file, and the documented errors are the real ones.

use std::path::PathBuf;

use crate::policy::PolicySet;

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md");
    std::fs::read_to_string(path).unwrap()
}

/// (file name, text, line of the block in the doc) of each full-file block.
fn full_file_blocks(doc: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim_end() != "```yaml" {
            continue;
        }
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| l.trim_end() != "```")
            .collect();
        if let Some(name) = body.first().and_then(|l| l.strip_prefix("# file: ")) {
            out.push((name.trim().to_string(), body.join("\n") + "\n", n + 1));
        }
    }
    out
}

#[test]
fn every_full_file_example_in_the_docs_is_valid() {
    let doc = doc();
    let blocks = full_file_blocks(&doc);
    assert!(
        blocks.len() >= 4,
        "found only {} full-file examples",
        blocks.len()
    );
    for (name, text, line) in &blocks {
        let files = [(PathBuf::from(name), text.clone())];
        if let Err(e) = PolicySet::from_files(&files) {
            panic!("docs/policy.md line {line} ({name}) is not valid:\n{e}");
        }
    }
}

#[test]
fn the_block_extractor_finds_blocks() {
    let doc = "x\n```yaml\n# file: a.yaml\nrules: []\n```\n```yaml\nnot: a file\n```\n";
    let blocks = full_file_blocks(doc);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, "a.yaml");
    assert_eq!(blocks[0].1, "# file: a.yaml\nrules: []\n");
    assert!(PolicySet::from_files(&[(PathBuf::from("a.yaml"), blocks[0].1.clone())]).is_err());
}

/// Each ```yaml block starting `# invalid: NAME` is followed by a ```text block with exactly
/// the errors `check` prints for it.
#[test]
fn documented_errors_are_the_real_ones() {
    let doc = doc();
    let lines: Vec<&str> = doc.lines().collect();
    let mut checked = 0;
    let mut i = 0;
    while i < lines.len() {
        let name = match (lines[i].trim_end(), lines.get(i + 1)) {
            ("```yaml", Some(first)) => first.strip_prefix("# invalid: "),
            _ => None,
        };
        let Some(name) = name else {
            i += 1;
            continue;
        };
        let end = i
            + 1
            + lines[i + 1..]
                .iter()
                .position(|l| l.trim_end() == "```")
                .unwrap();
        let text = lines[i + 1..end].join("\n") + "\n";
        let start = end
            + lines[end..]
                .iter()
                .position(|l| l.trim_end() == "```text")
                .unwrap()
            + 1;
        let stop = start
            + lines[start..]
                .iter()
                .position(|l| l.trim_end() == "```")
                .unwrap();
        let expected = lines[start..stop].join("\n");
        let errs = PolicySet::from_files(&[(PathBuf::from(name.trim()), text)]).unwrap_err();
        assert_eq!(errs.to_string(), expected, "docs/policy.md line {}", i + 1);
        checked += 1;
        i = stop;
    }
    assert!(checked >= 1);
}

#[test]
fn the_documented_explain_output_is_real() {
    let doc = doc();
    let start = doc.find("```text\nrequest:").unwrap() + "```text\n".len();
    let expected = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let text = crate::policy::cli::explain(
        &dir,
        "alice",
        &["analysts".into(), "contractors".into()],
        Some("analytics-1"),
        "127.0.0.1".parse().unwrap(),
        crate::policy::Operation::Consume,
        crate::policy::Resource::topic("customers.emails"),
    )
    .unwrap();
    // The first line names the directory, which differs between machines.
    let body = text.split_once('\n').unwrap().1;
    assert_eq!(body, expected);
}

#[test]
fn the_documented_masking_explain_output_is_real() {
    let doc = doc();
    let marker = "```text\nmasking of the records fetched:\n";
    let start = doc.find(marker).unwrap() + "```text\n".len();
    let expected = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let text = crate::policy::cli::explain(
        &dir,
        "ann",
        &["analysts".into()],
        Some("analytics-1"),
        "127.0.0.1".parse().unwrap(),
        crate::policy::Operation::Consume,
        crate::policy::Resource::topic("payments.eu"),
    )
    .unwrap();
    assert!(text.ends_with(expected), "{text}");
}
