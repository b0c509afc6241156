//! Getting a Workspace's work back out of the guest: a binary-safe patch of everything
//! in the guest's copy since the base commit (commits made in the guest, staged and
//! unstaged changes, new files `.gitignore` does not exclude), which `git apply` on a
//! clean checkout of the base commit turns into the guest's tree.
//!
//! Two ways, tried in order:
//!
//! 1. **In the guest, with its git** ([`EXPORT_WITH_GIT`]): a temporary index
//!    (`GIT_INDEX_FILE`, a copy of the guest's own, removed afterwards) gets `git add
//!    -A`, then `git diff --cached --binary BASE` is the patch. The guest repository's
//!    index and `HEAD` never change (the new blobs are only added to its object store).
//!    The script exits [`NO_GUEST_GIT`] when the guest has no git, or no repository
//!    holding the base commit.
//! 2. **On the host** ([`export_from_tree`]): the guest's tree comes back as one tar
//!    stream ([`PULL_TREE`]), is written below a private temporary directory
//!    ([`super::guest_tree::extract_tree`]), and banger's clean git diffs it against the
//!    base commit in a temporary repository that reads the checkout's objects through
//!    `objects/info/alternates` (no copy; the checkout itself is never written: new
//!    blobs go to the temporary repository). `.gitignore` files of the guest's tree
//!    decide what is ignored, as in the guest.
//!
//! Either way the patch is streamed into the file the caller gives.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::git;
use super::guest_tree::extract_tree;
use super::remote::{self, Exit, GuestShell, COPY_TIMEOUT};
use super::CopyError;

/// The exit status of [`EXPORT_WITH_GIT`] when the guest cannot make the patch.
pub const NO_GUEST_GIT: i32 = 42;

/// Makes the patch in the guest (see the module docs). Reads the guest path and the
/// base commit (empty: none) from stdin.
pub const EXPORT_WITH_GIT: &str = r#"IFS= read -r p && IFS= read -r base || exit 2
cd "$p" 2>/dev/null || { echo "banger: no directory $p in the guest" >&2; exit 3; }
command -v git >/dev/null 2>&1 || exit 42
GIT_DIR="$p/.git" GIT_WORK_TREE="$p"
export GIT_DIR GIT_WORK_TREE
[ -d "$GIT_DIR" ] || exit 42
if [ -z "$base" ]; then base=$(git hash-object -t tree /dev/null) || exit 42; fi
git cat-file -e "$base^{tree}" 2>/dev/null || exit 42
t="$GIT_DIR/banger-export-index.$$"
trap 'rm -f "$t"' EXIT
if [ -f "$GIT_DIR/index" ]; then cp "$GIT_DIR/index" "$t" || exit 4; fi
GIT_INDEX_FILE="$t" git add -A -- . || exit 5
GIT_INDEX_FILE="$t" git diff --cached --binary --full-index --no-color --no-ext-diff --no-textconv --no-renames "$base" --"#;

/// Sends the guest path's whole tree back as one tar stream.
pub const PULL_TREE: &str = r#"IFS= read -r p || exit 2; cd "$p" 2>/dev/null || { echo "banger: no directory $p in the guest" >&2; exit 3; }; exec tar -c -f - ."#;

/// How the patch was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMethod {
    /// In the guest, with its git.
    GuestGit,
    /// On the host, from the guest's tree.
    HostDiff,
}

impl ExportMethod {
    /// `guest-git` or `host-diff`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportMethod::GuestGit => "guest-git",
            ExportMethod::HostDiff => "host-diff",
        }
    }
}

/// One export.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// The host checkout (its objects hold the base commit).
    pub source: PathBuf,
    /// The Workspace's guest path.
    pub guest_path: String,
    /// The base commit; `None` when the checkout had none (then: the empty tree).
    pub base: Option<String>,
    /// A private directory for temporary files.
    pub scratch: PathBuf,
}

fn rewind(out: &mut File) -> Result<(), CopyError> {
    out.set_len(0)
        .and_then(|()| out.seek(SeekFrom::Start(0)).map(drop))
        .map_err(|e| CopyError::new("write patch", e.to_string()))
}

/// Writes the patch into `out` (see the module docs); returns how, and its size.
pub async fn export(
    shell: &GuestShell,
    job: ExportJob,
    mut out: File,
) -> Result<(ExportMethod, u64), CopyError> {
    super::stream::check_guest_path(&job.guest_path)?;
    let lines = vec![job.guest_path.clone(), job.base.clone().unwrap_or_default()];
    let sink = out
        .try_clone()
        .map_err(|e| CopyError::new("write patch", e.to_string()))?;
    let drain = move |mut pipe: std::io::PipeReader| {
        let mut sink = sink;
        std::io::copy(&mut pipe, &mut sink)
            .map_err(|e| CopyError::new("write patch", e.to_string()))
    };
    let answer = shell
        .run_allowing(
            "export in the guest",
            EXPORT_WITH_GIT,
            remote::lines(lines),
            drain,
            COPY_TIMEOUT,
            &[NO_GUEST_GIT],
        )
        .await?;
    if let Exit::Success((), bytes) = answer {
        return Ok((ExportMethod::GuestGit, bytes));
    }
    // No git in the guest: the tree comes back and the host makes the patch.
    let (scratch, out) = tokio::task::spawn_blocking({
        let dir = job.scratch.clone();
        move || {
            rewind(&mut out)?;
            let scratch = tempfile::Builder::new()
                .prefix("workspace-export-")
                .tempdir_in(&dir)
                .map_err(|e| CopyError::new("export", format!("{}: {e}", dir.display())))?;
            Ok::<_, CopyError>((scratch, out))
        }
    })
    .await
    .map_err(|e| CopyError::new("export", e.to_string()))??;
    let tree = scratch.path().join("tree");
    let result = async {
        let target = tree.clone();
        shell
            .run(
                "pull guest tree",
                PULL_TREE,
                remote::lines(vec![job.guest_path.clone()]),
                move |pipe| {
                    std::fs::create_dir(&target)
                        .map_err(|e| CopyError::new("read guest tree", e.to_string()))?;
                    extract_tree(pipe, &target)
                },
                COPY_TIMEOUT,
            )
            .await?;
        let (source, base, repo) = (
            job.source.clone(),
            job.base.clone(),
            scratch.path().join("git"),
        );
        tokio::task::spawn_blocking(move || {
            export_from_tree(&source, base.as_deref(), &tree, &repo, out)
        })
        .await
        .map_err(|e| CopyError::new("export", e.to_string()))?
    }
    .await;
    let _ = tokio::task::spawn_blocking(move || scratch.close()).await;
    Ok((ExportMethod::HostDiff, result?))
}

/// The patch of `tree` (a guest's tree, extracted) against `base` (a commit of the
/// checkout at `source`; `None`: the empty tree), made in a new repository at `repo`
/// that borrows the checkout's objects; written into `out`. Returns its size.
pub fn export_from_tree(
    source: &Path,
    base: Option<&str>,
    tree: &Path,
    repo: &Path,
    out: File,
) -> Result<u64, CopyError> {
    let step = |e: git::GitError| CopyError::new("diff on the host", e.to_string());
    let format = git::object_format(source).map_err(step)?;
    let objects = git::objects_dir(source).map_err(step)?;
    let parent = repo.parent().unwrap_or(repo);
    let mut init = git::command(parent);
    let init_args = [
        "init",
        "-q",
        "--template=",
        &format!("--object-format={format}"),
    ];
    init.args(init_args).arg(repo);
    git::output(parent, &init_args, &mut init).map_err(step)?;
    let git_dir = repo.join(".git");
    let alternates = git_dir.join("objects/info/alternates");
    std::fs::create_dir_all(git_dir.join("objects/info"))
        .and_then(|()| std::fs::write(&alternates, format!("{}\n", objects.to_string_lossy())))
        .map_err(|e| {
            CopyError::new("diff on the host", format!("{}: {e}", alternates.display()))
        })?;
    let index = repo.join("export-index");
    // Every git call: the temporary repository, the extracted tree, a temporary index.
    let run = |args: &[&str], stdout: Option<File>| -> Result<Vec<u8>, CopyError> {
        let mut cmd = git::command(repo);
        cmd.arg(format!("--git-dir={}", git_dir.display()))
            .arg(format!("--work-tree={}", tree.display()))
            .env("GIT_INDEX_FILE", &index)
            .args(args);
        if let Some(file) = stdout {
            cmd.stdout(Stdio::from(file));
        }
        git::output(repo, args, &mut cmd).map_err(step)
    };
    let base = match base {
        Some(commit) => commit.to_string(),
        None => git::empty_tree(repo).map_err(step)?,
    };
    let probe = format!("{base}^{{tree}}");
    if run(&["cat-file", "-e", &probe], None).is_err() {
        return Err(CopyError::new(
            "diff on the host",
            format!(
                "base commit {base} is not in the checkout {} any more",
                source.display()
            ),
        ));
    }
    run(&["read-tree", &base], None)?;
    run(&["add", "-A", "--", "."], None)?;
    let sink = out
        .try_clone()
        .map_err(|e| CopyError::new("write patch", e.to_string()))?;
    run(
        &[
            "diff",
            "--cached",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            &base,
            "--",
        ],
        Some(sink),
    )?;
    out.metadata()
        .map(|m| m.len())
        .map_err(|e| CopyError::new("write patch", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A checkout with a commit, and a "guest tree" (a copy of it, then changed).
    fn checkout_and_changed_tree() -> (tempfile::TempDir, tempfile::TempDir, String) {
        let src = tempfile::tempdir().unwrap();
        let p = src.path();
        git::run(p, &["init", "-q"]).unwrap();
        std::fs::write(p.join("keep.txt"), "keep\n").unwrap();
        std::fs::write(p.join("edit.txt"), "before\n").unwrap();
        std::fs::write(p.join("gone.txt"), "gone\n").unwrap();
        std::fs::write(p.join(".gitignore"), "*.log\n").unwrap();
        git::run(p, &["add", "."]).unwrap();
        git::run(p, &["commit", "-qm", "base"]).unwrap();
        let base = git::head_commit(p).unwrap();
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::write(t.join("keep.txt"), "keep\n").unwrap();
        std::fs::write(t.join("edit.txt"), "after\n").unwrap();
        std::fs::write(t.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(t.join("new bin.dat"), [0u8, 1, 2, 255, 0]).unwrap();
        std::fs::write(t.join("debug.log"), "ignored").unwrap();
        std::os::unix::fs::symlink("keep.txt", t.join("link")).unwrap();
        (src, tree, base)
    }

    #[test]
    fn a_host_side_patch_applies_to_the_base_and_gives_the_tree() {
        let (src, tree, base) = checkout_and_changed_tree();
        let before = std::fs::read_dir(src.path().join(".git/objects"))
            .unwrap()
            .count();
        let scratch = tempfile::tempdir().unwrap();
        let patch_path = scratch.path().join("patch");
        let out = File::create(&patch_path).unwrap();
        let size = export_from_tree(
            src.path(),
            Some(&base),
            tree.path(),
            &scratch.path().join("git"),
            out,
        )
        .unwrap();
        assert!(size > 0);
        let patch = std::fs::read(&patch_path).unwrap();
        let text = String::from_utf8_lossy(&patch);
        assert!(text.contains("GIT binary patch"), "{text}");
        assert!(!text.contains("debug.log"), "ignored file exported: {text}");
        // The checkout gained no objects.
        let after = std::fs::read_dir(src.path().join(".git/objects"))
            .unwrap()
            .count();
        assert_eq!(before, after, "the checkout was written");
        // A fresh clone at the base commit, patched, is the tree (ignored file aside).
        let clone = tempfile::tempdir().unwrap();
        let c = clone.path().join("c");
        let status = Command::new("git")
            .args(["clone", "-q"])
            .arg(src.path())
            .arg(&c)
            .status()
            .unwrap();
        assert!(status.success());
        git::run(&c, &["checkout", "-q", &base]).unwrap();
        let mut apply = git::command(&c);
        apply.args(["apply", "--binary"]).arg(&patch_path);
        git::output(&c, &["apply"], &mut apply).unwrap();
        assert_eq!(
            std::fs::read_to_string(c.join("edit.txt")).unwrap(),
            "after\n"
        );
        assert!(!c.join("gone.txt").exists());
        assert_eq!(
            std::fs::read(c.join("new bin.dat")).unwrap(),
            [0u8, 1, 2, 255, 0]
        );
        assert_eq!(
            std::fs::read_link(c.join("link")).unwrap(),
            Path::new("keep.txt")
        );
    }

    #[test]
    fn a_missing_base_commit_is_named() {
        let (src, tree, _) = checkout_and_changed_tree();
        let scratch = tempfile::tempdir().unwrap();
        let out = File::create(scratch.path().join("patch")).unwrap();
        let missing = "0123456789012345678901234567890123456789";
        let err = export_from_tree(
            src.path(),
            Some(missing),
            tree.path(),
            &scratch.path().join("git"),
            out,
        )
        .unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("base commit {missing} is not in the checkout")),
            "{err}"
        );
    }

    /// The guest script, run with the host's shell and git on a repository made the
    /// way a copy makes it, gives the same kind of patch, and leaves the guest's index
    /// and HEAD as they were.
    #[test]
    fn the_guest_script_makes_the_patch_without_touching_index_or_head() {
        let (src, _tree, base) = checkout_and_changed_tree();
        let guest = tempfile::tempdir().unwrap();
        let g = guest.path().join("ws");
        let scratch = tempfile::tempdir().unwrap();
        let repo = super::super::guest_repo::build_guest_repo(src.path(), scratch.path()).unwrap();
        std::fs::create_dir(&g).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(&repo.git_dir)
            .arg(g.join(".git"))
            .status()
            .unwrap();
        assert!(status.success());
        for f in ["keep.txt", "edit.txt", "gone.txt", ".gitignore"] {
            std::fs::copy(src.path().join(f), g.join(f)).unwrap();
        }
        // The guest's own work: an edit, a commit, a deletion, a new file.
        std::fs::write(g.join("edit.txt"), "after\n").unwrap();
        git::run(&g, &["add", "edit.txt"]).unwrap();
        git::run(&g, &["commit", "-qm", "in the guest"]).unwrap();
        std::fs::remove_file(g.join("gone.txt")).unwrap();
        std::fs::write(g.join("new.txt"), "new\n").unwrap();
        let index = std::fs::read(g.join(".git/index")).unwrap();
        let head = git::head_commit(&g).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(EXPORT_WITH_GIT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                writeln!(stdin, "{}\n{base}", g.display())?;
                drop(stdin);
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let patch = String::from_utf8_lossy(&out.stdout);
        for want in [
            "edit.txt",
            "gone.txt",
            "new.txt",
            "+after",
            "deleted file mode",
        ] {
            assert!(patch.contains(want), "{want} missing:\n{patch}");
        }
        assert_eq!(
            std::fs::read(g.join(".git/index")).unwrap(),
            index,
            "index changed"
        );
        assert_eq!(git::head_commit(&g).unwrap(), head, "HEAD moved");
        let leftovers: Vec<_> = std::fs::read_dir(g.join(".git"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("banger-export"))
            .collect();
        assert!(leftovers.is_empty(), "temporary index left");

        // No repository: the script says so with its exit status.
        std::fs::remove_dir_all(g.join(".git")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(EXPORT_WITH_GIT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{}\n{base}", g.display()).unwrap();
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(NO_GUEST_GIT));
    }
}
