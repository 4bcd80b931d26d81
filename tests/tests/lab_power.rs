//! Sleep, wake and power loss in the lab, checked by independent witnesses: the host's
//! processes (`/proc`, the freezer), `tcpdump` on the bridge for what went on the wire,
//! `ss` in the core namespace for the peer's view of a TCP connection, `ipmitool` for
//! what the BMC says, and `etherwake` as the sender of magic packets.
//!
//! Each host runs a stand-in "OS" (`sleep infinity`) plus a small TCP client started in
//! its namespace: bash writing a counter every 100 ms on one connection (`/dev/tcp`) to
//! a `socat` listener in the core namespace that appends what it receives to a file.
//! The listener accepts one connection only, and the client exits if a write fails, so
//! a counter that goes on without a gap after a wake went on over the same socket.
//!
//! One test keeps a host suspended for two minutes (it takes about 2 min 10 s).
//! Needs `cargo build -p wisp-tests --bins`, root, ip, ipmi_sim, ipmitool, tcpdump,
//! etherwake, socat and ss; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wisp_tests::lab::{mac_string, poll, procs, Capture, GenieMode, Lab, LabSpec, Power, WAIT};

fn spec(hosts: usize) -> LabSpec {
    LabSpec {
        hosts,
        wol_listener: true,
        start_router: false,
        genie: GenieMode::StandIn(vec!["sleep".into(), "infinity".into()]),
        bin_dir: Some(
            Path::new(env!("CARGO_BIN_EXE_wisp-lab-chassis"))
                .parent()
                .unwrap()
                .to_owned(),
        ),
        ..LabSpec::default()
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ipmitool_power(lab: &Lab, i: usize) -> String {
    let o = lab.ipmitool(i, &["chassis", "power", "status"]).unwrap();
    assert!(o.status.success(), "ipmitool: {o:?}");
    stdout(&o).trim().to_owned()
}

fn ipmitool_ok(lab: &Lab, i: usize, args: &[&str]) {
    let o = lab.ipmitool(i, args).unwrap();
    assert!(o.status.success(), "ipmitool {args:?}: {o:?}");
}

fn wait_power(lab: &Lab, i: usize, want: Power) {
    poll(WAIT, &format!("h{i} to be {want:?}"), |last| {
        let p = lab.power_state(i).unwrap();
        *last = format!("{p:?}");
        (p == want).then_some(())
    })
    .unwrap();
}

/// PIDs of host `i`'s stand-in genie, `sleep infinity` (the counter client runs
/// `sleep 0.1` too, which `Lab::genie_pids` would count).
fn standin_pids(lab: &Lab, i: usize) -> Vec<i32> {
    lab.genie_pids(i)
        .unwrap()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\0infinity\0")
        })
        .collect()
}

/// Waits until host `i` runs its stand-in genie; returns its PID.
fn wait_standin(lab: &Lab, i: usize) -> i32 {
    poll(WAIT, &format!("stand-in genie on h{i}"), |last| {
        let p = standin_pids(lab, i);
        *last = format!("{p:?}");
        (p.len() == 1).then(|| p[0])
    })
    .unwrap()
}

/// A counter sent every 100 ms from host `i` to a listener in the core namespace.
struct Talk {
    listener: Child,
    file: PathBuf,
    port: u16,
    /// The bash writing the counter, in the host's namespace.
    client: i32,
}

impl Talk {
    fn start(lab: &Lab, i: usize) -> Talk {
        let port = 5000 + i as u16;
        let file = lab.dir().join(format!("talk-h{i}.txt"));
        let listener = Command::new("ip")
            .args(["netns", "exec", &lab.core_ns(), "socat", "-u"])
            .arg(format!("TCP-LISTEN:{port},reuseaddr"))
            .arg(format!("OPEN:{},creat,append", file.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let h = &lab.hosts()[i - 1];
        // Retries the connect until the listener listens; exits when a write fails.
        let script = format!(
            "for t in $(seq 100); do exec 3<>/dev/tcp/10.77.0.1/{port} && break; sleep 0.1; done; \
             i=0; while :; do echo $i >&3 || exit 1; i=$((i+1)); sleep 0.1; done"
        );
        let o = Command::new("ip")
            .args([
                "netns", "exec", &h.ns, "setsid", "-f", "bash", "-c", &script,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(o.success());
        let client = poll(WAIT, "the counter client's PID", |_| {
            lab.host_pids(i).unwrap().into_iter().find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("/dev/tcp/"))
            })
        })
        .unwrap();
        let t = Talk {
            listener,
            file,
            port,
            client,
        };
        t.wait_above(lab, 5);
        t
    }

    /// The counter values received so far, checked to run 0, 1, 2, ... with no gap and
    /// no repeat (a new connection would start again at 0, or not be accepted at all).
    fn values(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        // The last line may be half-written.
        let complete = text.rsplit_once('\n').map(|(a, _)| a).unwrap_or("");
        let v: Vec<u64> = complete
            .lines()
            .map(|l| l.parse().unwrap_or_else(|_| panic!("bad line {l:?}")))
            .collect();
        for (k, x) in v.iter().enumerate() {
            assert_eq!(*x, k as u64, "counter not contiguous: {v:?}");
        }
        v
    }

    fn last(&self) -> Option<u64> {
        self.values().last().copied()
    }

    fn wait_above(&self, lab: &Lab, n: u64) -> u64 {
        let _ = lab;
        poll(WAIT, &format!("counter above {n}"), |last| {
            let l = self.last();
            *last = format!("{l:?}");
            l.filter(|&x| x > n)
        })
        .unwrap()
    }

    /// The peer addresses of established connections to the listener, as the core
    /// namespace's kernel sees them.
    fn peers(&self, lab: &Lab) -> Vec<String> {
        let o = lab
            .exec_in(
                &lab.core_ns(),
                "ss",
                &[
                    "-t",
                    "-n",
                    "-H",
                    "state",
                    "established",
                    &format!("( sport = :{} )", self.port),
                ],
            )
            .unwrap();
        stdout(&o)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect()
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
    }
}

/// TCP frames with FIN or RST among `frames` (Ethernet, IPv4), as "src:port flags".
fn fin_or_rst(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| {
            if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
                return None;
            }
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let tcp = f.get(14 + ihl..)?;
            let flags = *tcp.get(13)?;
            (flags & 0x05 != 0).then(|| {
                format!(
                    "{}.{}.{}.{}:{} flags {flags:#04x}",
                    f[26],
                    f[27],
                    f[28],
                    f[29],
                    u16::from_be_bytes([tcp[0], tcp[1]])
                )
            })
        })
        .collect()
}

/// A capture of every frame from host `i` (its MAC or its address) on the bridge.
fn capture_from(lab: &Lab, i: usize) -> Capture {
    let h = &lab.hosts()[i - 1];
    lab.tcpdump(
        &lab.core_ns(),
        "br0",
        &format!("ether src {} or src host {}", mac_string(&h.mac), h.ip),
    )
    .unwrap()
}

/// Watches a suspended host for `secs`: it stays suspended and frozen, its counter does
/// not move, its connection stays established as the peer sees it, and not one frame
/// from it reaches the bridge.
fn watch_asleep(lab: &Lab, i: usize, talk: &Talk, secs: u64) {
    let peers = talk.peers(lab);
    assert_eq!(peers.len(), 1, "one established connection: {peers:?}");
    let frozen_at = talk.last();
    let cap = capture_from(lab, i);
    let until = Instant::now() + Duration::from_secs(secs);
    // An observation window, not a wait on a condition: the claim is that nothing
    // happens during it.
    while Instant::now() < until {
        assert_eq!(lab.power_state(i).unwrap(), Power::Suspended);
        assert!(lab.is_frozen(i).unwrap(), "h{i} not frozen");
        assert_eq!(talk.last(), frozen_at, "the counter moved while asleep");
        std::thread::sleep(Duration::from_millis(500));
    }
    let frames = cap.stop().unwrap();
    assert!(
        frames.is_empty(),
        "{} frames from the sleeping h{i} on the bridge",
        frames.len()
    );
    assert_eq!(talk.peers(lab), peers, "the peer's view of the connection");
}

#[test]
fn suspend_freezes_silently_and_a_magic_packet_resumes_the_same_connection() {
    let lab = Lab::start(spec(1)).unwrap();
    let genie = wait_standin(&lab, 1);
    let talk = Talk::start(&lab, 1);
    let peers = talk.peers(&lab);
    let fins = lab
        .tcpdump(&lab.core_ns(), "br0", &format!("tcp port {}", talk.port))
        .unwrap();
    // The witness of silence sees the host while it is awake.
    let awake = capture_from(&lab, 1);
    talk.wait_above(&lab, talk.last().unwrap() + 3);
    assert!(
        !awake.stop().unwrap().is_empty(),
        "capture_from saw nothing"
    );

    lab.suspend_host(1).unwrap();
    assert!(lab.is_frozen(1).unwrap());
    assert!(procs::is_alive(talk.client) && procs::is_alive(genie));
    assert_eq!(ipmitool_power(&lab, 1), "Chassis Power is off");
    watch_asleep(&lab, 1, &talk, 4);

    let asleep_at = talk.last().unwrap();
    let t = Instant::now();
    lab.wake_host_by_wol(1).unwrap();
    wait_power(&lab, 1, Power::On);
    talk.wait_above(&lab, asleep_at + 5);
    eprintln!("FIGURE magic packet to counter +5: {:?}", t.elapsed());
    assert!(!lab.is_frozen(1).unwrap());
    assert!(procs::is_alive(talk.client) && procs::is_alive(genie));
    assert_eq!(standin_pids(&lab, 1), vec![genie], "same stand-in genie");
    assert_eq!(talk.peers(&lab), peers, "the same connection carries on");
    assert_eq!(ipmitool_power(&lab, 1), "Chassis Power is on");
    let log = std::fs::read_to_string(lab.wol_log()).unwrap();
    assert!(
        log.contains(&format!("wake h1 ({})", mac_string(&lab.hosts()[0].mac))),
        "{log}"
    );
    let seen = fin_or_rst(&fins.stop().unwrap());
    assert!(seen.is_empty(), "FIN or RST on the bridge: {seen:?}");
}

#[test]
fn ipmi_power_on_thaws_and_ipmi_power_off_kills_a_suspended_host_silently() {
    let lab = Lab::start(spec(2)).unwrap();
    let g1 = wait_standin(&lab, 1);
    wait_standin(&lab, 2);
    let t1 = Talk::start(&lab, 1);
    let t2 = Talk::start(&lab, 2);
    let peers1 = t1.peers(&lab);
    let fins = lab.tcpdump(&lab.core_ns(), "br0", "tcp").unwrap();

    // Power on thaws: same processes, same connection.
    lab.suspend_host(1).unwrap();
    assert!(lab.is_frozen(1).unwrap());
    let at = t1.last().unwrap();
    ipmitool_ok(&lab, 1, &["chassis", "power", "on"]);
    assert_eq!(lab.power_state(1).unwrap(), Power::On);
    t1.wait_above(&lab, at + 5);
    assert_eq!(standin_pids(&lab, 1), vec![g1]);
    assert!(procs::is_alive(t1.client));
    assert_eq!(t1.peers(&lab), peers1);

    // Hard power-off of a sleeping host (h1) and soft power-off (h2): S3 to S5, no
    // goodbye; the peers still think the connections are up.
    lab.suspend_host(1).unwrap();
    lab.suspend_host(2).unwrap();
    let peers2 = t2.peers(&lab);
    ipmitool_ok(&lab, 1, &["chassis", "power", "off"]);
    ipmitool_ok(&lab, 2, &["chassis", "power", "soft"]);
    for (i, t, peers) in [(1, &t1, &peers1), (2, &t2, &peers2)] {
        wait_power(&lab, i, Power::Off);
        poll(WAIT, &format!("h{i}'s processes gone"), |last| {
            let p = lab.host_pids(i).unwrap();
            *last = format!("{p:?}");
            p.is_empty().then_some(())
        })
        .unwrap();
        assert!(!procs::is_alive(t.client));
        assert_eq!(ipmitool_power(&lab, i), "Chassis Power is off");
        assert_eq!(&t.peers(&lab), peers, "h{i}: the peer saw nothing");
    }
    // Power on boots the host anew (a new genie) on a working link.
    ipmitool_ok(&lab, 1, &["chassis", "power", "on"]);
    let g1b = wait_standin(&lab, 1);
    assert_ne!(g1b, g1);
    let ping = lab
        .exec_in(
            &lab.hosts()[0].ns,
            "ping",
            &["-c", "1", "-W", "5", "10.77.0.1"],
        )
        .unwrap();
    assert!(ping.status.success(), "h1 cannot reach the core after boot");
    let seen = fin_or_rst(&fins.stop().unwrap());
    assert!(seen.is_empty(), "FIN or RST on the bridge: {seen:?}");
}

/// Takes about 2 min 10 s: the host sleeps for two minutes.
#[test]
fn a_host_suspended_for_two_minutes_resumes_cleanly() {
    let lab = Lab::start(spec(1)).unwrap();
    let genie = wait_standin(&lab, 1);
    let talk = Talk::start(&lab, 1);
    let fins = lab.tcpdump(&lab.core_ns(), "br0", "tcp").unwrap();
    lab.suspend_host(1).unwrap();
    let t = Instant::now();
    watch_asleep(&lab, 1, &talk, 120);
    let at = talk.last().unwrap();
    let asleep = t.elapsed();
    let t = Instant::now();
    lab.wake_host_by_wol(1).unwrap();
    wait_power(&lab, 1, Power::On);
    talk.wait_above(&lab, at + 5);
    eprintln!(
        "FIGURE asleep {asleep:?}; magic packet to counter +5: {:?}, from {at} on the same connection",
        t.elapsed()
    );
    assert_eq!(standin_pids(&lab, 1), vec![genie]);
    assert!(procs::is_alive(talk.client));
    let seen = fin_or_rst(&fins.stop().unwrap());
    assert!(seen.is_empty(), "FIN or RST on the bridge: {seen:?}");
}

#[test]
fn silent_power_loss_says_nothing_where_power_off_says_goodbye() {
    let lab = Lab::start(spec(2)).unwrap();
    let g1 = wait_standin(&lab, 1);
    wait_standin(&lab, 2);
    let t1 = Talk::start(&lab, 1);
    let t2 = Talk::start(&lab, 2);
    let peers1 = t1.peers(&lab);
    let fins = lab.tcpdump(&lab.core_ns(), "br0", "tcp").unwrap();

    lab.silent_power_loss(1).unwrap();
    assert_eq!(lab.power_state(1).unwrap(), Power::Off);
    assert!(lab.host_pids(1).unwrap().is_empty());
    assert!(!procs::is_alive(g1) && !procs::is_alive(t1.client));
    assert_eq!(ipmitool_power(&lab, 1), "Chassis Power is off");
    // The link is back: h1's kernel answers a ping from the core (it has no process).
    let ping = lab
        .exec_in(
            &lab.core_ns(),
            "ping",
            &["-c", "1", "-W", "5", "10.77.0.11"],
        )
        .unwrap();
    assert!(ping.status.success(), "h1's link not restored: {ping:?}");

    // The witness can see a goodbye: an ordinary power-off of h2 closes its connection.
    lab.power_off(2).unwrap();
    poll(WAIT, "h2's connection closed at the peer", |last| {
        let p = t2.peers(&lab);
        *last = format!("{p:?}");
        p.is_empty().then_some(())
    })
    .unwrap();
    // Give a late FIN from h1 (a socket left closing) time to show up: a FIN is
    // retransmitted after 200 ms, 400 ms, ...
    std::thread::sleep(Duration::from_secs(2));
    let seen = fin_or_rst(&fins.stop().unwrap());
    let from_h1: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("10.77.0.11:"))
        .collect();
    let from_h2: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("10.77.0.12:"))
        .collect();
    assert!(from_h1.is_empty(), "FIN or RST from h1: {from_h1:?}");
    assert!(
        !from_h2.is_empty(),
        "no FIN from h2's power-off among {seen:?}"
    );
    assert_eq!(t1.peers(&lab), peers1, "the peer never heard of h1's death");

    // A later power-on boots normally.
    lab.power_on(1).unwrap();
    assert_ne!(wait_standin(&lab, 1), g1);
}

#[test]
fn lost_magic_packets_leave_a_host_asleep_until_one_gets_through() {
    let lab = Lab::start(spec(1)).unwrap();
    let genie = wait_standin(&lab, 1);
    lab.suspend_host(1).unwrap();
    lab.set_wol_ignored(1, true).unwrap();
    let mac = mac_string(&lab.hosts()[0].mac);
    lab.wake_host_by_wol(1).unwrap();
    poll(WAIT, "the listener to log the ignored packet", |last| {
        let log = std::fs::read_to_string(lab.wol_log()).unwrap_or_default();
        *last = log.clone();
        log.contains(&format!("for h1 ({mac}): ignored"))
            .then_some(())
    })
    .unwrap();
    assert_eq!(lab.power_state(1).unwrap(), Power::Suspended);
    assert!(lab.is_frozen(1).unwrap());

    lab.set_wol_ignored(1, false).unwrap();
    lab.wake_host_by_wol(1).unwrap();
    wait_power(&lab, 1, Power::On);
    assert!(!lab.is_frozen(1).unwrap());
    assert_eq!(standin_pids(&lab, 1), vec![genie]);
}

#[test]
fn hosts_say_what_they_can_sleep_as() {
    let lab = Lab::start(
        LabSpec {
            hosts_on: false,
            wol_listener: false,
            ..spec(2)
        }
        .no_ram_suspend(vec![2]),
    )
    .unwrap();
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    let (h1, h2) = (&lab.hosts()[0], &lab.hosts()[1]);
    assert_eq!(read(h1.sys_power.join("state")), "freeze mem disk\n");
    assert_eq!(read(h1.sys_power.join("mem_sleep")), "s2idle [deep]\n");
    assert_eq!(read(h2.sys_power.join("state")), "freeze disk\n");
    assert_eq!(read(h2.sys_power.join("mem_sleep")), "[s2idle]\n");
    for h in [h1, h2] {
        let toml: toml::Value = toml::from_str(&read(h.genie_toml.clone())).unwrap();
        assert_eq!(
            toml["sys_power_dir"].as_str(),
            Some(h.sys_power.to_str().unwrap())
        );
    }
}
