//! The machine a run measured: cores, memory, CPU, kernel, kind of KVM, load, and the
//! versions of QEMU and banger. Read from `/proc` and `/sys`; a fact that cannot be
//! read is reported as `null`, never guessed.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

/// Which KVM this host has, in the words of `docs/` and the host notes.
pub fn kvm_kind() -> String {
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if !Path::new("/dev/kvm").exists() {
        "none (no /dev/kvm): QEMU runs TCG".into()
    } else if module("kvm_pvm") {
        "kvm_pvm (stock guests cannot use it: QEMU runs TCG)".into()
    } else if module("kvm_intel") {
        "kvm_intel".into()
    } else if module("kvm_amd") {
        "kvm_amd".into()
    } else {
        "/dev/kvm (module unknown)".into()
    }
}

fn first_line_of(program: &Path, args: &[&str]) -> Value {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .map_or(Value::Null, Value::String)
}

fn cpuinfo_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The facts of this machine as JSON.
pub fn facts(banger: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_mib = crate::procfs::status_kib(&meminfo, "MemTotal").map(|k| k / 1024);
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    json!({
        "cores": cores,
        "cpu": cpuinfo_value(&cpuinfo, "model name"),
        "memoryMiB": mem_mib,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "kvm": kvm_kind(),
        "loadAverage": read("/proc/loadavg"),
        "qemu": first_line_of(Path::new("qemu-system-x86_64"), &["--version"]),
        "banger": first_line_of(banger, &["--version"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpuinfo_keys() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\ncpu MHz\t\t: 2000.0\n";
        assert_eq!(
            cpuinfo_value(text, "model name").as_deref(),
            Some("Some CPU @ 2.0GHz")
        );
        assert_eq!(cpuinfo_value(text, "cpu MHz").as_deref(), Some("2000.0"));
        assert_eq!(cpuinfo_value(text, "flags"), None);
    }

    #[test]
    fn describes_this_machine() {
        let f = facts(Path::new("/bin/true"));
        assert!(f["cores"].as_u64().is_some_and(|n| n >= 1));
        assert!(f["kvm"].is_string());
    }
}
