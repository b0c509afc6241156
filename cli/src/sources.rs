//! Reading `-f` inputs into the raw files sent to the daemon.
//!
//! The daemon parses and validates; the CLI only expands the inputs (a file, a directory
//! of `*.yaml`/`*.yml` — recursive with `-R` — or `-` for stdin) and reads their bytes,
//! with the specs crate's checks: only regular files (a FIFO or device named with `-f`
//! is refused, never opened), at most 1 MiB each.

use std::io::Read;
use std::path::{Path, PathBuf};

use banger_controller::api::types::SourceFile;
use banger_specs::load::{read_spec_file, read_spec_stream, ReadError};

/// The name stdin is sent under.
pub const STDIN_NAME: &str = "<stdin>";

/// A `-f` input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file was refused: not a regular file, too large, or unreadable.
    #[error("{}: {source}", path.display())]
    Refused {
        /// The path.
        path: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// A file is not UTF-8 text.
    #[error("{}: not UTF-8 text (byte {offset} is invalid)", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// `-` given more than once.
    #[error("stdin (-) can be named only once")]
    StdinTwice,
    /// Nothing to send.
    #[error("no *.yaml or *.yml files in {inputs}{hint}")]
    Empty {
        /// The inputs as given.
        inputs: String,
        /// Hint about `-R`.
        hint: &'static str,
    },
}

/// The files read from the inputs, and the path set (each input made absolute) that
/// scopes `apply --prune`.
#[derive(Debug, Clone)]
pub struct SourceSet {
    /// The files, in a stable order (inputs in order; directory entries sorted).
    pub files: Vec<SourceFile>,
    /// Each input, absolute (`<stdin>` for `-`).
    pub path_set: Vec<String>,
}

fn is_spec_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path) -> impl FnOnce(ReadError) -> SourceError + '_ {
    move |source| SourceError::Refused {
        path: path.to_path_buf(),
        source,
    }
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        entries.push(entry.map_err(io_error(dir))?.path());
    }
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path).map_err(io_error(&path))?;
        if meta.is_dir() {
            if recursive {
                collect_dir(&path, recursive, out)?;
            }
        } else if is_spec_file(&path) {
            // Not only regular files: a FIFO named like a spec is refused when read,
            // rather than skipped (a skipped file would let `--prune` delete its objects).
            out.push(path);
        }
    }
    Ok(())
}

fn text(path: &Path, bytes: Vec<u8>) -> Result<String, SourceError> {
    String::from_utf8(bytes).map_err(|e| SourceError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Expands and reads the inputs. `cwd` is the base directory for relative inputs and
/// for stdin.
pub fn read_sources(
    inputs: &[String],
    recursive: bool,
    cwd: &Path,
    stdin: &mut dyn Read,
) -> Result<SourceSet, SourceError> {
    let mut files = Vec::new();
    let mut path_set = Vec::new();
    let mut stdin_used = false;
    for input in inputs {
        if input == "-" {
            if stdin_used {
                return Err(SourceError::StdinTwice);
            }
            stdin_used = true;
            let bytes = read_spec_stream(&mut *stdin).map_err(refused(Path::new(STDIN_NAME)))?;
            files.push(SourceFile {
                path: STDIN_NAME.to_string(),
                base_dir: cwd.display().to_string(),
                content: text(Path::new(STDIN_NAME), bytes)?,
            });
            path_set.push(STDIN_NAME.to_string());
            continue;
        }
        // `components()` drops `.` segments: `/work/./specs` -> `/work/specs`.
        let path: PathBuf = cwd.join(input).components().collect();
        let meta = std::fs::metadata(&path).map_err(io_error(Path::new(input)))?;
        let mut paths = Vec::new();
        if meta.is_dir() {
            collect_dir(&path, recursive, &mut paths)?;
        } else {
            paths.push(path.clone());
        }
        path_set.push(path.display().to_string());
        for file in paths {
            let bytes = read_spec_file(&file).map_err(refused(&file))?;
            let base_dir = file.parent().unwrap_or(cwd).display().to_string();
            files.push(SourceFile {
                path: file.display().to_string(),
                base_dir,
                content: text(&file, bytes)?,
            });
        }
    }
    if files.is_empty() {
        return Err(SourceError::Empty {
            inputs: inputs.join(", "),
            hint: if recursive {
                ""
            } else {
                " (use -R to read subdirectories)"
            },
        });
    }
    Ok(SourceSet { files, path_set })
}

/// Like [`read_sources`] with the process's working directory and stdin.
pub fn read_sources_here(inputs: &[String], recursive: bool) -> Result<SourceSet, SourceError> {
    let cwd = std::env::current_dir().map_err(io_error(Path::new(".")))?;
    read_sources(inputs, recursive, &cwd, &mut std::io::stdin().lock())
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn inputs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_directories_and_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("b.yaml"), "b").expect("write");
        std::fs::write(root.join("a.yml"), "a").expect("write");
        std::fs::write(root.join("notes.txt"), "x").expect("write");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/c.yaml"), "c").expect("write");

        let mut stdin: &[u8] = b"from stdin";
        let set = read_sources(&inputs(&[".", "-"]), false, root, &mut stdin).expect("read");
        let names: Vec<&str> = set.files.iter().map(|f| f.content.as_str()).collect();
        assert_eq!(names, ["a", "b", "from stdin"]);
        assert_eq!(set.files[0].base_dir, root.display().to_string());
        assert_eq!(set.files[0].path, root.join("a.yml").display().to_string());
        assert_eq!(set.files[2].path, STDIN_NAME);
        assert_eq!(set.files[2].base_dir, root.display().to_string());
        assert_eq!(
            set.path_set,
            [root.display().to_string(), STDIN_NAME.to_string()]
        );

        let mut none: &[u8] = b"";
        let set = read_sources(&inputs(&["."]), true, root, &mut none).expect("read");
        let names: Vec<&str> = set.files.iter().map(|f| f.content.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(set.files[2].path.ends_with("sub/c.yaml"));
        assert!(Path::new(&set.files[2].base_dir).ends_with("sub"));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut none: &[u8] = b"";
        let err = read_sources(&inputs(&["missing.yaml"]), false, dir.path(), &mut none)
            .expect_err("missing");
        assert!(err.to_string().starts_with("missing.yaml: "), "{err}");

        std::fs::write(dir.path().join("bad.yaml"), b"ok\xff").expect("write");
        let err =
            read_sources(&inputs(&["bad.yaml"]), false, dir.path(), &mut none).expect_err("utf8");
        assert!(
            err.to_string()
                .ends_with("bad.yaml: not UTF-8 text (byte 2 is invalid)"),
            "{err}"
        );

        std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
        let err =
            read_sources(&inputs(&["empty"]), false, dir.path(), &mut none).expect_err("empty");
        assert_eq!(
            err.to_string(),
            "no *.yaml or *.yml files in empty (use -R to read subdirectories)"
        );

        std::fs::create_dir(dir.path().join("pipes")).expect("mkdir");
        let fifo = dir.path().join("pipes/fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        // Named, and found in a directory: refused either way, never opened.
        for input in ["pipes/fifo.yaml", "pipes"] {
            let err =
                read_sources(&inputs(&[input]), false, dir.path(), &mut none).expect_err("fifo");
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: not a regular file (it is a FIFO); spec files must be regular files",
                    fifo.display()
                )
            );
        }
        std::fs::remove_file(&fifo).expect("rm fifo");

        let big = vec![b'#'; banger_specs::load::MAX_FILE_BYTES + 1];
        let err = read_sources(&inputs(&["-"]), false, dir.path(), &mut big.as_slice())
            .expect_err("big stdin");
        assert_eq!(
            err.to_string(),
            "<stdin>: larger than 1024 KiB, the most one spec file may hold"
        );

        let mut twice: &[u8] = b"x";
        let err =
            read_sources(&inputs(&["-", "-"]), false, dir.path(), &mut twice).expect_err("twice");
        assert!(matches!(err, SourceError::StdinTwice));
    }
}
