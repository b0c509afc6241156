//! `banger validate` and `banger schema` as a user runs them: the real binary, the
//! spec corpus under `tests/specs/` and the examples.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn banger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `(line, field)` from the corpus file's `# expect: line=N field=F` first line.
fn expectation(path: &Path) -> (usize, String) {
    let bytes = std::fs::read(path).unwrap();
    let first = text(bytes.split(|b| *b == b'\n').next().unwrap());
    let rest = first.strip_prefix("# expect: ").unwrap();
    let mut parts = rest.trim_end().splitn(2, ' ');
    let line = parts
        .next()
        .unwrap()
        .strip_prefix("line=")
        .unwrap()
        .parse()
        .unwrap();
    let field = parts
        .next()
        .unwrap()
        .strip_prefix("field=")
        .unwrap()
        .to_string();
    (line, field)
}

#[test]
fn every_invalid_spec_fails_naming_file_line_and_field() {
    let dir = repo().join("tests/specs/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 40, "only {} invalid specs", files.len());
    for path in files {
        let relative = path.strip_prefix(repo()).unwrap().display().to_string();
        let (line, field) = expectation(&path);
        let out = banger(&["validate", "-f", &relative]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{relative}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{relative}:{line}:")),
            "{relative}: expected line {line}: {stderr}"
        );
        if field != "-" {
            assert!(
                first.contains(&format!(": {field}: ")),
                "{relative}: expected field {field}: {stderr}"
            );
        }
        assert!(
            out.stdout.is_empty(),
            "{relative}: nothing on stdout when invalid"
        );
    }
}

#[test]
fn examples_are_valid() {
    let out = banger(&["validate", "-f", "examples/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "6 objects valid in 6 files\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn valid_corpus_passes_with_reference_warnings() {
    let out = banger(&[
        "validate",
        "-f",
        "tests/specs/valid",
        "-f",
        "examples/image.yaml",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        text(&out.stdout).contains("objects valid in 8 files"),
        "{}",
        text(&out.stdout)
    );
    // Workspace `notes` names VM `dev`, which is not in this load: a warning.
    assert!(
        stderr.contains(
            "tests/specs/valid/bom-utf8.yaml:2:1: warning: spec.vm: VM `dev` is not in this load"
        ),
        "{stderr}"
    );
}

#[test]
fn all_problems_of_a_load_are_reported() {
    let out = banger(&[
        "validate",
        "-f",
        "tests/specs/invalid/vm-vcpus-zero.yaml",
        "-f",
        "tests/specs/invalid/ws-path-root.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("vm-vcpus-zero.yaml:8:10: spec.vcpus:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ws-path-root.yaml:9:9: spec.path:"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors in 2 files"), "{stderr}");
}

#[test]
fn stdin_and_recursive_directories() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata: {name: x}\nspec: {image: base, memroy: 1G}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "<stdin>:4:21: spec.memroy: unknown field `memroy` (did you mean `memory`?)"
        ),
        "{}",
        text(&out.stderr)
    );

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("nested")).unwrap();
    std::fs::copy(
        repo().join("examples/vm-dev.yaml"),
        tmp.path().join("nested/vm.yml"),
    )
    .unwrap();
    let dir = tmp.path().display().to_string();
    let out = banger(&["validate", "-f", &dir]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no .yaml or .yml files in directory (use -R"),
        "{}",
        text(&out.stderr)
    );
    let out = banger(&["validate", "-R", "-f", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1 object is valid in 1 file (1 warning)\n"
    );

    let out = banger(&["validate", "-f", "does/not/exist.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("does/not/exist.yaml: cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn schema_prints_one_kind_or_all() {
    let out = banger(&["schema", "vm"]);
    assert_eq!(out.status.code(), Some(0));
    let vm: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checked_in: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("schemas/vm.json")).unwrap()).unwrap();
    assert_eq!(vm, checked_in);

    let out = banger(&["schema"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(kinds, ["Image", "VM", "Workspace"]);

    let out = banger(&["schema", "pod"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown kind `pod`"));
}

#[test]
fn version_and_help_with_examples() {
    let out = banger(&["--version"]);
    assert_eq!(
        text(&out.stdout),
        format!("banger {}\n", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["validate", "--help"],
        &["schema", "--help"],
    ] {
        let out = banger(args);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("Examples:"), "{args:?}");
    }
    let out = banger(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "-f is required");
}
