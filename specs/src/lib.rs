//! # banger-specs: the spec language of banger
//!
//! banger users describe what they want as YAML documents of three kinds (`Image`,
//! `VM`, `Workspace`) under `apiVersion: banger.dev/v1alpha1`. This crate is the pure
//! part that turns those documents into checked, canonical Rust values:
//!
//! - [`types`]: the resource types ([`Resource`], [`VmSpec`], …) in canonical form;
//! - [`load`]: reading files, directories and stdin into [`LoadedObject`]s, reporting
//!   every [`Problem`] as one line with `file:line:column` and the field path, and the
//!   set-level checks (duplicate names, references);
//! - [`decode`]: the rules of every field, defaults and normalisation;
//! - [`quantity`]: sizes (`512MiB`, `2G`: every suffix is binary);
//! - [`name`]: DNS-label names, label and annotation keys, banger's annotations;
//! - [`canonical`]: the canonical JSON form of a spec, its stable hash, and reading a
//!   resource back from JSON;
//! - [`schema`]: JSON Schemas generated from the types (checked in under `schemas/`);
//! - [`yaml`]: the one module that talks to the YAML libraries.
//!
//! ```
//! use banger_specs::load::parse_document_set;
//!
//! let yaml = b"apiVersion: banger.dev/v1alpha1\nkind: VM\nmetadata:\n  name: dev\nspec:\n  image: base\n  memory: 1G\n";
//! let load = parse_document_set(yaml, "dev.yaml", std::path::Path::new("/specs"));
//! assert!(load.problems.is_empty());
//! let vm = &load.objects[0].resource;
//! assert_eq!(vm.spec_json()["memory"], 1 << 30); // 1G is one GiB, in bytes
//! assert_eq!(vm.spec_json()["vcpus"], 1);        // defaults are filled
//! ```
//!
//! ## References outside the load
//! A VM names an Image and a Workspace names a VM. When the named object is not among
//! the documents loaded together, [`load::check_set`] reports a **warning**, not an
//! error: the daemon may already know the object (applied earlier, or from another
//! spec directory), and it reports a reference that is still dangling when it
//! reconciles. Duplicate names of one kind within a load are errors.
//!
//! The crate does no host probing: it reads the files it is asked to read and nothing
//! else (paths are resolved lexically, never checked for existence).

pub mod canonical;
pub mod decode;
pub mod load;
pub mod name;
pub mod problem;
pub mod quantity;
pub mod schema;
pub mod suggest;
pub mod types;
pub mod yaml;

pub use canonical::{resource_from_json, CanonicalError};
pub use load::{
    check_set, load_file, load_inputs, parse_document_set, FileLoad, LoadSet, LoadedObject, Origin,
};
pub use problem::{Problem, Severity};
pub use quantity::ByteSize;
pub use types::*;
