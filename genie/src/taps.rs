//! A VM's NICs on the host: one tap device per NIC, a port of the bridge its network
//! names in genie.toml.
//!
//! QEMU creates each tap itself (`-netdev tap,ifname=...`) as a non-persistent device:
//! the kernel removes it when the last fd closes, i.e. when that qemu exits however it
//! exits (quit, SIGKILL, a migration's source quitting). The tap's lifetime is the VM's
//! by construction, so nothing can leak one. The genie then makes it a port of the
//! bridge and brings it up (`ip link`), before the guest runs (or, for an incoming
//! migration, before the source is told where to send it).
//!
//! Tap names come from the VM's name (`wt<fnv32 hex>n<i>`, 12 characters, within
//! Linux's 15), so the same VM gets the same names on every host and after a genie
//! restart.

use std::path::Path;

use wisp_common::VmId;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("VM {vm}: NIC {index}: network {network:?} is not in genie.toml's [networks] on this host (known: {known})")]
    UnknownNetwork {
        vm: VmId,
        index: usize,
        network: String,
        known: String,
    },
    #[error(
        "VM {vm}: NIC {index}: bridge {bridge} of network {network} does not exist on this host"
    )]
    NoBridge {
        vm: VmId,
        index: usize,
        network: String,
        bridge: String,
    },
    #[error("VM {vm}: cannot attach tap {tap} to bridge {bridge}: {reason}")]
    Attach {
        vm: VmId,
        tap: String,
        bridge: String,
        reason: String,
    },
}

/// The tap of NIC `index` of `vm`.
pub fn tap_name(vm: &VmId, index: usize) -> String {
    // FNV-1a, 32 bits: stable across Rust versions (unlike DefaultHasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in vm.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("wt{h:08x}n{index}")
}

/// True if `name` is a bridge on this host.
pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// True if an interface `name` exists.
pub fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes a leftover `tap` (a persistent one someone made, which QEMU would otherwise
/// silently reuse). Only called when no qemu of the VM runs here.
pub async fn remove_leftover(tap: &str) {
    if exists(tap) {
        if let Err(e) = ip(&["link", "del", "dev", tap]).await {
            tracing::warn!(tap, error = %e, "cannot remove a leftover tap");
        }
    }
}

/// Makes `tap` a port of `bridge` and brings it up.
pub async fn attach(vm: &VmId, tap: &str, bridge: &str) -> Result<(), TapError> {
    let err = |reason| TapError::Attach {
        vm: vm.clone(),
        tap: tap.to_owned(),
        bridge: bridge.to_owned(),
        reason,
    };
    ip(&["link", "set", "dev", tap, "master", bridge])
        .await
        .map_err(err)?;
    ip(&["link", "set", "dev", tap, "up"]).await.map_err(err)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tap_names_are_stable_short_and_distinct() {
        let a = VmId::new("vm1").unwrap();
        let b = VmId::new("vm2").unwrap();
        assert_eq!(tap_name(&a, 0), tap_name(&a, 0));
        assert_ne!(tap_name(&a, 0), tap_name(&b, 0));
        assert_ne!(tap_name(&a, 0), tap_name(&a, 1));
        let long = VmId::new("a-very-long-vm-name-indeed-0123456789").unwrap();
        assert!(tap_name(&long, 7).len() <= 15);
        // FNV-1a of "vm1" (computed independently), so names survive a Rust upgrade.
        assert_eq!(tap_name(&a, 0), "wt511c93a7n0");
    }
}
