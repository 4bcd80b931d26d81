//! What this host's VMs run on: the accelerator (genie.toml `accel`, probed once at
//! start) and the CPU models QEMU can give a guest here.
//!
//! `auto` opens /dev/kvm and asks `KVM_GET_API_VERSION`: a KVM that answers 12 (the
//! only stable API version there has ever been) is used; a missing or broken one
//! falls back to TCG with a warning, reported to the router. `kvm` insists and makes
//! the genie refuse to start without a working KVM.
//!
//! CPU models: `query-cpu-definitions` on a `-machine none` QEMU lists every model
//! with the features this host and accelerator lack; a model with none missing can
//! be given to a guest (started with `enforce`, so QEMU never quietly drops one).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::config::AccelChoice;

/// The stable KVM API version (include/uapi/linux/kvm.h).
const KVM_API_VERSION: i32 = 12;
/// A `-machine none` qemu answers in well under a second; a loaded host may be slow.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

/// The accelerator VMs are started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    Kvm,
    #[default]
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("genie.toml says accel = \"kvm\", but KVM cannot be used: {reason}")]
pub struct KvmUnusable {
    pub reason: String,
}

/// Opens `dev` and checks the KVM API version. The one `unsafe` of the genie: an
/// ioctl has no safe wrapper, and merely opening /dev/kvm does not show that the
/// module behind it answers.
#[allow(unsafe_code)]
pub fn probe_kvm(dev: &Path) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd
    // is open for the duration of the call.
    let v = unsafe { kvm_get_api_version(f.as_raw_fd()) }
        .map_err(|e| format!("KVM_GET_API_VERSION on {} failed: {e}", dev.display()))?;
    if v != KVM_API_VERSION {
        return Err(format!(
            "{} speaks KVM API {v}, not {KVM_API_VERSION}",
            dev.display()
        ));
    }
    Ok(())
}

/// The accelerator for `choice`, and why it is not the one asked for (auto's
/// fallback). `dev` is /dev/kvm outside tests.
pub fn resolve(choice: AccelChoice, dev: &Path) -> Result<(Accel, Option<String>), KvmUnusable> {
    match choice {
        AccelChoice::Tcg => Ok((Accel::Tcg, None)),
        AccelChoice::Kvm => probe_kvm(dev)
            .map(|()| (Accel::Kvm, None))
            .map_err(|reason| KvmUnusable { reason }),
        AccelChoice::Auto => match probe_kvm(dev) {
            Ok(()) => Ok((Accel::Kvm, None)),
            Err(reason) => {
                tracing::warn!(%reason, "accel = auto: KVM unusable, VMs run under TCG (much slower)");
                Ok((
                    Accel::Tcg,
                    Some(format!("KVM unusable, using TCG: {reason}")),
                ))
            }
        },
    }
}

/// The CPU models `qemu` can give a guest under `accel` on this host, sorted.
pub async fn usable_cpu_models(qemu: &Path, accel: Accel) -> Result<Vec<String>, String> {
    let mut child = tokio::process::Command::new(qemu)
        .args(["-machine", &format!("none,accel={}", accel.as_str())])
        .args(["-nodefaults", "-display", "none", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let script = concat!(
            "{\"execute\":\"qmp_capabilities\"}\n",
            "{\"execute\":\"query-cpu-definitions\"}\n",
            "{\"execute\":\"quit\"}\n"
        );
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("cannot talk to {}: {e}", qemu.display()))?;
    }
    let out = tokio::time::timeout(LIST_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{} did not answer within {LIST_TIMEOUT:?}", qemu.display()))?
        .map_err(|e| format!("{} failed: {e}", qemu.display()))?;
    parse_cpu_definitions(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        format!(
            "{} -machine none,accel={} gave no CPU list (exit {})",
            qemu.display(),
            accel.as_str(),
            out.status
        )
    })
}

/// The names with no `unavailable-features` in QMP's `query-cpu-definitions` answer,
/// found among the lines of a QMP session.
pub fn parse_cpu_definitions(session: &str) -> Option<Vec<String>> {
    let list = session
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("return").and_then(Value::as_array).cloned())?;
    let mut names: Vec<String> = list
        .iter()
        .filter(|d| {
            d.get("unavailable-features")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
        })
        .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    names.sort();
    Some(names)
}

/// A CPU model name QEMU can be given without option parsing surprises.
pub fn valid_cpu_model(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 64
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn explicit_tcg_needs_no_probe_and_a_missing_kvm_falls_back_or_refuses() {
        let none = Path::new("/wisp/no/such/kvm");
        assert_eq!(resolve(AccelChoice::Tcg, none).unwrap(), (Accel::Tcg, None));
        let (a, note) = resolve(AccelChoice::Auto, none).unwrap();
        assert_eq!(a, Accel::Tcg);
        assert!(note.unwrap().contains("/wisp/no/such/kvm"));
        let e = resolve(AccelChoice::Kvm, none).unwrap_err().to_string();
        assert!(
            e.contains("accel = \"kvm\"") && e.contains("cannot open"),
            "{e}"
        );
        // A file that is not KVM: the ioctl fails.
        let e = probe_kvm(Path::new("/dev/null")).unwrap_err();
        assert!(e.contains("KVM_GET_API_VERSION"), "{e}");
    }

    #[test]
    fn cpu_definitions_keep_the_models_with_nothing_missing() {
        let session = r#"{"QMP": {"version": {}}}
{"return": {}}
{"return": [{"name": "max", "unavailable-features": []}, {"name": "Nehalem", "unavailable-features": ["sse4.2"]}, {"name": "qemu64"}]}
{"return": {}}"#;
        assert_eq!(
            parse_cpu_definitions(session).unwrap(),
            vec!["max".to_string(), "qemu64".into()]
        );
        assert_eq!(parse_cpu_definitions("garbage"), None);
    }

    #[test]
    fn cpu_model_names_cannot_carry_options() {
        assert!(valid_cpu_model("Nehalem-v2") && valid_cpu_model("qemu64"));
        for bad in ["", "host,+vmx", "a b", "x=y"] {
            assert!(!valid_cpu_model(bad), "{bad}");
        }
    }
}
