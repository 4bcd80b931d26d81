//! Host power actions the router can ask for: arm Wake-on-LAN, then suspend.

use std::future::Future;
use std::process::Stdio;

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

/// The real thing: `ethtool -s <if> wol g` and the configured suspend command.
#[derive(Debug, Clone)]
pub struct SystemPower {
    pub wol_interface: Option<String>,
    pub suspend_command: Vec<String>,
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
