//! The spec files the harness writes: Images and VMs in banger's YAML, built from
//! values the harness controls (names, sizes, addresses), and the stand-in image files
//! a simulated daemon's Image names. Strings that come from the
//! file system (paths, kernel arguments) are written as JSON strings, which YAML reads
//! as double-quoted scalars, so no value can break the document.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{BenchError, Result};

/// A YAML double-quoted scalar holding `s`.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// An Image of kernel, optional initrd and rootfs (readiness: the default TCP port 22).
pub fn image(name: &str, kernel: &Path, initrd: Option<&Path>, rootfs: &Path) -> String {
    let mut y = format!(
        "apiVersion: banger.dev/v1alpha1\nkind: Image\nmetadata:\n  name: {name}\nspec:\n  kernel: {}\n",
        quoted(&kernel.to_string_lossy())
    );
    if let Some(initrd) = initrd {
        y.push_str(&format!(
            "  initrd: {}\n",
            quoted(&initrd.to_string_lossy())
        ));
    }
    y.push_str(&format!(
        "  rootfs: {}\n",
        quoted(&rootfs.to_string_lossy())
    ));
    y
}

/// A VM's spec values the harness varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDoc<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its Image.
    pub image: &'a str,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk in MiB.
    pub disk_mib: u64,
    /// A static address, or leased.
    pub ip: Option<Ipv4Addr>,
    /// NAT on or off.
    pub nat: bool,
    /// Extra kernel arguments.
    pub kernel_args: Option<&'a str>,
}

impl<'a> VmDoc<'a> {
    /// A 256 MiB VM with a 1 GiB disk, leased address, NAT on (banger's default).
    pub fn new(name: &'a str, image: &'a str) -> VmDoc<'a> {
        VmDoc {
            name,
            image,
            memory_mib: 256,
            disk_mib: 1024,
            ip: None,
            nat: true,
            kernel_args: None,
        }
    }

    /// The document.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: {}\nspec:\n  image: {}\n  vcpus: 1\n  memory: {}Mi\n  disk: {}Mi\n  network:\n    nat: {}\n",
            self.name, self.image, self.memory_mib, self.disk_mib, self.nat
        );
        if let Some(ip) = self.ip {
            y.push_str(&format!("    ip: \"{ip}\"\n"));
        }
        if let Some(args) = self.kernel_args {
            y.push_str(&format!("  kernelArgs: {}\n", quoted(args)));
        }
        y
    }
}

/// Stand-in kernel and rootfs files for a simulated daemon's Image (the simulated
/// runtime never reads them); returns their paths.
pub fn fake_image_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).map_err(BenchError::io("create", dir))?;
    let kernel = dir.join("vmlinuz");
    let rootfs = dir.join("rootfs.ext4");
    for p in [&kernel, &rootfs] {
        fs::write(p, b"simulated").map_err(BenchError::io("write", p))?;
    }
    Ok((kernel, rootfs))
}

/// Documents joined into one multi-document file.
pub fn join(docs: &[String]) -> String {
    docs.join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_specs::load::parse_document_set;

    fn parse(text: &str) -> banger_specs::FileLoad {
        parse_document_set(text.as_bytes(), "t.yaml", Path::new("/specs"))
    }

    #[test]
    fn writes_valid_documents() {
        let img = image(
            "kit",
            Path::new("/k/vm linuz\"x"),
            Some(Path::new("/k/initrd")),
            Path::new("/k/rootfs.ext4"),
        );
        let mut vm = VmDoc::new("p4-0", "kit");
        vm.ip = Some(Ipv4Addr::new(172, 30, 0, 10));
        vm.kernel_args = Some("module_blacklist=button");
        let load = parse(&join(&[img, vm.yaml()]));
        assert!(load.problems.is_empty(), "{:?}", load.problems);
        assert_eq!(load.objects.len(), 2);
        let image = load.objects[0].resource.spec_json();
        assert_eq!(image["kernel"], "/k/vm linuz\"x");
        let spec = load.objects[1].resource.spec_json();
        assert_eq!(spec["memory"], 256u64 << 20);
        assert_eq!(spec["network"]["ip"], "172.30.0.10");
        assert_eq!(spec["kernelArgs"], "module_blacklist=button");
    }
}
