//! Router commands → effects on this host, each answered with Progress/Reply.
//!
//! Every command runs in its own task (the link spawns it), so a long migration never
//! holds up heartbeats or other commands.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use wisp_common::proto::{
    Command, CommandId, GenieMsg, MigrationProgress, Outcome, VirtCaps, VmStatus,
};
use wisp_common::{VmId, VmSpec};

use crate::host_sleep::Power;
use crate::manager::VmError;
use crate::wol_relay::WolRelayer;

/// The VM operations commands need. [`VmManager`](crate::manager::VmManager) is the real one (it implements
/// this trait directly, so each operation is written once); `fakes` has the fake.
pub trait Hypervisor: Clone + Send + Sync + 'static {
    fn statuses(&self) -> Vec<VmStatus>;
    /// Looks for VMs in vm_dir that are not known yet.
    fn scan(&self) -> usize;
    fn start(&self, spec: &VmSpec, epoch: u64) -> impl Future<Output = Result<(), VmError>> + Send;
    fn stop(
        &self,
        vm: &VmId,
        force: bool,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), VmError>> + Send;
    fn delete(&self, vm: &VmId) -> impl Future<Output = Result<(), VmError>> + Send;
    fn prepare_incoming(
        &self,
        spec: &VmSpec,
        epoch: u64,
        addr: IpAddr,
    ) -> impl Future<Output = Result<String, VmError>> + Send;
    fn cancel_incoming(&self, vm: &VmId) -> impl Future<Output = Result<(), VmError>> + Send;
    fn migrate(
        &self,
        vm: &VmId,
        uri: &str,
        max_bandwidth_mib_s: u64,
        downtime_limit_ms: u64,
        progress: &mpsc::Sender<MigrationProgress>,
    ) -> impl Future<Output = Result<(u64, u64), VmError>> + Send;
    fn drop_stale(&self, vms: &[VmId]) -> impl Future<Output = Result<(), VmError>> + Send;
    /// How this host runs VMs, once known (reported with the metrics).
    fn virt(&self) -> Option<VirtCaps> {
        None
    }
    /// The last `max_bytes` of `vm`'s console log.
    fn console_log(&self, vm: &VmId, _max_bytes: usize) -> Result<String, VmError> {
        Err(VmError::NotFound { vm: vm.clone() })
    }
}

pub use wisp_common::error::chain;

fn outcome(r: Result<(), VmError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed { error: chain(&e) },
    }
}

/// Runs command `id` and sends its Progress/Reply messages on `out`.
/// `incoming_addr` is where incoming migrations listen; `caps_stale` is poked when a
/// command changed what the host's power abilities look like (WoL armed).
pub async fn dispatch<H: Hypervisor, P: Power + WolRelayer>(
    hv: &H,
    power: &P,
    incoming_addr: IpAddr,
    id: CommandId,
    command: Command,
    out: &mpsc::Sender<GenieMsg>,
    caps_stale: &Notify,
) {
    let reply = |outcome| GenieMsg::Reply { id, outcome };
    let o = match command {
        Command::StartVm { spec, epoch } => outcome(hv.start(&spec, epoch).await),
        Command::StopVm {
            vm,
            force,
            timeout_ms,
        } => outcome(hv.stop(&vm, force, Duration::from_millis(timeout_ms)).await),
        Command::DeleteVm { vm } => outcome(hv.delete(&vm).await),
        Command::PrepareIncoming { spec, epoch } => {
            match hv.prepare_incoming(&spec, epoch, incoming_addr).await {
                Ok(uri) => Outcome::Incoming { uri },
                Err(e) => Outcome::Failed { error: chain(&e) },
            }
        }
        Command::CancelIncoming { vm } => outcome(hv.cancel_incoming(&vm).await),
        Command::Migrate {
            vm,
            uri,
            max_bandwidth_mib_s,
            downtime_limit_ms,
        } => {
            let (ptx, mut prx) = mpsc::channel::<MigrationProgress>(4);
            let fwd_out = out.clone();
            let fwd = tokio::spawn(async move {
                while let Some(progress) = prx.recv().await {
                    let _ = fwd_out.send(GenieMsg::Progress { id, progress }).await;
                }
            });
            let r = hv
                .migrate(&vm, &uri, max_bandwidth_mib_s, downtime_limit_ms, &ptx)
                .await;
            drop(ptx);
            // Progress goes out before the final reply.
            let _ = fwd.await;
            match r {
                Ok((total_ms, downtime_ms)) => Outcome::Migrated {
                    total_ms,
                    downtime_ms,
                },
                Err(e) => Outcome::Failed { error: chain(&e) },
            }
        }
        // Outcome::Done carries no counts: they go to the log, and a wake that sent
        // nothing at all is Failed (WolWaker errs unless at least one packet left).
        Command::SendWol(relay) => match power.relay_wol(relay).await {
            Ok(r) => {
                tracing::info!(mac = %r.mac, raw_frames = r.raw_frames, udp_packets = r.udp_packets,
                    elapsed_ms = r.elapsed.as_millis() as u64, "relayed a wake for the router");
                Outcome::Done
            }
            Err(e) => Outcome::Failed { error: chain(&e) },
        },
        Command::Suspend => {
            if let Err(e) = power.arm_wol().await {
                // Not fatal: the router falls back to IPMI power-on when WoL fails.
                tracing::warn!(error = %chain(&e), "cannot arm Wake-on-LAN; suspending anyway");
            }
            // What `ethtool` shows has changed (or should have): learn it again.
            caps_stale.notify_one();
            // Reply first: once suspended we cannot.
            let _ = out.send(reply(Outcome::Done)).await;
            tracing::info!("suspending the host as the router asked");
            if let Err(e) = power.suspend().await {
                tracing::error!(error = %chain(&e), "suspend failed");
            }
            return;
        }
        Command::DropStale { vms } => outcome(hv.drop_stale(&vms).await),
        Command::ConsoleLog { vm, max_bytes } => {
            let max = max_bytes.min(wisp_common::proto::MAX_CONSOLE_BYTES) as usize;
            match hv.console_log(&vm, max) {
                Ok(text) => Outcome::Console { text },
                Err(e) => Outcome::Failed { error: chain(&e) },
            }
        }
        Command::ConsoleAttach { vm, session } => {
            match crate::console_session::attach(&vm, session, out.clone()) {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed { error: chain(&e) },
            }
        }
        Command::ConsoleInput { session, bytes } => {
            match crate::console_session::input(session, bytes).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed { error: chain(&e) },
            }
        }
        Command::ConsoleDetach { session } => {
            crate::console_session::detach(session);
            Outcome::Done
        }
    };
    if let Outcome::Failed { error } = &o {
        tracing::warn!(command = id, %error, "command failed");
    }
    let _ = out.send(reply(o)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fakes::{FakeHypervisor, FakePower};

    fn spec(n: &str) -> VmSpec {
        VmSpec::new(VmId::new(n).unwrap(), 1, 64)
    }

    async fn run(hv: &FakeHypervisor, p: &FakePower, c: Command) -> Vec<GenieMsg> {
        let (tx, mut rx) = mpsc::channel(16);
        let stale = Notify::new();
        dispatch(hv, p, "10.0.0.5".parse().unwrap(), 9, c, &tx, &stale).await;
        drop(tx);
        let mut v = vec![];
        while let Some(m) = rx.recv().await {
            v.push(m);
        }
        v
    }

    fn done() -> GenieMsg {
        GenieMsg::Reply {
            id: 9,
            outcome: Outcome::Done,
        }
    }

    #[tokio::test]
    async fn commands_map_to_operations_and_replies() {
        let hv = FakeHypervisor::default();
        let p = FakePower::default();
        let vm = VmId::new("vm1").unwrap();
        assert_eq!(
            run(
                &hv,
                &p,
                Command::StartVm {
                    spec: spec("vm1"),
                    epoch: 3
                }
            )
            .await,
            vec![done()]
        );
        assert_eq!(
            run(
                &hv,
                &p,
                Command::StopVm {
                    vm: vm.clone(),
                    force: false,
                    timeout_ms: 500
                }
            )
            .await,
            vec![done()]
        );
        assert_eq!(
            run(&hv, &p, Command::DeleteVm { vm: vm.clone() }).await,
            vec![done()]
        );
        assert_eq!(
            run(
                &hv,
                &p,
                Command::PrepareIncoming {
                    spec: spec("vm2"),
                    epoch: 4
                }
            )
            .await,
            vec![GenieMsg::Reply {
                id: 9,
                outcome: Outcome::Incoming {
                    uri: "tcp:10.0.0.5:49152".into()
                }
            }]
        );
        assert_eq!(
            run(&hv, &p, Command::CancelIncoming { vm: vm.clone() }).await,
            vec![done()]
        );
        let m = run(
            &hv,
            &p,
            Command::Migrate {
                vm: vm.clone(),
                uri: "tcp:x:1".into(),
                max_bandwidth_mib_s: 100,
                downtime_limit_ms: 50,
            },
        )
        .await;
        assert!(matches!(m[0], GenieMsg::Progress { id: 9, .. }), "{m:?}");
        assert_eq!(
            m[1],
            GenieMsg::Reply {
                id: 9,
                outcome: Outcome::Migrated {
                    total_ms: 14,
                    downtime_ms: 2
                }
            }
        );
        assert_eq!(
            run(
                &hv,
                &p,
                Command::DropStale {
                    vms: vec![vm.clone()]
                }
            )
            .await,
            vec![done()]
        );
        assert_eq!(
            hv.calls(),
            vec![
                "start vm1 epoch 3",
                "stop vm1 force false 500ms",
                "delete vm1",
                "incoming vm2 epoch 4 on 10.0.0.5",
                "cancel vm1",
                "migrate vm1 to tcp:x:1 100MiB/s 50ms",
                "drop vm1",
            ]
        );
        assert_eq!(hv.statuses().len(), 1);
    }

    #[tokio::test]
    async fn failures_become_failed_with_the_vm_named() {
        let hv = FakeHypervisor {
            fail: true,
            ..Default::default()
        };
        let p = FakePower::default();
        let m = run(
            &hv,
            &p,
            Command::StartVm {
                spec: spec("vm7"),
                epoch: 1,
            },
        )
        .await;
        match &m[..] {
            [GenieMsg::Reply {
                outcome: Outcome::Failed { error },
                ..
            }] => assert!(error.contains("vm7"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    fn incoming(vm: &str) -> Command {
        Command::PrepareIncoming {
            spec: spec(vm),
            epoch: 1,
        }
    }

    fn uri(port: u16) -> Vec<GenieMsg> {
        vec![GenieMsg::Reply {
            id: 9,
            outcome: Outcome::Incoming {
                uri: format!("tcp:10.0.0.5:{port}"),
            },
        }]
    }

    #[tokio::test]
    async fn incoming_migrations_share_the_port_range_and_a_full_one_fails_naming_it() {
        // 6001 is another program's.
        let range = "6000-6002".parse().unwrap();
        let hv = FakeHypervisor::with_ports(range, &[6001]);
        let p = FakePower::default();
        assert_eq!(run(&hv, &p, incoming("in1")).await, uri(6000));
        assert_eq!(run(&hv, &p, incoming("in2")).await, uri(6002));
        match &run(&hv, &p, incoming("in3")).await[..] {
            [GenieMsg::Reply {
                outcome: Outcome::Failed { error },
                ..
            }] => assert_eq!(
                error,
                "no port for an incoming migration of VM in3: \
                 all 3 ports of migration_ports 6000-6002 are in use on 10.0.0.5"
            ),
            other => panic!("{other:?}"),
        }
        // A cancelled incoming frees its port for the next one.
        let in2 = VmId::new("in2").unwrap();
        assert_eq!(
            run(&hv, &p, Command::CancelIncoming { vm: in2 }).await,
            vec![done()]
        );
        assert_eq!(run(&hv, &p, incoming("in3")).await, uri(6002));
    }

    #[tokio::test]
    async fn suspend_arms_wol_replies_then_suspends_even_if_wol_fails() {
        let hv = FakeHypervisor::default();
        let p = FakePower {
            fail_wol: true,
            ..Default::default()
        };
        assert_eq!(run(&hv, &p, Command::Suspend).await, vec![done()]);
        assert_eq!(p.calls(), vec!["arm_wol", "suspend"]);
    }

    fn relay(burst: u32) -> Command {
        Command::SendWol(wisp_common::proto::WolRelay {
            mac: "02:77:00:00:00:07".parse().unwrap(),
            burst,
        })
    }

    #[tokio::test]
    async fn send_wol_relays_the_burst_and_replies_done() {
        let (hv, p) = (FakeHypervisor::default(), FakePower::default());
        assert_eq!(run(&hv, &p, relay(4)).await, vec![done()]);
        assert_eq!(p.calls(), vec!["relay_wol 02:77:00:00:00:07 x4"]);
        assert!(hv.calls().is_empty());
    }

    #[tokio::test]
    async fn send_wol_failures_are_failed_with_the_reason() {
        let hv = FakeHypervisor::default();
        // No wol_interface: the waker's own error names what is missing.
        let p = FakePower {
            no_wol_interface: true,
            ..Default::default()
        };
        match &run(&hv, &p, relay(3)).await[..] {
            [GenieMsg::Reply {
                outcome: Outcome::Failed { error },
                ..
            }] => assert!(
                error.contains("no wol_interface") && error.contains("02:77:00:00:00:07"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        // A burst out of range is refused the same way.
        match &run(&hv, &FakePower::default(), relay(0)).await[..] {
            [GenieMsg::Reply {
                outcome: Outcome::Failed { error },
                ..
            }] => assert!(error.contains("burst 0"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
