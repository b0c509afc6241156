//! One module per `banger` subcommand: its arguments (clap derive) and its `run`.

pub mod apply;
pub mod completion;
pub mod connect;
pub mod cp;
pub mod daemon;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod doctor;
pub mod events;
pub mod exec;
pub mod gc;
pub mod get;
pub mod image;
pub mod logs;
pub mod port_forward;
pub mod retry;
pub mod run;
pub mod ssh;
pub mod ssh_config;
pub mod wait;
pub mod workspace;

use banger_controller::api::types::{ErrorBody, ObjectRef};

use crate::client::ClientError;
use crate::selector::kind_word;

/// The error `get`/`describe` report for an object the daemon does not know.
pub fn not_found(object: &ObjectRef) -> ClientError {
    ClientError::Api {
        status: 404,
        body: ErrorBody {
            error: format!("{} {:?} not found", kind_word(object.kind), object.name),
            code: "not-found".to_string(),
            problems: Vec::new(),
        },
    }
}
