//! `router vm console NAME --log`: the tail of a VM's serial console, which the genie
//! of the host that runs it keeps (bounded and rotated there), fetched through the
//! genie link.

use serde::{Deserialize, Serialize};
use wisp_common::proto::{Command as GenieCommand, Outcome, MAX_CONSOLE_BYTES};
use wisp_common::{HostId, VmId, VmRunState};

use super::VmError;
use crate::cluster::{ClusterHandle, Command, Model};
use crate::link::GenieLink;

/// `GET /v1/vms/{name}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleLog {
    pub vm: VmId,
    pub host: HostId,
    pub text: String,
}

/// Where a VM's console is: the host whose genie reports it running, else its
/// placement (a stopped VM's last console stays on its host).
#[derive(Debug)]
struct FindConsole {
    vm: VmId,
}

impl Command for FindConsole {
    type Output = Result<(HostId, GenieLink), VmError>;
    const NAME: &'static str = "find a VM's console";

    fn apply(self, m: &mut Model) -> Self::Output {
        let seen = m.observed(&self.vm);
        let host = seen
            .iter()
            .find(|(_, s)| s.state == VmRunState::Running)
            .map(|(h, _)| h.clone())
            .or_else(|| m.persisted.vms.get(&self.vm).and_then(|r| r.host.clone()))
            .or_else(|| seen.first().map(|(h, _)| h.clone()))
            .ok_or(VmError::NotFound { vm: self.vm })?;
        let link = m.link_of(&host)?;
        Ok((host, link))
    }
}

/// The last `bytes` of `vm`'s console (capped at the protocol's limit).
pub async fn console_log(c: &ClusterHandle, vm: VmId, bytes: u64) -> Result<ConsoleLog, VmError> {
    let (host, link) = c
        .run(FindConsole { vm: vm.clone() })
        .await
        .ok_or(VmError::Shutdown)??;
    let cmd = GenieCommand::ConsoleLog {
        vm: vm.clone(),
        max_bytes: bytes.min(MAX_CONSOLE_BYTES),
    };
    match link.command(cmd, None).await.map_err(VmError::Link)? {
        Outcome::Console { text } => Ok(ConsoleLog { vm, host, text }),
        Outcome::Failed { error } => Err(VmError::Genie {
            vm,
            host,
            message: error,
        }),
        other => Err(VmError::Unexpected {
            vm,
            host,
            answer: format!("{other:?}"),
        }),
    }
}
