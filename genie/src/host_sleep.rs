//! Host power actions the router can ask for: arm Wake-on-LAN, then suspend; and the
//! real implementations of learning the host's power abilities and relaying a wake.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;

use wisp_bmc::WakeReport;
use wisp_common::proto::{PowerCaps, WolRelay};

use crate::power_caps::{self, CapsProbe};
use crate::wol_relay::{self, RelayError, WolRelayer};

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed with {status}: {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// Power effects on this host.
pub trait Power: Send + Sync + 'static {
    /// Arms the NIC to wake the host on a magic packet.
    fn arm_wol(&self) -> impl Future<Output = Result<(), PowerError>> + Send;
    /// Suspends the host; returns after it wakes up again (or the command fails).
    fn suspend(&self) -> impl Future<Output = Result<(), PowerError>> + Send;
}

/// The real thing: `ethtool -s <if> wol g` and the configured suspend command; also
/// learns [`PowerCaps`] from `sys_power_dir` and ethtool, and relays wakes on
/// `wol_interface`.
#[derive(Debug, Clone)]
pub struct SystemPower {
    pub wol_interface: Option<String>,
    pub suspend_command: Vec<String>,
    /// Where `state` and `mem_sleep` are read (`/sys/power` on a real host).
    pub sys_power_dir: PathBuf,
}

async fn run(argv: &[String]) -> Result<(), PowerError> {
    let (program, args) = argv.split_first().ok_or_else(|| PowerError::Spawn {
        program: String::new(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| PowerError::Spawn {
            program: program.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PowerError::Failed {
            program: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Power for SystemPower {
    async fn arm_wol(&self) -> Result<(), PowerError> {
        match &self.wol_interface {
            Some(i) => {
                run(&[
                    "ethtool".into(),
                    "-s".into(),
                    i.clone(),
                    "wol".into(),
                    "g".into(),
                ])
                .await
            }
            None => {
                tracing::info!("no wol_interface configured: not arming Wake-on-LAN (the NIC's own setting applies)");
                Ok(())
            }
        }
    }

    async fn suspend(&self) -> Result<(), PowerError> {
        run(&self.suspend_command).await
    }
}

impl CapsProbe for SystemPower {
    async fn learn(&self) -> PowerCaps {
        power_caps::learn_system(&self.sys_power_dir, self.wol_interface.as_deref()).await
    }
}

impl WolRelayer for SystemPower {
    async fn relay_wol(&self, relay: WolRelay) -> Result<WakeReport, RelayError> {
        wol_relay::relay_with_waker(self.wol_interface.as_deref(), relay).await
    }
}
