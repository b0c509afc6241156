//! What a Workspace copy left in the guest, and what changed there since.
//!
//! A copy writes files into the guest, and the guest's files are the user's work from
//! then on. Before a later copy onto the same disk overwrites anything, banger must
//! know whether the guest changed what the last copy wrote. The host knows exactly what
//! it sent, so the copy records a [`CopyManifest`] while it streams: for every path it
//! wrote, a digest of what it wrote ([`EntryDigest`]: kind, execute bit, SHA-256 of the
//! content or of the link's target). Before the next copy the guest sends those paths
//! back (a tar stream, only the paths of the manifest, so build outputs and other new
//! files never travel) and the same digests are computed host-side; [`CopyManifest::changes`]
//! names every path whose digest differs or that is gone.
//!
//! The guest's git repository is covered by its `HEAD` and the branch ref the copy
//! wrote: a commit made in the guest moves them. Its index is not (git rewrites it on
//! `git status`); a file only staged in the guest is a new file the copy does not
//! touch, but its staging is reset by a copy.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What one path holds, in one line: `f:<sha256>` (a regular file), `x:<sha256>` (an
/// executable one), `l:<sha256 of the target>` (a symlink), `d` (a directory), `o`
/// (anything else).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryDigest(String);

impl EntryDigest {
    /// A regular file whose content hashed to `sha256` (see [`ContentHasher`]).
    pub fn file(executable: bool, sha256: &[u8]) -> Self {
        let kind = if executable { "x" } else { "f" };
        EntryDigest(format!("{kind}:{}", hex::encode(sha256)))
    }

    /// A symbolic link to `target`.
    pub fn symlink(target: &[u8]) -> Self {
        EntryDigest(format!("l:{}", hex::encode(Sha256::digest(target))))
    }

    /// A directory.
    pub fn directory() -> Self {
        EntryDigest("d".to_string())
    }

    /// Anything else (a hard link, a device, a FIFO): never what a copy wrote.
    pub fn other() -> Self {
        EntryDigest("o".to_string())
    }

    /// `file`, `executable file`, `symlink` or `directory`.
    pub fn kind(&self) -> &'static str {
        match self.0.split(':').next() {
            Some("x") => "executable file",
            Some("l") => "symlink",
            Some("d") => "directory",
            Some("o") => "special file",
            _ => "file",
        }
    }
}

/// Hashes a file's content as it streams (the digest of exactly the bytes sent).
#[derive(Debug, Clone, Default)]
pub struct ContentHasher(Sha256);

impl ContentHasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The SHA-256 of everything added.
    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// Every path one copy wrote (relative to the Workspace's guest path, `/`-separated)
/// with what it wrote there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyManifest {
    /// Path -> digest.
    pub entries: BTreeMap<String, EntryDigest>,
}

/// How a path changed in the guest since the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Another content or execute bit.
    Modified,
    /// Gone.
    Removed,
    /// Another kind of entry (a file became a directory or a symlink…).
    Replaced,
}

impl ChangeKind {
    /// `modified`, `removed` or `replaced`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Modified => "modified",
            ChangeKind::Removed => "removed",
            ChangeKind::Replaced => "replaced",
        }
    }
}

/// One path the guest changed since the copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestChange {
    /// The path, relative to the Workspace's guest path.
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
}

/// How many changed paths a message names.
pub const NAMED_CHANGES: usize = 5;

impl CopyManifest {
    /// Records what was written at `path`.
    pub fn insert(&mut self, path: impl Into<String>, digest: EntryDigest) {
        self.entries.insert(path.into(), digest);
    }

    /// Every path of this manifest whose entry in `guest` (what the guest holds at
    /// those paths now) differs or is missing, sorted by path.
    pub fn changes(&self, guest: &BTreeMap<String, EntryDigest>) -> Vec<GuestChange> {
        self.entries
            .iter()
            .filter_map(|(path, sent)| {
                let kind = match guest.get(path) {
                    None => ChangeKind::Removed,
                    Some(now) if now == sent => return None,
                    Some(now) if now.kind() == sent.kind() => ChangeKind::Modified,
                    // An execute bit set or cleared is a modification, not a new kind.
                    Some(now) if now.kind().ends_with("file") && sent.kind().ends_with("file") => {
                        ChangeKind::Modified
                    }
                    Some(_) => ChangeKind::Replaced,
                };
                Some(GuestChange {
                    path: path.clone(),
                    kind,
                })
            })
            .collect()
    }
}

/// One line naming changed paths: `3 paths changed in the guest since the last copy:
/// a.txt (modified), b (removed), c (replaced)`, at most [`NAMED_CHANGES`] named, then
/// `and N more`.
pub fn describe_changes(changes: &[GuestChange]) -> String {
    let named: Vec<String> = changes
        .iter()
        .take(NAMED_CHANGES)
        .map(|c| format!("{} ({})", c.path, c.kind.as_str()))
        .collect();
    let more = changes.len().saturating_sub(NAMED_CHANGES);
    let noun = if changes.len() == 1 { "path" } else { "paths" };
    let mut text = format!(
        "{} {noun} changed in the guest since the last copy: {}",
        changes.len(),
        named.join(", ")
    );
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> EntryDigest {
        EntryDigest::file(false, &Sha256::digest(content.as_bytes()))
    }

    #[test]
    fn unchanged_guests_have_no_changes() {
        let mut m = CopyManifest::default();
        m.insert("a.txt", file("a"));
        m.insert("link", EntryDigest::symlink(b"a.txt"));
        let guest = m.entries.clone();
        assert!(m.changes(&guest).is_empty());
        // New paths in the guest are not changes: a copy never touches them.
        let mut more = guest.clone();
        more.insert("target/build.o".into(), file("x"));
        assert!(m.changes(&more).is_empty());
    }

    #[test]
    fn edits_removals_and_replacements_are_named() {
        let mut m = CopyManifest::default();
        m.insert("a.txt", file("a"));
        m.insert("b.txt", file("b"));
        m.insert("c", file("c"));
        m.insert("run.sh", EntryDigest::file(false, &Sha256::digest(b"#!")));
        m.insert("link", EntryDigest::symlink(b"a.txt"));
        let mut guest = BTreeMap::new();
        guest.insert("a.txt".to_string(), file("edited"));
        guest.insert("c".to_string(), EntryDigest::directory());
        guest.insert(
            "run.sh".to_string(),
            EntryDigest::file(true, &Sha256::digest(b"#!")),
        );
        guest.insert("link".to_string(), EntryDigest::symlink(b"elsewhere"));
        let changes = m.changes(&guest);
        let kinds: Vec<(&str, ChangeKind)> =
            changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("a.txt", ChangeKind::Modified),
                ("b.txt", ChangeKind::Removed),
                ("c", ChangeKind::Replaced),
                ("link", ChangeKind::Modified),
                ("run.sh", ChangeKind::Modified),
            ]
        );
        assert_eq!(
            describe_changes(&changes[..2]),
            "2 paths changed in the guest since the last copy: a.txt (modified), b.txt (removed)"
        );
        let many: Vec<GuestChange> = (0..8)
            .map(|i| GuestChange {
                path: format!("f{i}"),
                kind: ChangeKind::Removed,
            })
            .collect();
        let text = describe_changes(&many);
        assert!(text.starts_with("8 paths changed"), "{text}");
        assert!(text.ends_with("f4 (removed) and 3 more"), "{text}");
    }

    #[test]
    fn manifests_round_trip_as_json() {
        let mut m = CopyManifest::default();
        m.insert("a b.txt", file("a"));
        m.insert("d", EntryDigest::directory());
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"a b.txt\":\"f:"), "{json}");
        assert_eq!(serde_json::from_str::<CopyManifest>(&json).unwrap(), m);
    }
}
