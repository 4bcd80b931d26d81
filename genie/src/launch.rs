//! From a router's `VmSpec` to a [`Launch`] this host can run, or an error naming the
//! VM and the field, before anything is started.
//!
//! Every check the genie can make without QEMU happens here: the files come from
//! `image_dirs` (resolved), the disk's format is raw or qcow2 and the disk is not used
//! by another VM here, each NIC's network is configured and its bridge exists, MACs
//! are unicast and distinct, and the CPU model is one this host can give.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use wisp_common::vm::mac_is_unicast;
use wisp_common::{VmId, VmSpec};

use crate::accel::{self, Accel};
use crate::images::{self, ImageError};
use crate::ports::PortRange;
use crate::qemu::{self, Launch, LaunchNic};
use crate::taps::{self, TapError};

/// A guest gets at most this many NICs (PCI slots are plenty; this is a sanity bound).
pub const MAX_NICS: usize = 8;
/// Linux's own limit on a kernel command line is 2048 on x86 by default; be generous.
pub const MAX_APPEND: usize = 4096;

/// How this host starts VMs (from genie.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmOptions {
    pub accel: Accel,
    /// Network name → bridge.
    pub networks: BTreeMap<String, String>,
    pub image_dirs: Vec<PathBuf>,
    /// Where incoming migrations listen.
    pub migration_ports: PortRange,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("VM {vm}: {field}: {reason}")]
    Bad {
        vm: VmId,
        field: &'static str,
        reason: String,
    },
}

fn bad(vm: &VmId, field: &'static str, reason: impl Into<String>) -> LaunchError {
    LaunchError::Bad {
        vm: vm.clone(),
        field,
        reason: reason.into(),
    }
}

/// Checks `spec` against this host and resolves it. `cpu_models` are the models this
/// host can give (None: not known yet, any valid name is tried and QEMU's `enforce`
/// decides). `vm_dir` holds the runtime files of the other VMs (for the disk check).
pub fn resolve(
    spec: &VmSpec,
    opts: &VmOptions,
    cpu_models: Option<&[String]>,
    vm_dir: &Path,
) -> Result<Launch, LaunchError> {
    let vm = &spec.name;
    let dirs = &opts.image_dirs;
    let mut l = Launch::bare(spec);
    l.accel = opts.accel;
    l.kernel = spec
        .kernel
        .as_deref()
        .map(|p| images::allowed_path(vm, "kernel", p, dirs))
        .transpose()?;
    l.initrd = spec
        .initrd
        .as_deref()
        .map(|p| images::allowed_path(vm, "initrd", p, dirs))
        .transpose()?;
    if l.initrd.is_some() && l.kernel.is_none() {
        return Err(bad(vm, "initrd", "an initrd needs a kernel"));
    }
    if let Some(a) = &spec.append {
        if l.kernel.is_none() {
            return Err(bad(vm, "append", "a kernel command line needs a kernel"));
        }
        if a.len() > MAX_APPEND || a.contains(['\0', '\n']) {
            return Err(bad(
                vm,
                "append",
                format!("at most {MAX_APPEND} bytes on one line"),
            ));
        }
        l.append = Some(a.clone());
    }
    if let Some(p) = &spec.disk {
        let real = images::allowed_path(vm, "disk", p, dirs)?;
        if let Some(other) = disk_user(vm, &real, vm_dir) {
            return Err(ImageError::InUse {
                vm: vm.clone(),
                path: p.clone(),
                other,
            }
            .into());
        }
        let format = images::disk_format(vm, &real, spec.disk_format)?;
        l.disk = Some((real, format));
    }
    if let Some(m) = &spec.cpu_model {
        if !accel::valid_cpu_model(m) {
            return Err(bad(
                vm,
                "cpu_model",
                format!("{m:?} is not a CPU model name"),
            ));
        }
        if cpu_models.is_some_and(|ms| !ms.iter().any(|x| x == m)) {
            return Err(bad(
                vm,
                "cpu_model",
                format!(
                    "this host cannot give a guest CPU model {m} under {}",
                    opts.accel.as_str()
                ),
            ));
        }
        l.cpu_model = Some(m.clone());
    }
    l.nics = nics(spec, opts)?;
    l.vhost = opts.accel == Accel::Kvm && Path::new("/dev/vhost-net").exists();
    Ok(l)
}

fn nics(spec: &VmSpec, opts: &VmOptions) -> Result<Vec<LaunchNic>, LaunchError> {
    let vm = &spec.name;
    if spec.nics.len() > MAX_NICS {
        return Err(bad(vm, "nics", format!("at most {MAX_NICS} NICs")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(spec.nics.len());
    for (index, n) in spec.nics.iter().enumerate() {
        let Some(bridge) = opts.networks.get(&n.network) else {
            return Err(TapError::UnknownNetwork {
                vm: vm.clone(),
                index,
                network: n.network.clone(),
                known: if opts.networks.is_empty() {
                    "none".into()
                } else {
                    opts.networks.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }
            .into());
        };
        if !mac_is_unicast(&n.mac) {
            return Err(bad(vm, "mac", format!("{} is a multicast address", n.mac)));
        }
        if !seen.insert(n.mac) {
            return Err(bad(vm, "mac", format!("{} is given to two NICs", n.mac)));
        }
        out.push(LaunchNic {
            tap: taps::tap_name(vm, index),
            bridge: bridge.clone(),
            mac: n.mac,
        });
    }
    // The spec's own mistakes first; then whether this host is set up for it.
    for (index, n) in out.iter().enumerate() {
        if !taps::is_bridge(&n.bridge) {
            return Err(TapError::NoBridge {
                vm: vm.clone(),
                index,
                network: spec.nics[index].network.clone(),
                bridge: n.bridge.clone(),
            }
            .into());
        }
    }
    Ok(out)
}

/// Another VM with a live qemu here whose disk resolves to `real`. QEMU's own image
/// lock would refuse the second one too, but only after the start, with a message
/// that names no VM.
fn disk_user(vm: &VmId, real: &Path, vm_dir: &Path) -> Option<VmId> {
    let rd = std::fs::read_dir(vm_dir).ok()?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let Ok(other) = VmId::new(stem) else { continue };
        if &other == vm {
            continue;
        }
        let Some(rt) = qemu::read_runtime_file(&e.path()) else {
            continue;
        };
        let alive = qemu::read_pid(&vm_dir.join(format!("{other}.pid")))
            .is_some_and(|p| qemu::is_our_qemu(p, &other));
        let same = rt
            .spec
            .disk
            .and_then(|d| d.canonicalize().ok())
            .is_some_and(|d| d == real);
        if alive && same {
            return Some(other);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wisp_common::NicSpec;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn setup(tag: &str) -> (Dir, VmOptions) {
        let d = std::env::temp_dir().join(format!("genie-launch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/k"), b"kernel").unwrap();
        std::fs::write(d.join("img/d.raw"), [0u8; 512]).unwrap();
        let opts = VmOptions {
            accel: Accel::Tcg,
            networks: [("lan".to_string(), "lo".to_string())].into(),
            image_dirs: vec![d.join("img")],
            ..VmOptions::default()
        };
        (Dir(d), opts)
    }

    fn spec(d: &Dir) -> VmSpec {
        let mut s = VmSpec::new(VmId::new("vm1").unwrap(), 1, 64);
        s.kernel = Some(d.0.join("img/k"));
        s.disk = Some(d.0.join("img/d.raw"));
        s
    }

    fn err(s: &VmSpec, o: &VmOptions, d: &Dir) -> String {
        resolve(s, o, Some(&["qemu64".to_string()]), &d.0)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_spec_resolves_with_the_detected_format() {
        let (d, o) = setup("good");
        let mut s = spec(&d);
        s.append = Some("console=ttyS0".into());
        s.cpu_model = Some("qemu64".into());
        let l = resolve(&s, &o, Some(&["qemu64".to_string()]), &d.0).unwrap();
        assert_eq!(l.disk.unwrap().1, wisp_common::DiskFormat::Raw);
        assert_eq!(l.cpu_model.as_deref(), Some("qemu64"));
        assert!(l.kernel.unwrap().is_absolute());
    }

    #[test]
    fn bad_input_names_the_vm_and_the_field() {
        let (d, o) = setup("bad");
        type Edit = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.disk = Some("/etc/shadow".into())), "disk"),
            (
                Box::new(|s| s.kernel = Some("/etc/passwd".into())),
                "kernel",
            ),
            (
                Box::new(|s| s.cpu_model = Some("Nehalem".into())),
                "cpu_model",
            ),
            (
                Box::new(|s| s.cpu_model = Some("qemu64,+vmx".into())),
                "cpu_model",
            ),
            (
                Box::new(|s| {
                    s.kernel = None;
                    s.append = Some("x".into());
                }),
                "append",
            ),
        ];
        for (edit, field) in cases {
            let mut s = spec(&d);
            edit(&mut s);
            let e = err(&s, &o, &d);
            assert!(e.contains("vm1") && e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn nic_errors_name_the_network_or_the_mac() {
        let (d, o) = setup("nics");
        let nic = |net: &str, mac: &str| NicSpec {
            network: net.into(),
            mac: mac.parse().unwrap(),
        };
        let mut s = spec(&d);
        s.nics = vec![nic("wan", "02:00:00:00:00:01")];
        let e = err(&s, &o, &d);
        assert!(
            e.contains("wan") && e.contains("lan") && e.contains("vm1"),
            "{e}"
        );
        s.nics = vec![nic("lan", "03:00:00:00:00:01")];
        assert!(err(&s, &o, &d).contains("multicast"));
        s.nics = vec![
            nic("lan", "02:00:00:00:00:01"),
            nic("lan", "02:00:00:00:00:01"),
        ];
        assert!(err(&s, &o, &d).contains("two NICs"));
        // `lo` is no bridge: the network's bridge must exist as one.
        s.nics = vec![nic("lan", "02:00:00:00:00:01")];
        let e = err(&s, &o, &d);
        assert!(e.contains("bridge lo"), "{e}");
    }
}
