//! Registry credentials: a docker-style `config.json` given to the daemon with
//! `--registry-auth FILE`, one entry per registry.
//!
//! ```json
//! {"auths": {"registry.example:5000": {"auth": "<base64 of user:password>"},
//!            "https://other.example/v1/": {"username": "u", "password": "p"}}}
//! ```
//!
//! Keys are matched against the registry of a reference (`host[:port]`); a scheme and a
//! path in the key are ignored, as docker does. Credentials are only ever sent to the
//! registry they are listed for (oci-client never authenticates requests addressed
//! elsewhere). `credHelpers`/`credsStore` are not supported and are reported as such.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file cannot be read.
    #[error("--registry-auth {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a docker config.json banger understands.
    #[error("--registry-auth {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (which entry).
        message: String,
    },
}

/// One registry's user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub username: String,
    /// The password (never printed).
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials per registry (`host[:port]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryCredentials {
    by_registry: BTreeMap<String, Credential>,
    /// The file they came from, for messages.
    pub source: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<serde_json::Value>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl RegistryCredentials {
    /// No credentials: every pull is anonymous.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads and checks a docker config.json. Blocking (one small file).
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a docker config.json read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AuthFileError> {
        let invalid = |message: String| AuthFileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: ConfigFile = serde_json::from_str(text)
            .map_err(|e| invalid(format!("not a docker config.json: {e}")))?;
        if file.cred_helpers.is_some() || file.creds_store.is_some() {
            return Err(invalid(
                "credHelpers/credsStore are not supported: list credentials under `auths`".into(),
            ));
        }
        let mut by_registry = BTreeMap::new();
        for (key, entry) in file.auths {
            let registry = registry_of_key(&key);
            if registry.is_empty() {
                return Err(invalid(format!("auths key {key:?} names no registry")));
            }
            let credential = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => decode_auth(&auth).ok_or_else(|| {
                    invalid(format!("auths.{key:?}.auth is not base64 of user:password"))
                })?,
                (None, Some(username), Some(password)) => Credential { username, password },
                _ => {
                    return Err(invalid(format!(
                        "auths.{key:?} has neither `auth` nor `username` and `password`"
                    )))
                }
            };
            by_registry.insert(registry, credential);
        }
        Ok(RegistryCredentials {
            by_registry,
            source: Some(path.to_path_buf()),
        })
    }

    /// The credential for a registry (`host[:port]`), if any.
    pub fn for_registry(&self, registry: &str) -> Option<&Credential> {
        self.by_registry.get(registry).or_else(|| {
            // docker.io's references resolve to index.docker.io and the other way round.
            match registry {
                "index.docker.io" => self.by_registry.get("docker.io"),
                "docker.io" => self.by_registry.get("index.docker.io"),
                _ => None,
            }
        })
    }

    /// The registries credentials are known for.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }
}

/// `https://host:port/v1/` → `host:port`.
fn registry_of_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

fn decode_auth(auth: &str) -> Option<Credential> {
    let bytes = base64_decode(auth.trim())?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credential {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// Standard base64 (with or without padding).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_entries_are_read_per_registry() {
        let text = r#"{"auths": {
            "127.0.0.1:5443": {"auth": "YWxpY2U6czNjcjN0"},
            "https://Registry.Example/v1/": {"username": "bob", "password": "pw:with:colons"}
        }}"#;
        let c = RegistryCredentials::parse(text, Path::new("/etc/auth.json")).unwrap();
        let alice = c.for_registry("127.0.0.1:5443").unwrap();
        assert_eq!(
            (alice.username.as_str(), alice.password.as_str()),
            ("alice", "s3cr3t")
        );
        assert_eq!(c.for_registry("registry.example").unwrap().username, "bob");
        assert!(c.for_registry("127.0.0.1:5000").is_none());
        assert!(
            !format!("{alice:?}").contains("s3cr3t"),
            "passwords are never printed"
        );
    }

    #[test]
    fn bad_files_say_which_entry() {
        let p = Path::new("/a.json");
        let e = RegistryCredentials::parse(r#"{"auths": {"r:1": {"auth": "!!"}}}"#, p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/a.json") && e.contains("r:1") && e.contains("base64"),
            "{e}"
        );
        let e = RegistryCredentials::parse(r#"{"auths": {"r:1": {}}}"#, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither"), "{e}");
        let e = RegistryCredentials::parse(r#"{"credsStore": "desktop"}"#, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(RegistryCredentials::parse("[", p).is_err());
    }
}
