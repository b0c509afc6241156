//! Object names, label and annotation keys, and the annotations banger reads.
//!
//! Object names are DNS labels (RFC 1123): 1–63 characters of `a-z`, `0-9` and `-`,
//! starting and ending with a letter or digit. They become host names and seed the
//! names of host objects, which is why they are strict.
//!
//! Label and annotation keys are free-form but must be 1–253 characters with no
//! whitespace or control characters. Keys under the `banger.dev/` prefix are banger's
//! own; the ones it reads are [`ON_REMOVE`], [`ALLOW_RECREATE`] and [`AUTO_UPDATE`].

/// Annotation: what `banger delete`/removal from the spec files does to the object's
/// host state: `Delete` (default), `Orphan` (forget it, leave it running) or `Stop`.
pub const ON_REMOVE: &str = "banger.dev/on-remove";
/// Allowed values of [`ON_REMOVE`].
pub const ON_REMOVE_VALUES: [&str; 3] = ["Delete", "Orphan", "Stop"];
/// Annotation: `"true"` lets banger destroy and recreate the VM when a change cannot be
/// applied in place (`"false"` is the default).
pub const ALLOW_RECREATE: &str = "banger.dev/allow-recreate";
/// Allowed values of [`ALLOW_RECREATE`].
pub const ALLOW_RECREATE_VALUES: [&str; 2] = ["true", "false"];
/// Annotation of an Image: `"true"` applies a new digest of its tag as soon as the
/// update check finds one (`"false"`, the default: the Image shows `UpdateAvailable`
/// and keeps its digest until `banger image refresh NAME --apply`).
pub const AUTO_UPDATE: &str = "banger.dev/auto-update";
/// Allowed values of [`AUTO_UPDATE`].
pub const AUTO_UPDATE_VALUES: [&str; 2] = ["true", "false"];
/// The annotation prefix reserved for banger.
pub const BANGER_PREFIX: &str = "banger.dev/";

/// Longest DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// Longest label or annotation key.
pub const MAX_KEY_LEN: usize = 253;

/// Checks that `name` is a DNS label; the error says what is wrong.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty; use 1-63 characters of a-z, 0-9 and -".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name `{name}` is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if bad.is_ascii_uppercase() {
            " (use lower case)"
        } else {
            ""
        };
        return Err(format!(
            "name `{name}` contains `{}`{hint}; use only a-z, 0-9 and -",
            bad.escape_default()
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "name `{name}` must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label or annotation key: 1–253 characters, no whitespace or control
/// characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".to_string());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "key is {} characters long; at most {MAX_KEY_LEN} are allowed",
            key.len()
        ));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "key `{}` contains whitespace or a control character",
            key.escape_default()
        ));
    }
    Ok(())
}

/// Checks the value of an annotation banger reads. Returns `Ok(None)` for keys banger
/// does not interpret, and `Ok(Some(warning))` for unknown keys under `banger.dev/`.
pub fn check_annotation(key: &str, value: &str) -> Result<Option<String>, String> {
    let allowed: &[&str] = match key {
        ON_REMOVE => &ON_REMOVE_VALUES,
        ALLOW_RECREATE => &ALLOW_RECREATE_VALUES,
        AUTO_UPDATE => &AUTO_UPDATE_VALUES,
        _ if key.starts_with(BANGER_PREFIX) => {
            let hint = crate::suggest::did_you_mean(key, [ON_REMOVE, ALLOW_RECREATE, AUTO_UPDATE]);
            return Ok(Some(format!(
                "banger does not know the annotation `{key}`{hint}"
            )));
        }
        _ => return Ok(None),
    };
    if allowed.contains(&value) {
        Ok(None)
    } else {
        Err(format!(
            "`{value}` is not allowed; expected one of {}",
            crate::suggest::list(allowed)
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "dev", "ci-1", "0", "a-b-c", &"x".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Dev",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_dns_label("Dev").unwrap_err().contains("lower case"));
    }

    #[test]
    fn keys() {
        assert!(check_key("app").is_ok());
        assert!(check_key("banger.dev/on-remove").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a b").is_err());
        assert!(check_key("a\tb").is_err());
        assert!(check_key(&"k".repeat(254)).is_err());
    }

    #[test]
    fn annotations() {
        assert_eq!(check_annotation(ON_REMOVE, "Orphan"), Ok(None));
        assert!(check_annotation(ON_REMOVE, "orphan")
            .unwrap_err()
            .contains("`Delete`, `Orphan`, `Stop`"));
        assert_eq!(check_annotation(ALLOW_RECREATE, "true"), Ok(None));
        assert!(check_annotation(ALLOW_RECREATE, "yes").is_err());
        assert_eq!(check_annotation("example.com/x", "anything"), Ok(None));
        let warning = check_annotation("banger.dev/on-remov", "Delete")
            .unwrap()
            .unwrap();
        assert!(
            warning.contains("did you mean `banger.dev/on-remove`"),
            "{warning}"
        );
    }
}
