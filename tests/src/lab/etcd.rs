//! An etcd cluster for tests: `n` members of Debian's etcd 3.4 (`/usr/bin/etcd`) as
//! child processes on loopback, each with its own data dir and log under the given
//! directory, with the timings the router's election is built for
//! (`--heartbeat-interval 100 --election-timeout 1000`).
//!
//! Ports are unique per test run: candidates derive from the test process's PID and a
//! counter, and each is checked free by binding it. Members can be killed without a
//! goodbye (SIGKILL), frozen (SIGSTOP, like a suspended machine) and restarted with
//! their data; dropping the cluster kills every member and waits until it is gone.
//! Nothing here needs root, but [`EtcdCluster::start_with`] can also run the members
//! inside a network namespace (the lab's core namespace, where its routers run), with
//! shorter raft timings (a 1 s lease needs `--election-timeout` ≤ 666 ms).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::procs;

/// The etcd the lab runs (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

/// Generous: a 3-member cluster is healthy in ~1-3 s on an idle machine.
pub const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EtcdLabError {
    #[error("{ETCD} is missing: install Debian's etcd-server (tests/install-deps.sh)")]
    Missing,
    #[error("an etcd cluster has 1 to 7 members, not {0}")]
    BadSize(usize),
    #[error("no member {index} in this cluster of {members}")]
    NoMember { index: usize, members: usize },
    #[error("no free loopback port found for etcd")]
    NoPort,
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start etcd member {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd member {name} exited early ({status}); its log {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Where and how the members run.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// A network namespace (its name under /run/netns) to run the members in, on its
    /// loopback; `None`: this process's namespace.
    pub netns: Option<String>,
    /// `--heartbeat-interval` and `--election-timeout`, ms.
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// The address clients reach the members on (peers stay on loopback): the lab
    /// puts it on its bridge, where the genies can reach it too.
    pub client_ip: String,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            netns: None,
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
            client_ip: "127.0.0.1".into(),
        }
    }
}

/// A running etcd cluster; killed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    agent: ureq::Agent,
    options: EtcdOptions,
}

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A loopback port that is free now, different for each call in this process and
/// (very likely) from other test processes running at the same time.
///
/// Members are killed and restarted on the same ports, so the ports come from
/// outside the kernel's ephemeral range: a port inside it can be taken, while its
/// member is down, by any process's outgoing connection (CI once saw a restarted
/// member refused with "address already in use" that way).
fn free_port() -> Result<u16, EtcdLabError> {
    let (lo, hi) = fixed_port_range();
    let span = u32::from(hi - lo) + 1;
    let pid = std::process::id();
    for _ in 0..2000 {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = lo + (pid.wrapping_mul(97).wrapping_add(n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(EtcdLabError::NoPort)
}

/// The ports the kernel never hands out on its own: below its ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), or above it when it
/// starts too low to leave room below.
fn fixed_port_range() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let (low, high) = range
        .as_deref()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    if low > 12_000 {
        (10_000, low - 1)
    } else {
        (high.saturating_add(1).max(1024), u16::MAX)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EtcdLabError + '_ {
    move |source| EtcdLabError::Io {
        path: path.to_owned(),
        source,
    }
}

impl EtcdCluster {
    /// Starts `n` members with data and logs under `dir` (created) and waits until
    /// every one of them says it is healthy.
    pub fn start(n: usize, dir: &Path) -> Result<Self, EtcdLabError> {
        Self::start_with(n, dir, EtcdOptions::default())
    }

    /// [`Self::start`] where and how `options` say.
    pub fn start_with(n: usize, dir: &Path, options: EtcdOptions) -> Result<Self, EtcdLabError> {
        if !Path::new(ETCD).is_file() {
            return Err(EtcdLabError::Missing);
        }
        if n == 0 || n > 7 {
            return Err(EtcdLabError::BadSize(n));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}");
            let data_dir = dir.join(format!("etcd-{name}"));
            // A leftover data dir would carry another cluster's identity.
            let _ = fs::remove_dir_all(&data_dir);
            members.push(Member {
                log: dir.join(format!("etcd-{name}.log")),
                name,
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(500)))
            .proxy(None)
            .build();
        let mut cluster = Self {
            members,
            initial_cluster,
            token: format!(
                "wisp-test-{}-{}",
                std::process::id(),
                NEXT_PORT.load(Ordering::Relaxed)
            ),
            agent: ureq::Agent::new_with_config(config),
            options,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(HEALTHY_WITHIN)?;
        Ok(cluster)
    }

    fn member(&self, i: usize) -> Result<&Member, EtcdLabError> {
        self.members.get(i).ok_or(EtcdLabError::NoMember {
            index: i,
            members: self.members.len(),
        })
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdLabError> {
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let m = &self.members[i];
        let client = format!("http://{}:{}", self.options.client_ip, m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(io_err(&m.log))?;
        let log2 = log.try_clone().map_err(io_err(&m.log))?;
        let timings = [
            "--heartbeat-interval".to_owned(),
            self.options.heartbeat_ms.to_string(),
            "--election-timeout".to_owned(),
            self.options.election_timeout_ms.to_string(),
        ];
        let mut command = match &self.options.netns {
            // `ip netns exec` execs etcd: the child's PID is etcd's own.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, ETCD]);
                c
            }
            None => Command::new(ETCD),
        };
        let m = &mut self.members[i];
        let child = command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
            ])
            .args(&timings)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| EtcdLabError::Spawn {
                name: m.name.clone(),
                source,
            })?;
        m.child = Some(child);
        Ok(())
    }

    /// The client endpoints (`<client_ip>:<port>`), member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}:{}", self.options.client_ip, m.client_port))
            .collect()
    }

    /// The PID of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<i32> {
        self.members.get(i)?.child.as_ref().map(|c| c.id() as i32)
    }

    fn get(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        match &self.options.netns {
            None => self.get_here(i, path),
            // A thread of our own enters the namespace, so this process stays put.
            Some(ns) => std::thread::scope(|s| {
                s.spawn(|| {
                    let f = fs::File::open(format!("/run/netns/{ns}")).ok()?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
                    self.get_here(i, path)
                })
                .join()
                .ok()
                .flatten()
            }),
        }
    }

    fn get_here(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let url = format!(
            "http://{}:{}{path}",
            self.options.client_ip, self.members[i].client_port
        );
        let mut resp = if path == "/health" {
            self.agent.get(&url).call().ok()?
        } else {
            self.agent.post(&url).send("{}").ok()?
        };
        let text = resp.body_mut().read_to_string().ok()?;
        serde_json::from_str(&text).ok()
    }

    fn healthy(&self, i: usize) -> bool {
        self.get(i, "/health")
            .is_some_and(|v| v["health"] == "true")
    }

    /// Checks that no running member exited; the error carries its log's tail.
    fn check_running(&mut self) -> Result<(), EtcdLabError> {
        for m in &mut self.members {
            let Some(child) = m.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(EtcdLabError::Exited {
                    name: m.name.clone(),
                    status: status.to_string(),
                    log: m.log.clone(),
                    tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                });
            }
        }
        Ok(())
    }

    /// Waits until every running member says it is healthy (it has a leader).
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), EtcdLabError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .collect();
            if running.iter().all(|&i| self.healthy(i)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(EtcdLabError::Timeout {
                    what: format!("etcd members {running:?} to be healthy"),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the member that is etcd's raft leader now, as the running members
    /// see it (`None` while there is none).
    pub fn leader_member(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let Some(status) = self.get(i, "/v3/maintenance/status") else {
                continue;
            };
            let leader = status["leader"].as_str().unwrap_or("0");
            if leader == "0" {
                continue;
            }
            for j in 0..self.members.len() {
                if self.members[j].child.is_none() {
                    continue;
                }
                let id = if j == i {
                    status["header"]["member_id"].clone()
                } else {
                    match self.get(j, "/v3/maintenance/status") {
                        Some(s) => s["header"]["member_id"].clone(),
                        None => continue,
                    }
                };
                if id.as_str() == Some(leader) {
                    return Some(j);
                }
            }
        }
        None
    }

    /// Kills member `i` with SIGKILL (no goodbye to its peers) and waits until it is
    /// gone.
    pub fn kill_member(&mut self, i: usize) -> Result<(), EtcdLabError> {
        self.member(i)?;
        if let Some(mut child) = self.members[i].child.take() {
            procs::signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
        Ok(())
    }

    /// Freezes member `i` (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn freeze_member(&self, i: usize) -> Result<(), EtcdLabError> {
        self.member(i)?;
        if let Some(pid) = self.pid(i) {
            procs::signal(pid, Signal::SIGSTOP);
        }
        Ok(())
    }

    /// Thaws member `i` (SIGCONT).
    pub fn thaw_member(&self, i: usize) -> Result<(), EtcdLabError> {
        self.member(i)?;
        if let Some(pid) = self.pid(i) {
            procs::signal(pid, Signal::SIGCONT);
        }
        Ok(())
    }

    /// Starts member `i` again with its data (after [`Self::kill_member`]) and waits
    /// until it is healthy.
    pub fn restart_member(&mut self, i: usize) -> Result<(), EtcdLabError> {
        self.start_member(i)?;
        self.wait_healthy(HEALTHY_WITHIN)
    }

    /// Starts member `i` again with its data, without waiting: a member alone cannot
    /// be healthy without a quorum, so bringing back a whole cluster starts every
    /// member first and waits after ([`Self::wait_healthy`]).
    pub fn start_member(&mut self, i: usize) -> Result<(), EtcdLabError> {
        self.member(i)?;
        self.kill_member(i)?;
        self.spawn(i)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                // SIGKILL ends a frozen (SIGSTOPped) member too.
                procs::signal(child.id() as i32, Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ports_lie_outside_the_ephemeral_range() {
        let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let v: Vec<u16> = s.split_whitespace().map(|w| w.parse().unwrap()).collect();
        for _ in 0..50 {
            let p = free_port().unwrap();
            assert!(p < v[0] || p > v[1], "port {p} is inside {v:?}");
        }
    }
}
