//! Fuzz target: the API's request decoding, as the daemon does it for
//! `POST /v1/apply` and `POST /v1/delete`: the JSON body into the request type, then
//! the request's files through the spec parser with one budget for the request.
//!
//! The input is the raw body. A body the JSON decoder refuses is a 400 and ends there;
//! an accepted one must parse to objects or to problems without panicking, and an
//! invalid apply must explain itself in one line.
#![no_main]

use banger_controller::api::types::{ApplyRequest, DeleteRequest};
use banger_controller::sources::apply::parse_files;
use banger_controller::sources::SourceError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ApplyRequest>(body) {
        check(parse_files(&request.files, &[]));
    }
    if let Ok(request) = serde_json::from_slice::<DeleteRequest>(body) {
        if !request.files.is_empty() {
            check(parse_files(&request.files, &[]));
        }
    }
});

fn check<T>(result: Result<T, SourceError>) {
    match result {
        Ok(_) => {}
        Err(SourceError::Invalid { message, problems }) => {
            assert!(!problems.is_empty(), "invalid without a problem");
            assert!(
                !message.contains('\n'),
                "message is not one line: {message:?}"
            );
        }
        Err(other) => panic!("parsing request files can only be invalid: {other}"),
    }
}
