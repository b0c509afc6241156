//! Default locations of the daemon's socket, specs directory and state directory.
//!
//! The daemon's configuration computes the same defaults on its side; both follow one
//! rule: as root, system paths (`/run/banger/banger.sock`, `/etc/banger/specs`,
//! `/var/lib/banger`); otherwise the XDG base directories of the user
//! (`$XDG_RUNTIME_DIR/banger.sock`, `$XDG_CONFIG_HOME/banger/specs`,
//! `$XDG_STATE_HOME/banger`), with the fallbacks `~/.config` and `~/.local/state` when a
//! variable is unset or empty. Without `$XDG_RUNTIME_DIR` the socket is
//! `$XDG_STATE_HOME/banger/banger.sock`: never a shared temporary directory, where
//! another user could create the name first and receive the CLI's requests.

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
        let config_home = env
            .xdg_config_home
            .clone()
            .unwrap_or_else(|| home.join(".config"));
        let state_home = env
            .xdg_state_home
            .clone()
            .unwrap_or_else(|| home.join(".local/state"));
        let state_dir = state_home.join("banger");
        let socket = match &env.xdg_runtime_dir {
            Some(runtime_dir) => runtime_dir.join("banger.sock"),
            None => state_dir.join("banger.sock"),
        };
        DefaultPaths {
            socket,
            specs_dir: config_home.join("banger").join("specs"),
            state_dir,
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
    fn user_without_runtime_dir_gets_the_socket_in_the_state_dir() {
        let env = PathEnv {
            is_root: false,
            home: Some("/home/ann".into()),
            ..PathEnv::default()
        };
        let paths = DefaultPaths::for_env(&env);
        assert_eq!(
            paths.socket,
            PathBuf::from("/home/ann/.local/state/banger/banger.sock")
        );
        assert_eq!(paths.socket.parent(), Some(paths.state_dir.as_path()));
        let no_home = DefaultPaths::for_env(&PathEnv::default());
        assert_eq!(no_home.specs_dir, PathBuf::from("./.config/banger/specs"));
        assert!(!no_home.socket.starts_with(std::env::temp_dir()));
    }

    #[test]
    fn the_daemon_computes_the_same_defaults() {
        let some = |p: &str| Some(PathBuf::from(p));
        let envs = [
            PathEnv {
                is_root: true,
                ..PathEnv::default()
            },
            PathEnv {
                home: some("/home/ann"),
                ..PathEnv::default()
            },
            PathEnv {
                home: some("/home/ann"),
                xdg_runtime_dir: some("/run/user/1000"),
                xdg_config_home: some("/cfg"),
                xdg_state_home: some("/state"),
                ..PathEnv::default()
            },
            PathEnv {
                xdg_state_home: some("/state"),
                ..PathEnv::default()
            },
        ];
        for env in envs {
            let lookup = |name: &str| {
                match name {
                    "HOME" => env.home.clone(),
                    "XDG_RUNTIME_DIR" => env.xdg_runtime_dir.clone(),
                    "XDG_CONFIG_HOME" => env.xdg_config_home.clone(),
                    "XDG_STATE_HOME" => env.xdg_state_home.clone(),
                    _ => None,
                }
                .map(PathBuf::into_os_string)
            };
            let (specs_dir, state_dir, socket) =
                banger_controller::config::DaemonConfig::default_paths_from(env.is_root, lookup);
            assert_eq!(
                DefaultPaths::for_env(&env),
                DefaultPaths {
                    socket,
                    specs_dir,
                    state_dir
                },
                "{env:?}"
            );
        }
    }
}
