//! HTTP/JSON API of the daemon on a Unix socket: the accept loop with its limits and
//! peer credentials ([`listener`]), who may do what ([`authz`]), bounded request
//! bodies ([`body`]), JSON for every error ([`error_body`]), the routes and handlers
//! ([`server`]), the list written from the stored text ([`listing`]), the byte stream
//! to a guest port ([`connect`]), the Workspace round trip ([`workspace`]: sync
//! requests and exports), the wire types the CLI shares ([`types`]) and the mapping of
//! the engine's typed values to them ([`views`]).
pub mod authz;
pub mod body;
pub mod connect;
pub mod error_body;
pub mod listener;
pub mod listing;
pub mod server;
pub mod types;
pub mod views;
pub mod workspace;
