//! Parsing the object arguments of commands: `vm`, `vms dev`, `vm/dev`, `vm dev web`.
//!
//! kubectl habits: a kind alone selects every object of that kind; a kind followed by
//! names selects those objects; `KIND/NAME` arguments name objects directly (and can
//! not be mixed with the `KIND NAME` form).

use std::fmt;

use banger_controller::api::types::ObjectRef;
use banger_specs::Kind;

/// A bad object argument on the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The kind is not one of `vm|vms`, `image|images`, `workspace|workspaces`.
    #[error("unknown kind {0:?}: expected vm|vms, image|images or workspace|workspaces")]
    UnknownKind(String),
    /// `KIND/NAME` with an empty part, or more than one `/`.
    #[error("bad object {0:?}: expected KIND/NAME, for example vm/dev")]
    BadRef(String),
    /// `KIND/NAME` mixed with bare names.
    #[error("cannot mix KIND/NAME arguments with a bare KIND or NAME ({0:?})")]
    Mixed(String),
    /// The command needs an object and none was named.
    #[error("name an object: KIND NAME or KIND/NAME, for example vm dev")]
    Missing,
    /// The command needs exactly one object.
    #[error("name exactly one object, got {0}")]
    NotOne(usize),
    /// The command works on one kind only.
    #[error("{command} works on {expected} objects only, got {got}")]
    WrongKind {
        /// The command.
        command: &'static str,
        /// The kind it accepts.
        expected: &'static str,
        /// What was given.
        got: String,
    },
}

/// What the object arguments of a command select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No arguments: every object of every kind.
    All,
    /// A kind alone: every object of it.
    Kind(Kind),
    /// Named objects.
    Objects(Vec<ObjectRef>),
}

/// Parses a kind as the CLI spells it.
pub fn parse_kind(s: &str) -> Result<Kind, SelectorError> {
    Kind::parse_cli(s).ok_or_else(|| SelectorError::UnknownKind(s.to_string()))
}

/// Parses one `KIND/NAME`.
pub fn parse_ref(s: &str) -> Result<ObjectRef, SelectorError> {
    let (kind, name) = s
        .split_once('/')
        .ok_or_else(|| SelectorError::BadRef(s.to_string()))?;
    if name.is_empty() || name.contains('/') || kind.is_empty() {
        return Err(SelectorError::BadRef(s.to_string()));
    }
    Ok(ObjectRef {
        kind: parse_kind(kind)?,
        name: name.to_string(),
    })
}

/// Parses the positional object arguments of `get`, `delete`, `events`, ….
pub fn parse_selection(args: &[String]) -> Result<Selection, SelectorError> {
    let Some(first) = args.first() else {
        return Ok(Selection::All);
    };
    if args.iter().any(|a| a.contains('/')) {
        if let Some(bare) = args.iter().find(|a| !a.contains('/')) {
            return Err(SelectorError::Mixed(bare.clone()));
        }
        return args
            .iter()
            .map(|a| parse_ref(a))
            .collect::<Result<_, _>>()
            .map(Selection::Objects);
    }
    let kind = parse_kind(first)?;
    if args.len() == 1 {
        return Ok(Selection::Kind(kind));
    }
    Ok(Selection::Objects(
        args[1..]
            .iter()
            .map(|name| ObjectRef {
                kind,
                name: name.clone(),
            })
            .collect(),
    ))
}

/// Parses arguments that must name objects (`KIND NAME…` or `KIND/NAME…`).
pub fn parse_objects(args: &[String]) -> Result<Vec<ObjectRef>, SelectorError> {
    match parse_selection(args)? {
        Selection::Objects(objects) => Ok(objects),
        Selection::All | Selection::Kind(_) => Err(SelectorError::Missing),
    }
}

/// Parses arguments that must name exactly one object.
pub fn parse_one(args: &[String]) -> Result<ObjectRef, SelectorError> {
    let mut objects = parse_objects(args)?;
    match objects.len() {
        1 => Ok(objects.remove(0)),
        n => Err(SelectorError::NotOne(n)),
    }
}

/// The lower-case singular used in CLI output: `vm`, `image`, `workspace`.
pub fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Image => "image",
        Kind::Vm => "vm",
        Kind::Workspace => "workspace",
    }
}

/// Displays an object as `vm/dev`.
pub struct Shown<'a>(pub &'a ObjectRef);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", kind_word(self.0.kind), self.0.name)
    }
}

/// `vm/dev` for a kind and a name.
pub fn show(kind: Kind, name: &str) -> String {
    format!("{}/{}", kind_word(kind), name)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn vm(name: &str) -> ObjectRef {
        ObjectRef {
            kind: Kind::Vm,
            name: name.to_string(),
        }
    }

    #[test]
    fn no_arguments_select_everything() {
        assert_eq!(parse_selection(&[]), Ok(Selection::All));
    }

    #[test]
    fn kind_alone_in_every_spelling() {
        for spelling in ["vm", "vms", "VM"] {
            assert_eq!(
                parse_selection(&args(&[spelling])),
                Ok(Selection::Kind(Kind::Vm))
            );
        }
        assert_eq!(
            parse_selection(&args(&["images"])),
            Ok(Selection::Kind(Kind::Image))
        );
        assert_eq!(
            parse_selection(&args(&["workspace"])),
            Ok(Selection::Kind(Kind::Workspace))
        );
    }

    #[test]
    fn kind_then_names() {
        assert_eq!(
            parse_selection(&args(&["vms", "dev", "web"])),
            Ok(Selection::Objects(vec![vm("dev"), vm("web")]))
        );
    }

    #[test]
    fn kind_slash_name_forms() {
        assert_eq!(
            parse_selection(&args(&["vm/dev", "image/base"])),
            Ok(Selection::Objects(vec![
                vm("dev"),
                ObjectRef {
                    kind: Kind::Image,
                    name: "base".into()
                }
            ]))
        );
        assert_eq!(parse_one(&args(&["vms/dev"])), Ok(vm("dev")));
    }

    #[test]
    fn bad_forms_are_errors() {
        assert_eq!(
            parse_selection(&args(&["vmz"])),
            Err(SelectorError::UnknownKind("vmz".into()))
        );
        assert_eq!(parse_ref("vm/"), Err(SelectorError::BadRef("vm/".into())));
        assert_eq!(parse_ref("/dev"), Err(SelectorError::BadRef("/dev".into())));
        assert_eq!(
            parse_ref("vm/a/b"),
            Err(SelectorError::BadRef("vm/a/b".into()))
        );
        assert_eq!(
            parse_selection(&args(&["vm/dev", "web"])),
            Err(SelectorError::Mixed("web".into()))
        );
        assert_eq!(parse_one(&args(&["vm"])), Err(SelectorError::Missing));
        assert_eq!(
            parse_one(&args(&["vm", "a", "b"])),
            Err(SelectorError::NotOne(2))
        );
    }

    #[test]
    fn shown_as_lowercase_kind_slash_name() {
        assert_eq!(Shown(&vm("dev")).to_string(), "vm/dev");
        assert_eq!(show(Kind::Workspace, "src"), "workspace/src");
    }
}
