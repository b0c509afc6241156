//! YAML in and out: the one module that talks to YAML libraries.
//!
//! Reading builds a small tree of [`Node`]s that remembers the line and column of every
//! key and value, from the event stream of `yaml-rust2`. On the way it resolves
//! anchors and aliases (and `<<` merge keys), and reports what YAML itself gets wrong
//! (syntax errors, tabs in indentation, duplicate keys, non-UTF-8 bytes, tags) as
//! [`YamlProblem`]s with positions. Meaning (which fields exist, their types) is
//! [`crate::decode`]'s job.
//!
//! ## Bounds on hostile input
//! A few hundred bytes of YAML can describe an enormous tree through aliases ("billion
//! laughs"), and a tree only a few levels deep through aliases of aliases. The builder
//! therefore never makes a tree that is not paid for:
//!
//! - **One budget per stream.** Every node built counts against one [`Budget`]: nodes
//!   written in the text, every copy an alias makes, and the copy the anchor table keeps
//!   of an anchored node; a scalar or key counts one node more per
//!   [`TEXT_BYTES_PER_NODE`] bytes of text. The budget belongs to the stream (all its
//!   documents together), not to one document, and a caller may share one budget
//!   between several streams (the files of one API request). [`Budget::for_input`]
//!   sizes it from the input: [`BUDGET_FLOOR`] plus one node per byte, never more than
//!   [`MAX_NODES`]. The tree's memory is therefore a bounded multiple of the input.
//! - **Depth.** No node is nested deeper than [`MAX_DEPTH`], counting the depth an alias
//!   brings with it.
//! - **Problems.** At most [`MAX_PROBLEMS`] YAML problems are recorded per stream, and
//!   keys are shown in paths and messages shortened to one line.
//!
//! Writing ([`to_yaml_string`]) uses `serde_yaml`.

use std::collections::{HashMap, HashSet};

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

    /// An empty (null) scalar at `mark`.
    fn null(mark: Mark) -> Node {
        Node {
            value: Value::Scalar(Scalar {
                text: String::new(),
                plain: true,
            }),
            mark,
        }
    }

    /// Whether this is a null scalar (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.resolve() == Resolved::Null)
    }

    /// What this node and everything below it cost against a [`Budget`].
    fn weight(&self) -> usize {
        match &self.value {
            Value::Scalar(s) => 1 + text_weight(&s.text),
            Value::Seq(items) => 1 + items.iter().map(Node::weight).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|e| 1 + text_weight(&e.key) + e.value.weight())
                    .sum::<usize>()
            }
        }
    }

    /// Levels of nesting below this node (0 for a scalar or an empty collection).
    fn height(&self) -> usize {
        match &self.value {
            Value::Scalar(_) => 0,
            Value::Seq(items) => items.iter().map(|n| 1 + n.height()).max().unwrap_or(0),
            Value::Map(entries) => entries
                .iter()
                .map(|e| 1 + e.value.height())
                .max()
                .unwrap_or(0),
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

/// Deepest nesting accepted, aliases included (specs are shallow; this stops stack
/// exhaustion in everything that walks the tree).
pub const MAX_DEPTH: usize = 64;
/// Most nodes one budget may ever allow, whatever the size of the input.
pub const MAX_NODES: usize = 100_000;
/// Nodes every budget allows besides one per byte of input.
pub const BUDGET_FLOOR: usize = 4_096;
/// Bytes of scalar or key text that count as one more node.
pub const TEXT_BYTES_PER_NODE: usize = 64;
/// Most YAML-level problems recorded for one stream; the stream stops there.
pub const MAX_PROBLEMS: usize = 100;
/// Longest key shown in a path or message (characters); longer ones are cut with `…`.
const MAX_KEY_SHOWN: usize = 40;

/// How many nodes a stream (or several streams together) may still build; see the
/// module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    limit: usize,
    used: usize,
}

impl Budget {
    /// The budget for `bytes` of YAML: [`BUDGET_FLOOR`] plus one node per byte, at most
    /// [`MAX_NODES`].
    pub fn for_input(bytes: usize) -> Budget {
        Budget {
            limit: BUDGET_FLOOR.saturating_add(bytes).min(MAX_NODES),
            used: 0,
        }
    }

    /// The most nodes this budget allows.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Nodes built so far against this budget.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Takes `nodes` from the budget; false (and nothing taken) when that would exceed it.
    fn take(&mut self, nodes: usize) -> bool {
        match self.used.checked_add(nodes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                true
            }
            _ => false,
        }
    }
}

/// What text costs besides its node.
fn text_weight(text: &str) -> usize {
    text.len() / TEXT_BYTES_PER_NODE
}

/// A key as it appears in a path or message: one line, at most 40 characters.
pub fn shown_key(key: &str) -> String {
    crate::problem::one_line(key, MAX_KEY_SHOWN)
}

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

/// Parses a YAML stream (many documents separated by `---`) into marked trees, within
/// the budget [`Budget::for_input`] gives its length.
pub fn parse_stream(text: &str) -> Stream {
    parse_stream_within(text, &mut Budget::for_input(text.len()))
}

/// Parses a YAML stream into marked trees, taking every node from `budget` (which the
/// caller may share between streams).
pub fn parse_stream_within(text: &str, budget: &mut Budget) -> Stream {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        problems: Vec::new(),
        budget,
        block_scalar_start: None,
        block_scalar_lines: Vec::new(),
    };
    let mut documents = Vec::new();
    let _ = builder.stream(&mut documents);
    let block_scalar_lines = builder.block_scalar_lines;
    let tabs: Vec<YamlProblem> = find_indentation_tabs(text)
        .into_iter()
        .filter(|p| !in_block_scalar(&block_scalar_lines, p.mark.line))
        .take(MAX_PROBLEMS)
        .collect();
    let mut problems = builder.problems;
    if let Some(first_tab) = tabs.first().map(|p| p.mark) {
        // A syntax error after a tab is almost always caused by it: report the tab.
        problems.retain(|p| {
            let syntax = p.message.starts_with("YAML syntax error");
            !(syntax && (p.mark >= first_tab || p.message.contains("tab")))
        });
        problems.extend(tabs);
        problems.sort_by_key(|p| p.mark);
    }
    Stream {
        documents,
        problems,
    }
}

/// Whether `line` holds block scalar content. `ranges` are in stream order: sorted, and
/// overlapping only at their ends, so a binary search finds the one that may hold it.
fn in_block_scalar(ranges: &[std::ops::RangeInclusive<usize>], line: usize) -> bool {
    let after = ranges.partition_point(|r| *r.start() <= line);
    after > 0 && ranges[after - 1].contains(&line)
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

/// A copy of an anchored node, with what an alias to it costs and how deep it goes.
struct Anchored {
    node: Node,
    weight: usize,
    height: usize,
}

struct Builder<'a, 'b> {
    parser: Parser<std::str::Chars<'a>>,
    /// Anchored nodes of the current document.
    anchors: HashMap<usize, Anchored>,
    problems: Vec<YamlProblem>,
    budget: &'b mut Budget,
    /// Line of the last literal (`|`) or folded (`>`) scalar, until the next event.
    block_scalar_start: Option<usize>,
    /// Lines holding block scalar content, where a tab is just text.
    block_scalar_lines: Vec<std::ops::RangeInclusive<usize>>,
}

impl Builder<'_, '_> {
    fn next(&mut self) -> Result<(Event, Mark), Fatal> {
        match self.parser.next_token() {
            Ok((event, marker)) => {
                let mark = Mark::from_marker(&marker);
                if let Some(start) = self.block_scalar_start.take() {
                    // The scalar's content ends before the next event's line.
                    self.block_scalar_lines.push(start..=mark.line);
                }
                if let Event::Scalar(_, TScalarStyle::Literal | TScalarStyle::Folded, _, _) = &event
                {
                    self.block_scalar_start = Some(mark.line);
                }
                Ok((event, mark))
            }
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
                self.charge(text_weight(&text), mark, path)?;
                let node = Node {
                    value: Value::Scalar(Scalar {
                        text,
                        plain: style == TScalarStyle::Plain,
                    }),
                    mark,
                };
                self.remember(anchor, &node, mark, path)?;
                node
            }
            Event::Alias(id) => self.alias(id, mark, path)?,
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
                self.remember(anchor, &node, mark, path)?;
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
                self.remember(anchor, &node, mark, path)?;
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
        self.charge(1, mark, path)?;
        Ok(node)
    }

    /// Takes `nodes` from the budget, or stops the stream with a problem.
    fn charge(&mut self, nodes: usize, mark: Mark, path: &[String]) -> Result<(), Fatal> {
        if self.budget.take(nodes) {
            return Ok(());
        }
        let limit = self.budget.limit();
        Err(self.fatal(
            mark,
            path,
            format!(
                "YAML expands to more than {limit} nodes (all documents and every alias copy counted together; the limit is {BUDGET_FLOOR} plus one per byte of input, at most {MAX_NODES}); use fewer aliases, or fewer objects per file and per apply"
            ),
        ))
    }

    fn mapping(&mut self, path: &mut Vec<String>) -> Result<Vec<Entry>, Fatal> {
        let mut entries: Vec<Entry> = Vec::new();
        // Index of each key in `entries`, so that a mapping of n keys costs O(n).
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<Entry> = Vec::new();
        let mut merged_keys: HashSet<String> = HashSet::new();
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
            path.push(shown_key(&key));
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
                        if merged_keys.insert(entry.key.clone()) {
                            merged.push(entry);
                        }
                    }
                }
                path.pop();
                continue;
            }
            if let Some(&first) = index.get(&key) {
                let message = format!(
                    "duplicate key `{}` (first at line {})",
                    shown_key(&key),
                    entries[first].key_mark.line
                );
                let problem = YamlProblem {
                    mark: key_mark,
                    path: dotted(path),
                    message,
                };
                path.pop();
                self.problem(problem)?;
            } else {
                index.insert(key.clone(), entries.len());
                entries.push(Entry {
                    key,
                    key_mark,
                    value,
                });
                path.pop();
            }
        }
        for entry in merged {
            if !index.contains_key(&entry.key) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// A copy of the node anchored as `id`, marked where the alias is, paid for first.
    fn alias(&mut self, id: usize, mark: Mark, path: &[String]) -> Result<Node, Fatal> {
        let Some(anchored) = self.anchors.get(&id) else {
            let message = "YAML alias (`*name`) to an anchor not defined earlier in this document; anchors do not carry across `---`";
            return Err(self.fatal(mark, path, message.into()));
        };
        let (weight, height) = (anchored.weight, anchored.height);
        if path.len() + height > MAX_DEPTH {
            return Err(self.fatal(
                mark,
                path,
                format!("nesting deeper than {MAX_DEPTH} levels (counting what the alias holds)"),
            ));
        }
        // The alias's own node is charged by the caller, like every other node.
        self.charge(weight.saturating_sub(1), mark, path)?;
        let mut node = self
            .anchors
            .get(&id)
            .map_or_else(|| Node::null(mark), |a| a.node.clone());
        node.mark = mark;
        Ok(node)
    }

    /// Records a problem that does not stop the stream, unless it is one too many.
    fn problem(&mut self, problem: YamlProblem) -> Result<(), Fatal> {
        if self.problems.len() + 1 >= MAX_PROBLEMS {
            let mark = problem.mark;
            return Err(self.fatal(
                mark,
                &[],
                format!("too many problems ({MAX_PROBLEMS}); the rest of the file is not read"),
            ));
        }
        self.problems.push(problem);
        Ok(())
    }

    /// Keeps a copy of an anchored node for later aliases; the copy is charged too.
    fn remember(
        &mut self,
        anchor: usize,
        node: &Node,
        mark: Mark,
        path: &[String],
    ) -> Result<(), Fatal> {
        if anchor > 0 {
            let weight = node.weight();
            self.charge(weight, mark, path)?;
            let anchored = Anchored {
                node: node.clone(),
                weight,
                height: node.height(),
            };
            self.anchors.insert(anchor, anchored);
        }
        Ok(())
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
    fn tabs_anywhere_in_indentation_but_not_in_block_scalars() {
        for text in ["\ta: 1\n", "a:\n \tb: 1\n", "a:\n  - x\n\t- y\n"] {
            let s = parse_stream(text);
            assert_eq!(s.problems.len(), 1, "{text:?}: {:?}", s.problems);
            assert!(s.problems[0].message.contains("tab"), "{text:?}");
        }
        let s = parse_stream("a: |\n  x\n  \ty\nb: >\n  \tz\n");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let entries = map(&s.documents[0].root);
        assert_eq!(
            entries[0].value.value,
            Value::Scalar(Scalar {
                text: "x\n\ty\n".into(),
                plain: false
            })
        );
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

    /// Documents that each expand to many nodes through aliases.
    fn alias_documents(documents: usize) -> String {
        let doc = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
        vec![doc; documents].join("---\n")
    }

    #[test]
    fn one_budget_for_all_documents_of_a_stream() {
        // One document alone fits its budget; 200 of them (22 KB) do not, together.
        let one = parse_stream(&alias_documents(1));
        assert!(one.problems.is_empty(), "{:?}", one.problems);
        let text = alias_documents(200);
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        let limit = BUDGET_FLOOR + text.len();
        assert!(
            s.problems[0].message.starts_with(&format!(
                "YAML expands to more than {limit} nodes (all documents and every alias copy counted together"
            )),
            "{}",
            s.problems[0].message
        );
        assert!(
            s.documents.len() < 25,
            "stopped early: {}",
            s.documents.len()
        );
    }

    #[test]
    fn a_budget_can_be_shared_between_streams() {
        let text = alias_documents(1);
        let mut budget = Budget::for_input(2 * text.len());
        assert!(parse_stream_within(&text, &mut budget).problems.is_empty());
        let used = budget.used();
        assert!(used > 1_000, "{used}");
        let mut streams = 1;
        while parse_stream_within(&text, &mut budget).problems.is_empty() {
            streams += 1;
            assert!(streams < 100, "the shared budget never ran out");
        }
        assert!(budget.used() <= budget.limit());
        assert_eq!(streams, budget.limit() / used);
    }

    #[test]
    fn copies_of_long_scalars_are_charged_by_their_text() {
        // 4 KiB of text, copied 64 times by aliases: a few hundred bytes of YAML that
        // would hold 256 KiB of strings.
        let long = "y".repeat(4096);
        let aliases = vec!["*s"; 64].join(", ");
        let text = format!("s: &s {long}\nl: [{aliases}]\n");
        let s = parse_stream(&text);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let text = format!("s: &s {long}\nl: [{aliases}, {aliases}, {aliases}, {aliases}]\n");
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].message.contains("YAML expands to more than"));
    }

    #[test]
    fn the_anchor_table_copy_is_charged() {
        // Nested anchors: each level's anchor keeps a copy of everything below it.
        let mut text = String::from("x: ");
        for i in 0..40 {
            text.push_str(&format!("&a{i} ["));
        }
        text.push_str(&vec!["z"; 2000].join(","));
        text.push_str(&"]".repeat(40));
        text.push('\n');
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].message.contains("YAML expands to more than"));
        // Without the anchors, the same tree fits.
        let plain = format!(
            "x: {}{}{}\n",
            "[".repeat(40),
            vec!["z"; 2000].join(","),
            "]".repeat(40)
        );
        let s = parse_stream(&plain);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert!(matches!(
            &map(&s.documents[0].root)[0].value.value,
            Value::Seq(_)
        ));
    }

    #[test]
    fn aliases_cannot_nest_deeper_than_the_limit() {
        // Each line nests an alias of the line before 40 levels down: 80 in all.
        let open = "[".repeat(40);
        let close = "]".repeat(40);
        let text = format!("a: &a {open}x{close}\nb: {open}*a{close}\n");
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(
            s.problems[0]
                .message
                .starts_with("nesting deeper than 64 levels"),
            "{}",
            s.problems[0].message
        );
        assert_eq!(s.problems[0].mark.line, 2);
    }

    #[test]
    fn long_and_multi_line_keys_are_shown_short_on_one_line() {
        let key = format!("\"{}\\nnext\"", "k".repeat(100));
        let s = parse_stream(&format!("a:\n  {key}: 1\n  {key}: 2\n"));
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        let p = &s.problems[0];
        let expected_key = format!("{}…", "k".repeat(40));
        assert_eq!(
            p.path.as_deref(),
            Some(format!("a.{expected_key}").as_str())
        );
        assert_eq!(
            p.message,
            format!("duplicate key `{expected_key}` (first at line 2)")
        );
        assert_eq!(shown_key("a\nb"), "a\\nb");
    }

    #[test]
    fn problems_are_capped_per_stream() {
        let mut text = String::from("a: 1\n");
        for _ in 0..500 {
            text.push_str("a: 1\n");
        }
        let s = parse_stream(&text);
        assert_eq!(s.problems.len(), MAX_PROBLEMS, "{:?}", s.problems.last());
        assert!(s.problems[MAX_PROBLEMS - 1]
            .message
            .starts_with("too many problems (100)"));
        let tabs = "a:\n".to_string() + &"\tb: 1\n".repeat(500);
        assert!(parse_stream(&tabs).problems.len() <= MAX_PROBLEMS + 1);
    }

    #[test]
    fn wide_mappings_are_linear() {
        // 10 000 distinct keys and a merge of them: quadratic duplicate checks would
        // take billions of comparisons; this finishes at once.
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}: {i}")).collect();
        let text = format!("m: &m {{{}}}\nn: {{<<: *m, k1: x}}\n", keys.join(", "));
        let s = parse_stream(&text);
        assert!(s.problems.is_empty(), "{:?}", s.problems.first());
        let root = map(&s.documents[0].root);
        assert_eq!(map(&root[1].value).len(), 10_000);
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
