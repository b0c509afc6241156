//! Fuzz target: the spec parser, from the bytes of one file to canonical objects.
//!
//! Beyond "no panic, no hang, bounded memory" (libFuzzer's own checks), every input
//! must keep the load's promises: problems sit inside the input and are one line, a
//! file with an error yields no object, and every object yielded survives the
//! canonical round trips (print and parse again, JSON store form).
#![no_main]

use std::path::Path;

use banger_specs::canonical::resource_from_json;
use banger_specs::load::{parse_document_set, MAX_PROBLEMS_PER_FILE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let load = parse_document_set(bytes, "fuzz.yaml", Path::new("/base"));
    let lines = yaml_lines(bytes);
    assert!(load.problems.len() <= MAX_PROBLEMS_PER_FILE + 1);
    for problem in &load.problems {
        let shown = problem.to_string();
        assert!(!shown.contains('\n'), "problem is not one line: {shown:?}");
        assert!(
            problem.line <= lines + 1,
            "{shown} (input has {lines} lines)"
        );
        assert!(problem.line == 0 || problem.column >= 1, "{shown}");
    }
    if load.problems.iter().any(|p| p.is_error()) {
        assert!(
            load.objects.is_empty(),
            "a file with an error yielded objects"
        );
    }
    for object in &load.objects {
        let resource = &object.resource;
        let printed = resource.to_yaml().expect("a canonical object prints");
        let again = parse_document_set(printed.as_bytes(), "again.yaml", Path::new("/elsewhere"));
        assert!(
            again.problems.iter().all(|p| !p.is_error()),
            "canonical form does not parse: {printed}\n{:?}",
            again.problems
        );
        assert_eq!(again.objects.len(), 1, "{printed}");
        assert_eq!(&again.objects[0].resource, resource, "{printed}");
        assert_eq!(
            resource_from_json(resource.to_json()).as_ref(),
            Ok(resource),
            "JSON round trip"
        );
    }
});

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
fn yaml_lines(bytes: &[u8]) -> usize {
    let lone_cr = bytes
        .windows(2)
        .filter(|w| w[0] == b'\r' && w[1] != b'\n')
        .count()
        + usize::from(bytes.last() == Some(&b'\r'));
    bytes.iter().filter(|b| **b == b'\n').count() + lone_cr + 1
}
