//! router: the controller daemon and CLI.
fn main() {}
