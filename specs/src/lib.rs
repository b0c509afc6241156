//! # banger-specs: the spec language of banger
//!
//! banger users describe what they want as YAML documents of three kinds (`Image`,
//! `VM`, `Workspace`) under `apiVersion: banger.dev/v1alpha1`. This crate is the pure
//! part that turns those documents into checked, canonical Rust values:
//!
//! - [`types`]: the resource types ([`Resource`], [`VmSpec`], …) in canonical form;
//! - [`load`]: reading files, directories and stdin into [`LoadedObject`]s, reporting
//!   every [`Problem`] as one line with `file:line:column` and the field path;
//! - [`canonical`]: the canonical JSON form of a spec and its stable hash;
//! - [`schema`]: JSON Schemas generated from the types (checked in under `schemas/`);
//! - [`yaml`]: the one module that talks to the YAML libraries.
//!
//! The crate does no host probing: it reads the files it is asked to read and nothing
//! else.

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

pub use load::{LoadSet, LoadedObject, Origin};
pub use problem::{Problem, Severity};
pub use quantity::ByteSize;
pub use types::*;
