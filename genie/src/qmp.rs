//! A small, tolerant QMP client: line-delimited JSON over a unix socket.
//!
//! Tolerant on purpose: unknown events are skipped (only counted), unknown fields are
//! ignored, and results are handed back as JSON values for the caller to pick from, so
//! a newer QEMU never breaks the connection (the `qapi` crate drops the connection on
//! an unknown event name; see ARCHITECTURE.md, QEMU).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one command may take before we call the socket dead. QMP commands we use
/// return at once (migration runs in the background), so 10 s means a hung qemu.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error on QMP socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket {path} closed by qemu")]
    Closed { path: PathBuf },
    #[error("QMP socket {path}: no answer to {command} within {timeout_ms} ms")]
    Timeout {
        path: PathBuf,
        command: String,
        timeout_ms: u64,
    },
    #[error("QMP socket {path}: unexpected message: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("QMP socket {path}: {command} failed: {class}: {desc}")]
    Command {
        path: PathBuf,
        command: String,
        class: String,
        desc: String,
    },
}

/// An asynchronous event from qemu (`STOP`, `RESUME`, `SHUTDOWN`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// One QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    path: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    next_id: u64,
    /// Events read while waiting for a command's answer, not yet taken.
    pending_events: Vec<QmpEvent>,
}

enum Msg {
    Reply {
        id: Option<u64>,
        result: Result<Value, (String, String)>,
    },
    Event(QmpEvent),
    Other,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode (`qmp_capabilities`).
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let fut = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| QmpError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
            let (r, w) = stream.into_split();
            let mut q = Self {
                path: path.to_owned(),
                lines: BufReader::new(r).lines(),
                writer: w,
                next_id: 1,
                pending_events: Vec::new(),
            };
            let greeting = q.read_value().await?;
            if greeting.get("QMP").is_none() {
                return Err(QmpError::Protocol {
                    path: path.to_owned(),
                    reason: format!("expected the QMP greeting, got {greeting}"),
                });
            }
            q.execute("qmp_capabilities", None).await?;
            Ok(q)
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(QmpError::Timeout {
                path: path.to_owned(),
                command: "greeting".into(),
                timeout_ms: COMMAND_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `command` with optional `arguments` and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        let path = self.path.clone();
        let fut = async {
            self.writer
                .write_all(line.as_bytes())
                .await
                .map_err(|source| QmpError::Io {
                    path: path.clone(),
                    source,
                })?;
            loop {
                match self.read_msg().await? {
                    Msg::Reply {
                        id: Some(got),
                        result,
                    } if got == id => {
                        return result.map_err(|(class, desc)| QmpError::Command {
                            path: path.clone(),
                            command: command.to_owned(),
                            class,
                            desc,
                        });
                    }
                    // A reply without our id (e.g. to a command of an earlier, abandoned
                    // connection user) or the greeting: not ours, keep reading.
                    Msg::Reply { .. } | Msg::Other => {}
                    Msg::Event(e) => {
                        // Bounded: a flood of events while we wait must not grow memory.
                        if self.pending_events.len() < 64 {
                            self.pending_events.push(e);
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(QmpError::Timeout {
                path: self.path.clone(),
                command: command.to_owned(),
                timeout_ms: COMMAND_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// Waits for the next event. Cancel-safe (a line is either fully read or not at all),
    /// so it can sit in a `select!` next to a request channel.
    pub async fn next_event(&mut self) -> Result<QmpEvent, QmpError> {
        if !self.pending_events.is_empty() {
            return Ok(self.pending_events.remove(0));
        }
        loop {
            if let Msg::Event(e) = self.read_msg().await? {
                return Ok(e);
            }
        }
    }

    /// Events that arrived while a command was running.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.pending_events)
    }

    async fn read_value(&mut self) -> Result<Value, QmpError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|source| QmpError::Io {
                    path: self.path.clone(),
                    source,
                })?
                .ok_or_else(|| QmpError::Closed {
                    path: self.path.clone(),
                })?;
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line).map_err(|e| QmpError::Protocol {
                path: self.path.clone(),
                reason: format!("not JSON ({e}): {line}"),
            });
        }
    }

    async fn read_msg(&mut self) -> Result<Msg, QmpError> {
        let mut v = self.read_value().await?;
        let id = v.get("id").and_then(Value::as_u64);
        if let Some(r) = v.get_mut("return") {
            return Ok(Msg::Reply {
                id,
                result: Ok(r.take()),
            });
        }
        if let Some(e) = v.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            return Ok(Msg::Reply {
                id,
                result: Err((s("class"), s("desc"))),
            });
        }
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            return Ok(Msg::Event(QmpEvent {
                name: name.to_owned(),
                data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            }));
        }
        Ok(Msg::Other)
    }
}

/// `query-status` → run state, tolerant of unknown status strings.
pub async fn query_status(q: &mut Qmp) -> Result<wisp_common::VmRunState, QmpError> {
    let v = q.execute("query-status", None).await?;
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| QmpError::Protocol {
            path: q.path().to_owned(),
            reason: format!("query-status without status: {v}"),
        })?;
    Ok(wisp_common::VmRunState::from_qmp(status))
}

/// Number of vCPUs (`query-cpus-fast`) and base memory in MiB (`query-memory-size-summary`).
pub async fn query_size(q: &mut Qmp) -> Result<(u32, u64), QmpError> {
    let cpus = q.execute("query-cpus-fast", None).await?;
    let vcpus = cpus.as_array().map(|a| a.len() as u32).unwrap_or(0);
    let mem = q.execute("query-memory-size-summary", None).await?;
    let bytes = mem.get("base-memory").and_then(Value::as_u64).unwrap_or(0);
    Ok((vcpus, bytes / (1024 * 1024)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    /// A scripted QMP server: sends the greeting, then answers each command line with
    /// an unknown event followed by the canned reply for that command.
    async fn fake_qemu(listener: UnixListener) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        while let Some(l) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&l).unwrap();
            let id = v["id"].clone();
            let reply = match v["execute"].as_str().unwrap() {
                "query-status" => {
                    json!({"return": {"status": "colo-future", "running": true}, "id": id})
                }
                "bogus" => {
                    json!({"error": {"class": "CommandNotFound", "desc": "no bogus"}, "id": id})
                }
                _ => json!({"return": {}, "id": id}),
            };
            w.write_all(b"{\"event\": \"SOMETHING_NEW\", \"data\": {\"x\": 1}}\n")
                .await
                .unwrap();
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
        let _ = lines.into_inner().read_u8().await;
    }

    #[tokio::test]
    async fn tolerates_unknown_events_and_statuses_and_reports_errors() {
        let dir = std::env::temp_dir().join(format!("genie-qmp-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("x.qmp");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(fake_qemu(l));
        let mut q = Qmp::connect(&sock).await.unwrap();
        let st = query_status(&mut q).await.unwrap();
        assert_eq!(st, wisp_common::VmRunState::Other("colo-future".into()));
        let e = q.execute("bogus", None).await.unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("CommandNotFound"), "{e}");
        assert!(e.contains("x.qmp"), "{e}");
        let evs = q.take_events();
        assert!(evs.iter().any(|e| e.name == "SOMETHING_NEW"), "{evs:?}");
        drop(q);
        server.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
