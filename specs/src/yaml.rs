//! YAML in and out: the one module that talks to YAML libraries.
//!
//! Reading builds a small tree of [`Node`]s that remembers the line and column of every
//! key and value, from the event stream of `yaml-rust2`. On the way it resolves
//! anchors and aliases (and `<<` merge keys), and reports what YAML itself gets wrong
//! (syntax errors, tabs in indentation, duplicate keys, non-UTF-8 bytes, tags) as
//! [`YamlProblem`]s with positions. Meaning (which fields exist, their types) is
//! [`crate::decode`]'s job.
//!
//! Writing ([`to_yaml_string`]) uses `serde_yaml`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl Mark {
    fn from_marker(m: &Marker) -> Mark {
        Mark {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// A scalar as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The text after YAML unquoting and folding.
    pub text: String,
    /// Written without quotes or block style (so `true` is a boolean, `12` an integer).
    pub plain: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    /// `~`, `null`, or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A decimal integer (may exceed `i64`; `None` when it exceeds `i128`).
    Int(Option<i128>),
    /// A floating-point number.
    Float,
    /// Anything else, or any quoted scalar.
    Str(&'a str),
}

impl Scalar {
    /// Resolves the scalar's type the way YAML 1.2 (core schema) does.
    pub fn resolve(&self) -> Resolved<'_> {
        if !self.plain {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
            | "-.INF" | ".nan" | ".NaN" | ".NAN" => return Resolved::Float,
            _ => {}
        }
        let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
        if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return Resolved::Int(t.parse::<i128>().ok());
        }
        if is_float(unsigned) {
            return Resolved::Float;
        }
        Resolved::Str(t)
    }

    /// A short description of the scalar's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.resolve() {
            Resolved::Null => "null",
            Resolved::Bool(_) => "a boolean",
            Resolved::Int(_) => "an integer",
            Resolved::Float => "a number",
            Resolved::Str(_) => "a string",
        }
    }
}

/// `[0-9]*.[0-9]*([eE][-+]?[0-9]+)?` with at least one digit, or `[0-9]+[eE]…`.
fn is_float(t: &str) -> bool {
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int_part = parts.next().unwrap_or("");
    let frac_part = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int_part)
        && frac_part.is_none_or(digits)
        && (int_part.len() + frac_part.map_or(0, str::len)) > 0
        && (frac_part.is_some() || exponent.is_some());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// One key of a mapping with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (keys are always scalars; others are reported as problems).
    pub key: String,
    /// Where the key is.
    pub key_mark: Mark,
    /// The value.
    pub value: Node,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in document order, without duplicates.
    Map(Vec<Entry>),
}

/// A value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub mark: Mark,
}

impl Node {
    /// The kind of node for error messages: "a mapping", "a list", "a string", ….
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s) => s.type_name(),
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Whether this is a null scalar (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.resolve() == Resolved::Null)
    }

    fn count(&self) -> usize {
        match &self.value {
            Value::Scalar(_) => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.count()).sum::<usize>(),
        }
    }
}

/// One YAML document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The root node (a null scalar for an empty document).
    pub root: Node,
    /// Where the document starts.
    pub start: Mark,
}

/// Something wrong at the YAML level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlProblem {
    /// Where.
    pub mark: Mark,
    /// Dotted path of the key concerned, when known.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The documents of one YAML stream and what was wrong with it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    /// Documents parsed completely (those before a syntax error, if any).
    pub documents: Vec<Document>,
    /// YAML-level problems. After a syntax error the rest of the stream is not read.
    pub problems: Vec<YamlProblem>,
}

/// Deepest nesting accepted (specs are shallow; this stops stack exhaustion).
const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to through aliases (stops "billion laughs").
const MAX_NODES: usize = 100_000;

/// Decodes bytes as UTF-8 (dropping a byte-order mark) or says where the first invalid
/// byte is.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str, YamlProblem> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by construction.
        let prefix = std::str::from_utf8(valid).unwrap_or("");
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        YamlProblem {
            mark: Mark { line, column },
            path: None,
            message: format!(
                "file is not valid UTF-8 (byte 0x{:02X} at offset {}); save it as UTF-8",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        }
    })
}

/// Parses a YAML stream (many documents separated by `---`) into marked trees.
pub fn parse_stream(text: &str) -> Stream {
    let tabs = find_indentation_tabs(text);
    if !tabs.is_empty() {
        return Stream {
            documents: Vec::new(),
            problems: tabs,
        };
    }
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
        nodes: 0,
    };
    let mut documents = Vec::new();
    let _ = builder.stream(&mut documents);
    Stream {
        documents,
        problems: builder.problems,
    }
}

/// Tabs in the indentation of a line: YAML forbids them, and they are the most common
/// cause of baffling syntax errors, so they get their own message.
fn find_indentation_tabs(text: &str) -> Vec<YamlProblem> {
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let indent: String = line
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        if let Some(col) = indent.find('\t') {
            if line[indent.len()..].is_empty() {
                continue; // a blank line of whitespace means nothing
            }
            problems.push(YamlProblem {
                mark: Mark {
                    line: i + 1,
                    column: col + 1,
                },
                path: None,
                message: "tab character in indentation; YAML allows only spaces".to_string(),
            });
        }
    }
    problems
}

/// Stops building after a fatal problem (already recorded).
struct Fatal;

struct Builder<'a> {
    parser: Parser<std::str::Chars<'a>>,
    anchors: HashMap<usize, Node>,
    problems: Vec<YamlProblem>,
    nodes: usize,
}

impl Builder<'_> {
    fn next(&mut self) -> Result<(Event, Mark), Fatal> {
        match self.parser.next_token() {
            Ok((event, marker)) => Ok((event, Mark::from_marker(&marker))),
            Err(e) => {
                self.problems.push(YamlProblem {
                    mark: Mark::from_marker(e.marker()),
                    path: None,
                    message: format!("YAML syntax error: {}", e.info()),
                });
                Err(Fatal)
            }
        }
    }

    fn fatal(&mut self, mark: Mark, path: &[String], message: String) -> Fatal {
        self.problems.push(YamlProblem {
            mark,
            path: dotted(path),
            message,
        });
        Fatal
    }

    fn stream(&mut self, documents: &mut Vec<Document>) -> Result<(), Fatal> {
        loop {
            let (event, mark) = self.next()?;
            match event {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(()),
                Event::DocumentStart => {
                    self.anchors.clear();
                    self.nodes = 0;
                    let (event, node_mark) = self.next()?;
                    let root = self.node(event, node_mark, &mut Vec::new())?;
                    let (end, end_mark) = self.next()?;
                    if end != Event::DocumentEnd {
                        return Err(self.fatal(
                            end_mark,
                            &[],
                            "YAML syntax error: expected the end of the document".into(),
                        ));
                    }
                    let start = if root.is_null() {
                        mark
                    } else {
                        first_mark(&root)
                    };
                    documents.push(Document { root, start });
                }
                _ => {
                    return Err(self.fatal(
                        mark,
                        &[],
                        "YAML syntax error: expected a document".into(),
                    ))
                }
            }
        }
    }

    fn node(&mut self, event: Event, mark: Mark, path: &mut Vec<String>) -> Result<Node, Fatal> {
        if path.len() > MAX_DEPTH {
            return Err(self.fatal(
                mark,
                path,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let node = match event {
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(self.fatal(
                        mark,
                        path,
                        format!(
                            "YAML tags (`{}{}`) are not supported; remove the tag",
                            tag.handle, tag.suffix
                        ),
                    ));
                }
                let node = Node {
                    value: Value::Scalar(Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    }),
                    mark,
                };
                self.remember(anchor, &node);
                node
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(target) => {
                    let mut node = target.clone();
                    self.nodes += node.count();
                    if self.nodes > MAX_NODES {
                        return Err(self.fatal(
                            mark,
                            path,
                            format!("aliases expand to more than {MAX_NODES} nodes"),
                        ));
                    }
                    node.mark = mark;
                    node
                }
                None => {
                    let message = "YAML alias (`*name`) to an anchor not defined earlier in this document; anchors do not carry across `---`";
                    return Err(self.fatal(mark, path, message.into()));
                }
            },
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(self.fatal(
                        mark,
                        path,
                        format!(
                            "YAML tags (`{}{}`) are not supported",
                            tag.handle, tag.suffix
                        ),
                    ));
                }
                let mut items = Vec::new();
                loop {
                    let (event, item_mark) = self.next()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    path.push(format!("[{}]", items.len()));
                    let item = self.node(event, item_mark, path);
                    path.pop();
                    items.push(item?);
                }
                let node = Node {
                    value: Value::Seq(items),
                    mark,
                };
                self.remember(anchor, &node);
                node
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag {
                    return Err(self.fatal(
                        mark,
                        path,
                        format!(
                            "YAML tags (`{}{}`) are not supported",
                            tag.handle, tag.suffix
                        ),
                    ));
                }
                let node = Node {
                    value: Value::Map(self.mapping(path)?),
                    mark,
                };
                self.remember(anchor, &node);
                node
            }
            other => {
                return Err(self.fatal(
                    mark,
                    path,
                    format!("YAML syntax error: unexpected {other:?}"),
                ));
            }
        };
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.fatal(
                mark,
                path,
                format!("document has more than {MAX_NODES} nodes"),
            ));
        }
        Ok(node)
    }

    fn mapping(&mut self, path: &mut Vec<String>) -> Result<Vec<Entry>, Fatal> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut merged: Vec<Entry> = Vec::new();
        loop {
            let (event, key_mark) = self.next()?;
            if event == Event::MappingEnd {
                break;
            }
            let key_node = self.node(event, key_mark, path)?;
            let key = match key_node.value {
                Value::Scalar(s) => s.text,
                _ => {
                    return Err(self.fatal(
                        key_mark,
                        path,
                        format!(
                            "mapping keys must be strings, found {}",
                            key_node.type_name()
                        ),
                    ));
                }
            };
            let (event, value_mark) = self.next()?;
            path.push(key.clone());
            let value = self.node(event, value_mark, path);
            let value = match value {
                Ok(v) => v,
                Err(f) => {
                    path.pop();
                    return Err(f);
                }
            };
            if key == "<<" {
                // Merge key: entries of the referenced mapping(s) that are not set here.
                let sources = match value.value {
                    Value::Map(m) => vec![m],
                    Value::Seq(items) => items
                        .into_iter()
                        .filter_map(|n| match n.value {
                            Value::Map(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => {
                        let message =
                            "`<<` (merge key) needs a mapping or a list of mappings".to_string();
                        let fatal = self.fatal(key_mark, path, message);
                        path.pop();
                        return Err(fatal);
                    }
                };
                for source in sources {
                    for entry in source {
                        if !merged.iter().any(|e| e.key == entry.key) {
                            merged.push(entry);
                        }
                    }
                }
                path.pop();
                continue;
            }
            if let Some(first) = entries.iter().find(|e| e.key == key) {
                let message = format!(
                    "duplicate key `{key}` (first at line {})",
                    first.key_mark.line
                );
                self.problems.push(YamlProblem {
                    mark: key_mark,
                    path: dotted(path),
                    message,
                });
            } else {
                entries.push(Entry {
                    key,
                    key_mark,
                    value,
                });
            }
            path.pop();
        }
        for entry in merged {
            if !entries.iter().any(|e| e.key == entry.key) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }
}

/// Where the first key of a mapping is (or the node itself).
fn first_mark(node: &Node) -> Mark {
    match &node.value {
        Value::Map(entries) => entries.first().map_or(node.mark, |e| e.key_mark),
        _ => node.mark,
    }
}

fn dotted(path: &[String]) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    Some(out)
}

/// Why a value could not be printed as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot print as YAML: {0}")]
pub struct PrintError(#[from] serde_yaml::Error);

/// Prints any serialisable value as YAML (used for `-o yaml` and canonical output).
pub fn to_yaml_string<T: serde::Serialize>(value: &T) -> Result<String, PrintError> {
    Ok(serde_yaml::to_string(value)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn marks_are_one_based() {
        let s = parse_stream("a: 1\nb:\n  c: x\n");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let root = &s.documents[0].root;
        let entries = map(root);
        assert_eq!(entries[0].key_mark, Mark { line: 1, column: 1 });
        assert_eq!(entries[0].value.mark, Mark { line: 1, column: 4 });
        let inner = map(&entries[1].value);
        assert_eq!(inner[0].key_mark, Mark { line: 3, column: 3 });
        assert_eq!(s.documents[0].start, Mark { line: 1, column: 1 });
    }

    #[test]
    fn crlf_and_multiple_documents() {
        let s = parse_stream("a: 1\r\n---\r\nb: 2\r\n\r\n---\r\n# only a comment\r\n");
        assert!(s.problems.is_empty());
        assert_eq!(s.documents.len(), 3);
        assert_eq!(map(&s.documents[1].root)[0].key_mark.line, 3);
        assert!(s.documents[2].root.is_null());
    }

    #[test]
    fn empty_stream_has_no_documents() {
        assert!(parse_stream("").documents.is_empty());
        assert!(parse_stream("# nothing\n\n").documents.is_empty());
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let s = parse_stream("base: &b {x: 1, y: 2}\ncopy: *b\nmerged:\n  <<: *b\n  y: 3\n");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let entries = map(&s.documents[0].root);
        assert_eq!(map(&entries[1].value).len(), 2);
        assert_eq!(
            entries[1].value.mark.line, 2,
            "an alias is marked where it is used"
        );
        let merged = map(&entries[2].value);
        let y = merged.iter().find(|e| e.key == "y").unwrap();
        assert_eq!(
            y.value.value,
            Value::Scalar(Scalar {
                text: "3".into(),
                plain: true
            })
        );
        assert!(merged.iter().any(|e| e.key == "x"));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second() {
        let s = parse_stream("a:\n  b: 1\n  b: 2\n");
        assert_eq!(s.problems.len(), 1);
        assert_eq!(s.problems[0].mark, Mark { line: 3, column: 3 });
        assert_eq!(s.problems[0].path.as_deref(), Some("a.b"));
        assert!(s.problems[0].message.contains("first at line 2"));
    }

    #[test]
    fn tabs_in_indentation() {
        let s = parse_stream("a:\n\tb: 1\n");
        assert_eq!(s.problems.len(), 1);
        assert_eq!(s.problems[0].mark, Mark { line: 2, column: 1 });
        assert!(s.problems[0].message.contains("tab"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let s = parse_stream("a: [1, 2\nb: 3\n");
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].message.starts_with("YAML syntax error"));
        assert!(s.problems[0].mark.line >= 1);
    }

    #[test]
    fn tags_are_rejected() {
        let s = parse_stream("a: !!str 1\n");
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].message.contains("tags"));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].message.contains("more than"));
    }

    #[test]
    fn non_utf8_is_located() {
        let err = decode_utf8(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!(err.mark, Mark { line: 2, column: 4 });
        assert!(err.message.contains("UTF-8"));
        assert_eq!(decode_utf8(b"\xEF\xBB\xBFa: 1").unwrap(), "a: 1");
    }

    #[test]
    fn scalar_resolution() {
        let plain = |t: &str| Scalar {
            text: t.into(),
            plain: true,
        };
        assert_eq!(plain("").resolve(), Resolved::Null);
        assert_eq!(plain("true").resolve(), Resolved::Bool(true));
        assert_eq!(plain("12").resolve(), Resolved::Int(Some(12)));
        assert_eq!(plain("-3").resolve(), Resolved::Int(Some(-3)));
        assert_eq!(plain("1.5").resolve(), Resolved::Float);
        assert_eq!(plain("1e9").resolve(), Resolved::Float);
        assert_eq!(plain(".5").resolve(), Resolved::Float);
        assert_eq!(plain("512MiB").resolve(), Resolved::Str("512MiB"));
        assert_eq!(plain("1.2.3").resolve(), Resolved::Str("1.2.3"));
        assert_eq!(plain("e5").resolve(), Resolved::Str("e5"));
        assert_eq!(
            Scalar {
                text: "true".into(),
                plain: false
            }
            .resolve(),
            Resolved::Str("true")
        );
    }

    #[test]
    fn prints_yaml() {
        let text = to_yaml_string(&serde_json::json!({"a": 1, "b": "x"})).unwrap();
        assert_eq!(text, "a: 1\nb: x\n");
    }
}
