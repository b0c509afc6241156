//! HTTP/JSON API of the daemon on a Unix socket.
pub mod server;
pub mod types;
