//! Loading never panics, whatever the bytes, and every problem it reports has a
//! position inside the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use banger_specs::load::parse_document_set;
use proptest::prelude::*;

fn check(bytes: &[u8]) {
    let load = parse_document_set(bytes, "fuzz.yaml", Path::new("/base"));
    let lines = yaml_lines(bytes);
    for problem in &load.problems {
        assert!(
            problem.line >= 1 && problem.line <= lines + 1,
            "{problem} (input has {lines} lines)"
        );
        assert!(problem.column >= 1, "{problem}");
    }
    if load.problems.iter().any(|p| p.is_error()) {
        assert!(load.objects.is_empty());
    }
}

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
fn yaml_lines(bytes: &[u8]) -> usize {
    let lone_cr = bytes
        .windows(2)
        .filter(|w| w[0] == b'\r' && w[1] != b'\n')
        .count()
        + usize::from(bytes.last() == Some(&b'\r'));
    bytes.iter().filter(|b| **b == b'\n').count() + lone_cr + 1
}

/// Inputs the fuzz targets (fuzz/) found, kept as regression cases.
#[test]
fn inputs_found_by_fuzzing() {
    // A lone CR ends a line in YAML: the problem on "line 3" is inside the input.
    check(b"\r&a\r&a ");
}

const VALID: &str = "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\n  labels: {a: b}\nspec:\n  image: base\n  memory: 1G\n  network: {nat: true, ip: 10.0.0.2}\n---\napiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata: {name: w}\nspec: {vm: dev, source: ../x}\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check(&bytes);
    }

    #[test]
    fn yaml_like_text(text in "[-a-zA-Z0-9:{}\\[\\],&*!|>#'\" \t\n.<~]{0,200}") {
        check(text.as_bytes());
    }

    #[test]
    fn mutated_valid_specs(at in 0..VALID.len(), len in 0usize..8, insert in "[-a-z0-9:{}\\[\\],&*!|>#'\" \t\n.]{0,6}") {
        let end = (at + len).min(VALID.len());
        let mutated = format!("{}{}{}", &VALID[..at], insert, &VALID[end..]);
        check(mutated.as_bytes());
    }
}
