//! Finding host executables: a path as given, else the first match in `PATH`, then the
//! sbin directories (where e2fsprogs and nft live, and which a non-root `PATH` may lack).

use std::path::{Path, PathBuf};

/// Resolves `bin`: itself when it has a directory part, else the first executable
/// regular file of that name in `PATH`, `/usr/sbin` or `/sbin`.
pub fn find_executable(bin: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if bin.components().count() > 1 || bin.is_absolute() {
        return is_exec(bin).then(|| bin.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.push(PathBuf::from("/sbin"));
    dirs.into_iter().map(|d| d.join(bin)).find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sbin_tools_and_rejects_missing() {
        assert!(find_executable(Path::new("sh")).is_some());
        assert!(find_executable(Path::new("banger-no-such-tool")).is_none());
        assert!(find_executable(Path::new("/nonexistent/sh")).is_none());
        assert_eq!(
            find_executable(Path::new("/bin/sh")),
            Some(PathBuf::from("/bin/sh"))
        );
    }
}
