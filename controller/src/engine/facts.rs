//! The planner's inputs for one object, gathered from the store and the runtime.
//!
//! One place builds them for every caller: the engine's reconciles, `banger diff`,
//! `apply --dry-run` and `describe` ([`Facts::preview`]). So the plan a preview shows is
//! the plan the engine then runs (same readiness rules, same blockers). The only
//! difference is the lease: a reconcile leases the VM's address first
//! ([`LeaseMode::Allocate`]); a preview takes the address it would get without leasing
//! it ([`LeaseMode::Preview`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_specs::{Kind, Resource, VmSpec};

use crate::clock::unix_now;
use crate::config::DaemonConfig;
use crate::host::names::mac_address_of;
use crate::objects::{self, Owner};
use crate::planner::{
    self, crash_backoff_remaining, CopyTarget, DesiredVm, ImageFacts, Plan, Refusal, SyncRequest,
    WorkspaceFacts,
};
use crate::runtime::{Lease, ObservedVm, ResolvedImage, VmContext, VmHandles, VmRuntime};
use crate::status::{ConditionType, ObjectStatus, Phase};
use crate::store::{gateway_of, Database, InternalState, Store, StoreError, StoredObject};

use super::handles::HandleCache;
use super::observations::{tolerate, Observation, Observations};

/// How a VM's address is found while gathering its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseMode {
    /// Lease one now (the engine's reconcile; honours a static `spec.network.ip`).
    Allocate,
    /// The address a reconcile would lease, without leasing it: a static
    /// `spec.network.ip`, else the lease the VM holds (previews).
    Preview,
    /// Only the lease the VM holds (deletion, recovery).
    Existing,
}

/// Everything the planner needs about one VM.
#[derive(Debug, Clone)]
pub struct VmFacts {
    /// The VM's context: spec, resolved image, lease, handles (what steps run with).
    pub ctx: VmContext,
    /// The context's lease is a reservation beside the VM's active lease: it becomes the
    /// active lease once a VMM runs with it, or none runs with the old address.
    pub lease_pending: bool,
    /// The VM's status as last written.
    pub status: ObjectStatus,
    /// The engine's bookkeeping of the VM (recent restarts).
    pub internal: InternalState,
    /// The object is being deleted.
    pub deleting: bool,
    /// A recreate may run.
    pub allow_recreate: bool,
    /// The address the VM has or would get (`None`: not known, no address change
    /// is planned).
    pub ip: Option<Ipv4Addr>,
    /// What the runtime measured (a failed probe below the threshold keeps the last
    /// good process: see [`super::observations`]).
    pub observed: ObservedVm,
    /// Consecutive failed probes of the VMM, and what the last one said.
    pub probe: (u32, Option<String>),
}

impl VmFacts {
    /// The planner's view of what is wanted, at unix time `now`.
    pub fn desired(&self, now: i64) -> DesiredVm<'_> {
        DesiredVm {
            spec: &self.ctx.spec,
            image: self.ctx.image.as_ref(),
            deleting: self.deleting,
            allow_recreate: self.allow_recreate,
            crash_backoff: crash_backoff_remaining(&self.internal.restarts, now).is_some(),
            ip: self.ip,
        }
    }

    /// The plan, now.
    pub fn plan(&self) -> Plan {
        planner::plan_vm(&self.desired(unix_now()), &self.observed)
    }
}

/// The update-check part of an Image's facts.
struct ImageUpdateFacts {
    follows_tag: bool,
    check_due: bool,
    newer: Option<String>,
    apply_updates: bool,
}

/// Whether an Image follows a tag, whether its check is due at unix time `now`, which
/// newer digest is known, and whether it is applied on its own.
fn image_update_facts(
    obj: &StoredObject,
    internal: &InternalState,
    interval: std::time::Duration,
    now: i64,
) -> ImageUpdateFacts {
    let Resource::Image(image) = &obj.resource else {
        return ImageUpdateFacts {
            follows_tag: false,
            check_due: false,
            newer: None,
            apply_updates: false,
        };
    };
    let reference = image.spec.oci.as_ref().map(|o| o.reference.clone());
    let follows_tag = reference
        .as_deref()
        .is_some_and(|r| !crate::host::oci::is_pinned_by_digest(r));
    // Only a record of the same reference counts (a new reference resolves afresh).
    let record = internal
        .image
        .as_ref()
        .filter(|r| r.reference.is_some() && r.reference == reference);
    let interval = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX);
    ImageUpdateFacts {
        follows_tag,
        check_due: follows_tag
            && record.is_some_and(|r| {
                r.checked_at
                    .is_none_or(|t| now.saturating_sub(t) >= interval)
            }),
        newer: record.and_then(|r| {
            r.latest
                .clone()
                .filter(|latest| *latest != r.resolution.digest)
        }),
        apply_updates: obj
            .resource
            .metadata()
            .annotations
            .get(banger_specs::name::AUTO_UPDATE)
            .is_some_and(|v| v == "true"),
    }
}

/// An object's status and bookkeeping as last written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// The status.
    pub status: ObjectStatus,
    /// The engine's bookkeeping.
    pub internal: InternalState,
}

/// What a Workspace reconcile needs: the planner's facts and, when the VM runs with
/// its guest ready, that VM's context (lease and handles, as its own reconcile recorded
/// them; never leased here).
#[derive(Debug, Clone)]
pub struct WorkspaceInputs {
    /// The planner's facts.
    pub facts: WorkspaceFacts,
    /// The VM to copy into, when there is one.
    pub vm: Option<VmContext>,
}

/// Gathers facts. Cheap to clone.
pub struct Facts<R: VmRuntime> {
    store: Store,
    runtime: Arc<R>,
    config: Arc<DaemonConfig>,
    /// Every VM's last handles (see [`HandleCache`]).
    pub(crate) handles: Arc<HandleCache>,
    /// Every VM's last observation (see [`Observations`]).
    pub(super) observations: Arc<Observations>,
}

impl<R: VmRuntime> Clone for Facts<R> {
    fn clone(&self) -> Self {
        Facts {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            config: self.config.clone(),
            handles: self.handles.clone(),
            observations: self.observations.clone(),
        }
    }
}

impl<R: VmRuntime> Facts<R> {
    /// Facts over this store, runtime and configuration.
    pub fn new(store: Store, runtime: Arc<R>, config: Arc<DaemonConfig>) -> Self {
        Facts {
            store,
            runtime,
            config,
            handles: Arc::new(HandleCache::default()),
            observations: Arc::new(Observations::default()),
        }
    }

    /// A VM's context: resolved image, lease (see [`LeaseMode`]) and handles.
    pub async fn vm_context(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        mode: LeaseMode,
    ) -> Result<VmContext, StoreError> {
        Ok(self.read_vm(obj, spec, mode, false, false).await?.0)
    }

    /// What to read for one VM (see [`read_vm_records`]). A VM `never_stored` (a
    /// preview of a new object) has a fresh uid: it holds no lease, handles or status.
    fn vm_read(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        mode: LeaseMode,
        with_status: bool,
        never_stored: bool,
    ) -> VmRead {
        VmRead {
            uid: obj.uid.clone(),
            name: obj.resource.name().to_string(),
            mac: mac_address_of(&obj.uid),
            image: spec.image.clone(),
            want: spec.network.ip,
            mode,
            read_handles: !never_stored && self.handles.get(&obj.uid).is_none(),
            with_status,
            never_stored,
        }
    }

    /// A VM's context, whether its lease is a reservation beside the VM's active lease
    /// (an address change; see [`crate::store::Database::lease`]) and, with
    /// `with_status`, its status as last written: all in one store trip (the lease, the
    /// Image's resolution, the handles unless cached, the status).
    async fn read_vm(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        mode: LeaseMode,
        with_status: bool,
        never_stored: bool,
    ) -> Result<(VmContext, bool, Option<(ObjectStatus, InternalState)>), StoreError> {
        let read = self.vm_read(obj, spec, mode, with_status, never_stored);
        let records = match self.cached_vm_records(&read) {
            Some(records) => records,
            None => {
                let (network, prefix) = (self.config.bridge_network, self.config.bridge_prefix);
                self.store
                    .run("read vm", move |db| {
                        read_vm_records(db, &read, network, prefix, &mut HashMap::new())
                    })
                    .await?
            }
        };
        Ok(self.vm_context_from(obj, spec, records))
    }

    /// What [`read_vm_records`] would read, from the store's cache alone (no trip):
    /// `None` unless every part is cached and no lease needs a write.
    fn cached_vm_records(&self, r: &VmRead) -> Option<VmRecords> {
        let cache = self.store.cached()?;
        let missing = |part: &'static str| {
            tracing::trace!(vm = %r.name, part, "not cached: a store trip reads the VM");
        };
        if r.never_stored {
            let Some(image) = cache.image_resolution(&r.image) else {
                missing("image resolution");
                return None;
            };
            return Some(VmRecords::never_stored(r, image));
        }
        if r.read_handles {
            missing("handles");
            return None;
        }
        let lease = match r.mode {
            LeaseMode::Allocate => cache
                .lease_grant(&r.uid, r.want)
                .map(|grant| (Some(grant.ip), grant.pending)),
            LeaseMode::Preview => cache
                .active_lease(&r.uid)
                .map(|held| (r.want.or(held), false)),
            LeaseMode::Existing => cache.active_lease(&r.uid).map(|held| (held, false)),
        };
        let Some((ip, pending)) = lease else {
            missing("lease");
            return None;
        };
        let Some(image) = cache.image_resolution(&r.image) else {
            missing("image resolution");
            return None;
        };
        let status = match r.with_status {
            true => match cache.status(Kind::Vm, &r.name) {
                Some(status) => Some(status),
                None => {
                    missing("status");
                    return None;
                }
            },
            false => None,
        };
        Some(VmRecords {
            ip,
            pending,
            image,
            handles: None,
            status,
            never_stored: false,
        })
    }

    /// Builds a VM's context from what [`read_vm_records`] read.
    fn vm_context_from(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        records: VmRecords,
    ) -> (VmContext, bool, Option<(ObjectStatus, InternalState)>) {
        let cfg = &self.config;
        // A never-stored VM's fresh uid is not remembered: nothing would ever forget it.
        let handles = match (self.handles.get(&obj.uid), records.handles) {
            (Some(h), _) => h,
            (None, read) if records.never_stored => read.unwrap_or_default(),
            (None, read) => self
                .handles
                .put_if_absent(&obj.uid, &read.unwrap_or_default()),
        };
        let ctx = VmContext {
            uid: obj.uid.clone(),
            name: obj.resource.name().to_string(),
            spec: spec.clone(),
            image: records.image,
            lease: records.ip.map(|ip| Lease {
                ip,
                mac: mac_address_of(&obj.uid),
                gateway: gateway_of(cfg.bridge_network, cfg.bridge_prefix),
                prefix: cfg.bridge_prefix,
            }),
            bridge: cfg.bridge_name.clone(),
            deleting: obj.deleting.is_some(),
            handles,
            vm_dir: cfg.vm_dir(&obj.uid),
        };
        (ctx, records.pending, records.status)
    }

    /// Gathers one VM's facts: its context, its bookkeeping and an observation — a
    /// fresh one for the engine ([`LeaseMode::Allocate`], [`LeaseMode::Existing`]), the
    /// engine's last one for previews ([`LeaseMode::Preview`]; a probe only when the
    /// engine has not observed the VM yet). `allow_recreate` adds to what the object and
    /// its annotation allow.
    pub async fn vm(
        &self,
        obj: &StoredObject,
        spec: &VmSpec,
        mode: LeaseMode,
        allow_recreate: bool,
    ) -> Result<VmFacts, StoreError> {
        let (ctx, lease_pending, stored) = self.read_vm(obj, spec, mode, true, false).await?;
        Ok(self
            .vm_facts_from(obj, ctx, lease_pending, stored, mode, allow_recreate, false)
            .await)
    }

    /// A VM's facts from its context and stored status: adds the observation. A VM
    /// `never_stored` (a preview of a new object) has a fresh uid that names no host
    /// object: nothing is probed for it.
    #[allow(clippy::too_many_arguments)]
    async fn vm_facts_from(
        &self,
        obj: &StoredObject,
        ctx: VmContext,
        lease_pending: bool,
        stored: Option<(ObjectStatus, InternalState)>,
        mode: LeaseMode,
        allow_recreate: bool,
        never_stored: bool,
    ) -> VmFacts {
        let (status, internal) = stored.unwrap_or_default();
        let ip = ctx.lease.as_ref().map(|l| l.ip);
        let observation = match (mode, self.observations.last(&obj.uid)) {
            (LeaseMode::Preview, Some(last)) => last,
            (LeaseMode::Preview, None) if never_stored => Observation {
                observed: ObservedVm::nothing(),
                failed_probes: 0,
                probe_error: None,
            },
            (LeaseMode::Preview, None) => Observation {
                observed: self.runtime.observe(&ctx).await,
                failed_probes: 0,
                probe_error: None,
            },
            (LeaseMode::Allocate | LeaseMode::Existing, _) => self.probe(&ctx).await,
        };
        VmFacts {
            ctx,
            lease_pending,
            status,
            internal,
            deleting: obj.deleting.is_some(),
            allow_recreate: allow_recreate
                || obj.allow_recreate
                || objects::allow_recreate_annotation(&obj.resource),
            ip,
            observed: observation.observed,
            probe: (observation.failed_probes, observation.probe_error),
        }
    }

    /// Probes a VM, tolerates a failed probe below the threshold, and records the
    /// observation for previews.
    async fn probe(&self, ctx: &VmContext) -> Observation {
        let fresh = self.runtime.observe(ctx).await;
        let last = self.observations.last(&ctx.uid);
        let observation = tolerate(fresh, last.as_ref(), self.config.probe_failure_threshold);
        self.observations.record(&ctx.uid, observation.clone());
        observation
    }

    /// Observes a VM again (after steps ran), keeping everything else.
    pub async fn observe_again(&self, facts: &mut VmFacts) {
        let observation = self.probe(&facts.ctx).await;
        facts.observed = observation.observed;
        facts.probe = (observation.failed_probes, observation.probe_error);
    }

    /// One Image's facts, with its status and bookkeeping as last written.
    pub async fn image(&self, obj: &StoredObject) -> Result<(ImageFacts, Stored), StoreError> {
        let name = obj.resource.name();
        let deleting = obj.deleting.is_some();
        let (status, internal) = self.store.get_status(Kind::Image, name).await?;
        let used_by = if deleting {
            self.store.referrers(Kind::Vm, name).await?
        } else {
            Vec::new()
        };
        let files_present = match &internal.resolved {
            Some(r) if !deleting => self.runtime.image_present(r).await,
            _ => false,
        };
        let update =
            image_update_facts(obj, &internal, self.config.image_check_interval, unix_now());
        let facts = ImageFacts {
            deleting,
            resolved_generation: internal.resolved_generation,
            generation: obj.generation,
            used_by,
            files_present,
            follows_tag: update.follows_tag,
            check_due: update.check_due,
            newer: update.newer,
            apply_updates: update.apply_updates,
        };
        Ok((facts, Stored { status, internal }))
    }

    /// One Workspace's facts, with the context of its VM when that VM runs with its
    /// guest ready (phase Running, `GuestReady=True`, a VMM handle), and its status and
    /// bookkeeping as last written.
    pub async fn workspace(
        &self,
        obj: &StoredObject,
        vm: &str,
    ) -> Result<(WorkspaceInputs, Stored), StoreError> {
        let (status, internal) = self
            .store
            .get_status(Kind::Workspace, obj.resource.name())
            .await?;
        let deleting = obj.deleting.is_some();
        let vm_ctx = if deleting {
            None
        } else {
            self.ready_vm(vm).await?
        };
        let target = vm_ctx
            .as_ref()
            .filter(|ctx| ctx.handles.process.is_some())
            .map(|ctx| CopyTarget {
                vm_uid: ctx.uid.clone(),
                disk_id: ctx.handles.disk_id.clone(),
            });
        let copied = internal.synced.as_ref().map(|s| {
            (
                s.generation,
                CopyTarget {
                    vm_uid: s.vm_uid.clone(),
                    disk_id: s.disk_id.clone(),
                },
            )
        });
        let request = self
            .store
            .sync_request(&obj.uid)
            .await?
            .map(|r| SyncRequest {
                serial: r.serial,
                force: r.force,
            });
        let refused = internal.refused.as_ref().map(|r| Refusal {
            generation: r.generation,
            target: CopyTarget {
                vm_uid: r.vm_uid.clone(),
                disk_id: r.disk_id.clone(),
            },
            request: r.request,
            changes: r.changes.clone(),
        });
        let facts = WorkspaceFacts {
            deleting,
            name: obj.resource.name().to_string(),
            vm: vm.to_string(),
            generation: obj.generation,
            target,
            copied,
            served_request: internal.synced.as_ref().map_or(0, |s| s.request),
            request,
            refused,
        };
        Ok((
            WorkspaceInputs {
                facts,
                vm: vm_ctx.filter(|c| c.handles.process.is_some()),
            },
            Stored { status, internal },
        ))
    }

    /// The context of a VM that runs with its guest ready, as its reconcile last
    /// recorded it (status and handles; the lease it holds).
    async fn ready_vm(&self, vm: &str) -> Result<Option<VmContext>, StoreError> {
        let Some(obj) = self.store.get_object(Kind::Vm, vm).await? else {
            return Ok(None);
        };
        let Resource::Vm(v) = &obj.resource else {
            return Ok(None);
        };
        if obj.deleting.is_some() {
            return Ok(None);
        }
        let (status, _) = self.store.get_status(Kind::Vm, vm).await?;
        if status.phase != Phase::Running || !status.is_true(ConditionType::GuestReady) {
            return Ok(None);
        }
        let ctx = self.vm_context(&obj, &v.spec, LeaseMode::Existing).await?;
        Ok(Some(ctx))
    }

    /// The plan an object would get if `resource` were its spec now (`diff`,
    /// `apply --dry-run`, `describe`). `existing` is the stored object, if any.
    pub async fn preview(
        &self,
        existing: Option<&StoredObject>,
        resource: &Resource,
        allow_recreate: bool,
    ) -> Result<Plan, StoreError> {
        let obj = preview_object(existing, resource, allow_recreate);
        Ok(match resource {
            Resource::Vm(vm) => {
                let mode = LeaseMode::Preview;
                let never_stored = existing.is_none();
                let (ctx, pending, stored) = self
                    .read_vm(&obj, &vm.spec, mode, true, never_stored)
                    .await?;
                self.vm_facts_from(
                    &obj,
                    ctx,
                    pending,
                    stored,
                    mode,
                    allow_recreate,
                    never_stored,
                )
                .await
                .plan()
            }
            Resource::Image(_) => {
                let (mut facts, _) = self.image(&obj).await?;
                if existing.is_none() {
                    facts.resolved_generation = None;
                }
                planner::plan_image(&facts)
            }
            Resource::Workspace(ws) => {
                let (inputs, _) = self.workspace(&obj, &ws.spec.vm).await?;
                let mut facts = inputs.facts;
                if existing.is_none() {
                    facts.copied = None;
                    facts.request = None;
                    facts.refused = None;
                }
                planner::plan_workspace(&facts)
            }
        })
    }

    /// [`Self::preview`] of many objects (`apply`), in order: the VMs' records are read
    /// in one store trip.
    pub async fn preview_all(
        &self,
        items: &[(Option<&StoredObject>, &Resource)],
        allow_recreate: bool,
    ) -> Result<Vec<Plan>, StoreError> {
        let objs: Vec<StoredObject> = items
            .iter()
            .map(|(existing, resource)| preview_object(*existing, resource, allow_recreate))
            .collect();
        let reads: Vec<VmRead> = objs
            .iter()
            .zip(items)
            .filter_map(|(o, (existing, _))| match &o.resource {
                Resource::Vm(vm) => {
                    Some(self.vm_read(o, &vm.spec, LeaseMode::Preview, true, existing.is_none()))
                }
                Resource::Image(_) | Resource::Workspace(_) => None,
            })
            .collect();
        let (network, prefix) = (self.config.bridge_network, self.config.bridge_prefix);
        let mut records = self
            .store
            .run("read vms", move |db| {
                let mut images = HashMap::new();
                reads
                    .iter()
                    .map(|r| read_vm_records(db, r, network, prefix, &mut images))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .into_iter();
        let mut plans = Vec::with_capacity(items.len());
        for (obj, (existing, resource)) in objs.iter().zip(items) {
            let read = match resource {
                Resource::Vm(_) => records.next(),
                Resource::Image(_) | Resource::Workspace(_) => None,
            };
            let plan = match (resource, read) {
                (Resource::Vm(vm), Some(read)) => {
                    let (ctx, pending, stored) = self.vm_context_from(obj, &vm.spec, read);
                    self.vm_facts_from(
                        obj,
                        ctx,
                        pending,
                        stored,
                        LeaseMode::Preview,
                        allow_recreate,
                        existing.is_none(),
                    )
                    .await
                    .plan()
                }
                _ => self.preview(*existing, resource, allow_recreate).await?,
            };
            plans.push(plan);
        }
        Ok(plans)
    }
}

/// The object a preview plans for: the stored one with `resource` as its spec (its
/// generation moved if the spec changed), or a new one with a fresh uid.
fn preview_object(
    existing: Option<&StoredObject>,
    resource: &Resource,
    allow_recreate: bool,
) -> StoredObject {
    let generation = existing.map_or(1, |e| {
        e.generation + i64::from(e.hash != objects::spec_hash(resource))
    });
    match existing {
        Some(e) => StoredObject {
            resource: resource.clone(),
            generation,
            ..e.clone()
        },
        None => StoredObject {
            // Never stored: a fresh uid names no host object.
            uid: crate::ids::new_uid(),
            generation,
            resource: resource.clone(),
            hash: objects::spec_hash(resource),
            owner: Owner::Cli { path_set: vec![] },
            allow_recreate,
            created: String::new(),
            deleting: None,
        },
    }
}

/// What to read from the store for one VM's facts.
struct VmRead {
    uid: String,
    name: String,
    mac: String,
    image: String,
    want: Option<Ipv4Addr>,
    mode: LeaseMode,
    /// The handles are not cached: read them.
    read_handles: bool,
    with_status: bool,
    /// A preview of a new object: its fresh uid holds nothing to read.
    never_stored: bool,
}

/// What [`read_vm_records`] read.
struct VmRecords {
    ip: Option<Ipv4Addr>,
    pending: bool,
    image: Option<ResolvedImage>,
    handles: Option<VmHandles>,
    status: Option<(ObjectStatus, InternalState)>,
    /// Read for a never-stored VM (see [`VmRead::never_stored`]).
    never_stored: bool,
}

impl VmRecords {
    /// What a never-stored VM holds: the address it asks for, no handles, a default
    /// status (as for a VM without a status row); only its Image's resolution is read.
    fn never_stored(r: &VmRead, image: Option<ResolvedImage>) -> Self {
        Self {
            ip: r.want,
            pending: false,
            image,
            handles: None,
            status: r.with_status.then(Default::default),
            never_stored: true,
        }
    }
}

/// Reads (and with [`LeaseMode::Allocate`], leases) what one VM's facts need, on the
/// blocking pool: the lease, its Image's resolution, its handles, its status. `images`
/// remembers the resolutions read so far by this trip (many VMs share an Image).
fn read_vm_records(
    db: &Database,
    r: &VmRead,
    network: Ipv4Addr,
    prefix: u8,
    images: &mut HashMap<String, Option<ResolvedImage>>,
) -> Result<VmRecords, StoreError> {
    let image = match images.get(&r.image) {
        Some(resolution) => resolution.clone(),
        None => {
            let resolution = db.image_resolution(&r.image)?;
            images.insert(r.image.clone(), resolution.clone());
            resolution
        }
    };
    if r.never_stored {
        return Ok(VmRecords::never_stored(r, image));
    }
    let (ip, pending) = match r.mode {
        LeaseMode::Allocate => {
            let grant = db.lease(&r.uid, &r.mac, r.want, network, prefix)?;
            (Some(grant.ip), grant.pending)
        }
        LeaseMode::Preview => {
            let held = db.lease_of(&r.uid)?.map(|(ip, _)| ip);
            (r.want.or(held), false)
        }
        LeaseMode::Existing => (db.lease_of(&r.uid)?.map(|(ip, _)| ip), false),
    };
    Ok(VmRecords {
        ip,
        pending,
        image,
        handles: if r.read_handles {
            Some(db.get_handles(&r.uid)?.unwrap_or_default())
        } else {
            None
        },
        status: if r.with_status {
            Some(db.get_status(Kind::Vm, &r.name)?)
        } else {
            None
        },
        never_stored: false,
    })
}
