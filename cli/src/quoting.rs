//! Quoting words for the strings `ssh` hands to a shell, and for ssh's own configuration.
//!
//! banger never builds a command line by pasting values into it: every value goes
//! through one of these functions.
//!
//! - [`sh_quote`] / [`sh_join`]: POSIX shell words (`'…'`, a `'` becomes `'\''`). For
//!   the remote command of `ssh` (the guest's shell parses it).
//! - [`proxy_word`]: a word of a `ProxyCommand`. ssh first checks the quotes of the
//!   whole value with its own parser (where a backslash escapes a quote even inside
//!   single quotes), then expands `%` tokens, then runs it with `sh -c`. So a `'` is
//!   written `"'"` and a `\` is written `"\\"` (both parsers agree on those), `%` is
//!   doubled, and control characters (a line break ends an ssh configuration line) are
//!   refused.
//! - [`config_path`]: a path argument in an ssh configuration (`IdentityFile`,
//!   `UserKnownHostsFile`): double-quoted, `%` doubled; `"`, `\`, `$` (ssh expands
//!   `${VAR}` there, with no escape) and control characters are refused. It lives with
//!   the daemon's guest ssh options ([`banger_controller::host::guest_ssh`]), which
//!   both use.

use banger_controller::host::guest_ssh::refuse_control;
pub use banger_controller::host::guest_ssh::{config_path, QuoteError};

/// Characters that never need quoting in a POSIX shell word (`%` is left out: ssh
/// expands it in some strings).
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '=' | '@' | '+' | ',')
}

/// One POSIX shell word that the shell turns back into exactly `word`.
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_plain) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Words joined into one command line that the shell splits back into exactly `words`.
pub fn sh_join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| sh_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word of a `ProxyCommand` (see the module docs).
pub fn proxy_word(word: &str) -> Result<String, QuoteError> {
    refuse_control(word)?;
    if !word.is_empty() && word.chars().all(is_plain) {
        return Ok(word.to_string());
    }
    let mut out = String::from("'");
    for c in word.chars() {
        match c {
            '\'' => out.push_str("'\"'\"'"),
            '\\' => out.push_str("'\"\\\\\"'"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Hostile words: spaces, quotes, expansions, globs, line breaks, `%`, backslashes.
    const HOSTILE: &[&str] = &[
        "plain",
        "",
        "two words",
        "it's",
        "'",
        "''",
        "\"double\"",
        "$(touch /tmp/banger-pwned)",
        "`id`",
        "$HOME ${HOME}",
        "*",
        "a;b|c&d>e<f",
        "line\nbreak",
        "tab\there",
        "100%",
        "%h %%",
        "back\\slash\\",
        "a\\'b",
        "~root",
        "-n",
        "#comment",
        "ünïcødé",
    ];

    /// What `sh -c 'printf "%s\0" LINE'` turns the line into.
    fn sh_words(line: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {line}"))
            .output()
            .expect("run sh");
        assert!(out.status.success(), "sh failed on {line:?}: {out:?}");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut words: Vec<String> = text.split('\0').map(str::to_string).collect();
        words.pop();
        words
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(sh_quote("/usr/bin/banger"), "/usr/bin/banger");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_join(&["echo", "a b", "$x"]), "echo 'a b' '$x'");
    }

    #[test]
    fn the_shell_gets_back_every_hostile_word() {
        for word in HOSTILE {
            assert_eq!(sh_words(&sh_quote(word)), [*word], "sh_quote({word:?})");
        }
        assert_eq!(sh_words(&sh_join(HOSTILE)), HOSTILE);
    }

    #[test]
    fn proxy_words_survive_ssh_then_the_shell() {
        for word in HOSTILE.iter().filter(|w| !w.chars().any(char::is_control)) {
            let quoted = proxy_word(word).expect("quotable");
            // ssh's own parser accepts the quotes and keeps the value as written…
            let out = Command::new("ssh")
                .args(["-G", "-F", "none", "-o"])
                .arg(format!("ProxyCommand=exec {quoted} %h"))
                .arg("vm.banger")
                .output()
                .expect("run ssh -G");
            let config = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ssh refused {quoted:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                config
                    .lines()
                    .any(|l| l == format!("proxycommand exec {quoted} %h")),
                "{word:?}: {config}"
            );
            // …and after ssh's `%` expansion the shell gets the word back.
            let expanded = quoted.replace("%%", "%");
            assert_eq!(sh_words(&expanded), [*word], "proxy_word({word:?})");
        }
        assert!(proxy_word("line\nbreak").is_err());
        assert!(proxy_word("nul\u{7f}").is_err());
    }
}
