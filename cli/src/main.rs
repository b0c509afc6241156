//! `banger`: the command-line interface.
fn main() {}
