//! The policy version: stable across file order, different for any change of a byte or a name.

use std::path::PathBuf;

use crate::policy::PolicySet;

fn files() -> Vec<(PathBuf, String)> {
    vec![
        (
            PathBuf::from("a.yaml"),
            "rules:\n  - {name: a, effect: allow, subjects: {principals: [x]}, resources: {topics: [t]}, operations: [produce]}\n".into(),
        ),
        (
            PathBuf::from("b.yaml"),
            "blocking:\n  - {name: b, topics: [t], immutable: true}\n".into(),
        ),
    ]
}

fn version(files: &[(PathBuf, String)]) -> String {
    PolicySet::from_files(files).unwrap().version().to_string()
}

#[test]
fn stable_across_order_and_loads() {
    let mut f = files();
    let v = version(&f);
    assert!(
        v.starts_with("sha256:") && v.len() == "sha256:".len() + 16,
        "{v}"
    );
    assert!(v["sha256:".len()..].chars().all(|c| c.is_ascii_hexdigit()));
    f.reverse();
    assert_eq!(version(&f), v);
    assert_eq!(version(&files()), v);
}

#[test]
fn any_byte_change_changes_it() {
    let base = version(&files());
    let mut f = files();
    f[1].1.push(' ');
    assert_ne!(version(&f), base);
    let mut f = files();
    f[0].1 = f[0].1.replace("[x]", "[y]");
    assert_ne!(version(&f), base);
    // Same bytes under another name is another set.
    let mut f = files();
    f[1].0 = PathBuf::from("c.yaml");
    assert_ne!(version(&f), base);
    // Moving bytes from one file to the next is another set too.
    let mut f = files();
    let moved = f[0].1.pop().unwrap();
    f[1].1.insert(0, moved);
    assert_ne!(version(&f), base);
}

#[test]
fn load_dir_and_from_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files() {
        std::fs::write(dir.path().join(p), c).unwrap();
    }
    let set = PolicySet::load_dir(dir.path()).unwrap();
    assert_eq!(set.version(), version(&files()));
    assert_eq!((set.file_count(), set.rule_count()), (2, 2));
}
