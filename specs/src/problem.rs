//! One problem found while loading specs, printed as one line.

use std::fmt;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The load is invalid.
    Error,
    /// Worth telling, not fatal (for example a reference to an object outside the load).
    Warning,
}

/// A problem with a spec: where, which field, what is wrong.
///
/// Displayed as `file:line:column: field: message` (`file: message` when line is 0) (with `warning: ` in front of the
/// message for warnings); `field` is a dotted path such as `spec.memory`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// File path as given by the user, or `<stdin>`.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path (`spec.network.ip`), when the problem is about one field.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// A problem with a whole file or input (cannot read it, no spec files in a
    /// directory): line and column 0, printed as `file: message`.
    pub fn file_level(file: &str, message: String) -> Problem {
        Problem {
            file: file.to_string(),
            line: 0,
            column: 0,
            field: None,
            message,
            severity: Severity::Error,
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `text` as one line of at most `max_chars` characters: control characters (newlines
/// in a quoted key, say) are escaped, and a longer text is cut with `…`.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown >= max_chars {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A file name may hold a newline; the line stays one line.
        let file = one_line(&self.file, usize::MAX);
        if self.line == 0 {
            write!(f, "{file}: ")?;
        } else {
            write!(f, "{file}:{}:{}: ", self.line, self.column)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}
