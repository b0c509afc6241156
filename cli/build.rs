//! Lays out the release binary's code for the daemon (see `cli/symbol-order.txt`).
//!
//! The daemon's resident size is mostly the binary's code pages it maps (BENCHMARKS.md,
//! P5), and the kernel maps code in 64 KiB windows around each page touched: the
//! ~3 MiB of functions the daemon runs, scattered through 14 MiB of code, kept ~9 MiB
//! of it resident. `symbol-order.txt` lists those functions (recorded by
//! `scripts/symbol-order.sh`); the linker places them first, together.
//!
//! Only for release builds linked by LLD, which is what rustc 1.90 and newer use on
//! x86_64-unknown-linux-gnu unless a linker is configured. A name the binary no longer
//! has is ignored (the layout then only gets worse, never wrong), so the list is
//! recorded again after a toolchain or dependency update. `BANGER_SYMBOL_ORDER=0`
//! turns it off.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=BANGER_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = PathBuf::from(dir).join("symbol-order.txt");
    if env::var("BANGER_SYMBOL_ORDER").is_ok_and(|v| v == "0")
        || env::var("PROFILE").as_deref() != Ok("release")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || custom_linker_flags()
        || !rustc_links_with_lld()
        || !order.is_file()
    {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=banger=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=banger=-Wl,--no-warn-symbol-ordering");
}

/// Whether the rustc flags choose a linker or linker flavour themselves.
fn custom_linker_flags() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    flags
        .split('\x1f')
        .any(|f| f.contains("linker") || f.contains("fuse-ld") || f.contains("link-self-contained"))
}

/// Whether this rustc links x86_64-unknown-linux-gnu with its own LLD by default
/// (1.90 and newer).
fn rustc_links_with_lld() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
