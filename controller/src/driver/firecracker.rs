//! Firecracker driver (owned by the Firecracker work).
