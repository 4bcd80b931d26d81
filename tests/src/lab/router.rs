//! The router in the lab: its router.toml, its process in the core namespace (start,
//! stop, crash), and its CLI, which is how tests talk to it, exactly as an operator
//! would (`router --api ... <args>`, JSON rows typed in api.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::api::{EventRow, HostRow, VmRow};
use super::cmd::{self, CmdError};
use super::{bmc, configs, io_err, poll, procs, spawn_logged, Lab, LabError, WAIT};

/// A finished CLI call as (exit code, one-line trimmed stderr, stdout).
pub fn cli_result(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

impl Lab {
    /// router.toml: the lab's defaults, `extra`, one `[[host]]` per host.
    pub(super) fn write_router_toml(&self, extra: &str) -> Result<(), LabError> {
        let hosts: Vec<configs::RouterHost<'_>> = self
            .hosts
            .iter()
            .map(|h| configs::RouterHost {
                index: h.index,
                mac: h.mac,
                bmc_password_file: &h.bmc.password_file,
            })
            .collect();
        let state_dir = self.dir.join("router-state");
        fs::create_dir_all(&state_dir).map_err(io_err(&state_dir))?;
        // Tokens are made once per lab: a router restarted with new config keeps them.
        for f in [self.admin_token_file(), self.read_token_file()] {
            if !f.exists() {
                bmc::write_private(&f, bmc::random_secret(24)?.as_bytes())?;
            }
        }
        let (socket, admin_token, read_token) = (
            self.api_socket(),
            self.admin_token_file(),
            self.read_token_file(),
        );
        let api = configs::ApiFiles {
            socket: &socket,
            admin_token: &admin_token,
            read_token: &read_token,
        };
        let rt = configs::router_toml(&state_dir, &self.secret_file, api, extra, &hosts);
        fs::write(&self.router_toml, rt).map_err(io_err(&self.router_toml))
    }

    /// The router's local API socket (what the lab's CLI calls use).
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("router.sock")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.dir.join("api-admin.token")
    }
    fn read_token_file(&self) -> PathBuf {
        self.dir.join("api-read.token")
    }
    /// The admin token of the router's TCP API (`127.0.0.1:7101` in the core namespace).
    pub fn admin_token(&self) -> String {
        fs::read_to_string(self.admin_token_file()).unwrap_or_default()
    }
    /// The read-only token of the router's TCP API.
    pub fn read_token(&self) -> String {
        fs::read_to_string(self.read_token_file()).unwrap_or_default()
    }
    /// The router binary the lab runs (for tests that call it their own way).
    pub fn router_bin(&self) -> Result<&Path, LabError> {
        self.bins.router.as_deref().ok_or(LabError::NoRouter)
    }
    /// The CLI's `--api` value: the local socket.
    pub fn api_arg(&self) -> String {
        format!("unix:{}", self.api_socket().display())
    }

    pub fn router_log(&self) -> PathBuf {
        self.dir.join("router.log")
    }
    pub fn router_toml(&self) -> &Path {
        &self.router_toml
    }
    /// PID of the router process, if the lab runs one.
    pub fn router_pid(&self) -> Option<u32> {
        self.router.as_ref().map(Child::id)
    }

    /// Starts `router serve` in the core namespace and waits until its API answers.
    pub fn start_router(&mut self) -> Result<(), LabError> {
        let router = self.bin(self.bins.router.as_ref(), "router")?;
        let log_path = self.router_log();
        let mut c = cmd::in_ns(&self.names.core_ns(), &router);
        c.arg("serve").arg("--config").arg(&self.router_toml);
        let child = spawn_logged(&mut c, &log_path)?;
        self.router = Some(child);
        poll(WAIT, "the router API to answer `router hosts`", |last| {
            if let Some(Ok(Some(st))) = self.router.as_mut().map(|c| c.try_wait()) {
                *last = format!(
                    "router exited {st}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default().trim()
                );
                return Some(Err(()));
            }
            match self.router_cli(&["hosts", "--json"]) {
                Ok(o) if o.status.success() => Some(Ok(())),
                Ok(o) => {
                    *last = String::from_utf8_lossy(&o.stderr).trim().to_owned();
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            }
        })?
        .map_err(|()| LabError::Cli {
            args: "serve".into(),
            stderr: fs::read_to_string(&log_path).unwrap_or_default(),
        })
    }

    /// SIGTERM to the router, then SIGKILL if it has not stopped within 10 s.
    pub fn stop_router(&mut self) {
        if let Some(mut c) = self.router.take() {
            procs::signal(c.id() as i32, Signal::SIGTERM);
            if !procs::wait_gone(&[c.id() as i32], Duration::from_secs(10)).is_empty() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// SIGKILL to the router (a crash).
    pub fn kill_router(&mut self) {
        if let Some(mut c) = self.router.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Gives every host a fixed capacity in router.toml (`vcpus`, `mem_mib` in each
    /// `[[host]]`) instead of the figures derived from metrics (every lab host sees the
    /// whole machine), then (re)starts the router so it reads them.
    pub fn set_host_capacity(&mut self, vcpus: u32, mem_mib: u64) -> Result<(), LabError> {
        let path = self.router_toml.clone();
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let text = text.replace(
            "bmc_user = \"admin\"\n",
            &format!("bmc_user = \"admin\"\nvcpus = {vcpus}\nmem_mib = {mem_mib}\n"),
        );
        fs::write(&path, text).map_err(io_err(&path))?;
        self.stop_router();
        self.start_router()
    }

    /// Runs `router --api unix:<lab>/router.sock <args>` in the core namespace.
    pub fn router_cli(&self, args: &[&str]) -> Result<Output, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.arg("--api").arg(self.api_arg()).args(args);
        Ok(cmd::output(&mut c)?)
    }

    /// Starts `router <args>` in the core namespace without waiting (for a migration
    /// to interrupt); collect it with `wait_with_output`.
    pub fn spawn_router_cli(&self, args: &[&str]) -> Result<Child, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.arg("--api")
            .arg(self.api_arg())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().map_err(|source| {
            LabError::Cmd(CmdError::Spawn {
                command: cmd::describe(&c),
                source,
            })
        })
    }

    /// `router <args>`, which must succeed; returns its stdout.
    pub fn router_ok(&self, args: &[&str]) -> Result<String, LabError> {
        let out = self.router_cli(args)?;
        if !out.status.success() {
            return Err(LabError::Cli {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `router <args>` (with `--json` among them), parsed.
    pub fn router_json(&self, args: &[&str]) -> Result<serde_json::Value, LabError> {
        let out = self.router_ok(args)?;
        serde_json::from_str(&out).map_err(|e| LabError::Cli {
            args: args.join(" "),
            stderr: format!("not JSON ({e}): {out}"),
        })
    }

    /// Runs a router CLI command and fails with its stderr if it fails.
    pub fn cli_ok(&self, args: &[&str]) -> Result<(), LabError> {
        self.router_ok(args).map(drop)
    }

    /// `router <args>` (which print JSON), parsed into `T`.
    pub(super) fn cli_json<T: serde::de::DeserializeOwned>(
        &self,
        args: &[&str],
    ) -> Result<T, LabError> {
        let text = self.router_ok(args)?;
        serde_json::from_str(&text).map_err(|source| LabError::BadJson {
            args: args.join(" "),
            text,
            source,
        })
    }

    /// `router hosts --json`, typed.
    pub fn hosts_json(&self) -> Result<Vec<HostRow>, LabError> {
        self.cli_json(&["hosts", "--json"])
    }

    /// `router vms --json`, typed.
    /// The router's word for `host`'s state (`up`, `standby`, ...); empty when the API
    /// does not answer or does not know the host.
    pub fn host_state(&self, host: &str) -> String {
        self.hosts_json()
            .ok()
            .and_then(|hs| hs.into_iter().find(|h| h.name == host))
            .map(|h| h.state)
            .unwrap_or_default()
    }

    pub fn vms_json(&self) -> Result<Vec<VmRow>, LabError> {
        self.cli_json(&["vms", "--json"])
    }

    /// `router events --json` (newest `limit` events), oldest first.
    pub fn events_json(&self, limit: usize) -> Result<Vec<EventRow>, LabError> {
        let limit = limit.to_string();
        let mut evs: Vec<EventRow> = self.cli_json(&["events", "--json", "--limit", &limit])?;
        evs.sort_by_key(|e| e.at_ms);
        Ok(evs)
    }

    /// `router sla --json`, untyped (tests read a few fields).
    pub fn sla_json(&self) -> Result<serde_json::Value, LabError> {
        self.cli_json(&["sla", "--json"])
    }

    /// Waits until `router hosts` shows every host of the lab `up`; returns the rows.
    pub fn wait_all_up(&self) -> Result<Vec<HostRow>, LabError> {
        self.wait_hosts("every host up", |h| h.state == "up")
    }

    /// Waits until `router hosts` shows every host `up` with metrics (placement needs
    /// a host's capacity, which comes from its first metrics report); returns the rows.
    pub fn wait_all_up_with_metrics(&self) -> Result<Vec<HostRow>, LabError> {
        self.wait_hosts("every host up with metrics", |h| {
            h.state == "up" && h.mem_total_bytes.is_some_and(|m| m > 0)
        })
    }

    fn wait_hosts(
        &self,
        what: &str,
        ok: impl Fn(&HostRow) -> bool,
    ) -> Result<Vec<HostRow>, LabError> {
        poll(WAIT, what, |last| match self.hosts_json() {
            Ok(rows) => {
                *last = format!("{rows:?}");
                (rows.len() == self.hosts.len() && rows.iter().all(&ok)).then_some(rows)
            }
            Err(e) => {
                *last = e.to_string();
                None
            }
        })
    }
}
