//! Planning one Image: resolve it when it was never resolved, when its spec changed or
//! when its files vanished; delete it once no VM uses it.

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
    let step = match f.resolved_generation {
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
    Plan {
        steps: step
            .into_iter()
            .map(|(class, reason)| PlannedStep {
                action: Action::ResolveImage,
                class,
                reason,
            })
            .collect(),
        blocked: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_resolve_once_per_generation_and_wait_for_their_vms() {
        let facts = ImageFacts {
            deleting: false,
            resolved_generation: None,
            generation: 1,
            used_by: vec![],
            files_present: true,
        };
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
}
