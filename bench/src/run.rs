//! Running programs (argv vectors, never a shell) and reporting their failures.

use std::process::{Command, Output};

use crate::error::{BenchError, Result};

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` characters of a program's stderr, on one line.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    text[start..].replace('\n', " | ")
}

/// Runs `cmd` to completion; an error unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().map_err(|source| BenchError::Spawn {
        program: describe(cmd),
        source,
    })?;
    check(cmd, out)
}

/// An error unless `out` says success.
pub fn check(cmd: &Command, out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(BenchError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: tail(&out.stderr, 400),
        })
    }
}

/// Whether `program` is an executable on `PATH` (or an existing path).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_failing_command_with_its_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = run_ok(&mut cmd).expect_err("fails").to_string();
        assert!(
            err.contains("`sh -c echo oops >&2; exit 3` failed"),
            "{err}"
        );
        assert!(err.contains("oops"), "{err}");
    }

    #[test]
    fn keeps_the_tail() {
        assert_eq!(tail(b"abc\ndef\n", 3), "def");
        assert_eq!(tail(b"ab", 10), "ab");
    }

    #[test]
    fn finds_programs() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-banger-bench"));
    }
}
