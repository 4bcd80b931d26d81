//! Test kit (cargo feature `testkit`): OpenIPMI `ipmi_sim` BMCs on loopback and
//! throw-away network namespaces, for this crate's tests and benches and for the lab
//! (`wisp-tests`), which starts its per-host BMCs with [`SimFiles`]: one launcher.
//!
//! Everything started here is torn down by PID or by name on `Drop`, also when a test
//! fails. Missing tools are an error (`TestkitError::Missing`), never a silent skip:
//! a test that cannot run must fail loudly.
//!
//! The generated `chassis_control` program keeps the host's power state in a file
//! (`<dir>/power`, content `0` or `1`) so a test can read and change it; ipmi_sim runs
//! it synchronously, so it is a plain `sh` script that forks nothing long-lived.

use std::fs;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wisp_common::secret::Secret;

/// Failures of the test kit; each names the tool or file involved.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("required tool `{tool}` is not installed (apt-get install {package})")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot {what} ({path})")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{tool}`")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{tool}` failed: {detail}")]
    Failed { tool: &'static str, detail: String },
    #[error("ipmi_sim on 127.0.0.1:{port} did not answer within {after:?}; its log: {log}")]
    NotReady {
        port: u16,
        after: Duration,
        log: String,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, for namespaces, interfaces and temp dirs.
/// `max_len` keeps interface names under the kernel's 15-byte limit.
pub fn unique_name(prefix: &str, max_len: usize) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let mut s = format!("{prefix}{pid:x}{n:x}");
    s.truncate(max_len);
    s
}

/// Fails loudly when `tool` is not on PATH.
pub fn require(tool: &'static str, package: &'static str) -> Result<(), TestkitError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(TestkitError::Missing { tool, package })
    }
}

/// A fresh private temp directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self, TestkitError> {
        let p = std::env::temp_dir().join(unique_name(prefix, 64));
        fs::create_dir_all(&p).map_err(|source| TestkitError::File {
            what: "create temp dir",
            path: p.clone(),
            source,
        })?;
        Ok(Self(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), TestkitError> {
    let err = |source| TestkitError::File {
        what: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = fs::File::create(path).map_err(err)?;
    f.write_all(content).map_err(err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)
}

/// A free UDP port on 127.0.0.1 (bound then released; the OS rarely reuses it at once).
pub fn free_udp_port() -> Result<u16, TestkitError> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| TestkitError::Spawn {
        tool: "udp bind",
        source,
    })?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|source| TestkitError::Spawn {
            tool: "udp bind",
            source,
        })
}

/// Whether process `pid` holds a UDP socket bound to `port` (IPv4 or IPv6), from
/// /proc: the socket inodes among its descriptors against /proc/net/udp{,6}.
fn owns_udp_port(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let hex_port = format!(":{port:04X}");
    ["udp", "udp6"].iter().any(|t| {
        let table = fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1 ("0100007F:1F90"), the inode column 9.
            cols.len() > 9 && cols[1].ends_with(&hex_port) && inodes.iter().any(|i| i == cols[9])
        })
    })
}

/// What one `ipmi_sim` BMC is: where it listens, the chassis program it runs, its
/// `admin` password. The one lan.conf/emu writer and launcher, used by [`IpmiSim`]
/// here and by the lab of `wisp-tests` (one BMC per lab host, in its own namespace).
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// ipmi_sim's `name` (it shows in its log).
    pub name: String,
    pub addr: SocketAddr,
    /// The `chassis_control` command; ipmi_sim runs `<it> get power`, `<it> set power
    /// 1`, ... synchronously, so it must return within about a second and leave no
    /// child holding its stdout.
    pub chassis_control: String,
    /// The `admin` password. IPMI 1.5 limits passwords to 16 bytes, 2.0 to 20.
    pub password: String,
    /// The last 16 bits of the BMC's GUID, so the BMCs of one lab differ.
    pub guid_tail: u16,
}

/// The files of one `ipmi_sim`, written by [`SimFiles::write`].
#[derive(Debug, Clone)]
pub struct SimFiles {
    pub dir: PathBuf,
    /// 0600: it holds the password (ipmi_sim reads it from nowhere else).
    pub lan_conf: PathBuf,
    pub emu: PathBuf,
    /// ipmi_sim persists users here, and they override lan.conf: starts empty.
    pub state_dir: PathBuf,
    /// 0600, for clients (`ipmitool -f`, the router's `bmc_password_file`).
    pub password_file: PathBuf,
    pub log: PathBuf,
}

impl SimFiles {
    /// Writes lan.conf, the emu file, the password file and an empty state dir for
    /// `spec` into `dir` (created if needed).
    pub fn write(dir: &Path, spec: &SimSpec) -> Result<Self, TestkitError> {
        let files = SimFiles {
            dir: dir.to_owned(),
            lan_conf: dir.join("lan.conf"),
            emu: dir.join("bmc.emu"),
            state_dir: dir.join("state"),
            password_file: dir.join("admin.password"),
            log: dir.join("ipmi_sim.log"),
        };
        let _ = fs::remove_dir_all(&files.state_dir);
        fs::create_dir_all(&files.state_dir).map_err(|source| TestkitError::File {
            what: "create state dir",
            path: files.state_dir.clone(),
            source,
        })?;
        write_file(&files.password_file, spec.password.as_bytes(), 0o600)?;
        // Cipher suite 3 (what wisp and `ipmitool -C 3` use) needs none of the IPMI 1.5
        // auth types; these are the ones found to work with this ipmi_sim (ARCHITECTURE.md, IPMI).
        let conf = format!(
            "name \"{name}\"\n\
             set_working_mc 0x20\n\
             startlan 1\n\
             \x20 addr {ip} {port}\n\
             \x20 priv_limit admin\n\
             \x20 allowed_auths_callback md2 md5 straight\n\
             \x20 allowed_auths_user md2 md5 straight\n\
             \x20 allowed_auths_operator md2 md5 straight\n\
             \x20 allowed_auths_admin md2 md5 straight\n\
             \x20 guid a123456789abcdefa123456789ab{guid:04x}\n\
             endlan\n\
             chassis_control \"{chassis}\"\n\
             user 2 true \"{user}\" \"{password}\" admin 10 md2 md5 straight\n",
            name = spec.name,
            ip = spec.addr.ip(),
            port = spec.addr.port(),
            guid = spec.guid_tail,
            chassis = spec.chassis_control,
            user = IpmiSim::USER,
            password = spec.password,
        );
        write_file(&files.lan_conf, conf.as_bytes(), 0o600)?;
        write_file(
            &files.emu,
            b"mc_setbmc 0x20\n\
              mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
              sel_enable 0x20 1000 0x0a\n\
              mc_enable 0x20\n",
            0o644,
        )?;
        Ok(files)
    }

    /// Starts `ipmi_sim` on these files, its output into [`SimFiles::log`], inside
    /// network namespace `netns` if given (`ip netns exec` execs it, so the child is
    /// ipmi_sim itself and killing it kills the BMC). Does not wait for it to answer.
    pub fn spawn(&self, netns: Option<&str>) -> Result<Child, TestkitError> {
        let log = fs::File::create(&self.log).map_err(|source| TestkitError::File {
            what: "create log",
            path: self.log.clone(),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| TestkitError::File {
            what: "dup log",
            path: self.log.clone(),
            source,
        })?;
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ipmi_sim"]);
                c
            }
            None => Command::new("ipmi_sim"),
        };
        c.arg("-n")
            .arg("-c")
            .arg(&self.lan_conf)
            .arg("-f")
            .arg(&self.emu)
            .arg("-s")
            .arg(&self.state_dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                tool: "ipmi_sim",
                source,
            })
    }
}

/// One `ipmi_sim` BMC on 127.0.0.1:<port>, user `admin`, cipher suites incl. 3.
/// Killed (and reaped) on drop.
#[derive(Debug)]
pub struct IpmiSim {
    child: Option<Child>,
    dir: TempDir,
    files: SimFiles,
    addr: SocketAddr,
    password: String,
}

impl IpmiSim {
    pub const USER: &'static str = "admin";

    /// Starts a BMC with the given admin password and initial power state, and waits
    /// until it answers an RMCP ping (up to 10 s: the machine may be loaded).
    pub fn start(password: &str, power_on: bool) -> Result<Self, TestkitError> {
        require("ipmi_sim", "openipmi")?;
        let mut dir = TempDir::new("wisp-ipmisim-")?;
        let d = dir.path().to_owned();
        let d = d.as_path();
        write_file(&d.join("power"), if power_on { b"1" } else { b"0" }, 0o644)?;
        let script = format!(
            "#!/bin/sh\n\
             # chassis_control for ipmi_sim: <host> get power | <host> set <what> <value>...\n\
             f='{dir}/power'\n\
             echo \"$*\" >> '{dir}/chassis.log'\n\
             host=$1; op=$2; shift 2\n\
             if [ \"$op\" = get ]; then\n\
               for p in \"$@\"; do\n\
                 case $p in power) printf 'power:%s\\n' \"$(cat \"$f\")\";; esac\n\
               done\n\
               exit 0\n\
             fi\n\
             while [ $# -ge 2 ]; do\n\
               case $1 in\n\
                 power) printf '%s' \"$2\" > \"$f\";;\n\
                 shutdown) [ \"$2\" = 1 ] && printf 0 > \"$f\";;\n\
                 reset) echo reset >> '{dir}/resets';;\n\
               esac\n\
               shift 2\n\
             done\n\
             exit 0\n",
            dir = d.display()
        );
        write_file(&d.join("chassis.sh"), script.as_bytes(), 0o755)?;

        // A port may be taken between free_udp_port() and ipmi_sim's bind: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_udp_port()?;
            let files = SimFiles::write(
                d,
                &SimSpec {
                    name: format!("wisp{port}"),
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    chassis_control: format!("{} h", d.join("chassis.sh").display()),
                    password: password.to_owned(),
                    guid_tail: 0xcdef,
                },
            )?;
            let child = files.spawn(None)?;
            let mut sim = IpmiSim {
                child: Some(child),
                dir,
                files,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                password: password.to_owned(),
            };
            match sim.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(sim),
                Err(e) => {
                    last = Some(e);
                    sim.kill();
                    dir = std::mem::replace(&mut sim.dir, TempDir(PathBuf::new()));
                }
            }
        }
        Err(last.unwrap_or(TestkitError::Failed {
            tool: "ipmi_sim",
            detail: "could not start".into(),
        }))
    }

    /// Polls with RMCP presence pings until the BMC answers.
    fn wait_ready(&mut self, within: Duration) -> Result<(), TestkitError> {
        let start = Instant::now();
        let sock =
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| TestkitError::Spawn {
                tool: "udp bind",
                source,
            })?;
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        // RMCP header (v6, seq 0xff, class ASF) + ASF presence ping.
        let ping = [
            0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x01, 0x00, 0x00,
        ];
        let mut buf = [0u8; 256];
        while start.elapsed() < within {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(TestkitError::Failed {
                        tool: "ipmi_sim",
                        detail: format!("exited with {status}: {}", self.log()),
                    });
                }
            }
            let _ = sock.send_to(&ping, self.addr);
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                // The answer must come from *our* ipmi_sim: two tests may have been
                // handed the same free port, and then the one whose sim lost the bind
                // hears the other's BMC (and its password is refused later).
                let ours = match self.child.as_ref() {
                    Some(c) => owns_udp_port(c.id(), self.addr.port()),
                    None => true,
                };
                if n >= 4 && ours {
                    return Ok(());
                }
            }
        }
        Err(TestkitError::NotReady {
            port: self.addr.port(),
            after: within,
            log: self.log(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin password as a `Secret` (what a router would read from its file).
    pub fn password(&self) -> Secret {
        Secret::from_bytes(self.password.as_bytes())
    }

    /// The 0600 file holding the password (for `ipmitool -f`).
    pub fn password_file(&self) -> Result<PathBuf, TestkitError> {
        Ok(self.files.password_file.clone())
    }

    /// The power state the chassis program holds (`true` = on).
    pub fn power_file(&self) -> Result<bool, TestkitError> {
        let p = self.dir().join("power");
        let s = fs::read_to_string(&p).map_err(|source| TestkitError::File {
            what: "read power state",
            path: p,
            source,
        })?;
        Ok(s.trim() == "1")
    }

    pub fn set_power_file(&self, on: bool) -> Result<(), TestkitError> {
        write_file(
            &self.dir().join("power"),
            if on { b"1" } else { b"0" },
            0o644,
        )
    }

    /// How many resets the chassis program received.
    pub fn resets(&self) -> usize {
        fs::read_to_string(self.dir().join("resets"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.files.log).unwrap_or_default()
    }

    /// SIGSTOP: the BMC keeps its port but stops answering (a hung BMC).
    pub fn stop(&self) -> Result<(), TestkitError> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)
    }

    /// SIGCONT after `stop`.
    pub fn cont(&self) -> Result<(), TestkitError> {
        self.signal(nix::sys::signal::Signal::SIGCONT)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> Result<(), TestkitError> {
        let pid = self.pid().ok_or(TestkitError::Failed {
            tool: "ipmi_sim",
            detail: "not running".into(),
        })?;
        let pid = i32::try_from(pid).map_err(|_| TestkitError::Failed {
            tool: "ipmi_sim",
            detail: "pid out of range".into(),
        })?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| {
            TestkitError::Failed {
                tool: "kill",
                detail: e.to_string(),
            }
        })
    }

    /// Kills and reaps the process (the port then answers with ICMP unreachable).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGCONT first in case it was stopped; SIGKILL works either way.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `ipmitool -I lanplus -C 3 ... <args>` against this BMC with the password
    /// passed by file (never `-P` in argv). Returns stdout.
    pub fn ipmitool(&self, args: &[&str]) -> Result<String, TestkitError> {
        require("ipmitool", "ipmitool")?;
        let pwfile = self.password_file()?;
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(["-U", Self::USER, "-f"])
            .arg(&pwfile)
            .args(["-C", "3", "-N", "1", "-R", "3"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestkitError::Spawn {
                tool: "ipmitool",
                source,
            })?;
        if !out.status.success() {
            return Err(TestkitError::Failed {
                tool: "ipmitool",
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A network namespace created for a test (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self, TestkitError> {
        require("ip", "iproute2")?;
        let name = unique_name(prefix, 40);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and waits for it; returns stdout.
    pub fn exec(&self, tool: &'static str, args: &[&str]) -> Result<String, TestkitError> {
        let mut all = vec!["netns", "exec", self.name.as_str(), tool];
        all.extend_from_slice(args);
        run_named("ip", tool, &all)
    }

    /// A `Command` that runs `tool` inside the namespace (for background processes).
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, tool]);
        c
    }

    /// Path of the namespace for `setns` (`/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(tool: &'static str, args: &[&str]) -> Result<String, TestkitError> {
    run_named(tool, tool, args)
}

fn run_named(bin: &str, tool: &'static str, args: &[&str]) -> Result<String, TestkitError> {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| TestkitError::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(TestkitError::Failed {
            tool,
            detail: format!(
                "{} {}: {}",
                bin,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_udp_port_is_owned_by_the_process_that_bound_it_only() {
        let mine = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = mine.local_addr().unwrap().port();
        assert!(owns_udp_port(std::process::id(), port));
        // PID 1 did not bind it; and a port nobody holds is owned by no one.
        assert!(!owns_udp_port(1, port));
        drop(mine);
        assert!(!owns_udp_port(std::process::id(), port));
    }
}
