//! QEMU `-M microvm` driver (owned by the QEMU work).
