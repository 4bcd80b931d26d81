//! A small synchronous QMP client for tests: the independent witness of what QEMU is
//! doing (deliberately not the genie's code, so a genie bug cannot hide itself).
//!
//! QMP is line-delimited JSON: a greeting, `qmp_capabilities`, then commands whose
//! replies may be preceded by asynchronous events, which we skip.
//!
//! A QMP socket serves one client at a time and the genie holds its VM's socket for
//! good; a second client's `connect` then blocks in the kernel with no timeout. So the
//! lab gives every qemu a second, witness-only QMP socket (witness.rs), and `connect`
//! gives up after a deadline instead of hanging a test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket {path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket {path}: no connection within {secs} s (another client holds it?)")]
    Busy { path: PathBuf, secs: u64 },
    #[error("QMP socket {path}: closed by QEMU")]
    Closed { path: PathBuf },
    #[error("QMP socket {path}: bad reply {line:?}")]
    BadReply { path: PathBuf, line: String },
    #[error("QMP socket {path}: `{command}` failed: {error}")]
    Command {
        path: PathBuf,
        command: String,
        error: String,
    },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `UnixStream::connect` with a deadline: the connect runs on a helper thread; if it is
/// still blocked at the deadline the thread is left behind (it ends when QEMU accepts or
/// exits) and we report the socket as busy.
fn connect_with_timeout(path: &Path, timeout: Duration) -> Result<UnixStream, QmpError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(&p));
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r.map_err(|source| QmpError::Connect {
            path: path.to_owned(),
            source,
        }),
        Err(_) => Err(QmpError::Busy {
            path: path.to_owned(),
            secs: timeout.as_secs(),
        }),
    }
}

/// One QMP connection.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        let s = connect_with_timeout(path, CONNECT_TIMEOUT)?;
        let io = |source| QmpError::Io {
            path: path.to_owned(),
            source,
        };
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let writer = s.try_clone().map_err(io)?;
        let mut q = Self {
            path: path.to_owned(),
            reader: BufReader::new(s),
            writer,
        };
        let greeting = q.read_line()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::BadReply {
                path: q.path.clone(),
                line: greeting.to_string(),
            });
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_line(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Closed {
                path: self.path.clone(),
            });
        }
        serde_json::from_str(&line).map_err(|_| QmpError::BadReply {
            path: self.path.clone(),
            line,
        })
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let msg = json!({"execute": command, "arguments": arguments});
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| QmpError::BadReply {
            path: self.path.clone(),
            line: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let v = self.read_line()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    path: self.path.clone(),
                    command: command.to_owned(),
                    error: e.to_string(),
                });
            }
            return Err(QmpError::BadReply {
                path: self.path.clone(),
                line: v.to_string(),
            });
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `postmigrate`, ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", json!({}))?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::BadReply {
                path: self.path.clone(),
                line: r.to_string(),
            })
    }

    /// Reads a 32-bit word of guest physical memory (HMP `xp /1wx`).
    pub fn read_u32(&mut self, addr: u32) -> Result<u32, QmpError> {
        let r = self.execute(
            "human-monitor-command",
            json!({"command-line": format!("xp /1wx {addr:#x}")}),
        )?;
        // "0000000000200000: 0x0000abcd\r\n"
        let text = r.as_str().unwrap_or_default();
        text.rsplit(':')
            .next()
            .map(str::trim)
            .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| QmpError::BadReply {
                path: self.path.clone(),
                line: text.to_owned(),
            })
    }
}

/// One-shot `query-status` on `socket`.
pub fn query_status(socket: &Path) -> Result<String, QmpError> {
    Qmp::connect(socket)?.status()
}
