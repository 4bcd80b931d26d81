//! genie: the agent on every server.
fn main() {}
