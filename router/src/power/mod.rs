//! The router's power plane: one BMC client per host (IPMI over the LAN) and the
//! Wake-on-LAN sender, built once from the config. These are effect handles, not
//! state: the power state the router believes is in the cluster model.

pub mod actions;
pub mod api;
mod commands;
pub mod drill;
mod error;
pub mod mark;
pub mod quarantine;
pub mod status;
pub mod suspend;
pub mod wait;
pub mod wake;

pub use error::PowerError;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use wisp_bmc::{Bmc, BmcConfig, IpmiBmc, MacAddr, Waker, WolWaker};
use wisp_common::secret::{Secret, SecretError};
use wisp_common::HostId;

use crate::config::RouterConfig;

#[derive(Debug, thiserror::Error)]
pub enum PowerSetupError {
    #[error("host {host}: BMC password file {path}")]
    Password {
        host: HostId,
        path: PathBuf,
        #[source]
        source: SecretError,
    },
    #[error("host {host}: {reason}")]
    Bmc { host: HostId, reason: String },
}

/// BMC clients and the waker, by host.
#[derive(Debug, Default)]
pub struct PowerPlane {
    bmcs: HashMap<HostId, Arc<dyn Bmc>>,
    waker: Option<Arc<dyn Waker>>,
    macs: HashMap<HostId, MacAddr>,
}

impl PowerPlane {
    /// Real IPMI clients for every host with a `bmc`, and a WoL sender on
    /// `wol_interface` when configured. Password files are read (and their mode
    /// checked) here, once.
    pub fn from_config(cfg: &RouterConfig) -> Result<Self, PowerSetupError> {
        let mut bmcs: HashMap<HostId, Arc<dyn Bmc>> = HashMap::new();
        let mut macs = HashMap::new();
        for h in &cfg.hosts {
            macs.insert(h.name.clone(), h.mac);
            let Some(addr) = h.bmc_addr() else { continue };
            let addr = addr.map_err(|reason| PowerSetupError::Bmc {
                host: h.name.clone(),
                reason,
            })?;
            let path = h
                .bmc_password_file
                .clone()
                .ok_or_else(|| PowerSetupError::Bmc {
                    host: h.name.clone(),
                    reason: "bmc set without bmc_password_file".into(),
                })?;
            let password =
                Secret::from_file(&path).map_err(|source| PowerSetupError::Password {
                    host: h.name.clone(),
                    path: path.clone(),
                    source,
                })?;
            let user = h.bmc_user.clone().unwrap_or_else(|| "admin".into());
            bmcs.insert(
                h.name.clone(),
                Arc::new(crate::metrics::bmc::Timed(IpmiBmc::new(BmcConfig::new(
                    addr, user, password,
                )))),
            );
        }
        let waker = cfg
            .wol_interface
            .as_ref()
            .map(|i| Arc::new(WolWaker::new(i.clone())) as Arc<dyn Waker>);
        Ok(Self { bmcs, waker, macs })
    }

    /// A plane from given parts (tests use fakes).
    pub fn new(
        bmcs: HashMap<HostId, Arc<dyn Bmc>>,
        waker: Option<Arc<dyn Waker>>,
        macs: HashMap<HostId, MacAddr>,
    ) -> Self {
        Self { bmcs, waker, macs }
    }

    pub fn bmc(&self, host: &HostId) -> Option<Arc<dyn Bmc>> {
        self.bmcs.get(host).cloned()
    }

    pub fn waker(&self) -> Option<Arc<dyn Waker>> {
        self.waker.clone()
    }

    pub fn mac(&self, host: &HostId) -> Option<MacAddr> {
        self.macs.get(host).copied()
    }

    /// Closes every BMC session (on shutdown).
    pub async fn shutdown(&self) {
        for b in self.bmcs.values() {
            b.shutdown().await;
        }
    }
}
