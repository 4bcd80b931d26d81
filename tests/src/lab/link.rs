//! A lab host's link as its power sees it: cut while the host sleeps or loses power
//! (nothing enters or leaves its namespace, and nothing is closed), restored when it
//! wakes or is powered again; and the host's TCP sockets, destroyed without a word
//! when it loses power.
//!
//! The cut takes the host's bridge port (`h<i>` in the core namespace) down, as
//! [`super::Lab::cut_host_link`] does. Frames the host sends then die in its veth (the
//! peer is down) and the bridge forwards nothing to it; its sockets are untouched, and
//! its `eth0` sees no carrier, as a suspended NIC's link partner would. One leak is
//! closed by hand: while the host's kernel has no neighbour entry for a peer, what it
//! sends waits in the neighbour queue and would go out once the link is back, so the
//! host's neighbour table is flushed (dropping that queue) before the port comes up.
//!
//! A marker file in the host directory says the power code cut the link, so a wake
//! restores only what a suspend cut: a link a test cut on purpose stays cut.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::cmd::{self, CmdError};
use super::power::HostFile;

/// Marker: the power code took the host's bridge port down.
const CUT_MARKER: &str = "power-link-cut";

fn ip_core(host: &HostFile, args: &[&str]) -> Result<std::process::Output, CmdError> {
    cmd::run(Command::new("ip").args(["-n", &host.core_ns]).args(args))
}

/// True if the host's bridge port is administratively up.
fn port_up(host: &HostFile) -> Result<bool, CmdError> {
    let out = ip_core(host, &["-o", "link", "show", "dev", &host.port])?;
    let text = String::from_utf8_lossy(&out.stdout);
    // `3: h1@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ...`
    let flags = text
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(f, _)| f)
        .unwrap_or("");
    Ok(flags.split(',').any(|f| f == "UP"))
}

/// Cuts the host's link (if up), remembering that the power code did it.
pub(super) fn cut(host: &HostFile, dir: &Path) -> Result<(), CmdError> {
    if port_up(host)? {
        // The marker first: a crash between the two leaves a restorable state.
        let _ = fs::write(dir.join(CUT_MARKER), "");
        ip_core(host, &["link", "set", "dev", &host.port, "down"])?;
    }
    Ok(())
}

/// Restores the host's link if the power code cut it: drops what the host queued for
/// the wire while cut (its neighbour table), then brings the bridge port up.
pub(super) fn restore(host: &HostFile, dir: &Path) -> Result<(), CmdError> {
    let marker = dir.join(CUT_MARKER);
    if !marker.exists() {
        return Ok(());
    }
    cmd::run(Command::new("ip").args(["-n", &host.ns, "neigh", "flush", "all"]))?;
    ip_core(host, &["link", "set", "dev", &host.port, "up"])?;
    let _ = fs::remove_file(marker);
    Ok(())
}

/// `ss` in the host's namespace (TCP, numeric, every state, no header).
fn ss(host: &HostFile, extra: &[&str]) -> Result<String, CmdError> {
    let mut c = cmd::in_ns(&host.ns, "ss");
    c.args(["-t", "-a", "-n", "-H"]).args(extra);
    let out = cmd::run(&mut c)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (at most `timeout`) until no TCP socket of the host has unacknowledged data.
///
/// Why: the lab host's kernel keeps its timers running while "asleep", unlike a
/// suspended one whose clock stops. Data in flight at the cut would be retransmitted
/// into the dead link with exponential backoff and, after a long sleep, come out only
/// at the next backed-off retransmission, up to two minutes after the wake, where a
/// real kernel retransmits at once. Letting in-flight data be acknowledged before the
/// cut (the processes are already frozen, so no new data comes) avoids that.
pub(super) fn drain_send_queues(host: &HostFile, timeout: Duration) -> Result<(), CmdError> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = ss(host, &["state", "established"])?;
        // Columns without a state column: Recv-Q Send-Q Local Peer.
        let busy = text
            .lines()
            .any(|l| l.split_whitespace().nth(1).is_some_and(|q| q != "0"));
        if !busy || Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Destroys every TCP socket of the host (`ss -K`, the kernel's SOCK_DESTROY) and
/// returns the lines of those left. Run while the link is cut and the processes
/// frozen: the RST each destroyed connection sends dies on the cut link, and the
/// processes, killed next, have nothing left to close with a FIN. Killing them first
/// would leave orphaned sockets retransmitting their FIN until after the link is back.
pub(super) fn destroy_sockets(host: &HostFile) -> Result<Vec<String>, CmdError> {
    ss(host, &["-K"])?;
    Ok(ss(host, &[])?.lines().map(str::to_owned).collect())
}
