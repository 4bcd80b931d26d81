//! Replicated routers in the lab: an etcd cluster and several `router serve`
//! processes in the core namespace, each on its own address on the bridge (router k
//! at `10.77.0.k`, API `127.0.0.1:7101 + 10·(k-1)`, local API socket
//! `router-rk.sock` in the lab's dir), all sharing the lab's hosts and BMCs, and
//! genies that list every router.
//!
//! Build the lab with `start_router: false` and `hosts_on: false`, then
//! [`Lab::start_etcd`], [`Lab::ha_routers`] (writes each router's router.toml from the
//! lab's, with an `[ha]` table), [`Lab::genies_follow`] (rewrites every genie.toml's
//! `router` to the list), start the routers and power the hosts on.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Output};

use super::etcd::{EtcdCluster, EtcdLabError, EtcdOptions};
use super::{cmd, configs, io_err, poll, spawn_logged, Lab, LabError, WAIT};

/// One replicated router of the lab.
#[derive(Debug)]
pub struct HaRouter {
    /// `r1`, `r2`, ...
    pub name: String,
    pub ip: Ipv4Addr,
    /// `127.0.0.1:<port>` in the core namespace.
    pub api: String,
    /// Its local API socket (every router, follower or leader, serves one).
    pub socket: PathBuf,
    pub toml: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl HaRouter {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CLI's `--api` for its local socket (no token needed there).
    pub fn local_api(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The genie link address.
    pub fn link(&self) -> String {
        format!("{}:{}", self.ip, configs::ROUTER_PORT)
    }

    /// SIGKILL (a crash: no goodbye to etcd or the genies), then reaped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for HaRouter {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Lab {
    /// An etcd cluster of `n` members in the core namespace, with `options`' raft
    /// timings (its `netns` is set here).
    pub fn start_etcd(&self, n: usize, options: EtcdOptions) -> Result<EtcdCluster, LabError> {
        let dir = self.dir.join("etcd");
        EtcdCluster::start_with(
            n,
            &dir,
            EtcdOptions {
                netns: Some(self.names.core_ns()),
                // On the bridge, where routers and genies reach it.
                client_ip: super::Names::router_ip().to_string(),
                ..options
            },
        )
        .map_err(|e: EtcdLabError| LabError::Timeout {
            what: "the lab's etcd cluster".into(),
            secs: super::etcd::HEALTHY_WITHIN.as_secs(),
            detail: format!(": {e}"),
        })
    }

    /// Writes the router.toml of `n` replicated routers (the lab's router.toml with
    /// its own address, API and state dir, and an `[ha]` table naming `etcd` plus
    /// `ha_extra` lines), and gives routers 2..n their addresses on the bridge.
    pub fn ha_routers(
        &self,
        n: usize,
        etcd: &[String],
        ha_extra: &str,
    ) -> Result<Vec<HaRouter>, LabError> {
        let base = fs::read_to_string(&self.router_toml).map_err(io_err(&self.router_toml))?;
        let endpoints: Vec<String> = etcd.iter().map(configs::q).collect();
        let mut out = Vec::with_capacity(n);
        for k in 1..=n {
            let ip = Ipv4Addr::new(10, 77, 0, k as u8);
            if k > 1 {
                cmd::run(std::process::Command::new("ip").args([
                    "-n",
                    &self.names.core_ns(),
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "br0",
                ]))?;
            }
            let api = format!("127.0.0.1:{}", 7101 + 10 * (k - 1));
            let state = self.dir.join(format!("router-state-r{k}"));
            // Each its own socket: the routers share the core namespace's files.
            let socket = self.dir.join(format!("router-r{k}.sock"));
            fs::create_dir_all(&state).map_err(io_err(&state))?;
            let text = base
                .replace(
                    &format!(
                        "listen = {}",
                        configs::q(format!(
                            "{}:{}",
                            super::Names::router_ip(),
                            configs::ROUTER_PORT
                        ))
                    ),
                    &format!(
                        "listen = {}",
                        configs::q(format!("{ip}:{}", configs::ROUTER_PORT))
                    ),
                )
                .replace(
                    &format!("api = {}", configs::q(configs::API_ADDR)),
                    &format!("api = {}", configs::q(&api)),
                )
                .replace(
                    &format!(
                        "api_socket = {}",
                        configs::q(self.api_socket().to_string_lossy())
                    ),
                    &format!("api_socket = {}", configs::q(socket.to_string_lossy())),
                )
                .replace(
                    &format!(
                        "state_dir = {}",
                        configs::q(self.dir.join("router-state").to_string_lossy())
                    ),
                    &format!("state_dir = {}", configs::q(state.to_string_lossy())),
                );
            let text = format!(
                "{text}\n[ha]\netcd = [{}]\ncluster = {}\nname = \"r{k}\"\n{ha_extra}\n",
                endpoints.join(", "),
                configs::q(&self.names.tag),
            );
            let toml = self.dir.join(format!("router-r{k}.toml"));
            fs::write(&toml, text).map_err(io_err(&toml))?;
            out.push(HaRouter {
                name: format!("r{k}"),
                ip,
                api,
                socket,
                log: self.dir.join(format!("router-r{k}.log")),
                toml,
                child: None,
            });
        }
        Ok(out)
    }

    /// Rewrites every genie.toml so that `router` lists `routers` (before the hosts
    /// are powered on: a genie reads its config at start), and, given `etcd`, so that
    /// each genie keeps a liveness lease there (`etcd_ttl_ms` = `ttl_ms`).
    pub fn genies_follow(
        &self,
        routers: &[HaRouter],
        etcd: Option<(&[String], u64)>,
    ) -> Result<(), LabError> {
        let one = format!(
            "router = {}\n",
            configs::q(format!(
                "{}:{}",
                super::Names::router_ip(),
                configs::ROUTER_PORT
            ))
        );
        let list: Vec<String> = routers.iter().map(|r| configs::q(r.link())).collect();
        let mut many = format!("router = [{}]\n", list.join(", "));
        if let Some((eps, ttl_ms)) = etcd {
            let eps: Vec<String> = eps.iter().map(configs::q).collect();
            many += &format!(
                "etcd = [{}]\ncluster = {}\netcd_ttl_ms = {ttl_ms}\n",
                eps.join(", "),
                configs::q(&self.names.tag)
            );
        }
        for h in &self.hosts {
            let text = fs::read_to_string(&h.genie_toml).map_err(io_err(&h.genie_toml))?;
            fs::write(&h.genie_toml, text.replace(&one, &many)).map_err(io_err(&h.genie_toml))?;
        }
        Ok(())
    }

    /// Starts `router serve` for `r` in the core namespace (not waiting for anything:
    /// a follower answers only once some router leads).
    pub fn start_ha_router(&self, r: &mut HaRouter) -> Result<(), LabError> {
        let router = self.bin(self.bins.router.as_ref(), "router")?;
        let mut c = cmd::in_ns(&self.names.core_ns(), &router);
        c.arg("serve").arg("--config").arg(&r.toml);
        r.child = Some(spawn_logged(&mut c, &r.log)?);
        Ok(())
    }

    /// `router --api <api> --token-file <admin token> <args>` in the core namespace
    /// (no token file for a `unix:` socket, which needs none).
    pub fn router_cli_at(&self, api: &str, args: &[&str]) -> Result<Output, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.args(["--api", api]);
        // The TCP API of every router takes the lab's admin token (from its file).
        if !api.starts_with("unix:") {
            c.arg("--token-file").arg(self.admin_token_file());
        }
        c.args(args);
        Ok(cmd::output(&mut c)?)
    }

    /// [`Lab::router_cli_at`] without waiting (an operation the test interrupts);
    /// collect it with `wait_with_output`.
    pub fn spawn_router_cli_at(&self, api: &str, args: &[&str]) -> Result<Child, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.args(["--api", api])
            .arg("--token-file")
            .arg(self.admin_token_file())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().map_err(|source| {
            LabError::Cmd(cmd::CmdError::Spawn {
                command: cmd::describe(&c),
                source,
            })
        })
    }

    /// `router --api <api> <args>` (printing JSON), which must succeed, parsed.
    pub fn router_json_at(&self, api: &str, args: &[&str]) -> Result<serde_json::Value, LabError> {
        let out = self.router_cli_at(api, args)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(LabError::Cli {
                args: format!("--api {api} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        serde_json::from_str(&text).map_err(|source| LabError::BadJson {
            args: args.join(" "),
            text,
            source,
        })
    }

    /// Waits until one of `routers` says it leads (`router status --json`); returns
    /// its index.
    pub fn wait_ha_leader(&self, routers: &[HaRouter]) -> Result<usize, LabError> {
        poll(WAIT, "a router to lead", |last| {
            for (i, r) in routers.iter().enumerate() {
                if r.child.is_none() {
                    continue;
                }
                match self.router_json_at(&r.api, &["status", "--json"]) {
                    Ok(v) if v["role"] == "leader" => return Some(i),
                    Ok(v) => *last = format!("{}: {v}", r.name),
                    Err(e) => *last = format!("{}: {e}", r.name),
                }
            }
            None
        })
    }
}

/// What an [`HaLab`] is made of.
#[derive(Debug, Clone)]
pub struct HaLabSpec {
    pub hosts: usize,
    pub routers: usize,
    /// etcd members, with `etcd`'s raft timings.
    pub members: usize,
    pub etcd: EtcdOptions,
    /// Top-level router.toml lines.
    pub router_extra: String,
    /// Lines of the `[ha]` table.
    pub ha_extra: String,
    /// With a TTL, every genie keeps a liveness lease of that TTL in etcd.
    pub genie_etcd_ttl_ms: Option<u64>,
    /// Benches: see [`super::LabSpec::bench_bins`].
    pub bench_bins: bool,
}

impl Default for HaLabSpec {
    /// Three of everything, etcd's usual timings, the genies' etcd lease of 4 s, and
    /// the router-granted self-fence lease off (`lease_ms = 0`), as replicated routers
    /// should run.
    fn default() -> Self {
        Self {
            hosts: 3,
            routers: 3,
            members: 3,
            etcd: EtcdOptions::default(),
            router_extra: "lease_ms = 0".into(),
            ha_extra: String::new(),
            genie_etcd_ttl_ms: Some(4000),
            bench_bins: false,
        }
    }
}

/// A lab with replicated routers: the lab (VM preset, witness on), its etcd and its
/// routers, every host up with metrics at the leader.
#[derive(Debug)]
pub struct HaLab {
    // Field order is drop order: routers, then etcd, then the lab's namespaces.
    pub routers: Vec<HaRouter>,
    pub etcd: EtcdCluster,
    pub lab: Lab,
}

impl HaLab {
    /// Builds and starts it, and waits until every host is up at the leader.
    pub fn start(spec: HaLabSpec) -> Result<HaLab, LabError> {
        let mut lab_spec = super::LabSpec::vms(spec.hosts).router_toml(&spec.router_extra);
        lab_spec.start_router = false;
        lab_spec.hosts_on = false;
        if spec.bench_bins {
            lab_spec = lab_spec.bench_bins();
        }
        let lab = Lab::start_with_witness(lab_spec)?;
        let etcd = lab.start_etcd(spec.members, spec.etcd.clone())?;
        let mut routers = lab.ha_routers(spec.routers, &etcd.endpoints(), &spec.ha_extra)?;
        let eps = etcd.endpoints();
        lab.genies_follow(
            &routers,
            spec.genie_etcd_ttl_ms.map(|t| (eps.as_slice(), t)),
        )?;
        for r in &mut routers {
            lab.start_ha_router(r)?;
        }
        let me = HaLab { routers, etcd, lab };
        let leader = me.lab.wait_ha_leader(&me.routers)?;
        for i in 1..=spec.hosts {
            me.lab.power_on(i)?;
        }
        me.wait_hosts_up(leader)?;
        Ok(me)
    }

    /// The leading router's index, waiting for one.
    pub fn leader(&self) -> Result<usize, LabError> {
        self.lab.wait_ha_leader(&self.routers)
    }

    /// Waits until router `k` (0-based) shows every host up with metrics.
    pub fn wait_hosts_up(&self, k: usize) -> Result<(), LabError> {
        let api = self.routers[k].api.clone();
        let n = self.lab.hosts().len();
        poll(
            WAIT,
            "every host up with metrics at the leader",
            |last| match self.lab.router_json_at(&api, &["hosts", "--json"]) {
                Ok(v) => {
                    let rows = v.as_array().cloned().unwrap_or_default();
                    let up = rows
                        .iter()
                        .filter(|h| {
                            h["state"] == "up"
                                && h["mem_total_bytes"].as_u64().is_some_and(|m| m > 0)
                        })
                        .count();
                    *last = format!("{up} of {n} up: {v}");
                    (up == n).then_some(())
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            },
        )
    }

    /// `router vm create VM --mem 64 --kernel <the lab guest> --host HOST` through
    /// router `via`'s TCP API (0-based), which must succeed.
    pub fn create_guest_vm(&self, via: usize, vm: &str, host: &str) -> Result<(), LabError> {
        self.create_guest_vm_at(&self.routers[via].api, vm, host)
    }

    /// The same through `api` (a router's TCP API or its `unix:` socket).
    pub fn create_guest_vm_at(&self, api: &str, vm: &str, host: &str) -> Result<(), LabError> {
        let guest = self.lab.guest_elf().to_string_lossy().into_owned();
        let args = [
            "vm", "create", vm, "--mem", "64", "--kernel", &guest, "--host", host,
        ];
        let out = self.lab.router_cli_at(api, &args)?;
        if !out.status.success() {
            return Err(LabError::Cli {
                args: format!("--api {api} {}", args.join(" ")),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Every router's last `n` log lines, for failure messages.
    pub fn logs(&self, n: usize) -> String {
        self.routers
            .iter()
            .map(|r| format!("--- {} ---\n{}\n", r.name, r.log_tail(n)))
            .collect()
    }
}
