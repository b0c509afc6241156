//! Shared harness for banger end-to-end tests.
