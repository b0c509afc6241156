//! "Did you mean" hints and lists of allowed values for error messages.

/// ` (did you mean `x`?)` when a candidate is close to `given`, else an empty string.
///
/// Close means a Jaro-Winkler similarity of at least 0.8 or a case-insensitive match.
pub fn did_you_mean<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let lower = given.to_ascii_lowercase();
    let best = candidates
        .into_iter()
        .map(|c| {
            let score = if c.to_ascii_lowercase() == lower {
                1.0
            } else {
                strsim::jaro_winkler(&lower, &c.to_ascii_lowercase())
            };
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// `` `a`, `b`, `c` `` for a message.
pub fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("memroy", ["memory", "disk"]),
            " (did you mean `memory`?)"
        );
        assert_eq!(
            did_you_mean("Vm", ["Image", "VM", "Workspace"]),
            " (did you mean `VM`?)"
        );
        assert_eq!(did_you_mean("zzzz", ["memory", "disk"]), "");
        assert_eq!(list(&["a", "b"]), "`a`, `b`");
    }
}
