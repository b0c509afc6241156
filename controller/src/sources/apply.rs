//! The API source: `banger apply`, `diff`, `apply --dry-run`, `delete`.
//!
//! The daemon parses the files itself with the specs crate. An apply is all or nothing:
//! any invalid file (422), any host path a member of the socket's group may not read
//! itself (403, [`super::host_paths`]) or any ownership conflict (409) changes nothing. `--prune`
//! deletes the objects that earlier applies of the *same path set* created and that
//! these files no longer declare; objects of other path sets or of the specs directory
//! are never pruned.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use banger_specs::load::{check_set_knowing, parse_document_set_within, LoadBudget};
use banger_specs::{LoadedObject, ObjectKey, Problem, Resource, Severity};

use super::{upsert_all, SourceError};
use crate::api::types::{
    ApplyAction, ApplyItem, ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, ObjectRef,
    SourceFile,
};
use crate::api::views::plan_view;
use crate::control::Control;
use crate::engine::Facts;
use crate::host::peer::Credentials;
use crate::objects::{self, Owner};
use crate::planner::{self, Plan};
use crate::runtime::VmRuntime;
use crate::store::StoredObject;

/// Parses request files; errors make the whole request invalid. All files of the
/// request share one [`LoadBudget`] (bytes and YAML nodes together).
pub fn parse_files(
    files: &[SourceFile],
    known: &[ObjectKey],
) -> Result<(Vec<LoadedObject>, Vec<Problem>), SourceError> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    let total = files.iter().map(|f| f.content.len()).sum();
    let mut budget = LoadBudget::for_request(total);
    for f in files {
        let load = parse_document_set_within(
            f.content.as_bytes(),
            &f.path,
            Path::new(&f.base_dir),
            &mut budget,
        );
        problems.extend(load.problems);
        objects.extend(load.objects);
    }
    problems.extend(check_set_knowing(&objects, known));
    let (errors, warnings): (Vec<Problem>, Vec<Problem>) = problems
        .into_iter()
        .partition(|p| p.severity == Severity::Error);
    if !errors.is_empty() {
        let message = match errors.len() {
            1 => errors[0].to_string(),
            n => format!("{} (and {} more problems)", errors[0], n - 1),
        };
        return Err(SourceError::Invalid {
            message,
            problems: errors,
        });
    }
    Ok((objects, warnings))
}

fn normalised_path_set(req: &ApplyRequest) -> Vec<String> {
    let set: BTreeSet<String> = if req.path_set.is_empty() {
        req.files.iter().map(|f| f.path.clone()).collect()
    } else {
        req.path_set.iter().cloned().collect()
    };
    set.into_iter().collect()
}

/// The keys of every stored object: what spec files may refer to besides each other.
async fn known_keys(ctl: &Control) -> Result<Vec<ObjectKey>, SourceError> {
    Ok(ctl
        .store
        .list_objects(None)
        .await?
        .iter()
        .map(|o| o.resource.key())
        .collect())
}

/// `POST /v1/apply`. `facts` computes each object's plan (the same facts the engine
/// plans from). `reads_as`: the client's credentials when it is a member of the
/// socket's group (its host paths are checked as it), `None` for root.
pub async fn apply<R: VmRuntime>(
    ctl: &Control,
    facts: &Facts<R>,
    req: &ApplyRequest,
    reads_as: Option<&Credentials>,
) -> Result<ApplyResponse, SourceError> {
    let known = known_keys(ctl).await?;
    let (mut loaded, warnings) = parse_files(&req.files, &known)?;
    if let Some(client) = reads_as {
        super::host_paths::check_readable_by(client, &loaded).await?;
    }
    loaded.sort_by_key(|o| planner::kind_order(o.resource.kind(), false));
    let path_set = normalised_path_set(req);
    let _guard = ctl.sources_lock.lock().await;

    // Check everything before changing anything (the stored objects in one read).
    let keys: Vec<ObjectKey> = loaded.iter().map(|o| o.resource.key()).collect();
    let found = ctl.store.get_objects(keys.clone()).await?;
    let mut existing = BTreeMap::new();
    for (key, e) in keys.into_iter().zip(found) {
        if let Some(e) = e {
            if e.deleting.is_some() {
                return Err(SourceError::Conflict(format!(
                    "{key} is being deleted; wait for it to go, then apply again"
                )));
            }
            if let Owner::SpecsDir { file } = &e.owner {
                if !req.force {
                    return Err(SourceError::Conflict(format!(
                        "{key} is owned by the specs directory ({file}); edit that file, or apply --force to take ownership"
                    )));
                }
            }
            existing.insert(key, e);
        }
    }
    let wanted: BTreeSet<ObjectKey> = loaded.iter().map(|o| o.resource.key()).collect();
    let mut prune = Vec::new();
    if req.prune {
        for o in ctl.store.list_objects(None).await? {
            let key = o.resource.key();
            if o.deleting.is_none()
                && !wanted.contains(&key)
                && o.owner
                    == (Owner::Cli {
                        path_set: path_set.clone(),
                    })
            {
                prune.push(o);
            }
        }
        prune.sort_by_key(|o| planner::kind_order(o.resource.kind(), true));
    }

    // Every plan first (the VMs' records in one read), then every write in one
    // transaction.
    let previews: Vec<(Option<&StoredObject>, &Resource)> = loaded
        .iter()
        .map(|o| (existing.get(&o.resource.key()), &o.resource))
        .collect();
    let plans = facts.preview_all(&previews, req.allow_recreate).await?;
    let outcomes = if req.dry_run {
        loaded
            .iter()
            .map(|o| match existing.get(&o.resource.key()) {
                None => (ApplyAction::Created, Vec::new()),
                Some(e) if e.hash == objects::spec_hash(&o.resource) => {
                    (ApplyAction::Unchanged, Vec::new())
                }
                Some(e) => (
                    ApplyAction::Configured,
                    objects::spec_changes(&e.resource, &o.resource),
                ),
            })
            .collect()
    } else {
        let writes = loaded
            .iter()
            .map(|o| (&o.resource, existing.remove(&o.resource.key())))
            .collect();
        let owner = Owner::Cli {
            path_set: path_set.clone(),
        };
        upsert_all(ctl, writes, owner, req.allow_recreate).await?
    };
    let mut items = Vec::new();
    for ((o, plan), (action, changes)) in loaded.iter().zip(&plans).zip(outcomes) {
        let key = o.resource.key();
        items.push(ApplyItem {
            kind: key.kind,
            name: key.name,
            action,
            changes,
            plan: plan_view(plan),
        });
    }
    for o in prune {
        let key = o.resource.key();
        let mut deleting = o.clone();
        deleting.deleting = Some(String::new());
        let plan = match &o.resource {
            Resource::Vm(_) => facts.preview(Some(&deleting), &o.resource, false).await?,
            Resource::Image(_) | Resource::Workspace(_) => Plan::default(),
        };
        if !req.dry_run {
            super::delete(ctl, key.kind, &key.name, "pruned by banger apply --prune").await?;
        }
        items.push(ApplyItem {
            kind: key.kind,
            name: key.name,
            action: ApplyAction::Pruned,
            changes: vec![],
            plan: plan_view(&plan),
        });
    }
    Ok(ApplyResponse { items, warnings })
}

/// `POST /v1/delete`.
pub async fn delete(ctl: &Control, req: &DeleteRequest) -> Result<DeleteResponse, SourceError> {
    let mut refs: Vec<ObjectRef> = req.objects.clone();
    if !req.files.is_empty() {
        let known = known_keys(ctl).await?;
        let (loaded, _) = parse_files(&req.files, &known)?;
        refs.extend(loaded.iter().map(|o| ObjectRef {
            kind: o.resource.kind(),
            name: o.resource.name().to_string(),
        }));
    }
    refs.sort_by_key(|r| (planner::kind_order(r.kind, true), r.name.clone()));
    refs.dedup();
    let _guard = ctl.sources_lock.lock().await;
    let mut deleted = Vec::new();
    let mut not_found = Vec::new();
    for r in refs {
        if super::delete(ctl, r.kind, &r.name, "deleted by banger delete").await? {
            deleted.push(r);
        } else {
            not_found.push(r);
        }
    }
    Ok(DeleteResponse { deleted, not_found })
}
