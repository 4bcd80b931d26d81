//! Packet captures with real `tcpdump`, as an outside witness of what went on a wire
//! (magic packets, IPMI): `Lab::tcpdump` in any of the lab's namespaces.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cmd::{self, CmdError};
use super::procs;
use crate::pcap::{self, PcapError};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot start tcpdump")]
    Start(#[source] CmdError),
    #[error("cannot create capture file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tcpdump on {iface} in {ns} did not start listening within {secs} s: {stderr}")]
    NotListening {
        ns: String,
        iface: String,
        secs: u64,
        stderr: String,
    },
    #[error("cannot read the capture {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capture {path} is not a readable pcap")]
    Parse {
        path: PathBuf,
        #[source]
        source: PcapError,
    },
}

/// A running `tcpdump -w`; killed on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    pcap: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i <iface> -w <dir>/<file> <filter>` in `ns` and waits until it
    /// says it is listening (so nothing sent afterwards is missed).
    pub fn start(
        ns: &str,
        iface: &str,
        filter: &str,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<Self, CaptureError> {
        let pcap = dir.join(format!("{name}.pcap"));
        let errlog = dir.join(format!("{name}.tcpdump.log"));
        let err = File::create(&errlog).map_err(|source| CaptureError::File {
            path: errlog.clone(),
            source,
        })?;
        let mut c = cmd::in_ns(ns, "tcpdump");
        c.args(["-i", iface, "--immediate-mode", "-U", "-n", "-w"])
            .arg(&pcap)
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let child = c.spawn().map_err(|source| {
            CaptureError::Start(CmdError::Spawn {
                command: cmd::describe(&c),
                source,
            })
        })?;
        let mut cap = Self {
            child: Some(child),
            pcap,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = fs::read_to_string(&errlog).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(cap);
            }
            let exited = cap
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() >= deadline {
                return Err(CaptureError::NotListening {
                    ns: ns.to_owned(),
                    iface: iface.to_owned(),
                    secs: 15,
                    stderr: text.trim().to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the captured frames.
    pub fn stop(mut self) -> Result<Vec<Vec<u8>>, CaptureError> {
        if let Some(mut c) = self.child.take() {
            procs::signal(c.id() as i32, Signal::SIGINT);
            if procs::wait_gone(&[c.id() as i32], Duration::from_secs(5)).is_empty() {
                let _ = c.wait();
            } else {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let bytes = fs::read(&self.pcap).map_err(|source| CaptureError::Read {
            path: self.pcap.clone(),
            source,
        })?;
        pcap::frames(&bytes).map_err(|source| CaptureError::Parse {
            path: self.pcap.clone(),
            source,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl super::Lab {
    /// Starts `tcpdump` on `iface` in `ns`; stop it to get the frames.
    pub fn tcpdump(&self, ns: &str, iface: &str, filter: &str) -> Result<Capture, super::LabError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Capture::start(
            ns,
            iface,
            filter,
            self.dir(),
            &format!("capture{n}"),
        )?)
    }
}
