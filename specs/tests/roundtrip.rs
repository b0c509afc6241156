//! Property tests of the canonical form: canonicalising is idempotent, printing a
//! canonical object then parsing it gives the same object, the JSON store round trip
//! is lossless, and different spellings of one meaning hash alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use banger_specs::canonical::resource_from_json;
use banger_specs::load::parse_document_set;
use banger_specs::Resource;
use proptest::prelude::*;

fn parse(text: &str, base: &str) -> Vec<Resource> {
    let load = parse_document_set(text.as_bytes(), "gen.yaml", Path::new(base));
    let errors: Vec<String> = load
        .problems
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{text}\n{errors:#?}");
    load.objects.into_iter().map(|o| o.resource).collect()
}

/// A size of `mib` MiB written one of several equivalent ways.
fn spell_size(mib: u64, how: u8) -> String {
    match how % 5 {
        0 => format!("{mib}MiB"),
        1 => format!("{mib}Mi"),
        2 => format!("{mib}M"),
        3 => format!("{}", mib * 1024 * 1024),
        _ if mib.is_multiple_of(1024) => format!("{}G", mib / 1024),
        _ => format!("{}KiB", mib * 1024),
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn meta(name: &str, labels: &BTreeMap<String, String>, on_remove: Option<&str>) -> String {
    let mut out = format!("metadata:\n  name: {name}\n");
    if !labels.is_empty() {
        out.push_str("  labels:\n");
        for (k, v) in labels {
            out.push_str(&format!("    {}: {}\n", quoted(k), quoted(v)));
        }
    }
    if let Some(value) = on_remove {
        out.push_str(&format!(
            "  annotations:\n    banger.dev/on-remove: {value}\n"
        ));
    }
    out
}

#[derive(Debug, Clone)]
struct VmInput {
    name: String,
    labels: BTreeMap<String, String>,
    on_remove: Option<&'static str>,
    vcpus: Option<u8>,
    memory_mib: Option<u64>,
    disk_mib: Option<u64>,
    state: Option<&'static str>,
    policy: Option<&'static str>,
    hypervisor: Option<&'static str>,
    nat: Option<bool>,
    ip: Option<[u8; 4]>,
    kernel_args: Option<String>,
}

impl VmInput {
    /// Writes the VM; `how` picks spellings, `explicit` writes defaults out.
    fn render(&self, how: u8, explicit: bool) -> String {
        let mut s = format!(
            "apiVersion: banger.dev/v1alpha1\nkind: VM\n{}spec:\n  image: base\n",
            meta(&self.name, &self.labels, self.on_remove)
        );
        let vcpus = self.vcpus.or(explicit.then_some(1));
        if let Some(v) = vcpus {
            s.push_str(&format!("  vcpus: {v}\n"));
        }
        if let Some(m) = self.memory_mib.or(explicit.then_some(512)) {
            s.push_str(&format!("  memory: {}\n", spell_size(m, how)));
        }
        if let Some(d) = self.disk_mib.or(explicit.then_some(2048)) {
            s.push_str(&format!("  disk: {}\n", spell_size(d, how.wrapping_add(1))));
        }
        if let Some(v) = self.state.or(explicit.then_some("Running")) {
            s.push_str(&format!("  state: {v}\n"));
        }
        if let Some(v) = self.policy.or(explicit.then_some("Always")) {
            s.push_str(&format!("  restartPolicy: {v}\n"));
        }
        if let Some(v) = self.hypervisor.or(explicit.then_some("auto")) {
            s.push_str(&format!("  hypervisor: {v}\n"));
        }
        let nat = self.nat.or(explicit.then_some(true));
        if nat.is_some() || self.ip.is_some() {
            s.push_str("  network:\n");
            if let Some(n) = nat {
                s.push_str(&format!("    nat: {n}\n"));
            }
            if let Some([a, b, c, d]) = self.ip {
                s.push_str(&format!("    ip: {a}.{b}.{c}.{d}\n"));
            }
        }
        if let Some(k) = &self.kernel_args {
            s.push_str(&format!("  kernelArgs: {}\n", quoted(k)));
        }
        s
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-z][a-z0-9./_-]{0,12}", "[ -~]{0,16}", 0..4)
}

fn vm_input() -> impl Strategy<Value = VmInput> {
    (
        (
            name(),
            labels(),
            prop::option::of(prop::sample::select(vec!["Delete", "Orphan", "Stop"])),
        ),
        (
            prop::option::of(1u8..=32),
            prop::option::of(128u64..65536),
            prop::option::of(64u64..1_048_576),
        ),
        (
            prop::option::of(prop::sample::select(vec!["Running", "Stopped"])),
            prop::option::of(prop::sample::select(vec!["Always", "OnFailure", "Never"])),
            prop::option::of(prop::sample::select(vec!["auto", "firecracker", "qemu"])),
        ),
        (
            prop::option::of(any::<bool>()),
            prop::option::of((10u8..=100, any::<u8>(), any::<u8>(), 1u8..=254)),
        ),
        prop::option::of("[a-z0-9=_. -]{1,30}"),
    )
        .prop_map(
            |(
                (name, labels, on_remove),
                (vcpus, memory_mib, disk_mib),
                (state, policy, hypervisor),
                (nat, ip),
                kernel_args,
            )| VmInput {
                name,
                labels,
                on_remove,
                vcpus,
                memory_mib,
                disk_mib,
                state,
                policy,
                hypervisor,
                nat,
                ip: ip.map(|(a, b, c, d)| [a, b, c, d]),
                kernel_args,
            },
        )
}

fn image_text(
    name: &str,
    kernel: &str,
    rootfs: Option<&str>,
    oci: Option<(&str, bool)>,
    port: Option<u16>,
    marker: Option<&str>,
) -> String {
    let mut s = format!("apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: {name}\nspec:\n  kernel: {}\n", quoted(kernel));
    if let Some(r) = rootfs {
        s.push_str(&format!("  rootfs: {}\n", quoted(r)));
    }
    if let Some((r, insecure)) = oci {
        s.push_str(&format!(
            "  oci: {{ref: {}, insecure: {insecure}}}\n",
            quoted(r)
        ));
    }
    match (port, marker) {
        (Some(p), _) => s.push_str(&format!("  readiness: {{tcpPort: {p}}}\n")),
        (None, Some(m)) => s.push_str(&format!("  readiness: {{consoleMarker: {}}}\n", quoted(m))),
        _ => {}
    }
    s
}

/// Checks the canonical-form properties of one parsed resource.
fn check_canonical(resource: &Resource) {
    // Printing the canonical object and parsing it again (from anywhere) gives it back.
    let printed = resource.to_yaml().unwrap();
    let again = parse(&printed, "/somewhere/else");
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0], resource, "{printed}");
    assert_eq!(again[0].spec_hash(), resource.spec_hash());
    // Idempotent: canonicalising the canonical form changes nothing, byte for byte.
    assert_eq!(again[0].to_yaml().unwrap(), printed);
    // The store's JSON round trip.
    assert_eq!(
        resource_from_json(resource.to_json()).as_ref(),
        Ok(resource)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn vm_canonical_form(input in vm_input(), how in any::<u8>()) {
        let parsed = parse(&input.render(how, false), "/specs");
        prop_assert_eq!(parsed.len(), 1);
        check_canonical(&parsed[0]);
        // Other spellings and written-out defaults mean the same object.
        let explicit = parse(&input.render(how.wrapping_add(2), true), "/other");
        prop_assert_eq!(&explicit[0], &parsed[0]);
        prop_assert_eq!(explicit[0].spec_hash(), parsed[0].spec_hash());
    }

    #[test]
    fn image_canonical_form(
        name in name(),
        kernel in "(\\.\\./|\\./|/)?[a-z]{1,8}(/\\.?\\.?/?[a-z]{1,8}){0,3}",
        use_oci in any::<bool>(),
        insecure in any::<bool>(),
        port in prop::option::of(1u16..),
        marker in prop::option::of("[a-z:#$ ]{0,10}[a-z:#$]"),
    ) {
        let text = if use_oci {
            image_text(&name, &kernel, None, Some(("127.0.0.1:5000/base:1", insecure)), port, marker.as_deref())
        } else {
            image_text(&name, &kernel, Some("img/root.ext4"), None, port, marker.as_deref())
        };
        let parsed = parse(&text, "/a/b/c");
        let Resource::Image(image) = &parsed[0] else { panic!() };
        let kernel = image.spec.kernel.as_ref().expect("kernel given");
        prop_assert!(kernel.is_absolute());
        prop_assert!(!kernel.components().any(|c| c == std::path::Component::ParentDir));
        check_canonical(&parsed[0]);
    }

    #[test]
    fn workspace_canonical_form(
        name in name(),
        source in "(\\.\\./|/)?[a-z]{1,8}(/[a-z.]{1,8}){0,3}/?",
        path in prop::option::of("(/[a-z.]{1,6}){1,4}/?"),
        include in prop::option::of(prop::sample::select(vec!["tracked", "untracked"])),
    ) {
        prop_assume!(path.as_deref().is_none_or(|p| !p.split('/').any(|c| c == "..")));
        prop_assume!(!source.split('/').any(|c| c == "." || c == ".."));
        let mut text = format!("apiVersion: banger.dev/v1alpha1\nkind: Workspace\nmetadata:\n  name: {name}\nspec:\n  vm: dev\n  source: {}\n", quoted(&source));
        if let Some(p) = &path {
            text.push_str(&format!("  path: {}\n", quoted(p)));
        }
        if let Some(i) = include {
            text.push_str(&format!("  include: {i}\n"));
        }
        let load = parse_document_set(text.as_bytes(), "gen.yaml", Path::new("/x/y"));
        // A path of only `.` components normalises to `/`, which is refused; skip it.
        prop_assume!(load.problems.iter().all(|p| !p.is_error()));
        let resource = &load.objects[0].resource;
        let Resource::Workspace(ws) = resource else { panic!() };
        prop_assert!(ws.spec.path.starts_with('/') && !ws.spec.path.ends_with('/'));
        prop_assert!(ws.spec.source.is_absolute());
        check_canonical(resource);
    }
}
