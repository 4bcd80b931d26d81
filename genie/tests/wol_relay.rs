//! `Command::SendWol` through the real `SystemPower` in a network namespace of the
//! test's own: a veth pair `wa`/`wb`, the genie's `wol_interface` is `wa`, tcpdump
//! captures on `wb`. The burst the router asked for must be on the wire, of both kinds,
//! and the reply must be Done; with no `wol_interface` it must be Failed, saying so.
//! Needs root, ip and tcpdump: fails loudly otherwise.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use genie::commands;
use genie::fakes::FakeHypervisor;
use genie::host_sleep::SystemPower;
use tokio::sync::{mpsc, Notify};
use wisp_bmc::testkit::{require, Netns, TempDir};
use wisp_common::proto::{Command, GenieMsg, Outcome, WolRelay};

/// tcpdump inside the namespace, killed by PID on drop.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &Netns, dir: &Path) -> Self {
        let file = dir.join("relay.pcap");
        let err = dir.join("relay.err");
        let child = ns
            .command("tcpdump")
            .args(["-U", "-n", "-i", "wb", "-w"])
            .arg(&file)
            .args(["ether", "proto", "0x0842", "or", "udp", "port", "9"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, file }
    }

    /// Waits until `n` frames are captured; returns their EtherTypes.
    fn wait_ethertypes(&self, n: usize) -> Vec<u16> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = ethertypes(&self.file);
            if t.len() >= n {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} frames captured",
                t.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The EtherType of each frame of a little-endian µs pcap file.
fn ethertypes(path: &Path) -> Vec<u16> {
    let data = fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut off = 24;
    while data.len() >= 24 && off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        if off + 16 + incl > data.len() {
            break;
        }
        let f = &data[off + 16..off + 16 + incl];
        out.push(u16::from_be_bytes([f[12], f[13]]));
        off += 16 + incl;
    }
    out
}

/// Runs `SendWol` through `dispatch` with a fresh runtime on a thread inside the
/// namespace (setns is per thread; the runtime's blocking threads, where the waker
/// sends, are spawned from it and inherit the namespace).
fn send_wol_in(ns: &Netns, interface: Option<&str>, relay: WolRelay) -> Outcome {
    let path = ns.path();
    let interface = interface.map(str::to_owned);
    std::thread::spawn(move || {
        let f = fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let power = SystemPower {
                wol_interface: interface,
                suspend_command: vec!["true".into()],
                sys_power_dir: "/sys/power".into(),
            };
            let (tx, mut rx) = mpsc::channel(4);
            let hv = FakeHypervisor::default();
            let addr = "127.0.0.1".parse().unwrap();
            commands::dispatch(
                &hv,
                &power,
                addr,
                1,
                Command::SendWol(relay),
                &tx,
                &Notify::new(),
            )
            .await;
            match rx.recv().await.unwrap() {
                GenieMsg::Reply { id: 1, outcome } => outcome,
                m => panic!("{m:?}"),
            }
        })
    })
    .join()
    .unwrap()
}

#[test]
fn send_wol_puts_the_asked_burst_of_both_kinds_on_the_wire() {
    require("ip", "iproute2").unwrap();
    require("tcpdump", "tcpdump").unwrap();
    let ns = Netns::new("wisp-gr-").unwrap();
    ns.exec(
        "ip",
        &["link", "add", "wa", "type", "veth", "peer", "name", "wb"],
    )
    .unwrap();
    ns.exec("ip", &["addr", "add", "10.98.0.1/24", "dev", "wa"])
        .unwrap();
    ns.exec("ip", &["link", "set", "wa", "up"]).unwrap();
    ns.exec("ip", &["link", "set", "wb", "up"]).unwrap();
    let dir = TempDir::new("wisp-relay-").unwrap();
    let mac = "02:77:00:00:00:09".parse().unwrap();

    let cap = Capture::start(&ns, dir.path());
    let outcome = send_wol_in(&ns, Some("wa"), WolRelay { mac, burst: 4 });
    assert_eq!(outcome, Outcome::Done);
    let t = cap.wait_ethertypes(8);
    assert_eq!(t.iter().filter(|&&e| e == 0x0842).count(), 4, "{t:x?}");
    assert_eq!(t.iter().filter(|&&e| e == 0x0800).count(), 4, "{t:x?}");

    // Without a wol_interface nothing can be sent, and the reply says why.
    match send_wol_in(&ns, None, WolRelay { mac, burst: 4 }) {
        Outcome::Failed { error } => assert!(error.contains("no wol_interface"), "{error}"),
        o => panic!("{o:?}"),
    }
}
