//! A Workspace's round trip between a user's git checkout on the host and a guest.
//!
//! **Into the guest** ([`copy_into_guest`]):
//! 1. [`checkout::list_files`]: the files git lists (tracked, and untracked ones
//!    `.gitignore` does not exclude for `include: untracked`), with banger's clean git
//!    ([`git`]: no repository-configured program ever runs);
//! 2. [`guest_repo::build_guest_repo`]: a shallow repository holding the base commit
//!    (the checkout's `HEAD`), made in a temporary directory, sent as the guest's
//!    `PATH/.git`;
//! 3. [`stream::write_copy_stream`]: the files, read without following symlinks
//!    ([`checkout::CheckoutReader`]), and the repository, as a tar stream written
//!    straight into `ssh`'s stdin (never held in memory whole), while a
//!    [`manifest::CopyManifest`] of what was sent is recorded;
//! 4. [`remote::EXTRACT`] in the guest (a fixed script: it reads the guest path and
//!    the names to remove from its stdin) extracts it and runs `sync`.
//!
//! **Out of the guest** ([`export::export`]): a binary patch of the guest's copy since
//! the base commit, made by the guest's git with a temporary index, or, without git in
//! the guest, by the host's git from the guest's tree pulled back as tar.
//!
//! **What changed in the guest** ([`guest_changes`]): the guest sends back the paths of
//! the last copy's manifest ([`remote::PULL_PATHS`]); their digests are compared with
//! what was sent ([`manifest`]). A copy onto a guest that changed what the last copy
//! wrote is refused unless forced (the engine's job).
//!
//! Nothing here ever writes into the user's checkout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use banger_specs::IncludeMode;

pub mod checkout;
pub mod export;
pub mod git;
pub mod guest_repo;
pub mod guest_tree;
pub mod manifest;
pub mod remote;
pub mod stream;

use manifest::{CopyManifest, EntryDigest, GuestChange};
use remote::{GuestShell, COPY_TIMEOUT};
use stream::{CopyPlan, StreamSummary};

/// A failed stage of a Workspace's round trip: which step, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct CopyError {
    /// `list files`, `guest repository`, `read checkout`, `send archive`, `ssh copy`, …
    pub step: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CopyError {
    /// An error of `step`.
    pub fn new(step: &'static str, message: impl Into<String>) -> Self {
        CopyError {
            step,
            message: message.into(),
        }
    }
}

/// One copy into a guest, with everything it needs owned (it moves to the thread
/// that writes the stream).
#[derive(Debug, Clone)]
pub struct CopyJob {
    /// The checkout on the host.
    pub source: PathBuf,
    /// Which files.
    pub include: IncludeMode,
    /// Where in the guest (absolute).
    pub guest_path: String,
    /// What the last copy into this same guest wrote, if any: its paths that the
    /// checkout no longer has are removed in the guest first.
    pub previous: Option<CopyManifest>,
    /// A private directory (below banger's state directory) for temporary files.
    pub scratch: PathBuf,
}

/// What one copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Files, bytes and the manifest of what was sent.
    pub summary: StreamSummary,
    /// The base commit (the checkout's `HEAD` the guest repository holds).
    pub base_commit: Option<String>,
}

/// The paths of `previous` that a copy of `files` no longer writes (the guest
/// repository's own paths excepted): removed in the guest before extracting.
pub fn removals(previous: Option<&CopyManifest>, files: &[String]) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let now: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    previous
        .entries
        .keys()
        .filter(|p| !p.starts_with(".git/") && !now.contains(p.as_str()))
        .cloned()
        .collect()
}

/// Copies the checkout into the guest (see the module docs).
pub async fn copy_into_guest(shell: &GuestShell, job: CopyJob) -> Result<CopyOutcome, CopyError> {
    let prepared = tokio::task::spawn_blocking(move || {
        let files = checkout::list_files(&job.source, job.include)?;
        let scratch = tempfile::Builder::new()
            .prefix("workspace-copy-")
            .tempdir_in(&job.scratch)
            .map_err(|e| {
                CopyError::new(
                    "guest repository",
                    format!("{}: {e}", job.scratch.display()),
                )
            })?;
        let repo = guest_repo::build_guest_repo(&job.source, scratch.path())?;
        let removed = removals(job.previous.as_ref(), &files);
        Ok::<_, CopyError>((job, files, scratch, repo, removed))
    })
    .await
    .map_err(|e| CopyError::new("list files", e.to_string()))??;
    let (job, files, scratch, repo, removed) = prepared;
    let base_commit = repo.base.clone();
    let feed = move |pipe| {
        stream::write_copy_stream(
            pipe,
            &CopyPlan {
                source: &job.source,
                files: &files,
                repo: Some(&repo),
                guest_path: &job.guest_path,
                removals: &removed,
            },
        )
    };
    let result = shell
        .run(
            "ssh copy",
            remote::EXTRACT,
            feed,
            remote::discard,
            COPY_TIMEOUT,
        )
        .await;
    // The temporary repository goes whatever happened (its removal is blocking).
    let _ = tokio::task::spawn_blocking(move || scratch.close()).await;
    let (summary, ()) = result?;
    Ok(CopyOutcome {
        summary,
        base_commit,
    })
}

/// What the guest holds now at the paths of `manifest` (below `guest_path`).
pub async fn guest_entries(
    shell: &GuestShell,
    guest_path: &str,
    manifest: &CopyManifest,
) -> Result<BTreeMap<String, EntryDigest>, CopyError> {
    stream::check_guest_path(guest_path)?;
    let mut lines = vec![guest_path.to_string()];
    lines.extend(manifest.entries.keys().cloned());
    let ((), entries) = shell
        .run(
            "read guest files",
            remote::PULL_PATHS,
            remote::lines(lines),
            guest_tree::digest_archive,
            COPY_TIMEOUT,
        )
        .await?;
    Ok(entries)
}

/// The paths the guest changed since the copy that wrote `manifest` (see
/// [`manifest::CopyManifest::changes`]).
pub async fn guest_changes(
    shell: &GuestShell,
    guest_path: &str,
    manifest: &CopyManifest,
) -> Result<Vec<GuestChange>, CopyError> {
    let now = guest_entries(shell, guest_path, manifest).await?;
    Ok(manifest.changes(&now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_what_the_last_copy_wrote_and_this_one_does_not() {
        let mut previous = CopyManifest::default();
        for p in ["a", "gone", "sub/old", ".git/HEAD", ".git/refs/heads/old"] {
            previous.insert(p, EntryDigest::directory());
        }
        let files = vec!["a".to_string(), "new".to_string()];
        assert_eq!(removals(Some(&previous), &files), ["gone", "sub/old"]);
        assert!(removals(None, &files).is_empty());
    }
}
