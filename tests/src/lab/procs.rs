//! Finding and killing processes by PID: every process in a namespace, and waiting
//! until they are really gone.
//!
//! PID 1 in our containers is not an init, so killed orphans stay zombies for a while
//! and `kill -0` still succeeds on them: "gone" here means "no such PID or state Z".

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cmd::{self, CmdError};

/// PIDs of every process whose network namespace is `ns` (`ip netns pids`).
pub fn ns_pids(ns: &str) -> Result<Vec<i32>, CmdError> {
    let out = cmd::run(std::process::Command::new("ip").args(["netns", "pids", ns]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| is_alive(p))
        .collect())
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    !matches!(state(pid), None | Some('Z' | 'X'))
}

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z`...),
/// or `None` if there is no such process.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state is the first field after the parenthesised command name, which may
    // itself contain spaces and parentheses: search from the last ')'.
    let i = stat.rfind(')')?;
    stat[i + 1..].trim_start().chars().next()
}

/// Sends `sig` to `pid`, ignoring "no such process".
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Polls until none of `pids` is alive; returns those still alive at the deadline.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs every process in `ns` except `except` (the caller itself when it runs in
/// that namespace), repeating until the namespace is empty or `timeout` passes: a
/// process may fork between our listing and our kill.
pub fn kill_ns(ns: &str, except: Option<i32>, timeout: Duration) -> Result<Vec<i32>, CmdError> {
    let deadline = Instant::now() + timeout;
    let mut killed = Vec::new();
    loop {
        let pids: Vec<i32> = ns_pids(ns)?
            .into_iter()
            .filter(|&p| Some(p) != except)
            .collect();
        if pids.is_empty() {
            return Ok(killed);
        }
        for &p in &pids {
            signal(p, Signal::SIGKILL);
            killed.push(p);
        }
        let left = wait_gone(&pids, Duration::from_millis(500));
        if !left.is_empty() && Instant::now() >= deadline {
            return Ok(killed);
        }
    }
}
