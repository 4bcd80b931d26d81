//! Admission of operations on a VM: at most one operation (start, stop, migrate,
//! delete) holds a VM at a time, so a user command, the reconciler and the energy
//! planner never act on one VM at once.
//!
//! A claim is a guard: dropping a [`Claim`] releases the VM, whatever ended the
//! operation — success, an error, a panic, or the future being cancelled (an HTTP
//! client that gives up makes hyper drop its handler). Nothing is released by
//! remembering to call a function. The release travels to the cluster task over an
//! unbounded channel (a `Drop` cannot await), and the task applies them before any
//! other message, so a release always takes effect before a request sent after it.
//! Each claim carries a serial number: a late release never frees a newer claim.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use wisp_common::{HostId, VmId};

/// An operation in flight on a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Start {
        host: HostId,
    },
    /// Stop (or drop a stale copy) on `host`; `None` when no copy runs anywhere and
    /// only the desired state changes.
    Stop {
        host: Option<HostId>,
    },
    Migrate {
        from: HostId,
        to: HostId,
    },
    Delete,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Start { host } => write!(f, "starting on {host}"),
            Op::Stop { host: Some(h) } => write!(f, "stopping on {h}"),
            Op::Stop { host: None } => write!(f, "stopping"),
            Op::Migrate { from, to } => write!(f, "migrating from {from} to {to}"),
            Op::Delete => write!(f, "being deleted"),
        }
    }
}

/// A release sent by a dropped [`Claim`].
#[derive(Debug)]
pub struct Release {
    vm: VmId,
    serial: u64,
}

/// Holds `vm` for one operation until dropped.
#[derive(Debug)]
#[must_use = "dropping a claim releases the VM at once"]
pub struct Claim {
    vm: VmId,
    serial: u64,
    release: mpsc::UnboundedSender<Release>,
}

impl Claim {
    pub fn vm(&self) -> &VmId {
        &self.vm
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Fails only when the cluster task is gone, and with it every claim.
        let _ = self.release.send(Release {
            vm: self.vm.clone(),
            serial: self.serial,
        });
    }
}

/// The VM is held by another operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub vm: VmId,
    pub op: Op,
}

/// The claims the model keeps: which VM is held by which operation, and the releases
/// of dropped guards not yet applied.
#[derive(Debug)]
pub struct Claims {
    held: HashMap<VmId, (u64, Op)>,
    next_serial: u64,
    release: mpsc::UnboundedSender<Release>,
    releases: mpsc::UnboundedReceiver<Release>,
}

impl Default for Claims {
    fn default() -> Self {
        Self::new()
    }
}

impl Claims {
    /// New, empty claims.
    pub fn new() -> Self {
        let (release, releases) = mpsc::unbounded_channel();
        Self {
            held: HashMap::new(),
            next_serial: 1,
            release,
            releases,
        }
    }

    /// Applies the releases of every guard dropped so far. The cluster task calls it
    /// before each message, so a release sent before a request takes effect first.
    pub fn apply_releases(&mut self) {
        while let Ok(r) = self.releases.try_recv() {
            self.release(r);
        }
    }

    /// Holds `vm` for `op`, or says what holds it already.
    pub fn claim(&mut self, vm: &VmId, op: Op) -> Result<Claim, Busy> {
        self.apply_releases();
        if let Some((_, cur)) = self.held.get(vm) {
            return Err(Busy {
                vm: vm.clone(),
                op: cur.clone(),
            });
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.held.insert(vm.clone(), (serial, op));
        Ok(Claim {
            vm: vm.clone(),
            serial,
            release: self.release.clone(),
        })
    }

    /// Applies a release from a dropped claim (a stale one is ignored).
    fn release(&mut self, r: Release) {
        if self.held.get(&r.vm).is_some_and(|(s, _)| *s == r.serial) {
            self.held.remove(&r.vm);
        }
    }

    /// What holds `vm`, if anything.
    pub fn op(&self, vm: &VmId) -> Option<&Op> {
        self.held.get(vm).map(|(_, op)| op)
    }

    pub fn is_held(&self, vm: &VmId) -> bool {
        self.held.contains_key(vm)
    }

    /// Every VM held, with its operation.
    pub fn iter(&self) -> impl Iterator<Item = (&VmId, &Op)> {
        self.held.iter().map(|(vm, (_, op))| (vm, op))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vm(s: &str) -> VmId {
        VmId::new(s).unwrap()
    }

    #[test]
    fn a_held_vm_is_busy_until_its_claim_drops() {
        let mut c = Claims::new();
        let g = c.claim(&vm("a"), Op::Delete).unwrap();
        let busy = c.claim(&vm("a"), Op::Stop { host: None }).unwrap_err();
        assert_eq!(busy.op, Op::Delete);
        // Another VM is independent.
        let _b = c.claim(&vm("b"), Op::Delete).unwrap();
        drop(g);
        c.apply_releases();
        assert!(!c.is_held(&vm("a")));
        assert!(c.is_held(&vm("b")));
        let _again = c.claim(&vm("a"), Op::Delete).unwrap();
    }

    #[test]
    fn a_late_release_never_frees_a_newer_claim() {
        let mut c = Claims::new();
        let old = c.claim(&vm("a"), Op::Delete).unwrap();
        // The claims are forgotten (as tests of the reconciler do between passes) and
        // the VM claimed again while the old guard still lives.
        c.held.clear();
        let _new = c.claim(&vm("a"), Op::Delete).unwrap();
        drop(old);
        c.apply_releases();
        assert!(c.is_held(&vm("a")), "a stale release freed a newer claim");
    }

    #[test]
    fn ops_read_as_words() {
        let h = HostId::new("h1").unwrap();
        let h2 = HostId::new("h2").unwrap();
        assert_eq!(
            Op::Migrate {
                from: h.clone(),
                to: h2
            }
            .to_string(),
            "migrating from h1 to h2"
        );
        assert_eq!(Op::Stop { host: None }.to_string(), "stopping");
        assert_eq!(Op::Start { host: h }.to_string(), "starting on h1");
    }
}
