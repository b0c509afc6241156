//! The spec corpus under `tests/specs/`: every invalid file has exactly one error, on
//! the line and field its first line announces (`# expect: line=7 field=spec.memory`,
//! `field=-` when the problem is not about one field); every valid file loads cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use banger_specs::load::load_inputs;
use banger_specs::{Kind, Resource};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/specs")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parses `# expect: line=N field=F` from the first line.
fn expectation(path: &Path) -> (usize, Option<String>) {
    let bytes = std::fs::read(path).unwrap();
    let first = String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap()).to_string();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
    let mut line = None;
    let mut field = None;
    for part in rest.trim_end().splitn(2, ' ') {
        if let Some(v) = part.strip_prefix("line=") {
            line = Some(v.parse().unwrap());
        } else if let Some(v) = part.strip_prefix("field=") {
            field = Some(v.to_string());
        }
    }
    let field = field.expect("field=");
    (line.expect("line="), (field != "-").then_some(field))
}

#[test]
fn invalid_specs_report_one_error_on_the_expected_line_and_field() {
    let files = corpus("invalid");
    assert!(files.len() >= 40, "only {} invalid specs", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let (line, field) = expectation(path);
        let input = path.display().to_string();
        let set = load_inputs(std::slice::from_ref(&input), false);
        let errors: Vec<_> = set.problems.iter().filter(|p| p.is_error()).collect();
        let shown: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
        if errors.len() != 1 {
            failures.push(format!(
                "{input}: expected 1 error, got {}: {shown:#?}",
                errors.len()
            ));
            continue;
        }
        let error = errors[0];
        if error.line != line || error.field != field {
            failures.push(format!(
                "{input}: expected line {line} field {field:?}, got {error}"
            ));
        }
        let text = error.to_string();
        if !text.starts_with(&format!("{input}:{line}:")) {
            failures.push(format!(
                "{input}: message does not start with file:line: {text}"
            ));
        }
        let set_level = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("set-"));
        if !set_level && !set.objects.is_empty() {
            failures.push(format!("{input}: an invalid file yielded objects"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_specs_load_without_errors() {
    let files = corpus("valid");
    assert!(files.len() >= 5);
    for path in &files {
        let set = load_inputs(&[path.display().to_string()], false);
        let errors: Vec<String> = set
            .problems
            .iter()
            .filter(|p| p.is_error())
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert!(!set.objects.is_empty(), "{}", path.display());
    }
}

fn load_valid(name: &str) -> Vec<Resource> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/specs/valid")
        .join(name);
    let set = load_inputs(&[path.display().to_string()], false);
    assert!(
        set.problems.iter().all(|p| !p.is_error()),
        "{:?}",
        set.problems
    );
    set.objects.into_iter().map(|o| o.resource).collect()
}

#[test]
fn anchors_and_merge_keys_are_resolved() {
    let objects = load_valid("anchors.yaml");
    let Resource::Vm(one) = &objects[0] else {
        panic!()
    };
    let Resource::Vm(two) = &objects[1] else {
        panic!()
    };
    assert_eq!(one.metadata.labels["tier"], "dev");
    assert_eq!(
        one.metadata.annotations["tier"], "dev",
        "merged from the labels"
    );
    assert_eq!(one.metadata.annotations["banger.dev/on-remove"], "Stop");
    assert_eq!(
        one.spec.memory, one.spec.disk,
        "the disk is an alias of the memory"
    );
    assert_eq!(one.spec.memory.mib(), 768);
    assert_eq!(two.spec.vcpus, 4);
    assert_eq!(
        two.metadata.annotations["team"], "infra",
        "aliased from the labels"
    );
    assert!(!two.spec.network.nat);
}

#[test]
fn crlf_and_flow_forms_mean_the_same() {
    let crlf_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/specs/valid/crlf.yaml");
    assert!(
        std::fs::read_to_string(crlf_path).unwrap().contains("\r\n"),
        "crlf.yaml lost its CRLF line endings"
    );
    let crlf = load_valid("crlf.yaml");
    assert_eq!(crlf.len(), 2);
    let Resource::Vm(vm) = &crlf[0] else { panic!() };
    assert_eq!(vm.spec.kernel_args.as_deref(), Some("quiet loglevel=3"));
    let flow = load_valid("flow.yaml");
    let Resource::Vm(vm) = &flow[0] else { panic!() };
    assert_eq!(vm.spec.memory.mib(), 256);
    assert!(!vm.spec.network.nat);
    let Resource::Image(img) = &flow[1] else {
        panic!()
    };
    assert!(img.spec.oci.as_ref().is_some_and(|o| o.insecure));
}

#[test]
fn multi_doc_paths_and_kinds() {
    let objects = load_valid("multi-doc.yaml");
    let kinds: Vec<Kind> = objects.iter().map(Resource::kind).collect();
    assert_eq!(kinds, [Kind::Image, Kind::Vm, Kind::Vm, Kind::Workspace]);
    let dir =
        std::path::absolute(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/specs/valid"))
            .unwrap();
    let Resource::Image(img) = &objects[0] else {
        panic!()
    };
    let expected = banger_specs::decode::normalize_lexically(&dir.join("kit/vmlinuz"));
    assert_eq!(img.spec.kernel, Some(expected));
    let Resource::Workspace(ws) = &objects[3] else {
        panic!()
    };
    assert_eq!(ws.spec.path, "/srv/app");
    assert!(
        ws.spec.source.ends_with("tests/specs/app"),
        "{}",
        ws.spec.source.display()
    );
    assert!(!ws.spec.source.to_string_lossy().contains(".."));
}

#[test]
fn examples_are_valid_and_complete() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let set = load_inputs(&[dir.display().to_string()], false);
    let shown: Vec<String> = set.problems.iter().map(ToString::to_string).collect();
    assert!(
        shown.is_empty(),
        "examples have problems (warnings included): {shown:#?}"
    );
    let mut kinds: Vec<Kind> = set.objects.iter().map(|o| o.resource.kind()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            Kind::Image,
            Kind::Image,
            Kind::Vm,
            Kind::Vm,
            Kind::Vm,
            Kind::Workspace
        ]
    );
    for object in &set.objects {
        if let Resource::Vm(vm) = &object.resource {
            assert_eq!(
                vm.spec.vcpus, 1,
                "example VMs stay small: they boot under TCG in CI"
            );
            assert_eq!(vm.spec.memory.mib(), 256);
            assert_eq!(vm.spec.disk.mib(), 1024);
        }
    }
    for file in &set.files {
        let text = std::fs::read_to_string(file).unwrap();
        let kind = file
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .split('-')
            .next()
            .unwrap()
            .to_string();
        let modeline = format!("# yaml-language-server: $schema=../schemas/{kind}.json\n");
        assert!(
            text.starts_with(&modeline),
            "{} must start with {modeline}",
            file.display()
        );
    }
}
