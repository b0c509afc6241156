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
//! ## Limits
//! Spec files come from users who may not be trusted with the daemon's memory, so a
//! load is bounded (all refusals are problems naming the file):
//! - a file (or stdin) holds at most [`MAX_FILE_BYTES`]; the files of one API request
//!   together at most [`MAX_REQUEST_BYTES`];
//! - the YAML tree of a file, or of all files of one request together, is bounded by
//!   one [`crate::yaml::Budget`] (aliases included; see [`crate::yaml`]);
//! - only regular files are read (a symlink to one is fine): a FIFO, device node,
//!   socket or directory given as a spec file is refused without being opened, and
//!   files are opened non-blocking so a file swapped for a FIFO meanwhile cannot hang
//!   the reader;
//! - at most [`MAX_PROBLEMS_PER_FILE`] problems are reported per file, each one line
//!   (control characters in names and keys escaped), and a file name or base directory
//!   (which an API request chooses) is at most [`MAX_PATH_BYTES`].
//!
//! CONTRACT (other crates rely on these signatures):
//! - [`parse_document_set`] parses one file's bytes.
//! - [`parse_document_set_within`] parses one of several files that share a
//!   [`LoadBudget`] (the files of one API request).
//! - [`load_file`] reads and parses one file; [`read_spec_file`] and [`read_spec_stream`]
//!   only read, with the same checks.
//! - [`load_inputs`] expands `-f` inputs (files, dirs, `-` for stdin), loads them all
//!   and runs the set-level checks of [`check_set`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::decode::decode_document;
use crate::problem::{one_line, Problem, Severity};
use crate::types::{Kind, ObjectKey, Resource};
use crate::yaml::{decode_utf8, parse_stream_within, Budget, Mark};

/// Most bytes one spec file (or stdin) may hold.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most bytes the files of one API request may hold together.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Most problems reported for one file; a last one says how many more there were.
pub const MAX_PROBLEMS_PER_FILE: usize = 100;
/// Longest file name or base directory accepted (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest problem message kept (characters).
const MAX_MESSAGE_CHARS: usize = 400;
/// Longest field path kept (characters).
const MAX_FIELD_CHARS: usize = 200;

/// What the files of one load may still use: bytes of input and nodes of YAML tree.
#[derive(Debug, Clone)]
pub struct LoadBudget {
    bytes_left: usize,
    max_bytes: usize,
    nodes: Budget,
}

impl LoadBudget {
    /// The budget of one file of `bytes` bytes.
    pub fn for_file(bytes: usize) -> LoadBudget {
        LoadBudget {
            bytes_left: MAX_FILE_BYTES,
            max_bytes: MAX_FILE_BYTES,
            nodes: Budget::for_input(bytes),
        }
    }

    /// The budget shared by the files of one API request, `total_bytes` together.
    pub fn for_request(total_bytes: usize) -> LoadBudget {
        LoadBudget {
            bytes_left: MAX_REQUEST_BYTES,
            max_bytes: MAX_REQUEST_BYTES,
            nodes: Budget::for_input(total_bytes),
        }
    }
}

/// Why a spec file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not a regular file (nor a symlink to one): never opened.
    #[error("not a regular file (it is {0}); spec files must be regular files")]
    NotRegular(&'static str),
    /// Over [`MAX_FILE_BYTES`].
    #[error("larger than {} KiB, the most one spec file may hold", MAX_FILE_BYTES / 1024)]
    TooLarge,
    /// Opening or reading failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

/// What kind of file a non-regular file is, for messages.
fn describe_file_type(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Reads one spec file: refused unless it is a regular file (or a symlink to one),
/// checked before opening; opened non-blocking and checked again on the open file (it
/// may have been swapped meanwhile); at most [`MAX_FILE_BYTES`] read.
pub fn read_spec_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(describe_file_type(meta.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(describe_file_type(meta.file_type())));
    }
    read_spec_stream(file)
}

/// Reads at most [`MAX_FILE_BYTES`] from a stream (stdin); more is [`ReadError::TooLarge`].
pub fn read_spec_stream(reader: impl Read) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_FILE_BYTES).unwrap_or(u64::MAX);
    reader.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

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
/// relative). The file gets a [`LoadBudget::for_file`] of its own.
pub fn parse_document_set(bytes: &[u8], file: &str, base_dir: &Path) -> FileLoad {
    parse_document_set_within(
        bytes,
        file,
        base_dir,
        &mut LoadBudget::for_file(bytes.len()),
    )
}

/// [`parse_document_set`] for one of several files that share `budget` (the files of
/// one API request): a file that takes the load over its byte limit is refused, and
/// every file's YAML tree is taken from the same node budget.
pub fn parse_document_set_within(
    bytes: &[u8],
    file: &str,
    base_dir: &Path,
    budget: &mut LoadBudget,
) -> FileLoad {
    if file.len() > MAX_PATH_BYTES || base_dir.as_os_str().len() > MAX_PATH_BYTES {
        // Such a name comes only from a hostile request: never copy it into every
        // problem and object.
        let label = one_line(file, MAX_FIELD_CHARS);
        return refused(
            &label,
            format!("file name or base directory longer than {MAX_PATH_BYTES} bytes"),
        );
    }
    if bytes.len() > MAX_FILE_BYTES {
        return refused(file, ReadError::TooLarge.to_string());
    }
    if bytes.len() > budget.bytes_left {
        let message = format!(
            "the files of one request may hold at most {} KiB together; this file takes them over it",
            budget.max_bytes / 1024
        );
        budget.bytes_left = 0;
        return refused(file, message);
    }
    budget.bytes_left -= bytes.len();
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let (objects, identities, mut found) = parse_text(bytes, file, &base_dir, budget);
    // Problems in document order, whatever stage found them.
    found.sort_by_key(|p| (p.mark.line, p.mark.column));
    let valid = !found.iter().any(|p| p.severity == Severity::Error);
    let more = found.len().saturating_sub(MAX_PROBLEMS_PER_FILE);
    found.truncate(MAX_PROBLEMS_PER_FILE);
    // Only the problems kept become `Problem`s, each with its own copy of the name.
    let mut problems: Vec<Problem> = found
        .into_iter()
        .map(|p| Problem {
            file: file.to_string(),
            line: p.mark.line,
            column: p.mark.column,
            field: p.field.map(|f| one_line(&f, MAX_FIELD_CHARS)),
            message: one_line(&p.message, MAX_MESSAGE_CHARS),
            severity: p.severity,
        })
        .collect();
    if more > 0 {
        problems.push(Problem::file_level(
            file,
            format!("{more} more problems not shown"),
        ));
    }
    FileLoad {
        file: file.to_string(),
        objects: if valid { objects } else { Vec::new() },
        identities,
        problems,
    }
}

/// A problem as a stage found it, before it is named after its file.
struct Found {
    mark: Mark,
    field: Option<String>,
    message: String,
    severity: Severity,
}

/// Parses and decodes the documents of one file: its objects (valid or not, the caller
/// decides), the identities of all its documents, and every problem found.
fn parse_text(
    bytes: &[u8],
    file: &str,
    base_dir: &Path,
    budget: &mut LoadBudget,
) -> (Vec<LoadedObject>, Vec<ObjectKey>, Vec<Found>) {
    let error = |mark: Mark, field: Option<String>, message: String| Found {
        mark,
        field,
        message,
        severity: Severity::Error,
    };
    let text = match decode_utf8(bytes) {
        Ok(text) => text,
        Err(p) => {
            return (
                Vec::new(),
                Vec::new(),
                vec![error(p.mark, p.path, p.message)],
            )
        }
    };
    let stream = parse_stream_within(text, &mut budget.nodes);
    let mut found: Vec<Found> = stream
        .problems
        .into_iter()
        .map(|p| error(p.mark, p.path, p.message))
        .collect();
    let mut objects = Vec::new();
    let mut identities = Vec::new();
    let mut non_empty = 0usize;
    for document in &stream.documents {
        if document.root.is_null() {
            continue;
        }
        non_empty += 1;
        let decoded = decode_document(&document.root, base_dir);
        found.extend(decoded.problems.into_iter().map(|p| Found {
            mark: p.mark,
            field: p.field,
            message: p.message,
            severity: p.severity,
        }));
        if let Some(key) = decoded.key {
            identities.push(key);
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
    if non_empty == 0 && found.is_empty() {
        let mark = stream
            .documents
            .first()
            .map_or(Mark { line: 1, column: 1 }, |d| d.start);
        let message = "no objects in file: it is empty or holds only comments; write at least one document with apiVersion, kind, metadata and spec".to_string();
        found.push(error(mark, None, message));
    }
    (objects, identities, found)
}

/// A load of a file that was refused before parsing.
fn refused(file: &str, message: String) -> FileLoad {
    FileLoad {
        file: file.to_string(),
        problems: vec![Problem::file_level(file, message)],
        ..FileLoad::default()
    }
}

/// Reads ([`read_spec_file`]) and parses one file; relative paths inside resolve
/// against its directory.
pub fn load_file(path: &Path) -> FileLoad {
    let label = path.display().to_string();
    match read_spec_file(path) {
        Ok(bytes) => {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            let dir = absolute
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            parse_document_set(&bytes, &label, &dir)
        }
        Err(e) => refused(&label, e.to_string()),
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
            let load = match read_spec_stream(std::io::stdin().lock()) {
                Ok(bytes) => {
                    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
                    parse_document_set(&bytes, STDIN_LABEL, &cwd)
                }
                Err(e) => refused(STDIN_LABEL, e.to_string()),
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
    // A set, so that a load of n objects against m known ones costs O((n + m) log m).
    let also_known: BTreeSet<&ObjectKey> = also_known.iter().collect();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const IMAGE: &str = "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata: {name: base}\nspec: {kernel: k, rootfs: r}\n";
    const VM: &str =
        "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata: {name: dev}\nspec: {image: base}\n";
    const WS: &str = "apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata: {name: code}\nspec: {vm: dev, source: /src}\n";

    fn parse(text: &str) -> FileLoad {
        parse_document_set(text.as_bytes(), "f.yaml", Path::new("/d"))
    }

    #[test]
    fn references_within_the_load_are_quiet() {
        let load = parse(&format!("{IMAGE}---\n{VM}---\n{WS}"));
        assert!(load.problems.is_empty(), "{:?}", load.problems);
        assert_eq!(load.objects.len(), 3);
        assert_eq!(
            load.objects[1].origin,
            Origin {
                file: "f.yaml".into(),
                line: 6
            }
        );
        assert!(check_set(&load.objects).is_empty());
    }

    #[test]
    fn references_outside_the_load_are_warnings() {
        let load = parse(&format!("{VM}---\n{WS}"));
        let problems = check_set(&load.objects);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].severity, Severity::Warning);
        assert_eq!(problems[0].field.as_deref(), Some("spec.image"));
        assert_eq!(problems[0].line, 1);
        // An Image named by an invalid file of the same load counts as present.
        let image = ObjectKey {
            kind: Kind::Image,
            name: "base".into(),
        };
        assert!(check_set_knowing(&load.objects, &[image]).is_empty());
    }

    #[test]
    fn duplicate_names_per_kind() {
        let other_kind = VM
            .replace("kind: VM", "kind: Image")
            .replace("{image: base}", "{kernel: k, rootfs: r}");
        let load = parse(&format!("{VM}---\n{other_kind}---\n{VM}"));
        let problems = check_set(&load.objects);
        let errors: Vec<_> = problems.iter().filter(|p| p.is_error()).collect();
        assert_eq!(errors.len(), 1, "{problems:?}");
        assert_eq!(errors[0].line, 11);
        assert!(
            errors[0].message.contains("already declared at f.yaml:1"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_file_is_all_or_nothing_and_reports_everything() {
        let load = parse(&format!(
            "{IMAGE}---\n{}",
            VM.replace("image: base", "image: base, vcpus: 0, disk: 1")
        ));
        assert!(load.objects.is_empty());
        assert_eq!(load.problems.len(), 2);
        assert_eq!(
            load.identities.len(),
            2,
            "identities of valid and invalid documents"
        );
    }

    #[test]
    fn empty_inputs_are_errors() {
        for text in ["", "# comment\n", "---\n---\n"] {
            let load = parse(text);
            assert_eq!(load.problems.len(), 1, "{text:?}");
            assert!(load.problems[0].message.contains("no objects"));
        }
        let load = parse(&format!("{IMAGE}---\n"));
        assert!(load.problems.is_empty(), "a trailing separator is fine");
    }

    #[test]
    fn a_file_over_the_size_cap_is_refused_naming_it() {
        let big = format!("{IMAGE}#{}\n", "x".repeat(MAX_FILE_BYTES));
        let load = parse(&big);
        assert_eq!(load.problems.len(), 1);
        assert_eq!(
            load.problems[0].to_string(),
            "f.yaml: larger than 1024 KiB, the most one spec file may hold"
        );
        assert!(load.objects.is_empty());
        let err = read_spec_stream(big.as_bytes()).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge));
        assert_eq!(
            read_spec_stream(IMAGE.as_bytes()).unwrap(),
            IMAGE.as_bytes()
        );
    }

    #[test]
    fn the_files_of_a_request_share_one_budget() {
        // Each file alone is fine; their aliases together exceed the request's budget.
        let aliases = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
        let file = format!("{IMAGE}---\n{aliases}");
        assert!(parse(&file)
            .problems
            .iter()
            .all(|p| !p.message.contains("expands")));
        let mut budget = LoadBudget::for_request(file.len() * 20);
        let refused = (0..20)
            .map(|i| {
                let name = format!("f{i}.yaml");
                parse_document_set_within(file.as_bytes(), &name, Path::new("/d"), &mut budget)
            })
            .find(|load| {
                load.problems
                    .iter()
                    .any(|p| p.message.contains("YAML expands to more than"))
            })
            .expect("the request's budget runs out");
        assert!(refused.objects.is_empty());
        assert_ne!(refused.file, "f0.yaml");

        // And their bytes are capped together.
        let big = format!("{IMAGE}#{}\n", "x".repeat(MAX_FILE_BYTES - 1000));
        let mut budget = LoadBudget::for_request(3 * big.len());
        for name in ["a.yaml", "b.yaml"] {
            let load =
                parse_document_set_within(big.as_bytes(), name, Path::new("/d"), &mut budget);
            assert!(load.problems.is_empty(), "{:?}", load.problems);
        }
        let third =
            parse_document_set_within(big.as_bytes(), "c.yaml", Path::new("/d"), &mut budget);
        assert_eq!(
            third.problems[0].to_string(),
            "c.yaml: the files of one request may hold at most 2048 KiB together; this file takes them over it"
        );
    }

    #[test]
    fn problems_are_capped_and_one_line() {
        let mut text = String::from(VM);
        for i in 0..300 {
            text.push_str(&format!("unknown{i}: 1\n"));
        }
        let load = parse(&text);
        assert_eq!(load.problems.len(), MAX_PROBLEMS_PER_FILE + 1);
        assert_eq!(
            load.problems[MAX_PROBLEMS_PER_FILE].to_string(),
            "f.yaml: 200 more problems not shown"
        );
        let load = parse(&format!("{VM}\"bad\\nkey\": 1\n"));
        assert_eq!(load.problems.len(), 1);
        let line = load.problems[0].to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("unknown field `bad\\nkey`"), "{line}");
    }

    #[test]
    fn names_from_a_request_are_bounded_and_shown_on_one_line() {
        let long = format!("/{}", "n".repeat(MAX_PATH_BYTES));
        let load = parse_document_set(IMAGE.as_bytes(), &long, Path::new("/d"));
        assert_eq!(load.problems.len(), 1);
        assert!(load.problems[0]
            .to_string()
            .ends_with("…: file name or base directory longer than 4096 bytes"));
        assert!(load.file.len() < 1000);
        let load = parse_document_set(IMAGE.as_bytes(), "f.yaml", Path::new(&long));
        assert_eq!(load.problems.len(), 1);
        let load = parse_document_set(b"kind: 1\n", "a\nb.yaml", Path::new("/d"));
        let line = load.problems[0].to_string();
        assert!(line.starts_with("a\\nb.yaml:1:"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn only_regular_files_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = tmp.path().join("link.yaml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let looped = tmp.path().join("loop.yaml");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        std::fs::write(tmp.path().join("good.yaml"), IMAGE).unwrap();
        let good_link = tmp.path().join("good-link.yaml");
        std::os::unix::fs::symlink(tmp.path().join("good.yaml"), &good_link).unwrap();

        // No writer ever opens the FIFO: reading it would block forever.
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&link, "a FIFO"),
            (&tmp.path().to_path_buf(), "a directory"),
            (&PathBuf::from("/dev/null"), "a character device"),
        ] {
            let load = load_file(path);
            assert_eq!(load.problems.len(), 1, "{path:?}");
            assert_eq!(
                load.problems[0].to_string(),
                format!(
                    "{}: not a regular file (it is {what}); spec files must be regular files",
                    path.display()
                )
            );
        }
        let load = load_file(&looped);
        assert!(
            load.problems[0].message.starts_with("cannot read: "),
            "{}",
            load.problems[0]
        );
        assert_eq!(load_file(&good_link).objects.len(), 1);

        // A directory load refuses them the same way, and still loads the rest.
        let dir = tmp.path().display().to_string();
        let set = load_inputs(std::slice::from_ref(&dir), false);
        assert_eq!(set.objects.len(), 2, "good.yaml and its link");
        let refusals = set
            .problems
            .iter()
            .filter(|p| p.message.starts_with("not a regular file"))
            .count();
        assert_eq!(refusals, 2, "{:?}", set.problems);
    }

    #[test]
    fn file_level_problems_print_without_position() {
        let p = Problem::file_level("x.yaml", "cannot read file: gone".into());
        assert_eq!(p.to_string(), "x.yaml: cannot read file: gone");
    }

    #[test]
    fn directories_and_missing_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("image.yaml"), IMAGE).unwrap();
        std::fs::write(tmp.path().join(".hidden.yaml"), "garbage: [").unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "not a spec").unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        std::fs::write(tmp.path().join("sub/vm.yml"), VM).unwrap();
        let dir = tmp.path().display().to_string();
        let flat = load_inputs(std::slice::from_ref(&dir), false);
        assert_eq!((flat.objects.len(), flat.files.len()), (1, 1));
        let deep = load_inputs(std::slice::from_ref(&dir), true);
        assert_eq!((deep.objects.len(), deep.files.len()), (2, 2));
        assert!(deep.problems.is_empty(), "{:?}", deep.problems);
        // The same file named twice is loaded once (no duplicate-name error).
        let twice = load_inputs(&[dir.clone(), format!("{dir}/image.yaml")], false);
        assert_eq!(twice.objects.len(), 1);
        let missing = load_inputs(&[format!("{dir}/nope.yaml")], false);
        assert_eq!(missing.problems.len(), 1);
        assert!(missing.problems[0].message.starts_with("cannot read"));
        // Paths resolve against the file's directory.
        let Resource::Image(image) = &flat.objects[0].resource else {
            panic!()
        };
        assert_eq!(
            image.spec.kernel,
            Some(std::path::absolute(tmp.path().join("k")).unwrap())
        );
    }
}
