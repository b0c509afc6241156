//! The git repository a Workspace copy gives the guest: `PATH/.git`, holding the base
//! commit only.
//!
//! The guest gets a repository so that `git status`, `git diff` and `git commit` work
//! there (when the guest has git) and `banger workspace export` can make a patch in the
//! guest. It is made in a temporary directory, never in the user's checkout:
//!
//! 1. `git init` (no templates: no sample hooks) with the checkout's object format;
//! 2. `git fetch --depth=1 SOURCE BASE`: only the base commit (the checkout's `HEAD`),
//!    its tree and blobs, as a shallow repository; upload-pack reads the user's
//!    repository, and nothing in its configuration can run a program there;
//! 3. the checkout's branch name pointed at the base (or a detached `HEAD`), and an
//!    index of the base commit (`git read-tree`), so the guest's `git status` shows what
//!    the copy brought beyond the base commit (the host's uncommitted work) as changes;
//! 4. `FETCH_HEAD` (it names the host path) and reflogs removed.
//!
//! A checkout without commits gives an empty repository on its branch.

use std::path::{Path, PathBuf};

use super::git;
use super::CopyError;

/// A repository made for a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRepo {
    /// Its `.git` directory (inside a temporary directory the caller owns).
    pub git_dir: PathBuf,
    /// The base commit, when the checkout has one.
    pub base: Option<String>,
    /// The branch its `HEAD` is on; `None` when detached.
    pub branch: Option<String>,
}

impl GuestRepo {
    /// The paths below `.git` that a commit, a checkout or a reset in the guest
    /// changes: `HEAD`, and the branch's ref.
    pub fn head_paths(&self) -> Vec<String> {
        let mut paths = vec![".git/HEAD".to_string()];
        if let (Some(branch), Some(_)) = (&self.branch, &self.base) {
            paths.push(format!(".git/refs/heads/{branch}"));
        }
        paths
    }
}

/// Makes the guest's repository for the checkout at `source` in `scratch` (an empty
/// directory the caller removes). See the module docs.
pub fn build_guest_repo(source: &Path, scratch: &Path) -> Result<GuestRepo, CopyError> {
    let step = |e: git::GitError| CopyError::new("guest repository", e.to_string());
    let format = git::object_format(source).map_err(step)?;
    let base = git::head_commit(source);
    let branch = git::head_branch(source).filter(|b| check_branch(b));
    let work = scratch.join("repo");
    git::run(
        scratch,
        &[
            "init",
            "-q",
            "--template=",
            &format!("--object-format={format}"),
            "repo",
        ],
    )
    .map_err(step)?;
    let branch_ref = branch.as_ref().map(|b| format!("refs/heads/{b}"));
    if let Some(base) = &base {
        let mut fetch = git::command(&work);
        let args = [
            "fetch",
            "-q",
            "--depth=1",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
        ];
        fetch.args(args).arg(source).arg(base);
        git::output(&work, &args, &mut fetch).map_err(step)?;
        match &branch_ref {
            Some(r) => {
                git::run(&work, &["update-ref", r, base]).map_err(step)?;
                git::run(&work, &["symbolic-ref", "HEAD", r]).map_err(step)?;
            }
            None => {
                git::run(&work, &["update-ref", "--no-deref", "HEAD", base]).map_err(step)?;
            }
        }
        git::run(&work, &["read-tree", base]).map_err(step)?;
    } else if let Some(r) = &branch_ref {
        git::run(&work, &["symbolic-ref", "HEAD", r]).map_err(step)?;
    }
    let git_dir = work.join(".git");
    for leftover in ["FETCH_HEAD", "logs"] {
        let path = git_dir.join(leftover);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CopyError::new(
                    "guest repository",
                    format!("{}: {e}", path.display()),
                ))
            }
        }
    }
    Ok(GuestRepo {
        git_dir,
        base,
        branch,
    })
}

/// A branch name that can travel as a path below `.git/refs/heads` (git's own rules
/// allow `/` in names; `..` and control characters are refused by git already, but
/// banger does not rely on that).
fn check_branch(branch: &str) -> bool {
    !branch.is_empty()
        && !branch.chars().any(char::is_control)
        && branch
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(dir: &Path, file: &str, content: &str) {
        std::fs::write(dir.join(file), content).unwrap();
        git::run(dir, &["add", file]).unwrap();
        git::run(dir, &["commit", "-qm", file]).unwrap();
    }

    #[test]
    fn the_guest_repository_holds_the_base_commit_only() {
        let src = tempfile::tempdir().unwrap();
        git::run(src.path(), &["init", "-q"]).unwrap();
        commit(src.path(), "one.txt", "1");
        commit(src.path(), "two.txt", "2");
        let head = git::head_commit(src.path()).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let repo = build_guest_repo(src.path(), scratch.path()).unwrap();
        assert_eq!(repo.base.as_deref(), Some(head.as_str()));
        assert_eq!(repo.branch.as_deref(), Some("main"));
        assert_eq!(repo.head_paths(), [".git/HEAD", ".git/refs/heads/main"]);
        let work = repo.git_dir.parent().unwrap();
        assert_eq!(git::head_commit(work).as_deref(), Some(head.as_str()));
        let log = git::run(work, &["log", "--format=%s"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&log), "two.txt\n", "shallow");
        // The index is the base commit's tree: with the files in place, git sees no
        // change.
        std::fs::write(work.join("one.txt"), "1").unwrap();
        std::fs::write(work.join("two.txt"), "2").unwrap();
        let status = git::run(work, &["status", "--porcelain"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&status), "");
        assert!(!repo.git_dir.join("FETCH_HEAD").exists());
        assert!(!repo.git_dir.join("hooks").exists(), "no sample hooks");
        let config = std::fs::read_to_string(repo.git_dir.join("config")).unwrap();
        assert!(
            !config.contains(&src.path().display().to_string()),
            "{config}"
        );
    }

    #[test]
    fn detached_and_empty_checkouts() {
        let src = tempfile::tempdir().unwrap();
        git::run(src.path(), &["init", "-q"]).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let empty = build_guest_repo(src.path(), scratch.path()).unwrap();
        assert_eq!(empty.base, None);
        assert_eq!(empty.head_paths(), [".git/HEAD"]);
        let head = std::fs::read_to_string(empty.git_dir.join("HEAD")).unwrap();
        assert_eq!(head, "ref: refs/heads/main\n");

        commit(src.path(), "a.txt", "a");
        git::run(src.path(), &["checkout", "-q", "--detach"]).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let detached = build_guest_repo(src.path(), scratch.path()).unwrap();
        assert_eq!(detached.branch, None);
        let head = std::fs::read_to_string(detached.git_dir.join("HEAD")).unwrap();
        assert_eq!(head.trim(), detached.base.unwrap());
    }

    #[test]
    fn branch_names_must_be_plain_paths() {
        assert!(check_branch("main"));
        assert!(check_branch("feature/x"));
        for bad in ["", "a//b", "../x", "a/./b", "a\nb"] {
            assert!(!check_branch(bad), "{bad:?}");
        }
    }
}
