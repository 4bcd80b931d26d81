//! WolWaker in a network namespace created by the test: a veth pair `wa`/`wb`, the
//! waker sends on `wa`, tcpdump captures on `wb`. The raw frame's payload must equal
//! what `etherwake` sends, the UDP payload what `wakeonlan` sends, both captured the
//! same way. Needs root, ip, tcpdump, etherwake, wakeonlan: fails loudly otherwise.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use wisp_bmc::testkit::{require, Netns, TempDir};
use wisp_bmc::{magic_packet, MacAddr, WolWaker};

/// tcpdump inside the namespace, killed by PID on drop.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(ns: &Netns, iface: &str, dir: &Path, name: &str) -> Self {
        let file = dir.join(format!("{name}.pcap"));
        let err = dir.join(format!("{name}.err"));
        let child = ns
            .command("tcpdump")
            .args(["-U", "-n", "-i", iface, "-w"])
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
            assert!(
                Instant::now() < deadline,
                "tcpdump did not start: {}",
                fs::read_to_string(&err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, file }
    }

    /// Waits until `n` packets are in the file, then returns them (Ethernet frames).
    fn wait_packets(&self, n: usize) -> Vec<Vec<u8>> {
        self.wait_timed(n).into_iter().map(|(_, f)| f).collect()
    }

    /// `wait_packets` with each frame's capture time (µs).
    fn wait_timed(&self, n: usize) -> Vec<(u64, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pkts = read_pcap(&self.file);
            if pkts.len() >= n {
                return pkts;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} packets captured",
                pkts.len()
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

/// Minimal pcap reader (little-endian, microsecond format as tcpdump writes): each
/// frame with its capture time in µs.
fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let data = fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    if data.len() < 24 {
        return out;
    }
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "unexpected pcap magic"
    );
    let linktype = u32::from_le_bytes(data[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "expected Ethernet captures");
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as u64;
        let usec = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap()) as u64;
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        if off + 16 + incl > data.len() {
            break;
        }
        out.push((
            sec * 1_000_000 + usec,
            data[off + 16..off + 16 + incl].to_vec(),
        ));
        off += 16 + incl;
    }
    out
}

fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// The UDP payload of an IPv4/UDP Ethernet frame sent to port 9.
fn udp9_payload(frame: &[u8]) -> Option<&[u8]> {
    if ethertype(frame) != 0x0800 {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return None;
    }
    let udp = &ip[ihl..];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    (dport == 9).then(|| &udp[8..])
}

fn setup() -> (Netns, TempDir) {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("tcpdump", "tcpdump"),
        ("etherwake", "etherwake"),
        ("wakeonlan", "wakeonlan"),
    ] {
        require(tool, pkg).unwrap();
    }
    let ns = Netns::new("wisp-pw-").unwrap();
    ns.exec(
        "ip",
        &["link", "add", "wa", "type", "veth", "peer", "name", "wb"],
    )
    .unwrap();
    ns.exec("ip", &["link", "set", "wa", "address", "02:77:00:00:00:aa"])
        .unwrap();
    ns.exec("ip", &["addr", "add", "10.99.0.1/24", "dev", "wa"])
        .unwrap();
    ns.exec("ip", &["link", "set", "wa", "up"]).unwrap();
    ns.exec("ip", &["link", "set", "wb", "up"]).unwrap();
    (ns, TempDir::new("wisp-wol-").unwrap())
}

/// Runs the waker on a thread that entered the namespace (setns is per thread).
fn wake_in(ns: &Netns, waker: WolWaker, mac: MacAddr) -> wisp_bmc::WakeReport {
    let path = ns.path();
    std::thread::spawn(move || {
        let f = fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        waker.wake_blocking(mac)
    })
    .join()
    .unwrap()
    .unwrap()
}

#[test]
fn magic_packet_matches_etherwake_and_wakeonlan() {
    let (ns, dir) = setup();
    let mac: MacAddr = "02:77:00:00:00:01".parse().unwrap();

    // Reference: what the standard tools put on the wire.
    let cap = Capture::start(&ns, "wb", dir.path(), "ref");
    ns.exec("etherwake", &["-i", "wa", "-b", &mac.to_string()])
        .unwrap();
    ns.exec(
        "wakeonlan",
        &["-i", "10.99.0.255", "-p", "9", &mac.to_string()],
    )
    .unwrap();
    let reference = cap.wait_packets(2);
    drop(cap);
    let ref_raw = reference.iter().find(|f| ethertype(f) == 0x0842).unwrap();
    let ref_udp = reference.iter().find_map(|f| udp9_payload(f)).unwrap();

    // Ours, three times each.
    let cap = Capture::start(&ns, "wb", dir.path(), "ours");
    let mut waker = WolWaker::new("wa");
    waker.repeats = 3;
    let report = wake_in(&ns, waker, mac);
    assert_eq!(
        (report.raw_frames, report.udp_packets),
        (3, 3),
        "{report:?}"
    );
    let ours = cap.wait_packets(6);
    drop(cap);
    let raws: Vec<_> = ours.iter().filter(|f| ethertype(f) == 0x0842).collect();
    let udps: Vec<_> = ours.iter().filter_map(|f| udp9_payload(f)).collect();
    assert_eq!(raws.len(), 3);
    assert_eq!(udps.len(), 3);
    for f in &raws {
        assert_eq!(&f[..6], &[0xff; 6], "raw frame goes to broadcast");
        assert_eq!(
            &f[6..12],
            &[0x02, 0x77, 0, 0, 0, 0xaa],
            "from the interface MAC"
        );
        // Ethernet pads short frames; compare the 102-byte payload.
        assert_eq!(
            &f[14..14 + 102],
            &ref_raw[14..14 + 102],
            "payload differs from etherwake"
        );
        assert_eq!(&f[14..14 + 102], magic_packet(mac, None).as_slice());
    }
    for u in &udps {
        assert_eq!(*u, ref_udp, "UDP payload differs from wakeonlan");
    }
    // UDP went to the subnet broadcast address.
    let udp_frame = ours.iter().find(|f| udp9_payload(f).is_some()).unwrap();
    assert_eq!(&udp_frame[14 + 16..14 + 20], &[10, 99, 0, 255]);
}

#[test]
fn a_burst_sends_that_many_of_each_kind_spaced_apart_and_counts_them() {
    let (ns, dir) = setup();
    let mac: MacAddr = "02:77:00:00:00:03".parse().unwrap();
    // The default burst: what the router's own wake sends.
    let cap = Capture::start(&ns, "wb", dir.path(), "default");
    let report = wake_in(&ns, WolWaker::new("wa"), mac);
    assert_eq!(
        (report.raw_frames, report.udp_packets),
        (wisp_bmc::wol::DEFAULT_BURST, wisp_bmc::wol::DEFAULT_BURST),
        "{report:?}"
    );
    let n = 2 * wisp_bmc::wol::DEFAULT_BURST as usize;
    assert_eq!(cap.wait_packets(n).len(), n);
    drop(cap);

    // A burst of 5, 30 ms apart: 5 frames of each kind on the wire, and the report
    // says exactly that. Rounds are never closer than the gap (later is fine: load).
    let cap = Capture::start(&ns, "wb", dir.path(), "burst5");
    let gap = Duration::from_millis(30);
    let report = wake_in(&ns, WolWaker::new("wa").with_burst(5, gap), mac);
    assert_eq!(
        (report.raw_frames, report.udp_packets),
        (5, 5),
        "{report:?}"
    );
    assert!(report.elapsed >= gap * 4, "{report:?}");
    let pkts = cap.wait_timed(10);
    let raws: Vec<u64> = pkts
        .iter()
        .filter(|(_, f)| ethertype(f) == 0x0842)
        .map(|(t, _)| *t)
        .collect();
    let udps = pkts
        .iter()
        .filter(|(_, f)| udp9_payload(f).is_some())
        .count();
    assert_eq!((raws.len(), udps), (5, 5));
    // A capture stamps a little jitter of its own: allow 5 ms under the gap.
    for w in raws.windows(2) {
        assert!(
            w[1] - w[0] + 5_000 >= gap.as_micros() as u64,
            "raw frames {} µs apart",
            w[1] - w[0]
        );
    }
}

#[test]
fn secureon_password_is_appended_like_etherwake() {
    let (ns, dir) = setup();
    let mac: MacAddr = "02:77:00:00:00:02".parse().unwrap();
    let cap = Capture::start(&ns, "wb", dir.path(), "ref");
    ns.exec(
        "etherwake",
        &[
            "-i",
            "wa",
            "-b",
            "-p",
            "01:02:03:04:05:06",
            &mac.to_string(),
        ],
    )
    .unwrap();
    let reference = cap.wait_packets(1);
    drop(cap);
    let cap = Capture::start(&ns, "wb", dir.path(), "ours");
    let mut waker = WolWaker::new("wa");
    waker.repeats = 1;
    waker.broadcast = Some("10.99.0.255:9".parse().unwrap());
    waker.secureon = Some([1, 2, 3, 4, 5, 6]);
    let report = wake_in(&ns, waker, mac);
    assert_eq!(report.raw_frames, 1);
    let ours = cap.wait_packets(2);
    let raw = ours.iter().find(|f| ethertype(f) == 0x0842).unwrap();
    assert_eq!(&raw[14..14 + 108], &reference[0][14..14 + 108]);
}

/// Like [`wake_in`], and the thread also sees the namespace's own /sys (as `ip netns
/// exec` arranges for a process): a private mount namespace with sysfs remounted, so
/// `/sys/class/net/*/master` describes the namespace's links, not the host's.
fn wake_in_with_sysfs(ns: &Netns, waker: WolWaker, mac: MacAddr) -> wisp_bmc::WakeReport {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{setns, unshare, CloneFlags};
    let path = ns.path();
    std::thread::spawn(move || {
        setns(fs::File::open(&path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
        unshare(CloneFlags::CLONE_NEWNS).unwrap();
        // Slave first: nothing this thread mounts may propagate back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .unwrap();
        umount2("/sys", MntFlags::MNT_DETACH).unwrap();
        mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        waker.wake_blocking(mac)
    })
    .join()
    .unwrap()
    .unwrap()
}

/// A server whose address is on a bridge (`br0`) with its NIC as the bridge's port:
/// `wol_interface` names the NIC (where ethtool arms WoL), which has no address of its
/// own. The UDP form must still go out, to the bridge's subnet broadcast.
#[test]
fn a_nic_that_is_a_bridge_port_sends_udp_to_the_bridges_subnet() {
    let (ns, dir) = setup();
    ns.exec("ip", &["addr", "flush", "dev", "wa"]).unwrap();
    ns.exec("ip", &["link", "add", "br0", "type", "bridge"])
        .unwrap();
    ns.exec("ip", &["link", "set", "wa", "master", "br0"])
        .unwrap();
    ns.exec("ip", &["addr", "add", "10.99.1.1/24", "dev", "br0"])
        .unwrap();
    ns.exec("ip", &["link", "set", "br0", "up"]).unwrap();
    let mac: MacAddr = "02:77:00:00:00:04".parse().unwrap();
    let cap = Capture::start(&ns, "wb", dir.path(), "bridged");
    let report = wake_in_with_sysfs(&ns, WolWaker::new("wa").with_burst(1, Duration::ZERO), mac);
    assert_eq!(
        (report.raw_frames, report.udp_packets),
        (1, 1),
        "{report:?}"
    );
    let pkts = cap.wait_packets(2);
    let udp = pkts
        .iter()
        .find(|f| udp9_payload(f).is_some())
        .expect("the UDP form on the wire");
    assert_eq!(&udp[14 + 16..14 + 20], &[10, 99, 1, 255]);
    assert_eq!(
        udp9_payload(udp).unwrap(),
        magic_packet(mac, None).as_slice()
    );
}

#[test]
fn missing_interface_is_a_clear_error() {
    let w = WolWaker::new("wisp-no-such-if0");
    let err = w
        .wake_blocking("02:77:00:00:00:01".parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("wisp-no-such-if0"), "{err}");
}
