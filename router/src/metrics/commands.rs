//! The metrics module's one command: a no-op that proves the cluster task answers.

use crate::cluster::Command;
use crate::model::Model;

/// Does nothing; answering at all is the point (health check, watchdog).
#[derive(Debug)]
pub struct Ping;

impl Command for Ping {
    type Output = ();
    const NAME: &'static str = "answer a health check";

    fn apply(self, _m: &mut Model) {}
}
