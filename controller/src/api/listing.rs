//! `GET /v1/objects`: the list written straight from the stored text.
//!
//! A list of 1,000 VMs is about 2 MB of JSON. Going through the typed values (parse
//! every document into a spec, every status into an [`ObjectStatus`], map both to
//! [`ObjectView`]s, serialise) spends most of its time allocating and freeing. The
//! store already holds JSON in exactly the shape the wire needs, so this module
//! copies it:
//!
//! - `spec` is the `spec` member of the stored document, as is: the document is the
//!   canonical JSON of the typed resource (keys sorted, no whitespace; see
//!   [`crate::objects::document_json`]), which is what [`ObjectView::spec`] serialises
//!   to.
//! - `metadata` comes from the row's columns and the document's labels and
//!   annotations (plus `banger.dev/owner`), written in [`ObjectMetaView`]'s order.
//! - `status` is the stored text as it is when the store marked it so (`as_listed`: a
//!   status without an Image resolution serialises exactly as [`StatusView`] does, so
//!   most rows are copied unread). Otherwise it is the stored [`ObjectStatus`] member
//!   by member, in [`StatusView`]'s order, with the Image resolution's members lifted
//!   out of `image` (the view flattens it): every member is copied as text; only its
//!   keys are read.
//!
//! The result is byte for byte what serialising the typed [`ObjectList`] gives; the
//! tests below hold the two paths to that.
//!
//! [`ObjectStatus`]: crate::status::ObjectStatus
//! [`ObjectView`]: super::types::ObjectView
//! [`ObjectView::spec`]: super::types::ObjectView::spec
//! [`ObjectMetaView`]: super::types::ObjectMetaView
//! [`StatusView`]: super::types::StatusView
//! [`ObjectList`]: super::types::ObjectList

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use banger_specs::{Kind, API_VERSION};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::objects::{Owner, ANNOTATION_OWNER};
use crate::status::ObjectStatus;
use crate::store::{Database, StoreError, StoredRow};

/// Why a list could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The rows could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored row that cannot be written out: its text is not what the store writes.
    #[error("{kind}/{name}: stored {part} does not parse: {source}")]
    Corrupt {
        /// The object's kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// `document`, `owner` or `status`.
        part: &'static str,
        /// What the parser said.
        source: serde_json::Error,
    },
}

/// The parts of a stored document the list needs; the rest is skipped.
#[derive(Deserialize)]
struct StoredDocument<'a> {
    #[serde(borrow)]
    metadata: StoredMetadata<'a>,
    #[serde(borrow)]
    spec: &'a RawValue,
}

#[derive(Deserialize)]
struct StoredMetadata<'a> {
    #[serde(borrow, default)]
    labels: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    #[serde(borrow, default)]
    annotations: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// A stored [`ObjectStatus`], member by member, each as its JSON text. Its members are
/// [`ObjectStatus`]'s; the test `every_status_member_is_copied` fails when one is added
/// there and not here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredStatus<'a> {
    #[serde(borrow)]
    phase: &'a RawValue,
    #[serde(borrow)]
    observed_generation: &'a RawValue,
    #[serde(borrow, default)]
    conditions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ip: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pid: Option<&'a RawValue>,
    #[serde(borrow, default)]
    hypervisor: Option<&'a RawValue>,
    #[serde(borrow, default)]
    handles: Option<&'a RawValue>,
    #[serde(borrow, default)]
    base_commit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    copied_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    last_sync_request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pull: Option<&'a RawValue>,
}

/// `{"items": [...]}` of every object (of `kind`), by kind then name: the body of
/// `GET /v1/objects`, written while the store hands over its rows (nothing is copied
/// out of SQLite first). Runs on the store's thread.
pub fn write_list(db: &Database, kind: Option<Kind>) -> Result<Vec<u8>, ListingError> {
    // Room for as much as the last list took (and a little more): a long list is then
    // written without growing (and copying) its buffer again and again. Reserved room
    // that is never written costs no memory.
    let hint = LAST_LIST_BYTES.load(Ordering::Relaxed);
    let mut out = Vec::with_capacity((hint + hint / 8).max(64 << 10));
    out.extend_from_slice(b"{\"items\":[");
    let mut first = true;
    db.for_each_stored(kind, |row| {
        if !first {
            out.push(b',');
        }
        first = false;
        write_object(&row, &mut out)
    })?;
    out.extend_from_slice(b"]}");
    LAST_LIST_BYTES.store(out.len(), Ordering::Relaxed);
    Ok(out)
}

/// The size of the last list written ([`write_list`]'s first reservation).
static LAST_LIST_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Appends `value` as a JSON string or number.
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and integers into a Vec: serde_json cannot fail here.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends `,"key":` (or `"key":` first in an object).
fn key(out: &mut Vec<u8>, first: bool, name: &str) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_object(row: &StoredRow<'_>, out: &mut Vec<u8>) -> Result<(), ListingError> {
    let error = |part, source| ListingError::Corrupt {
        kind: row.kind.as_str(),
        name: row.name.to_string(),
        part,
        source,
    };
    let document: StoredDocument<'_> =
        serde_json::from_str(row.document).map_err(|e| error("document", e))?;
    let owner: Owner = serde_json::from_str(row.owner).map_err(|e| error("owner", e))?;

    out.push(b'{');
    key(out, true, "apiVersion");
    json(out, API_VERSION);
    key(out, false, "kind");
    json(out, &row.kind);
    key(out, false, "metadata");
    out.push(b'{');
    key(out, true, "name");
    json(out, &row.name);
    key(out, false, "uid");
    json(out, &row.uid);
    key(out, false, "generation");
    json(out, &row.generation);
    key(out, false, "creationTimestamp");
    json(out, &row.created);
    if let Some(deleting) = &row.deleting {
        key(out, false, "deletionTimestamp");
        json(out, deleting);
    }
    let StoredMetadata {
        labels,
        mut annotations,
    } = document.metadata;
    if !labels.is_empty() {
        key(out, false, "labels");
        json(out, &labels);
    }
    annotations.insert(ANNOTATION_OWNER.into(), owner.label().into());
    key(out, false, "annotations");
    json(out, &annotations);
    out.push(b'}');
    key(out, false, "spec");
    out.extend_from_slice(document.spec.get().as_bytes());
    key(out, false, "status");
    match row.status {
        Some(text) if row.status_as_listed => out.extend_from_slice(text.as_bytes()),
        Some(text) => {
            let status: StoredStatus<'_> =
                serde_json::from_str(text).map_err(|e| error("status", e))?;
            write_status(&status, out);
        }
        None => json(out, &super::views::status_view(&ObjectStatus::default())),
    }
    out.push(b'}');
    Ok(())
}

/// A stored status in [`super::types::StatusView`]'s order and shape.
fn write_status(s: &StoredStatus<'_>, out: &mut Vec<u8>) {
    let member = |out: &mut Vec<u8>, first: bool, name: &str, value: Option<&RawValue>| {
        if let Some(value) = value {
            key(out, first, name);
            out.extend_from_slice(value.get().as_bytes());
        }
    };
    out.push(b'{');
    member(out, true, "phase", Some(s.phase));
    member(
        out,
        false,
        "observedGeneration",
        Some(s.observed_generation),
    );
    key(out, false, "conditions");
    out.extend_from_slice(s.conditions.map_or("[]", RawValue::get).as_bytes());
    member(out, false, "ip", s.ip);
    member(out, false, "pid", s.pid);
    member(out, false, "hypervisor", s.hypervisor);
    member(out, false, "handles", s.handles);
    member(out, false, "baseCommit", s.base_commit);
    member(out, false, "copiedAt", s.copied_at);
    member(out, false, "lastSyncRequest", s.last_sync_request);
    if let Some(image) = s.image {
        // `{"digest":…,…}` → `,"digest":…,…`: the view flattens the resolution.
        let inner = image
            .get()
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or("")
            .trim();
        if !inner.is_empty() {
            out.push(b',');
            out.extend_from_slice(inner.as_bytes());
        }
    }
    if let Some(pull) = s.pull.filter(|p| p.get().trim() != "[]") {
        key(out, false, "pull");
        out.extend_from_slice(pull.get().as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::api::types::ObjectList;
    use crate::api::views::object_view;
    use crate::objects;
    use crate::status::{
        Condition, ConditionStatus, ConditionType, ImageStatus, LayerProgress, Phase, Reason,
    };
    use crate::store::{InternalState, StoredObject};
    use banger_specs::Resource;

    fn condition(type_: ConditionType, status: ConditionStatus, reason: Reason) -> Condition {
        Condition {
            type_,
            status,
            reason,
            message: "a \"quoted\" message\nwith a newline and ünïcode".into(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: 3,
        }
    }

    /// A status with every member set: built without `..Default::default()`, so that a
    /// member added to [`ObjectStatus`] breaks this test until the listing copies it.
    fn full_status() -> ObjectStatus {
        ObjectStatus {
            phase: Phase::Running,
            observed_generation: 3,
            conditions: vec![
                condition(ConditionType::Ready, ConditionStatus::True, Reason::Running),
                condition(
                    ConditionType::Stalled,
                    ConditionStatus::False,
                    Reason::Reconciled,
                ),
            ],
            ip: Some("172.30.0.9".parse().unwrap()),
            pid: Some(4242),
            hypervisor: Some("qemu".into()),
            handles: crate::status::HandlesJson::of(&serde_json::json!({
                "tap": "bg0", "lease": {"ip": "172.30.0.9", "prefix": 24}, "z": [1, 2]
            }))
            .ok(),
            base_commit: Some("0123456789abcdef".into()),
            copied_at: Some("2026-01-01T00:00:10Z".into()),
            last_sync_request: Some(7),
            image: Some(ImageStatus {
                digest: "sha256:abc".into(),
                rootfs: "/s/rootfs.ext4".into(),
                rootfs_bytes: 512 << 20,
                kernel: "/g/vmlinux".into(),
                default_kernel: true,
                guest: Some("init: banger".into()),
                checked_at: Some("2026-01-01T00:00:20Z".into()),
                latest_digest: Some("sha256:def".into()),
            }),
            pull: vec![LayerProgress {
                digest: "sha256:111".into(),
                bytes: 10,
                total: 20,
                done: false,
            }],
        }
    }

    fn stored(db: &Database, resource: Resource, uid: &str, owner: Owner) {
        db.put_object(&StoredObject {
            uid: uid.into(),
            generation: 3,
            hash: objects::spec_hash(&resource),
            resource,
            owner,
            allow_recreate: false,
            created: "2026-01-01T00:00:00Z".into(),
            deleting: None,
        })
        .unwrap();
    }

    /// What the typed path answers for the same store: the reference.
    fn typed_list(db: &Database, kind: Option<Kind>) -> Vec<u8> {
        let items = db
            .list_with_status(kind)
            .unwrap()
            .iter()
            .map(|(o, s)| object_view(o, s))
            .collect();
        serde_json::to_vec(&ObjectList { items }).unwrap()
    }

    fn listed(db: &Database, kind: Option<Kind>) -> Vec<u8> {
        write_list(db, kind).unwrap()
    }

    fn store_with_every_kind() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("banger.db")).unwrap();
        let docs = banger_specs::load::parse_document_set(
            br#"apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: base
  labels: {tier: "a \"b\"", app: web}
  annotations: {note: "x"}
spec:
  kernel: /k/vmlinux
  rootfs: /k/rootfs.ext4
---
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: dev
spec:
  image: base
  memory: 512MiB
  kernelArgs: "quiet loglevel=3"
---
apiVersion: banger.dev/v1alpha1
kind: VM
metadata:
  name: bare
spec:
  image: base
---
apiVersion: banger.dev/v1alpha1
kind: Workspace
metadata:
  name: src
spec:
  vm: dev
  source: /home/me/src
  path: /root/src
  include: untracked
"#,
            "t.yaml",
            std::path::Path::new("/specs"),
        );
        assert!(docs.problems.is_empty(), "{:?}", docs.problems);
        let owners = [
            Owner::Cli {
                path_set: vec!["/x".into()],
            },
            Owner::SpecsDir {
                file: "/specs/t.yaml".into(),
            },
        ];
        for (i, doc) in docs.objects.into_iter().map(|o| o.resource).enumerate() {
            let (kind, name) = (doc.kind(), doc.name().to_string());
            stored(&db, doc, &format!("u{i}"), owners[i % 2].clone());
            // `bare` keeps no status row: the list shows the default status. Only an
            // Image's status holds a resolution: the others are listed as stored.
            let mut status = full_status();
            if kind != Kind::Image {
                status.image = None;
            }
            if name != "bare" {
                db.put_status(kind, &name, &status, &InternalState::default())
                    .unwrap();
            }
        }
        db.mark_deleting(Kind::Vm, "dev").unwrap();
        (dir, db)
    }

    #[test]
    fn the_list_is_byte_for_byte_the_typed_views() {
        let (_dir, db) = store_with_every_kind();
        for kind in [
            None,
            Some(Kind::Vm),
            Some(Kind::Image),
            Some(Kind::Workspace),
        ] {
            let fast = listed(&db, kind);
            let typed = typed_list(&db, kind);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(typed).unwrap(),
                "{kind:?}"
            );
        }
        let all: ObjectList = serde_json::from_slice(&listed(&db, None)).unwrap();
        let names: Vec<_> = all
            .items
            .iter()
            .map(|o| format!("{}/{}", o.kind.as_str(), o.metadata.name))
            .collect();
        assert_eq!(names, ["Image/base", "VM/bare", "VM/dev", "Workspace/src"]);
        assert!(all.items[2].metadata.deletion_timestamp.is_some());
        assert_eq!(all.items[0].metadata.labels["tier"], "a \"b\"");
    }

    #[test]
    fn an_empty_store_lists_no_items() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("banger.db")).unwrap();
        assert_eq!(listed(&db, None), b"{\"items\":[]}");
        assert_eq!(listed(&db, None), typed_list(&db, None));
    }

    #[test]
    fn statuses_with_few_members_match_the_typed_views() {
        let (_dir, db) = store_with_every_kind();
        let sparse = ObjectStatus {
            phase: Phase::Pending,
            ..ObjectStatus::default()
        };
        db.put_status(Kind::Vm, "dev", &sparse, &InternalState::default())
            .unwrap();
        assert_eq!(listed(&db, Some(Kind::Vm)), typed_list(&db, Some(Kind::Vm)));
    }

    #[test]
    fn a_status_without_a_resolution_is_stored_as_it_is_listed() {
        let sparse = ObjectStatus {
            phase: Phase::Running,
            ip: Some("10.0.0.2".parse().unwrap()),
            ..ObjectStatus::default()
        };
        let without_pull = ObjectStatus {
            pull: Vec::new(),
            ..full_status()
        };
        // The stored text and what reading it member by member writes.
        let stored_and_read = |status: &ObjectStatus| {
            let stored = serde_json::to_string(status).unwrap();
            let read: StoredStatus<'_> = serde_json::from_str(&stored).unwrap();
            let mut listed = Vec::new();
            write_status(&read, &mut listed);
            (stored, String::from_utf8(listed).unwrap())
        };
        for mut status in [ObjectStatus::default(), sparse, full_status(), without_pull] {
            status.image = None;
            let (stored, read) = stored_and_read(&status);
            assert_eq!(read, stored);
        }
        // With a resolution the two differ: such a row is read.
        let (stored, read) = stored_and_read(&full_status());
        assert_ne!(read, stored);
    }

    #[test]
    fn every_status_member_is_copied() {
        let written = serde_json::to_value(full_status()).unwrap();
        let members: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // Every member of a full status, and only those, is one the listing knows.
        let mut known = [
            "phase",
            "observedGeneration",
            "conditions",
            "ip",
            "pid",
            "hypervisor",
            "handles",
            "baseCommit",
            "copiedAt",
            "lastSyncRequest",
            "image",
            "pull",
        ];
        known.sort_unstable();
        assert_eq!(members, known);
    }

    #[test]
    fn a_corrupt_row_is_named() {
        let (dir, db) = store_with_every_kind();
        drop(db);
        let raw = rusqlite::Connection::open(dir.path().join("banger.db")).unwrap();
        raw.execute(
            "UPDATE objects SET document = '{not json' WHERE kind = 'VM' AND name = 'dev'",
            [],
        )
        .unwrap();
        drop(raw);
        let db = Database::open(&dir.path().join("banger.db")).unwrap();
        let e = write_list(&db, None).unwrap_err();
        assert!(e.to_string().starts_with("VM/dev: stored document"), "{e}");
        // The other kinds' lists do not read the row.
        assert!(write_list(&db, Some(Kind::Image)).is_ok());
    }
}
