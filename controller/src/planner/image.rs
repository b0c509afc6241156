//! Planning one Image: resolve it when it was never resolved, when its spec changed or
//! when its files vanished; check its tag for a new digest when the check is due; move
//! to that digest only when the user applies it; delete it once no VM uses it.

use super::{Action, Blocker, ChangeClass, Plan, PlannedStep};

/// What is wanted for one Image, and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// The object is being deleted.
    pub deleting: bool,
    /// The generation the current resolution was made for (`None`: never resolved).
    pub resolved_generation: Option<i64>,
    /// The object's generation.
    pub generation: i64,
    /// Names of VMs (not yet gone) that use the image.
    pub used_by: Vec<String>,
    /// The resolved files are still present (re-probed at every reconcile).
    pub files_present: bool,
    /// The Image follows an OCI tag (a reference pinned by digest never changes).
    pub follows_tag: bool,
    /// The tag's check is due (the interval passed, or `banger image refresh`).
    pub check_due: bool,
    /// A digest the tag names that the Image does not use yet.
    pub newer: Option<String>,
    /// A newer digest is applied once known (`banger.dev/auto-update: "true"` or
    /// `banger image refresh --apply`).
    pub apply_updates: bool,
}

/// Plans one Image.
pub fn plan_image(f: &ImageFacts) -> Plan {
    if f.deleting {
        let steps = vec![PlannedStep {
            action: Action::RemoveImage,
            class: ChangeClass::Delete,
            reason: "image deleted".into(),
        }];
        let blocked = (!f.used_by.is_empty()).then(|| Blocker::InUse {
            by: f.used_by.clone(),
        });
        return Plan { steps, blocked };
    }
    let resolve = match f.resolved_generation {
        None => Some((ChangeClass::Create, "image not resolved yet".to_string())),
        Some(g) if g != f.generation => Some((
            ChangeClass::Live,
            format!("spec changed (generation {g} -> {})", f.generation),
        )),
        Some(_) if !f.files_present => {
            Some((ChangeClass::Create, "image files missing".to_string()))
        }
        Some(_) => None,
    };
    let mut steps: Vec<PlannedStep> = resolve
        .into_iter()
        .map(|(class, reason)| PlannedStep {
            action: Action::ResolveImage,
            class,
            reason,
        })
        .collect();
    if steps.is_empty() && f.follows_tag {
        if f.check_due {
            steps.push(PlannedStep {
                action: Action::CheckImageUpdate,
                class: ChangeClass::Live,
                reason: "the tag is due to be checked for a new digest".into(),
            });
        } else if let (Some(newer), true) = (&f.newer, f.apply_updates) {
            steps.push(PlannedStep {
                action: Action::ResolveImage,
                class: ChangeClass::Live,
                reason: format!("update applied: the tag names {newer}"),
            });
        }
    }
    Plan {
        steps,
        blocked: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ImageFacts {
        ImageFacts {
            deleting: false,
            resolved_generation: None,
            generation: 1,
            used_by: vec![],
            files_present: true,
            follows_tag: false,
            check_due: false,
            newer: None,
            apply_updates: false,
        }
    }

    #[test]
    fn images_resolve_once_per_generation_and_wait_for_their_vms() {
        let facts = facts();
        assert_eq!(plan_image(&facts).steps[0].class, ChangeClass::Create);
        let same = ImageFacts {
            resolved_generation: Some(1),
            ..facts.clone()
        };
        assert!(plan_image(&same).is_converged());
        let changed = ImageFacts {
            resolved_generation: Some(1),
            generation: 2,
            ..facts.clone()
        };
        assert_eq!(plan_image(&changed).steps[0].class, ChangeClass::Live);
        let in_use = ImageFacts {
            deleting: true,
            used_by: vec!["a".into()],
            ..facts
        };
        assert!(matches!(
            plan_image(&in_use).blocked,
            Some(Blocker::InUse { .. })
        ));
    }

    #[test]
    fn a_moved_tag_is_only_applied_when_asked() {
        let resolved = ImageFacts {
            resolved_generation: Some(1),
            follows_tag: true,
            ..facts()
        };
        assert!(plan_image(&resolved).is_converged(), "nothing due");
        let due = ImageFacts {
            check_due: true,
            ..resolved.clone()
        };
        let plan = plan_image(&due);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].action, Action::CheckImageUpdate);
        // A newer digest is known: shown (UpdateAvailable), never pulled unasked.
        let newer = ImageFacts {
            newer: Some("sha256:new".into()),
            ..resolved.clone()
        };
        assert!(plan_image(&newer).is_converged());
        let apply = ImageFacts {
            apply_updates: true,
            ..newer.clone()
        };
        let plan = plan_image(&apply);
        assert_eq!(plan.steps[0].action, Action::ResolveImage);
        assert!(plan.steps[0].reason.contains("sha256:new"));
        // A reference pinned by digest is never checked.
        let pinned = ImageFacts {
            follows_tag: false,
            check_due: true,
            ..apply
        };
        assert!(plan_image(&pinned).is_converged());
        // Resolution comes first; the check waits for the next round.
        let unresolved = ImageFacts {
            resolved_generation: None,
            ..due
        };
        let plan = plan_image(&unresolved);
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.steps[0].action, Action::ResolveImage);
    }
}
