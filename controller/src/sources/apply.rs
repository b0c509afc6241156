//! The API source: `banger apply`, `diff`, `apply --dry-run`, `delete`.
//!
//! The daemon parses the files itself with the specs crate. An apply is all or nothing:
//! any invalid file (422) or any ownership conflict (409) changes nothing. `--prune`
//! deletes the objects that earlier applies of the *same path set* created and that
//! these files no longer declare; objects of other path sets or of the specs directory
//! are never pruned.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use banger_specs::load::{check_set_knowing, parse_document_set_within, LoadBudget};
use banger_specs::{LoadedObject, ObjectKey, Problem, Resource, Severity};

use super::{upsert, SourceError};
use crate::api::types::{
    ApplyAction, ApplyItem, ApplyRequest, ApplyResponse, DeleteRequest, DeleteResponse, ObjectRef,
    PlannedStepView, SourceFile,
};
use crate::objects::{self, Owner};
use crate::planner::{self, ImageFacts, Plan, WorkspaceFacts};
use crate::reconciler::Engine;
use crate::runtime::VmRuntime;
use crate::status::Phase;
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

/// A plan as the API shows it; a blocked plan ends with a `blocked` pseudo-step whose
/// reason is `Reason: message`.
pub fn plan_view(plan: &Plan) -> Vec<PlannedStepView> {
    plan.steps
        .iter()
        .map(|s| PlannedStepView {
            step: s.action.name().into(),
            change_class: s.class.as_str().into(),
            reason: s.reason.clone(),
        })
        .chain(plan.blocked.iter().map(|b| PlannedStepView {
            step: "blocked".into(),
            change_class: "none".into(),
            reason: format!("{}: {}", b.reason(), b.message()),
        }))
        .collect()
}

/// The plan an object would get if `resource` were its spec now.
pub async fn plan_for<R: VmRuntime>(
    engine: &Engine<R>,
    existing: Option<&StoredObject>,
    resource: &Resource,
    allow_recreate: bool,
) -> Result<Plan, SourceError> {
    let generation = existing.map_or(1, |e| {
        e.generation + i64::from(e.hash != objects::spec_hash(resource))
    });
    let obj = match existing {
        Some(e) => StoredObject {
            resource: resource.clone(),
            generation,
            ..e.clone()
        },
        None => StoredObject {
            uid: objects::new_uid(),
            generation,
            resource: resource.clone(),
            hash: objects::spec_hash(resource),
            owner: Owner::Cli { path_set: vec![] },
            allow_recreate,
            created: String::new(),
            deleting: None,
        },
    };
    Ok(match resource {
        Resource::Vm(vm) => engine.plan_vm_now(&obj, &vm.spec, allow_recreate).await?,
        Resource::Image(_) => {
            let internal = match existing {
                Some(_) => engine.store.get_status(resource.kind(), resource.name())?.1,
                None => Default::default(),
            };
            planner::plan_image(&ImageFacts {
                deleting: obj.deleting.is_some(),
                resolved_generation: internal.resolved_generation,
                generation,
                used_by: vec![],
                files_present: match &internal.resolved {
                    Some(r) => engine.runtime.image_present(r).await,
                    None => false,
                },
            })
        }
        Resource::Workspace(ws) => {
            let vm_running = engine
                .store
                .get_status(banger_specs::Kind::Vm, &ws.spec.vm)?
                .0
                .phase
                == Phase::Running.as_str();
            let bound = match existing {
                Some(_) => {
                    engine
                        .store
                        .get_status(resource.kind(), resource.name())?
                        .1
                        .bound_generation
                        == Some(generation)
                }
                None => false,
            };
            planner::plan_workspace(&WorkspaceFacts {
                deleting: obj.deleting.is_some(),
                vm: ws.spec.vm.clone(),
                vm_running,
                bound,
            })
        }
    })
}

/// The keys of every stored object: what spec files may refer to besides each other.
fn known_keys<R: VmRuntime>(engine: &Engine<R>) -> Result<Vec<ObjectKey>, SourceError> {
    Ok(engine
        .store
        .list_objects(None)?
        .iter()
        .map(|o| o.resource.key())
        .collect())
}

/// `POST /v1/apply`.
pub async fn apply<R: VmRuntime>(
    engine: &Engine<R>,
    req: &ApplyRequest,
) -> Result<ApplyResponse, SourceError> {
    let known = known_keys(engine)?;
    let (mut loaded, warnings) = parse_files(&req.files, &known)?;
    loaded.sort_by_key(|o| planner::kind_order(o.resource.kind(), false));
    let path_set = normalised_path_set(req);
    let _guard = engine.source_lock.lock().await;

    // Check everything before changing anything.
    let mut existing = BTreeMap::new();
    for o in &loaded {
        let key = o.resource.key();
        if let Some(e) = engine.store.get_object(key.kind, &key.name)? {
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
        for o in engine.store.list_objects(None)? {
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

    let mut items = Vec::new();
    for o in &loaded {
        let key = o.resource.key();
        let old = existing.get(&key);
        let plan = plan_for(engine, old, &o.resource, req.allow_recreate).await?;
        let (action, changes) = if req.dry_run {
            match old {
                None => (ApplyAction::Created, Vec::new()),
                Some(e) if e.hash == objects::spec_hash(&o.resource) => {
                    (ApplyAction::Unchanged, Vec::new())
                }
                Some(e) => (
                    ApplyAction::Configured,
                    objects::spec_changes(&e.resource, &o.resource),
                ),
            }
        } else {
            upsert(
                engine,
                &o.resource,
                Owner::Cli {
                    path_set: path_set.clone(),
                },
                req.allow_recreate,
            )?
        };
        items.push(ApplyItem {
            kind: key.kind,
            name: key.name,
            action,
            changes,
            plan: plan_view(&plan),
        });
    }
    for o in prune {
        let key = o.resource.key();
        let mut deleting = o.clone();
        deleting.deleting = Some(String::new());
        let plan = match &o.resource {
            Resource::Vm(vm) => engine.plan_vm_now(&deleting, &vm.spec, false).await?,
            _ => Plan::default(),
        };
        if !req.dry_run {
            super::delete(
                engine,
                key.kind,
                &key.name,
                "pruned by banger apply --prune",
            )?;
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
pub async fn delete<R: VmRuntime>(
    engine: &Engine<R>,
    req: &DeleteRequest,
) -> Result<DeleteResponse, SourceError> {
    let mut refs: Vec<ObjectRef> = req.objects.clone();
    if !req.files.is_empty() {
        let known = known_keys(engine)?;
        let (loaded, _) = parse_files(&req.files, &known)?;
        refs.extend(loaded.iter().map(|o| ObjectRef {
            kind: o.resource.kind(),
            name: o.resource.name().to_string(),
        }));
    }
    refs.sort_by_key(|r| (planner::kind_order(r.kind, true), r.name.clone()));
    refs.dedup();
    let _guard = engine.source_lock.lock().await;
    let mut deleted = Vec::new();
    let mut not_found = Vec::new();
    for r in refs {
        if super::delete(engine, r.kind, &r.name, "deleted by banger delete")? {
            deleted.push(r);
        } else {
            not_found.push(r);
        }
    }
    Ok(DeleteResponse { deleted, not_found })
}
