//! Hand-written fakes of the genie's effect traits, for unit tests of logic (command
//! dispatch, the link loop). They record what was asked and can be told to fail.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use wisp_common::proto::{MigrationProgress, VmStatus};
use wisp_common::{VmId, VmRunState, VmSpec};

use crate::commands::Hypervisor;
use crate::host_sleep::{Power, PowerError};
use crate::lease::Fence;
use crate::manager::VmError;
use crate::metrics::{MetricsError, MetricsSource};
use crate::ports::{Attempt, PickError, PortPicker, PortRange};
use crate::power_caps::CapsProbe;
use crate::wol_relay::{self, RelayError, WolRelayer};
use std::sync::atomic::{AtomicU64, Ordering};
use wisp_bmc::WakeReport;
use wisp_common::proto::HostMetrics;
use wisp_common::proto::{PowerCaps, WolRelay};

/// Records calls as strings ("start vm1 epoch 3") and keeps a list of VM statuses.
#[derive(Debug, Clone, Default)]
pub struct FakeHypervisor {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub vms: Arc<Mutex<Vec<VmStatus>>>,
    /// When set, every operation fails with NotFound.
    pub fail: bool,
    /// Incoming migrations pick their port as the real manager does (default range).
    pub ports: Arc<PortPicker>,
    /// The fake host's ports in use: by a waiting incoming VM (freed by its cancel) or,
    /// with no VM, by another program.
    pub held_ports: Arc<Mutex<BTreeMap<u16, Option<VmId>>>>,
}

impl FakeHypervisor {
    fn record(&self, s: String) {
        self.calls.lock().expect("fake lock").push(s);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("fake lock").clone()
    }
    /// A fake whose incoming migrations use `range`, with `busy` held by others.
    pub fn with_ports(range: PortRange, busy: &[u16]) -> Self {
        Self {
            ports: Arc::new(PortPicker::new(range)),
            held_ports: Arc::new(Mutex::new(busy.iter().map(|p| (*p, None)).collect())),
            ..Default::default()
        }
    }
    fn result(&self, vm: &VmId) -> Result<(), VmError> {
        if self.fail {
            Err(VmError::NotFound { vm: vm.clone() })
        } else {
            Ok(())
        }
    }
}

/// A status as a fake VM would report it.
pub fn fake_status(vm: &VmId, state: VmRunState) -> VmStatus {
    VmStatus {
        id: vm.clone(),
        state,
        vcpus: 1,
        mem_mib: 64,
        cpu_time_ms: 0,
        pid: None,
        qmp_socket: format!("/fake/{vm}.qmp").into(),
        epoch: 0,
    }
}

impl Hypervisor for FakeHypervisor {
    fn statuses(&self) -> Vec<VmStatus> {
        self.vms.lock().expect("fake lock").clone()
    }
    fn scan(&self) -> usize {
        0
    }
    async fn start(&self, spec: &VmSpec, epoch: u64) -> Result<(), VmError> {
        self.record(format!("start {} epoch {epoch}", spec.name));
        self.result(&spec.name)?;
        self.vms
            .lock()
            .expect("fake lock")
            .push(fake_status(&spec.name, VmRunState::Running));
        Ok(())
    }
    async fn stop(&self, vm: &VmId, force: bool, timeout: Duration) -> Result<(), VmError> {
        self.record(format!("stop {vm} force {force} {}ms", timeout.as_millis()));
        self.result(vm)
    }
    async fn delete(&self, vm: &VmId) -> Result<(), VmError> {
        self.record(format!("delete {vm}"));
        self.result(vm)
    }
    async fn prepare_incoming(
        &self,
        spec: &VmSpec,
        epoch: u64,
        addr: IpAddr,
    ) -> Result<String, VmError> {
        self.record(format!("incoming {} epoch {epoch} on {addr}", spec.name));
        self.result(&spec.name)?;
        let vm = &spec.name;
        let listen = |port: u16| {
            let mut held = self.held_ports.lock().expect("fake lock");
            let r = match held.entry(port) {
                Entry::Occupied(_) => Err(Attempt::<VmError>::InUse),
                Entry::Vacant(v) => {
                    v.insert(Some(vm.clone()));
                    Ok(())
                }
            };
            std::future::ready(r)
        };
        match self.ports.pick(addr, listen).await {
            Ok(port) => Ok(crate::qemu::migration_uri(addr, port)),
            Err(PickError::Exhausted(source)) => Err(VmError::NoMigrationPort {
                vm: vm.clone(),
                source,
            }),
            Err(PickError::Failed(e)) => Err(e),
        }
    }
    async fn cancel_incoming(&self, vm: &VmId) -> Result<(), VmError> {
        self.record(format!("cancel {vm}"));
        self.result(vm)?;
        // Killing the waiting qemu closes its listener.
        self.held_ports
            .lock()
            .expect("fake lock")
            .retain(|_, by| by.as_ref() != Some(vm));
        Ok(())
    }
    async fn migrate(
        &self,
        vm: &VmId,
        uri: &str,
        max_bandwidth_mib_s: u64,
        downtime_limit_ms: u64,
        progress: &mpsc::Sender<MigrationProgress>,
    ) -> Result<(u64, u64), VmError> {
        self.record(format!(
            "migrate {vm} to {uri} {max_bandwidth_mib_s}MiB/s {downtime_limit_ms}ms"
        ));
        let _ = progress
            .send(MigrationProgress {
                status: "active".into(),
                transferred_bytes: 1,
                remaining_bytes: 1,
                total_bytes: 2,
            })
            .await;
        self.result(vm)?;
        Ok((14, 2))
    }
    async fn drop_stale(&self, vms: &[VmId]) -> Result<(), VmError> {
        self.record(format!(
            "drop {}",
            vms.iter().map(VmId::as_str).collect::<Vec<_>>().join(",")
        ));
        Ok(())
    }
}

/// Records power actions; `fail_wol` makes arming fail. Also the fake power-ability
/// probe (answers `caps`, counting how often it was asked) and the fake wake relay
/// (checks the request as the real one does, then "sends" `burst` of each kind).
#[derive(Debug, Clone, Default)]
pub struct FakePower {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub fail_wol: bool,
    /// The relay behaves as if genie.toml had no `wol_interface`.
    pub no_wol_interface: bool,
    pub caps: Arc<Mutex<PowerCaps>>,
    pub learned: Arc<AtomicU64>,
}

impl FakePower {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("fake lock").clone()
    }
    fn record(&self, s: impl Into<String>) {
        self.calls.lock().expect("fake lock").push(s.into());
    }
}

impl CapsProbe for FakePower {
    async fn learn(&self) -> PowerCaps {
        self.learned.fetch_add(1, Ordering::SeqCst);
        self.caps.lock().expect("fake lock").clone()
    }
}

impl WolRelayer for FakePower {
    async fn relay_wol(&self, relay: WolRelay) -> Result<WakeReport, RelayError> {
        let iface = (!self.no_wol_interface).then_some("fake0");
        wol_relay::check(iface, relay)?;
        self.record(format!("relay_wol {} x{}", relay.mac, relay.burst));
        Ok(WakeReport {
            mac: relay.mac,
            raw_frames: relay.burst,
            udp_packets: relay.burst,
            elapsed: Duration::ZERO,
        })
    }
}

impl Power for FakePower {
    async fn arm_wol(&self) -> Result<(), PowerError> {
        self.record("arm_wol");
        if self.fail_wol {
            return Err(PowerError::Failed {
                program: "ethtool".into(),
                status: "exit status: 1".into(),
                stderr: "no such device".into(),
            });
        }
        Ok(())
    }
    async fn suspend(&self) -> Result<(), PowerError> {
        self.record("suspend");
        Ok(())
    }
}

/// A scripted source for tests: returns `next` and counts samples; fails while `fail`.
#[derive(Debug, Default, Clone)]
pub struct FakeMetrics {
    pub next: HostMetrics,
    pub samples: u64,
    pub fail: bool,
}

impl MetricsSource for FakeMetrics {
    fn sample(&mut self) -> Result<HostMetrics, MetricsError> {
        self.samples += 1;
        if self.fail {
            return Err(MetricsError::Read {
                what: "fake",
                source: sysinfo::Error::Unsupported,
            });
        }
        Ok(self.next.clone())
    }
}

/// Counts kills, for tests.
#[derive(Debug, Default, Clone)]
pub struct FakeFence {
    pub kills: Arc<AtomicU64>,
    /// How many VMs each kill_all reports.
    pub vms: usize,
}

impl Fence for FakeFence {
    fn kill_all(&self) -> usize {
        if self.vms > 0 {
            self.kills.fetch_add(1, Ordering::SeqCst);
        }
        self.vms
    }
}
