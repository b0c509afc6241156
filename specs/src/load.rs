//! Reading spec files, directories and stdin into canonical objects.
//!
//! A load reports every problem it finds, never only the first: YAML problems (see
//! [`crate::yaml`]), field problems (see [`crate::decode`]) and set-level problems
//! (see [`check_set`]). A file is all or nothing: when it has an error, none of its
//! objects are returned.
//!
//! ## References outside the load
//! A VM names its Image and a Workspace its VM. When the named object is not among the
//! objects loaded (nor among the documents of invalid files of the same load), the
//! problem is a **warning**, not an error: the daemon may already know the object from
//! an earlier `banger apply` or another spec directory. The daemon reports a reference
//! that is still dangling when it reconciles.
//!
//! CONTRACT (other crates rely on these signatures):
//! - [`parse_document_set`] parses one file's bytes.
//! - [`load_file`] reads and parses one file.
//! - [`load_inputs`] expands `-f` inputs (files, dirs, `-` for stdin), loads them all
//!   and runs the set-level checks of [`check_set`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::decode::decode_document;
use crate::problem::{Problem, Severity};
use crate::types::{Kind, ObjectKey, Resource};
use crate::yaml::{decode_utf8, parse_stream, Mark};

/// How stdin is named in problems.
pub const STDIN_LABEL: &str = "<stdin>";

/// Where a document starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// File path as given, or `<stdin>`.
    pub file: String,
    /// 1-based line of the document's first key.
    pub line: usize,
}

/// One valid document, canonicalised, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedObject {
    /// The canonical resource.
    pub resource: Resource,
    /// Where it was declared.
    pub origin: Origin,
}

/// The outcome of parsing one file.
#[derive(Debug, Clone, Default)]
pub struct FileLoad {
    /// The file as named to the user.
    pub file: String,
    /// The valid documents (empty when `problems` has an error: a file is all or nothing).
    pub objects: Vec<LoadedObject>,
    /// Best-effort identities of every document in the file, valid or not, so that a
    /// caller can tell which objects an invalid file talks about.
    pub identities: Vec<ObjectKey>,
    /// Everything wrong with the file.
    pub problems: Vec<Problem>,
}

/// The outcome of loading a set of inputs.
#[derive(Debug, Clone, Default)]
pub struct LoadSet {
    /// Valid objects of all files.
    pub objects: Vec<LoadedObject>,
    /// Problems of all files plus set-level problems (duplicates, references).
    pub problems: Vec<Problem>,
    /// Files read (absolute paths; `<stdin>` for stdin).
    pub files: Vec<PathBuf>,
}

/// Parses the bytes of one file. `file` names it in problems; relative paths inside
/// resolve against `base_dir` (made absolute against the current directory if it is
/// relative).
pub fn parse_document_set(bytes: &[u8], file: &str, base_dir: &Path) -> FileLoad {
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let mut load = FileLoad {
        file: file.to_string(),
        ..FileLoad::default()
    };
    let problem =
        |mark: Mark, field: Option<String>, message: String, severity: Severity| Problem {
            file: file.to_string(),
            line: mark.line,
            column: mark.column,
            field,
            message,
            severity,
        };
    let text = match decode_utf8(bytes) {
        Ok(text) => text,
        Err(p) => {
            load.problems
                .push(problem(p.mark, p.path, p.message, Severity::Error));
            return load;
        }
    };
    let stream = parse_stream(text);
    let mut problems: Vec<Problem> = stream
        .problems
        .into_iter()
        .map(|p| problem(p.mark, p.path, p.message, Severity::Error))
        .collect();
    let mut objects = Vec::new();
    let mut non_empty = 0usize;
    for document in &stream.documents {
        if document.root.is_null() {
            continue;
        }
        non_empty += 1;
        let decoded = decode_document(&document.root, &base_dir);
        problems.extend(
            decoded
                .problems
                .into_iter()
                .map(|p| problem(p.mark, p.field, p.message, p.severity)),
        );
        if let Some(key) = decoded.key {
            load.identities.push(key);
        }
        if let Some(resource) = decoded.resource {
            objects.push(LoadedObject {
                resource,
                origin: Origin {
                    file: file.to_string(),
                    line: document.start.line,
                },
            });
        }
    }
    if non_empty == 0 && problems.is_empty() {
        let mark = stream
            .documents
            .first()
            .map_or(Mark { line: 1, column: 1 }, |d| d.start);
        let message = "no objects in file: it is empty or holds only comments; write at least one document with apiVersion, kind, metadata and spec".to_string();
        problems.push(problem(mark, None, message, Severity::Error));
    }
    // Problems in document order, whatever stage found them.
    problems.sort_by_key(|p| (p.line, p.column));
    if !problems.iter().any(|p| p.severity == Severity::Error) {
        load.objects = objects;
    }
    load.problems = problems;
    load
}

/// Reads and parses one file; relative paths inside resolve against its directory.
pub fn load_file(path: &Path) -> FileLoad {
    let label = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            let dir = absolute
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            parse_document_set(&bytes, &label, &dir)
        }
        Err(e) => FileLoad {
            file: label.clone(),
            problems: vec![Problem::file_level(
                &label,
                format!("cannot read file: {e}"),
            )],
            ..FileLoad::default()
        },
    }
}

/// Expands inputs (file, directory — recursive with `recursive` — or `-` for stdin) and
/// loads them all, then runs [`check_set`].
///
/// A directory contributes its `*.yaml` and `*.yml` files (not hidden ones), sorted
/// by name; a directory with no such file is an error. A file named explicitly is read
/// whatever its extension. stdin's relative paths resolve against the current
/// directory.
pub fn load_inputs(inputs: &[String], recursive: bool) -> LoadSet {
    let mut set = LoadSet::default();
    let mut seen = BTreeSet::new();
    let mut known_invalid = Vec::new();
    for input in inputs {
        if input == "-" {
            let mut bytes = Vec::new();
            let load = match std::io::stdin().lock().read_to_end(&mut bytes) {
                Ok(_) => {
                    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                    parse_document_set(&bytes, STDIN_LABEL, &cwd)
                }
                Err(e) => FileLoad {
                    file: STDIN_LABEL.to_string(),
                    problems: vec![Problem::file_level(
                        STDIN_LABEL,
                        format!("cannot read stdin: {e}"),
                    )],
                    ..FileLoad::default()
                },
            };
            set.files.push(PathBuf::from(STDIN_LABEL));
            absorb(&mut set, &mut known_invalid, load);
            continue;
        }
        let path = Path::new(input);
        let files = match expand(path, recursive) {
            Ok(files) => files,
            Err(message) => {
                set.problems.push(Problem::file_level(input, message));
                continue;
            }
        };
        for file in files {
            let absolute = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
            if !seen.insert(crate::decode::normalize_lexically(&absolute)) {
                continue; // named twice (e.g. a file and its directory): load it once
            }
            set.files.push(absolute);
            absorb(&mut set, &mut known_invalid, load_file(&file));
        }
    }
    set.problems
        .extend(check_set_knowing(&set.objects, &known_invalid));
    set
}

fn absorb(set: &mut LoadSet, known_invalid: &mut Vec<ObjectKey>, load: FileLoad) {
    if load.objects.is_empty() {
        known_invalid.extend(load.identities);
    }
    set.objects.extend(load.objects);
    set.problems.extend(load.problems);
}

/// The spec files an input names.
fn expand(path: &Path, recursive: bool) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    walk(path, recursive, &mut files, 0)?;
    if files.is_empty() {
        let hint = if recursive {
            ""
        } else {
            " (use -R to search subdirectories)"
        };
        return Err(format!("no .yaml or .yml files in directory{hint}"));
    }
    Ok(files)
}

/// Deepest directory nesting followed with `-R`.
const MAX_WALK_DEPTH: usize = 32;

fn walk(dir: &Path, recursive: bool, files: &mut Vec<PathBuf>, depth: usize) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            if recursive && depth < MAX_WALK_DEPTH {
                walk(&path, recursive, files, depth + 1)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            files.push(path);
        }
    }
    Ok(())
}

/// Set-level checks: duplicate names per kind, references (VM → Image, Workspace →
/// VM). A reference to an object that is not in the set is a warning.
pub fn check_set(objects: &[LoadedObject]) -> Vec<Problem> {
    check_set_knowing(objects, &[])
}

/// [`check_set`], treating `also_known` (documents of invalid files) as present so
/// that one broken file does not cause a warning per reference to it.
pub fn check_set_knowing(objects: &[LoadedObject], also_known: &[ObjectKey]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut first: BTreeMap<ObjectKey, &Origin> = BTreeMap::new();
    for object in objects {
        let key = object.resource.key();
        match first.get(&key) {
            Some(earlier) => problems.push(Problem {
                file: object.origin.file.clone(),
                line: object.origin.line,
                column: 1,
                field: Some("metadata.name".to_string()),
                message: format!(
                    "duplicate {} name `{}`: already declared at {}:{}",
                    key.kind, key.name, earlier.file, earlier.line
                ),
                severity: Severity::Error,
            }),
            None => {
                first.insert(key, &object.origin);
            }
        }
    }
    let present = |kind: Kind, name: &str| {
        let key = ObjectKey {
            kind,
            name: name.to_string(),
        };
        first.contains_key(&key) || also_known.contains(&key)
    };
    for object in objects {
        let (field, target) = match &object.resource {
            Resource::Vm(vm) => (
                "spec.image",
                ObjectKey {
                    kind: Kind::Image,
                    name: vm.spec.image.clone(),
                },
            ),
            Resource::Workspace(ws) => (
                "spec.vm",
                ObjectKey {
                    kind: Kind::Vm,
                    name: ws.spec.vm.clone(),
                },
            ),
            Resource::Image(_) => continue,
        };
        if !present(target.kind, &target.name) {
            problems.push(Problem {
                file: object.origin.file.clone(),
                line: object.origin.line,
                column: 1,
                field: Some(field.to_string()),
                message: format!(
                    "{} `{}` is not in this load; the daemon must already know it",
                    target.kind, target.name
                ),
                severity: Severity::Warning,
            });
        }
    }
    problems
}
