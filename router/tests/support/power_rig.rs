//! The router's power plane with fakes, written once for the power and wake tests: a
//! cluster task on a file store, the genie link on loopback, a fake BMC per host (in
//! the given chassis state) and a fake waker. Genies are played by each test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use router::cluster::ClusterHandle;
use router::link::WelcomeParams;
use router::power::PowerPlane;
use router::store::{FileStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wisp_bmc::{Bmc, FakeBmc, FakeWaker, MacAddr, PowerState, Waker};
use wisp_common::secret::Secret;
use wisp_common::HostId;

use super::rig::{RigDir, TestRouter};

pub struct PowerRig {
    pub cluster: ClusterHandle,
    pub power: Arc<PowerPlane>,
    /// Host name (`h1`) to its fake BMC.
    pub bmcs: HashMap<String, Arc<FakeBmc>>,
    pub waker: Arc<FakeWaker>,
    /// The genie link.
    pub link: SocketAddr,
    /// The router's state directory (the file store's).
    pub state_dir: PathBuf,
    _stop: watch::Sender<bool>,
    /// The temp dir with the secret, router.toml and the router's state; removed on
    /// drop.
    pub dir: RigDir,
}

pub fn h(name: &str) -> HostId {
    HostId::new(name).unwrap()
}

/// Host `i`'s MAC (`02:00:00:00:00:0i`).
pub fn mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, i])
}

/// Hosts `h1..hN` with their BMCs in `power`; `extra` is router.toml text before the
/// hosts; a BMC call times out after `bmc_timeout`.
pub async fn power_rig(
    tag: &str,
    secret: &[u8],
    power: &[PowerState],
    extra: &str,
    bmc_timeout: Duration,
) -> PowerRig {
    let dir = TestRouter::builder()
        .tag(tag)
        .secret(secret)
        .hosts(power.len())
        .energy(extra)
        .dir();
    let mut bmcs = HashMap::new();
    let mut dyn_bmcs: HashMap<HostId, Arc<dyn Bmc>> = HashMap::new();
    let mut macs = HashMap::new();
    for (i, p) in power.iter().enumerate() {
        let i = i as u8 + 1;
        let name = format!("h{i}");
        let addr: SocketAddr = format!("127.0.0.{}:623", 100 + i).parse().unwrap();
        let b = Arc::new(FakeBmc::new(addr, *p).with_timeout(bmc_timeout));
        bmcs.insert(name.clone(), b.clone());
        dyn_bmcs.insert(h(&name), b);
        macs.insert(h(&name), mac(i));
    }
    let config = dir.config();
    let (stop, rx) = watch::channel(false);
    let state_dir = dir.path().join("state");
    let store = FileStore::open(&state_dir).unwrap();
    let persisted = store.load().unwrap();
    let (cluster, _task) = router::cluster::spawn(&config, Box::new(store), persisted, rx.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let link = listener.local_addr().unwrap();
    tokio::spawn(router::link::serve(
        listener,
        Arc::new(Secret::from_bytes(secret.to_vec())),
        cluster.clone(),
        WelcomeParams {
            heartbeat_ms: 200,
            metrics_ms: 1000,
            lease_ms: 0,
            addresses: router::link::host_addresses(&config),
        },
        router::ha::gate::Gate::open(),
        rx,
    ));
    let waker = Arc::new(FakeWaker::new());
    let plane = PowerPlane::new(dyn_bmcs, Some(waker.clone() as Arc<dyn Waker>), macs);
    PowerRig {
        cluster,
        power: Arc::new(plane),
        bmcs,
        waker,
        link,
        state_dir,
        _stop: stop,
        dir,
    }
}
