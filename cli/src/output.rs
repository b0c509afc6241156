//! Printing objects: aligned tables (kubectl style) and `-o wide|json|yaml`.

use std::borrow::Cow;
use std::time::Duration;

use banger_controller::api::types::{Condition, ObjectView};
use banger_specs::Kind;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `-o`: how `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// The default table.
    #[default]
    #[value(skip)]
    Table,
    /// The table with more columns.
    Wide,
    /// JSON objects (`{"items": […]}` for lists).
    Json,
    /// YAML objects (`items: […]` for lists).
    Yaml,
}

/// Printing a value failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot print as {format}: {message}")]
pub struct PrintError {
    /// `json` or `yaml`.
    pub format: &'static str,
    /// Why.
    pub message: String,
}

/// A value as pretty JSON, with a final newline.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, PrintError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| PrintError {
            format: "json",
            message: e.to_string(),
        })
}

/// JSON text to print as [`to_json`] prints it, without a typed round trip: the same
/// members in the same order, indented by two spaces, `"key": value`, empty objects
/// and arrays as `{}` and `[]`, a final newline. Strings, numbers and literals are
/// copied as they are, so text that `serde_json` wrote (the daemon's answers) comes out
/// exactly as `to_json` of its decoded value would.
#[derive(Debug, Clone)]
pub struct PrettyJson {
    /// One JSON value, checked.
    text: Bytes,
}

/// How much pretty JSON [`PrettyJson::write_to`] gathers before each write: a long
/// list goes out in pieces instead of first becoming one string half again its size.
const PRETTY_CHUNK: usize = 64 << 10;

impl PrettyJson {
    /// Checks that `text` is one JSON value (and UTF-8); fails on anything else.
    pub fn new(text: impl Into<Bytes>) -> Result<Self, PrintError> {
        let text = text.into();
        let invalid = |message: String| PrintError {
            format: "json",
            message,
        };
        let utf8 = std::str::from_utf8(&text).map_err(|e| invalid(e.to_string()))?;
        serde_json::from_str::<serde::de::IgnoredAny>(utf8).map_err(|e| invalid(e.to_string()))?;
        Ok(Self { text })
    }

    /// Writes the pretty text to `out`, a piece at a time.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let bytes: &[u8] = &self.text;
        let mut buf = Vec::with_capacity(PRETTY_CHUNK + 1024);
        let mut depth = 0usize;
        let mut i = 0;
        while let Some(&c) = bytes.get(i) {
            match c {
                b'"' => {
                    let end = string_end(bytes, i);
                    buf.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
                b'{' | b'[' => {
                    let close = if c == b'{' { b'}' } else { b']' };
                    i += 1;
                    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                        i += 1;
                    }
                    buf.push(c);
                    if bytes.get(i) == Some(&close) {
                        buf.push(close);
                        i += 1;
                    } else {
                        depth += 1;
                        newline(&mut buf, depth);
                    }
                }
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    newline(&mut buf, depth);
                    buf.push(c);
                    i += 1;
                }
                b',' => {
                    buf.push(b',');
                    newline(&mut buf, depth);
                    i += 1;
                }
                b':' => {
                    buf.extend_from_slice(b": ");
                    i += 1;
                }
                c if c.is_ascii_whitespace() => i += 1,
                _ => {
                    // A number or a literal: up to the next delimiter or space.
                    let end = bytes[i..]
                        .iter()
                        .position(|&b| {
                            matches!(b, b',' | b'}' | b']' | b':') || b.is_ascii_whitespace()
                        })
                        .map_or(bytes.len(), |n| i + n);
                    buf.extend_from_slice(&bytes[i..end]);
                    i = end;
                }
            }
            if buf.len() >= PRETTY_CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        buf.push(b'\n');
        out.write_all(&buf)
    }

    /// The whole pretty text.
    #[cfg(test)]
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(self.text.len() + self.text.len() / 2);
        // Writing into a Vec cannot fail; the text is UTF-8 (checked by `new`) with only
        // ASCII added between its tokens.
        let _ = self.write_to(&mut out);
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// The position just past the string that opens at `start` (its closing quote; escapes
/// skipped), or the end of the text.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(n) = bytes
        .get(i..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        i += n;
        if bytes.get(i) == Some(&b'"') {
            return i + 1;
        }
        // A backslash: it and the character it escapes.
        i += 2;
    }
    bytes.len()
}

/// A line break and `depth` levels of two-space indentation.
fn newline(out: &mut Vec<u8>, depth: usize) {
    const SPACES: &[u8] = &[b' '; 64];
    out.push(b'\n');
    let mut left = 2 * depth;
    while left > 0 {
        let n = left.min(SPACES.len());
        out.extend_from_slice(&SPACES[..n]);
        left -= n;
    }
}

/// A value as YAML, through the specs crate (the one place that talks to the YAML
/// libraries).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, PrintError> {
    banger_specs::yaml::to_yaml_string(value).map_err(|e| PrintError {
        format: "yaml",
        message: e.to_string(),
    })
}

/// A table whose columns are padded to their widest cell, separated by three spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty, extra cells are dropped).
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline; no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("   ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// kubectl-style age of a duration: `42s`, `3m12s`, `25m`, `5h3m`, `3d4h`, `120d`.
pub fn format_age(age: Duration) -> String {
    let s = age.as_secs();
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

/// The age of an RFC 3339 timestamp at `now`; `<unknown>` when it does not parse.
pub fn age_since(timestamp: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(timestamp, &Rfc3339) {
        Ok(then) => {
            let secs = (now - then).whole_seconds().max(0).unsigned_abs();
            format_age(Duration::from_secs(secs))
        }
        Err(_) => "<unknown>".to_string(),
    }
}

/// Bytes as the largest exact binary unit: `512Mi`, `2Gi`, `1536Ki`, `1000`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A condition by type.
pub fn condition<'a>(object: &'a ObjectView, type_: &str) -> Option<&'a Condition> {
    object.status.conditions.iter().find(|c| c.type_ == type_)
}

/// What a `get` table shows of one object: the members of its JSON (the wire form of
/// [`ObjectView`]) that the columns read, borrowed from the daemon's answer where they
/// can be. The rest (handles, condition messages, …) is skipped unread, so a table of
/// a long list costs a fraction of decoding the whole views.
#[derive(Debug, Clone, Deserialize)]
pub struct TableObject<'a> {
    /// Kind.
    pub kind: Kind,
    /// Name, creation time, owner.
    #[serde(borrow)]
    pub metadata: TableMetadata<'a>,
    /// The spec members the columns show.
    #[serde(borrow, default)]
    pub spec: TableSpec<'a>,
    /// Phase, conditions and what the status says of the VM, Image or Workspace.
    #[serde(borrow, default)]
    pub status: TableStatus<'a>,
}

/// The metadata a table shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableMetadata<'a> {
    /// Name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// RFC 3339 creation time (the AGE column).
    #[serde(borrow)]
    pub creation_timestamp: Cow<'a, str>,
    /// Annotations (the OWNER column reads `banger.dev/owner`).
    #[serde(borrow, default)]
    pub annotations: TableAnnotations<'a>,
}

/// The annotation a table shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TableAnnotations<'a> {
    /// `banger.dev/owner`: who applied the object (the OWNER column).
    #[serde(rename = "banger.dev/owner", borrow, default)]
    pub owner: Option<Cow<'a, str>>,
}

/// The spec members the columns of any kind show, each as its JSON text (a column
/// prints a string as the string, anything else as its JSON).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TableSpec<'a> {
    /// VM: `vcpus`.
    #[serde(borrow, default)]
    pub vcpus: Option<&'a RawValue>,
    /// VM: `memory` (bytes).
    #[serde(borrow, default)]
    pub memory: Option<&'a RawValue>,
    /// VM: `image`.
    #[serde(borrow, default)]
    pub image: Option<&'a RawValue>,
    /// Image: `oci` (the SOURCE column reads its `ref`).
    #[serde(borrow, default)]
    pub oci: Option<TableOci<'a>>,
    /// Image: `rootfs`.
    #[serde(borrow, default)]
    pub rootfs: Option<&'a RawValue>,
    /// Image: `kernel`.
    #[serde(borrow, default)]
    pub kernel: Option<&'a RawValue>,
    /// Workspace: `vm`.
    #[serde(borrow, default)]
    pub vm: Option<&'a RawValue>,
    /// Workspace: `source`.
    #[serde(borrow, default)]
    pub source: Option<&'a RawValue>,
    /// Workspace: `path`.
    #[serde(borrow, default)]
    pub path: Option<&'a RawValue>,
    /// Workspace: `include`.
    #[serde(borrow, default)]
    pub include: Option<&'a RawValue>,
}

/// An Image's `spec.oci`, as far as the table reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TableOci<'a> {
    /// The image reference.
    #[serde(rename = "ref", borrow, default)]
    pub reference: Option<&'a RawValue>,
}

/// A condition's type and status.
#[derive(Debug, Clone, Deserialize)]
pub struct TableCondition<'a> {
    /// `Ready`, `UpdateAvailable`, …
    #[serde(rename = "type", borrow)]
    pub type_: Cow<'a, str>,
    /// `True`, `False` or `Unknown`.
    #[serde(borrow)]
    pub status: Cow<'a, str>,
}

/// The status members a table shows (an Image's resolution is flattened into the
/// status on the wire, so its members are here too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus<'a> {
    /// Phase.
    #[serde(borrow, default)]
    pub phase: Cow<'a, str>,
    /// Conditions.
    #[serde(borrow, default)]
    pub conditions: Vec<TableCondition<'a>>,
    /// VM: guest address.
    #[serde(borrow, default)]
    pub ip: Option<Cow<'a, str>>,
    /// VM: hypervisor process id.
    #[serde(default)]
    pub pid: Option<i64>,
    /// VM: hypervisor.
    #[serde(borrow, default)]
    pub hypervisor: Option<Cow<'a, str>>,
    /// Workspace: the commit the last copy brought.
    #[serde(borrow, default)]
    pub base_commit: Option<Cow<'a, str>>,
    /// Workspace: when the last copy finished.
    #[serde(borrow, default)]
    pub copied_at: Option<Cow<'a, str>>,
    /// Image: the digest it resolved to (present once resolved).
    #[serde(borrow, default)]
    pub digest: Option<Cow<'a, str>>,
    /// Image: the root filesystem's size.
    #[serde(default)]
    pub rootfs_bytes: Option<u64>,
    /// Image: the kernel VMs boot.
    #[serde(borrow, default)]
    pub kernel: Option<Cow<'a, str>>,
    /// Image: the kernel is the daemon's default one.
    #[serde(default)]
    pub default_kernel: bool,
    /// Image: the digest its tag named at the last check.
    #[serde(borrow, default)]
    pub latest_digest: Option<Cow<'a, str>>,
}

/// `{"items": [...]}` of the list answer, as table rows.
#[derive(Debug, Deserialize)]
pub struct TableList<'a> {
    /// The objects.
    #[serde(borrow)]
    pub items: Vec<TableObject<'a>>,
}

impl TableObject<'_> {
    fn condition_status(&self, type_: &str) -> Option<&str> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.as_ref())
    }
}

fn ready(object: &TableObject<'_>) -> String {
    object
        .condition_status("Ready")
        .map_or_else(|| "-".to_string(), str::to_string)
}

/// A spec member's cell: a string as itself, `-` when absent or null, anything else
/// as its JSON text.
fn spec_str(member: Option<&RawValue>) -> String {
    let Some(text) = member.map(|m| m.get().trim()) else {
        return "-".to_string();
    };
    if text == "null" {
        return "-".to_string();
    }
    if text.starts_with('"') {
        if let Ok(s) = serde_json::from_str::<String>(text) {
            return s;
        }
    }
    text.to_string()
}

/// A spec member in bytes as [`format_bytes`] writes it; `-` unless a whole number.
fn spec_bytes(member: Option<&RawValue>) -> String {
    member
        .and_then(|m| m.get().trim().parse::<u64>().ok())
        .map_or_else(|| "-".into(), format_bytes)
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `sha256:0123456789ab` (the first 12 hex digits), or the text as it is.
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

/// An Image's `UPDATE` column: the new digest when its tag moved, `-` otherwise.
fn update_column(object: &TableObject<'_>) -> String {
    object
        .status
        .latest_digest
        .as_deref()
        .filter(|_| object.condition_status("UpdateAvailable") == Some("True"))
        .map_or_else(|| "-".to_string(), short_digest)
}

/// The `get` table of objects of one kind.
pub fn rows_table(
    kind: Kind,
    objects: &[&TableObject<'_>],
    wide: bool,
    now: OffsetDateTime,
) -> Table {
    let mut headers: Vec<&str> = match kind {
        Kind::Vm => vec![
            "NAME", "PHASE", "READY", "IP", "VCPUS", "MEMORY", "IMAGE", "AGE",
        ],
        Kind::Image => vec![
            "NAME", "PHASE", "READY", "SOURCE", "DIGEST", "SIZE", "UPDATE", "AGE",
        ],
        Kind::Workspace => vec![
            "NAME", "PHASE", "READY", "VM", "SOURCE", "PATH", "BASE", "COPIED", "AGE",
        ],
    };
    if wide {
        match kind {
            Kind::Vm => headers.extend(["HYPERVISOR", "PID", "OWNER"]),
            Kind::Image => headers.extend(["KERNEL", "OWNER"]),
            Kind::Workspace => headers.extend(["INCLUDE", "OWNER"]),
        }
    }
    let mut table = Table::new(headers);
    for object in objects {
        let status = &object.status;
        let age = age_since(&object.metadata.creation_timestamp, now);
        let phase = if status.phase.is_empty() {
            "-".to_string()
        } else {
            status.phase.to_string()
        };
        let mut cells = vec![object.metadata.name.to_string(), phase, ready(object)];
        match kind {
            Kind::Vm => cells.extend([
                or_dash(status.ip.as_ref()),
                spec_str(object.spec.vcpus),
                spec_bytes(object.spec.memory),
                spec_str(object.spec.image),
                age,
            ]),
            Kind::Image => {
                let source = match object.spec.oci.as_ref().and_then(|o| o.reference) {
                    Some(reference) => spec_str(Some(reference)),
                    None => spec_str(object.spec.rootfs),
                };
                // The size and the kernel belong to a resolution, which has a digest.
                let resolved = status.digest.is_some();
                let digest = status
                    .digest
                    .as_deref()
                    .map_or_else(|| "-".to_string(), short_digest);
                let size = if resolved {
                    format_bytes(status.rootfs_bytes.unwrap_or(0))
                } else {
                    "-".to_string()
                };
                cells.extend([source, digest, size, update_column(object), age]);
            }
            Kind::Workspace => cells.extend([
                spec_str(object.spec.vm),
                spec_str(object.spec.source),
                spec_str(object.spec.path),
                status
                    .base_commit
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |c| c.chars().take(12).collect()),
                status.copied_at.as_ref().map_or_else(
                    || "-".to_string(),
                    |at| format!("{} ago", age_since(at, now)),
                ),
                age,
            ]),
        }
        if wide {
            let owner = or_dash(object.metadata.annotations.owner.as_ref());
            match kind {
                Kind::Vm => cells.extend([
                    or_dash(status.hypervisor.as_ref()),
                    or_dash(status.pid),
                    owner,
                ]),
                Kind::Image => {
                    let kernel = match (&status.digest, &status.kernel) {
                        (Some(_), Some(path)) if status.default_kernel => {
                            format!("{path} (default)")
                        }
                        (Some(_), Some(path)) => path.to_string(),
                        _ => spec_str(object.spec.kernel),
                    };
                    cells.extend([kernel, owner])
                }
                Kind::Workspace => cells.extend([spec_str(object.spec.include), owner]),
            }
        }
        table.row(cells);
    }
    table
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use banger_controller::api::types::{ObjectMetaView, StatusView};
    use time::macros::datetime;

    /// [`PrettyJson`] of `text` as one string.
    fn pretty_json(text: &[u8]) -> Result<String, PrintError> {
        Ok(PrettyJson::new(Bytes::copy_from_slice(text))?.to_text())
    }

    /// The table of views as `get` makes it: from their JSON, read as [`TableObject`]s.
    fn table_of(kind: Kind, views: &[&ObjectView], wide: bool, now: OffsetDateTime) -> Table {
        let texts: Vec<String> = views
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        let rows: Vec<TableObject<'_>> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        let rows: Vec<&TableObject<'_>> = rows.iter().collect();
        rows_table(kind, &rows, wide, now)
    }

    #[test]
    fn pretty_json_prints_what_to_json_prints() {
        let texts = [
            r#"{"items":[]}"#,
            r#"{}"#,
            r#"[]"#,
            r#""just a string""#,
            r#"{"a":[],"b":{},"c":[1,-2,true,false,null,"x\"y\\z\n\u0001é/"],"d":{"e":[{"f":[]},{"g":{"h":0}}]}}"#,
            " { \"a\" : [ 1 , { } ] } ",
            "{\n\t\"m\":\t[0,1.25,-0.0] ,\r\n \"n\": -1.5e-7\n}\n",
            r#"{"ends in a backslash\\":"\\","k":{"x":"y"},"quote\"":"\""}"#,
            r#"["ü","日本", "\u0007\t", {"":""}]"#,
        ];
        // Deeper than one run of indentation (64 spaces).
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        // Longer than the pieces the text is written in (64 KiB).
        let item = r#"{"list":[true,null,{"k":"\\"}],"n":12,"name":"vm-\"x\""}"#;
        let long = format!("{{\"items\":[{}]}}", vec![item; 5000].join(","));
        assert!(long.len() > 3 * PRETTY_CHUNK);
        for text in texts.iter().copied().chain([deep.as_str(), long.as_str()]) {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                pretty_json(text.as_bytes()).unwrap(),
                to_json(&value).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn spec_cells_print_strings_as_text_and_the_rest_as_json() {
        let spec: TableSpec<'_> = serde_json::from_str(
            r#"{"image":"a \"quoted\" name","vcpus":2,"memory":1073741824,"vm":null,
               "source":{"x":[1]},"path":"/p","oci":{"ref":"r:5000/x:1"}}"#,
        )
        .unwrap();
        assert_eq!(spec_str(spec.image), "a \"quoted\" name");
        assert_eq!(spec_str(spec.vcpus), "2");
        assert_eq!(spec_bytes(spec.memory), "1Gi");
        assert_eq!(spec_bytes(spec.image), "-");
        assert_eq!(spec_str(spec.vm), "-");
        assert_eq!(spec_str(spec.kernel), "-");
        assert_eq!(spec_str(spec.source), r#"{"x":[1]}"#);
        assert_eq!(spec_str(spec.path), "/p");
        assert_eq!(spec_str(spec.oci.and_then(|o| o.reference)), "r:5000/x:1");
    }

    #[test]
    fn pretty_json_of_a_list_answer_is_to_json_of_its_decoded_views() {
        // The wire form of a list, as the daemon writes it (members in the views'
        // order, not sorted): the typed round trip `get -o json` used to make.
        let text = r#"{"items":[{"apiVersion":"banger.dev/v1alpha1","kind":"VM","metadata":{"name":"dev","uid":"u1","generation":2,"creationTimestamp":"2026-01-01T00:00:00Z","labels":{"app":"a \"b\""},"annotations":{"banger.dev/owner":"cli"}},"spec":{"image":"base","memory":536870912,"network":{"nat":true}},"status":{"phase":"Running","observedGeneration":2,"conditions":[{"type":"Ready","status":"True","reason":"Running","message":"ok\nmore","lastTransitionTime":"2026-01-01T00:00:01Z","observedGeneration":2}],"ip":"172.30.0.2","pid":42,"hypervisor":"qemu","handles":{"lease":{"ip":"172.30.0.2","prefix":24},"tap":"bg0"}}},{"apiVersion":"banger.dev/v1alpha1","kind":"Image","metadata":{"name":"base","uid":"u2","generation":1,"creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"kernel":"/k","rootfs":"/r"},"status":{"phase":"Ready","observedGeneration":1,"conditions":[],"digest":"sha256:a","rootfs":"/r","rootfsBytes":1024,"kernel":"/k","defaultKernel":false}}]}"#;
        let typed: banger_controller::api::types::ObjectList = serde_json::from_str(text).unwrap();
        assert_eq!(
            pretty_json(text.as_bytes()).unwrap(),
            to_json(&typed).unwrap()
        );
    }

    #[test]
    fn pretty_json_refuses_what_is_not_one_json_value() {
        for text in [&b"{\"a\":"[..], b"[1,2", b"{} {}", b"", b"\"\xff\""] {
            let e = pretty_json(text).unwrap_err();
            assert_eq!(e.format, "json", "{text:?}");
        }
    }

    #[test]
    fn table_pads_columns_and_trims_line_ends() {
        let mut table = Table::new(["NAME", "PHASE", "IP"]);
        table.row(["dev", "Running", "172.30.0.2"]);
        table.row(["a-much-longer-name", "Pending", ""]);
        assert_eq!(
            table.render(),
            "NAME                 PHASE     IP\n\
             dev                  Running   172.30.0.2\n\
             a-much-longer-name   Pending\n"
        );
    }

    #[test]
    fn ages_like_kubectl() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (125, "2m5s"),
            (30 * 60, "30m"),
            (4 * 3600 + 5 * 60, "4h5m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (30 * 86400, "30d"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_age(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn age_since_parses_rfc3339_and_flags_garbage() {
        let now = datetime!(2026-01-01 00:10:00 UTC);
        assert_eq!(age_since("2026-01-01T00:00:00Z", now), "10m");
        assert_eq!(age_since("2026-01-01T00:20:00Z", now), "0s");
        assert_eq!(age_since("yesterday", now), "<unknown>");
    }

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(2 << 30), "2Gi");
        assert_eq!(format_bytes(1536 << 10), "1536Ki");
        assert_eq!(format_bytes(1000), "1000");
    }

    #[test]
    fn workspace_table_shows_the_base_commit_and_the_copy_time() {
        let view: ObjectView = serde_json::from_value(serde_json::json!({
            "apiVersion": "banger.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "src", "uid": "00", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"vm": "dev", "source": "/home/me/src", "path": "/root/src"},
            "status": {"phase": "Ready", "observedGeneration": 1,
                       "baseCommit": "0123456789abcdef0123456789abcdef01234567",
                       "copiedAt": "2026-01-01T00:00:10Z"}
        }))
        .unwrap();
        let now = datetime!(2026-01-01 00:01:00 UTC);
        assert_eq!(
            table_of(Kind::Workspace, &[&view], false, now).render(),
            "NAME   PHASE   READY   VM    SOURCE         PATH        BASE           COPIED    AGE\n\
             src    Ready   -       dev   /home/me/src   /root/src   0123456789ab   50s ago   60s\n"
        );
    }

    #[test]
    fn vm_table_columns() {
        let view = ObjectView {
            api_version: "banger.dev/v1alpha1".into(),
            kind: Kind::Vm,
            metadata: ObjectMetaView {
                name: "dev".into(),
                uid: "u1".into(),
                generation: 1,
                creation_timestamp: "2026-01-01T00:00:00Z".into(),
                deletion_timestamp: None,
                labels: Default::default(),
                annotations: [("banger.dev/owner".to_string(), "cli".to_string())].into(),
            },
            spec: serde_json::json!({"image": "base", "vcpus": 2, "memory": 1073741824u64}),
            status: StatusView {
                phase: "Running".into(),
                observed_generation: 1,
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    reason: "Running".into(),
                    message: String::new(),
                    last_transition_time: "2026-01-01T00:00:00Z".into(),
                    observed_generation: 1,
                }],
                ip: Some("172.30.0.2".into()),
                pid: Some(42),
                hypervisor: Some("qemu".into()),
                ..StatusView::default()
            },
        };
        let now = datetime!(2026-01-01 00:00:30 UTC);
        let narrow = table_of(Kind::Vm, &[&view], false, now).render();
        assert_eq!(
            narrow,
            "NAME   PHASE     READY   IP           VCPUS   MEMORY   IMAGE   AGE\n\
             dev    Running   True    172.30.0.2   2       1Gi      base    30s\n"
        );
        let wide = table_of(Kind::Vm, &[&view], true, now).render();
        assert!(
            wide.lines()
                .next()
                .is_some_and(|h| h.ends_with("HYPERVISOR   PID   OWNER")),
            "{wide}"
        );
        assert!(
            wide.lines()
                .nth(1)
                .is_some_and(|r| r.ends_with("qemu         42    cli")),
            "{wide}"
        );
    }

    #[test]
    fn image_table_shows_digest_size_and_a_new_digest() {
        use banger_controller::api::types::ImageStatusView;
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: 1,
        };
        let view = ObjectView {
            api_version: "banger.dev/v1alpha1".into(),
            kind: Kind::Image,
            metadata: ObjectMetaView {
                name: "deb".into(),
                uid: "u2".into(),
                generation: 1,
                creation_timestamp: "2026-01-01T00:00:00Z".into(),
                deletion_timestamp: None,
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: serde_json::json!({"oci": {"ref": "r:5000/debian:12"}}),
            status: StatusView {
                phase: "Ready".into(),
                observed_generation: 1,
                conditions: vec![
                    condition("Ready", "True"),
                    condition("UpdateAvailable", "True"),
                ],
                image: Some(ImageStatusView {
                    digest: format!("sha256:{}", "a".repeat(64)),
                    rootfs: "/s/rootfs.ext4".into(),
                    rootfs_bytes: 512 << 20,
                    kernel: "/g/vmlinux".into(),
                    default_kernel: true,
                    guest: None,
                    checked_at: None,
                    latest_digest: Some(format!("sha256:{}", "b".repeat(64))),
                }),
                ..StatusView::default()
            },
        };
        let now = datetime!(2026-01-01 00:00:30 UTC);
        let table = table_of(Kind::Image, &[&view], false, now).render();
        assert_eq!(
            table,
            "NAME   PHASE   READY   SOURCE             DIGEST                SIZE    UPDATE                AGE\n\
             deb    Ready   True    r:5000/debian:12   sha256:aaaaaaaaaaaa   512Mi   sha256:bbbbbbbbbbbb   30s\n"
        );
        let wide = table_of(Kind::Image, &[&view], true, now).render();
        assert!(wide.contains("/g/vmlinux (default)"), "{wide}");
    }
}
