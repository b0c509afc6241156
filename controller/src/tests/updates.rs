//! Image updates on the simulated runtime: a tag that moved is shown
//! (`UpdateAvailable`), never applied behind the user's back; `banger image refresh
//! --apply` or the auto-update annotation applies it; VMs made from the old digest then
//! follow the recreate rule; a reference pinned by digest is never checked.

use super::*;
use crate::refresh::RefreshOutcome;

const TAG: &str = "127.0.0.1:5000/debian:12";

fn oci_image(annotations: &str) -> String {
    format!(
        "apiVersion: banger.dev/v1alpha1
kind: Image
metadata:
  name: deb
{annotations}spec:
  oci: {{ref: \"{TAG}\"}}
"
    )
}

fn digest(h: &Harness) -> String {
    h.status(Kind::Image, "deb").image.unwrap().digest
}

async fn refresh(h: &Harness, apply: bool) -> RefreshOutcome {
    let answer = h.engine.ctl.image_refresh.request("deb", apply);
    h.engine.ctl.queue.retry_now(key(Kind::Image, "deb"));
    bounded("refresh answered", answer).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_shown_and_applied_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(test_config(dir.path()), SimulatedRuntime::new());
    h.sim.move_tag(TAG, "sha256:1111");
    h.apply(
        &[(
            "/s/a.yaml",
            &format!("{}---\n{}", oci_image(""), vm_yaml("a", "deb", "512Mi", "")),
        )],
        |_| {},
    )
    .await
    .unwrap();
    h.until_phase(Kind::Vm, "a", Phase::Running).await;
    assert_eq!(digest(&h), "sha256:1111");
    let status = h.status(Kind::Image, "deb");
    assert!(
        status.image.as_ref().unwrap().default_kernel,
        "no kernel in the spec"
    );

    // The tag moves: a re-resolve (files missing, daemon restart) keeps the digest.
    h.sim.move_tag(TAG, "sha256:2222");
    let rootfs = status.image.unwrap().rootfs;
    h.sim.lose_image_files(&rootfs);
    h.engine.enqueue_all().await.unwrap();
    let uid = h.uid(Kind::Image, "deb");
    h.until("resolved again", |h| {
        h.db()
            .journal_for(&uid, 50)
            .unwrap()
            .iter()
            .filter(|s| s.step == "resolve-image")
            .count()
            == 2
    })
    .await;
    assert_eq!(
        digest(&h),
        "sha256:1111",
        "pinned: the tag's move is not followed"
    );

    // A refresh sees it: UpdateAvailable, nothing applied, the VM untouched.
    let pid = h.status(Kind::Vm, "a").pid;
    let outcome = refresh(&h, false).await;
    assert_eq!(outcome.latest.as_deref(), Some("sha256:2222"));
    assert_eq!(outcome.digest.as_deref(), Some("sha256:1111"));
    assert!(!outcome.applied);
    h.until_condition(
        Kind::Image,
        "deb",
        ConditionType::UpdateAvailable,
        TRUE,
        "NewDigest",
    )
    .await;
    let s = h.status(Kind::Image, "deb");
    let update = status::condition(&s.conditions, ConditionType::UpdateAvailable).unwrap();
    assert!(update.message.contains("sha256:2222") && update.message.contains("--apply"));
    assert_eq!(digest(&h), "sha256:1111");
    assert_eq!(h.status(Kind::Vm, "a").pid, pid);

    // --apply: the Image moves; its VM (made from the old digest) waits for a recreate.
    let outcome = refresh(&h, true).await;
    assert!(outcome.applied);
    assert_eq!(outcome.digest.as_deref(), Some("sha256:2222"));
    h.until_condition(
        Kind::Image,
        "deb",
        ConditionType::UpdateAvailable,
        FALSE,
        "UpToDate",
    )
    .await;
    h.until_condition(Kind::Vm, "a", READY, FALSE, "RecreateBlocked")
        .await;
    assert_eq!(h.status(Kind::Vm, "a").pid, pid, "still the same VMM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_checks_and_the_annotation_applies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.image_check_interval = Duration::from_millis(1);
    let h = Harness::start(config, SimulatedRuntime::new());
    h.sim.move_tag(TAG, "sha256:aaaa");
    let annotated = oci_image("  annotations:\n    banger.dev/auto-update: \"true\"\n");
    h.apply(&[("/s/i.yaml", &annotated)], |_| {}).await.unwrap();
    h.until_phase(Kind::Image, "deb", Phase::Ready).await;
    h.sim.move_tag(TAG, "sha256:bbbb");
    // A resync after the interval checks, finds, and (annotation) applies.
    h.until("the new digest applied", |h| {
        let _ = futures::executor::block_on(h.engine.enqueue_all());
        digest(h) == "sha256:bbbb"
    })
    .await;
    let events = h.events(Kind::Image, "deb");
    assert!(events.iter().any(|e| e.reason == Reason::UpdateApplied));

    // Pinned by digest: never checked.
    let pinned = oci_image("").replace(TAG, "127.0.0.1:5000/debian@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    h.apply(&[("/s/i.yaml", &pinned)], |_| {}).await.unwrap();
    h.until_condition(
        Kind::Image,
        "deb",
        ConditionType::UpdateAvailable,
        FALSE,
        "PinnedByDigest",
    )
    .await;
    let outcome = refresh(&h, true).await;
    assert!(outcome.pinned && !outcome.applied);
}
