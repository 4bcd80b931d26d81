//! What must survive a router restart, kept under `state_dir`.
//!
//! `state.json` holds the desired world (VM specs and desired run states, placements
//! with their fencing epochs, per-host flags); `events.jsonl` is the append-only event
//! history. Writes are crash-safe: the state goes to a temporary file that is fsynced and
//! renamed over the old one (then the directory is fsynced), so a crash leaves either
//! the old or the new state, never half of one. A torn last line of the event log (a
//! crash mid-append) is skipped on reading.
//!
//! A failed write (full disk, read-only fs) is returned to the caller, which keeps its
//! previous state: nothing is acknowledged that was not stored.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId, VmSpec};

use crate::events::Event;

/// Bumped when the on-disk shape changes incompatibly.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    #[serde(default)]
    pub vms: BTreeMap<VmId, VmRecord>,
    #[serde(default)]
    pub hosts: BTreeMap<HostId, HostRecord>,
    /// Fencing epochs are never reused: the next placement gets this one.
    #[serde(default)]
    pub next_epoch: u64,
    #[serde(default)]
    pub energy_mode: bool,
}

/// A VM the router manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub desired: Desired,
    /// Where it is placed (where it should run).
    pub host: Option<HostId>,
    /// Fencing token of the current placement.
    pub epoch: u64,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// Operator-set host flags that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    #[serde(default)]
    pub maintenance: bool,
    /// Put to sleep by the router (suspend or power-off): expected to be off.
    #[serde(default)]
    pub standby: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {reason} (move it away to start empty, or restore a backup)")]
    Corrupt { path: PathBuf, reason: String },
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content:
/// write a temporary file, fsync it, rename it over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let werr = |p: &Path| {
        let p = p.to_owned();
        move |source| StoreError::Write { path: p, source }
    };
    let mut f = File::create(&tmp).map_err(werr(&tmp))?;
    f.write_all(bytes).map_err(werr(&tmp))?;
    f.sync_all().map_err(werr(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(werr(path))?;
    // The rename is durable only once the directory entry is on disk.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(())
}

/// Persistence of the router's desired state and event history.
pub trait Store: Send {
    fn load(&self) -> Result<PersistedState, StoreError>;
    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError>;
    fn append_event(&mut self, event: &Event) -> Result<(), StoreError>;
    /// The newest `limit` events, oldest first.
    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;
}

/// Files under a directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }
}

impl Store for FileStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        let path = self.state_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PersistedState {
                    version: STATE_VERSION,
                    next_epoch: 1,
                    ..Default::default()
                })
            }
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if state.version != STATE_VERSION {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "state version {} but this router reads version {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        write_atomic(&self.state_path(), &bytes)
    }

    fn append_event(&mut self, event: &Event) -> Result<(), StoreError> {
        let path = self.events_path();
        let mut line = serde_json::to_vec(event).expect("event serialises");
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|source| StoreError::Write { path, source })
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let path = self.events_path();
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let mut out = std::collections::VecDeque::with_capacity(limit.min(4096));
        for line in BufReader::new(f).lines() {
            let line = line.map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
            // A torn line from a crash mid-append is skipped, not fatal.
            if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(ev);
            }
        }
        Ok(out.into())
    }
}

/// In-memory store for unit tests, with an injectable write failure.
#[derive(Debug, Default)]
pub struct MemStore {
    pub state: Option<PersistedState>,
    pub events: Vec<Event>,
    pub fail_writes: bool,
    pub saves: usize,
}

impl Store for MemStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        Ok(self.state.clone().unwrap_or(PersistedState {
            version: STATE_VERSION,
            next_epoch: 1,
            ..Default::default()
        }))
    }

    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Write {
                path: "mem".into(),
                source: std::io::Error::other("injected: no space left on device"),
            });
        }
        self.saves += 1;
        self.state = Some(state.clone());
        Ok(())
    }

    fn append_event(&mut self, event: &Event) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Write {
                path: "mem".into(),
                source: std::io::Error::other("injected: no space left on device"),
            });
        }
        self.events.push(event.clone());
        Ok(())
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let start = self.events.len().saturating_sub(limit);
        Ok(self.events[start..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wisp-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn state_round_trips_and_survives_reopen() {
        let dir = tmpdir("rt");
        let mut s = FileStore::open(&dir).unwrap();
        let mut st = s.load().unwrap();
        assert_eq!(st.next_epoch, 1);
        st.vms.insert(
            VmId::new("a").unwrap(),
            VmRecord {
                spec: VmSpec {
                    name: VmId::new("a").unwrap(),
                    vcpus: 1,
                    mem_mib: 64,
                    disk: None,
                    kernel: None,
                    priority: 0,
                },
                desired: Desired::Running,
                host: Some(HostId::new("h1").unwrap()),
                epoch: 1,
                created_at_ms: 5,
            },
        );
        st.next_epoch = 2;
        s.save(&st).unwrap();
        let again = FileStore::open(&dir).unwrap().load().unwrap();
        assert_eq!(again, st);
        assert!(!dir.join("state.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_event_line_is_skipped_and_corrupt_state_is_named() {
        let dir = tmpdir("ev");
        let mut s = FileStore::open(&dir).unwrap();
        for i in 0..3 {
            s.append_event(&Event::new(
                i,
                crate::events::EventKind::HostUp,
                None,
                None,
                "x",
            ))
            .unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("events.jsonl"))
            .unwrap();
        f.write_all(b"{\"at_ms\":9,\"ki").unwrap();
        let evs = s.recent_events(2).unwrap();
        assert_eq!(evs.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![1, 2]);

        fs::write(dir.join("state.json"), b"{not json").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("corrupt"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
