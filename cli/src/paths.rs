//! Default locations of the daemon's socket, specs directory and state directory.
//!
//! The daemon's configuration computes the same defaults on its side; both follow one
//! rule: as root, system paths (`/run/banger/banger.sock`, `/etc/banger/specs`,
//! `/var/lib/banger`); otherwise the XDG base directories of the user
//! (`$XDG_RUNTIME_DIR/banger.sock`, `$XDG_CONFIG_HOME/banger/specs`,
//! `$XDG_STATE_HOME/banger`), with the fallbacks `~/.config`, `~/.local/state` and the
//! temporary directory when a variable is unset or empty.

use std::path::PathBuf;

/// The default locations for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPaths {
    /// The daemon's API socket.
    pub socket: PathBuf,
    /// The watched specs directory.
    pub specs_dir: PathBuf,
    /// The daemon's state directory (SQLite file, per-VM directories).
    pub state_dir: PathBuf,
}

/// The environment the defaults depend on, read once so that [`DefaultPaths::for_env`]
/// stays a pure function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathEnv {
    /// Whether the effective user is root.
    pub is_root: bool,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// The temporary directory (`$TMPDIR` or `/tmp`), used when `$XDG_RUNTIME_DIR` is unset.
    pub temp_dir: PathBuf,
}

impl PathEnv {
    /// Reads the current process's environment.
    pub fn current() -> PathEnv {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        PathEnv {
            is_root: nix::unistd::geteuid().is_root(),
            home: var("HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            temp_dir: std::env::temp_dir(),
        }
    }
}

impl DefaultPaths {
    /// The defaults for the current process.
    pub fn current() -> DefaultPaths {
        DefaultPaths::for_env(&PathEnv::current())
    }

    /// The defaults for a given environment.
    pub fn for_env(env: &PathEnv) -> DefaultPaths {
        if env.is_root {
            return DefaultPaths {
                socket: PathBuf::from("/run/banger/banger.sock"),
                specs_dir: PathBuf::from("/etc/banger/specs"),
                state_dir: PathBuf::from("/var/lib/banger"),
            };
        }
        let home = env.home.clone().unwrap_or_else(|| PathBuf::from("."));
        let runtime_dir = env
            .xdg_runtime_dir
            .clone()
            .unwrap_or_else(|| env.temp_dir.clone());
        let config_home = env
            .xdg_config_home
            .clone()
            .unwrap_or_else(|| home.join(".config"));
        let state_home = env
            .xdg_state_home
            .clone()
            .unwrap_or_else(|| home.join(".local/state"));
        DefaultPaths {
            socket: runtime_dir.join("banger.sock"),
            specs_dir: config_home.join("banger").join("specs"),
            state_dir: state_home.join("banger"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_system_paths() {
        let env = PathEnv {
            is_root: true,
            xdg_runtime_dir: Some("/x".into()),
            ..PathEnv::default()
        };
        let paths = DefaultPaths::for_env(&env);
        assert_eq!(paths.socket, PathBuf::from("/run/banger/banger.sock"));
        assert_eq!(paths.specs_dir, PathBuf::from("/etc/banger/specs"));
        assert_eq!(paths.state_dir, PathBuf::from("/var/lib/banger"));
    }

    #[test]
    fn user_uses_xdg_paths() {
        let env = PathEnv {
            is_root: false,
            home: Some("/home/ann".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_config_home: Some("/home/ann/cfg".into()),
            xdg_state_home: None,
            temp_dir: "/tmp".into(),
        };
        let paths = DefaultPaths::for_env(&env);
        assert_eq!(paths.socket, PathBuf::from("/run/user/1000/banger.sock"));
        assert_eq!(paths.specs_dir, PathBuf::from("/home/ann/cfg/banger/specs"));
        assert_eq!(
            paths.state_dir,
            PathBuf::from("/home/ann/.local/state/banger")
        );
    }

    #[test]
    fn user_without_runtime_dir_falls_back_to_the_temp_dir() {
        let env = PathEnv {
            is_root: false,
            temp_dir: "/var/tmp".into(),
            ..PathEnv::default()
        };
        assert_eq!(
            DefaultPaths::for_env(&env).socket,
            PathBuf::from("/var/tmp/banger.sock")
        );
        assert_eq!(
            DefaultPaths::for_env(&env).specs_dir,
            PathBuf::from("./.config/banger/specs")
        );
    }
}
