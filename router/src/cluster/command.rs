//! Typed commands to the cluster task. The task owns the model; everyone else changes
//! or reads it by sending a command: a named type whose fields say what it needs and
//! whose [`Command::apply`] is the whole of what it does to the model. The task accepts
//! nothing else (there is no way to send it an arbitrary closure), so every way the
//! model can change is listed by `grep 'impl Command for'`.
//!
//! `apply` runs on the cluster task between genie reports: it must not block or do
//! I/O. A command that takes longer than [`SLOW_COMMAND`] is logged by name.

use std::time::Duration;

use super::Model;

/// A command that holds the cluster task this long delays every report queued behind
/// it; a fifth of the 500 ms suspect threshold is where that starts to matter.
pub const SLOW_COMMAND: Duration = Duration::from_millis(100);

/// One thing done to (or read from) the model, atomically.
pub trait Command: Send + 'static {
    type Output: Send + 'static;
    /// A few words for logs ("plan a VM's create").
    const NAME: &'static str;
    fn apply(self, m: &mut Model) -> Self::Output;
}

/// The answer of an applied command, sent once the task has published the model it
/// left: a caller that reads the snapshot after its answer sees its own change.
pub(super) type Answer = Box<dyn FnOnce() + Send>;

/// A command packed for the task's queue, its reply channel inside.
pub(super) struct Job {
    pub name: &'static str,
    pub run: Box<dyn FnOnce(&mut Model) -> Answer + Send>,
}

impl Job {
    pub fn new<C: Command>(cmd: C, reply: tokio::sync::oneshot::Sender<C::Output>) -> Self {
        Self {
            name: C::NAME,
            run: Box::new(move |m: &mut Model| {
                let out = cmd.apply(m);
                // The caller may have gone (cancelled): the command still took effect.
                Box::new(move || {
                    let _ = reply.send(out);
                })
            }),
        }
    }
}

/// For unit tests only: a command that runs a test's closure, to set the model up or
/// look into it in one step. Production code has no such door.
#[cfg(test)]
pub(crate) struct Inspect<F>(pub F);

#[cfg(test)]
impl<R: Send + 'static, F: FnOnce(&mut Model) -> R + Send + 'static> Command for Inspect<F> {
    type Output = R;
    const NAME: &'static str = "test inspection";
    fn apply(self, m: &mut Model) -> R {
        (self.0)(m)
    }
}
