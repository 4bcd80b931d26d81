//! The store on local disk: `state.json`, `events.jsonl` and `sla.json` under
//! `state_dir`.
//!
//! The state and the SLA book are replaced atomically (temporary file, fsync, rename,
//! fsync of the directory), so a crash leaves the old or the new content, never half
//! of it. Events are appended one JSON line each and fsynced per batch. A crash in the
//! middle of an append leaves a torn last line: reading skips it, and the next append
//! starts on a fresh line so that the torn bytes cannot swallow a new event.
//!
//! The event log is bounded: once `events.jsonl` has passed the limit (router.toml
//! `event_log_max_mib`), the next append first renames it to `events.jsonl.1`,
//! replacing the previous one, so at most two files' worth is kept and a flood of
//! events (refused connections, a flapping host) cannot fill the disk. Reading takes
//! the newest events from both.
//!
//! A state directory of an older router may still hold the marker file
//! [`LEGACY_ENERGY_MARKER`]; [`FileStore::open`] moves it into `state.json`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::info;

use super::{PersistedState, Store, StoreError, STATE_VERSION};
use crate::events::Event;
use crate::model::sla::SlaBook;

/// The marker file by which older routers recorded that the operator chose the energy
/// mode; now [`PersistedState::energy_chosen`].
pub const LEGACY_ENERGY_MARKER: &str = "energy-mode-chosen";

const STATE_FILE: &str = "state.json";
const EVENTS_FILE: &str = "events.jsonl";
const EVENTS_ROTATED: &str = "events.jsonl.1";
/// The default event-log limit (bytes) before rotation.
pub const DEFAULT_EVENT_LIMIT: u64 = 16 << 20;
const SLA_FILE: &str = "sla.json";

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

/// Files under a directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Size of `events.jsonl` past which it is rotated.
    event_limit: u64,
}

impl FileStore {
    /// Opens (creating) `dir` and brings a directory of an older router up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let store = Self {
            dir: dir.to_owned(),
            event_limit: DEFAULT_EVENT_LIMIT,
        };
        store.migrate_energy_marker()?;
        Ok(store)
    }

    /// The same store rotating its event log past `bytes` (at least 1).
    pub fn with_event_limit(mut self, bytes: u64) -> Self {
        self.event_limit = bytes.max(1);
        self
    }

    /// Renames a full `events.jsonl` to `events.jsonl.1` (replacing it) and makes the
    /// rename durable. A crash before the rename keeps the full file (rotated on the
    /// next append); after it, the appends go to a fresh file: nothing is lost either way.
    fn rotate_events(&self, path: &Path) -> Result<(), StoreError> {
        let rotated = self.path(EVENTS_ROTATED);
        fs::rename(path, &rotated).map_err(|source| StoreError::Write {
            path: rotated.clone(),
            source,
        })?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Write {
                path: self.dir.clone(),
                source,
            })?;
        info!(
            limit_bytes = self.event_limit,
            "event log rotated: {EVENTS_FILE} is now {EVENTS_ROTATED}"
        );
        Ok(())
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Moves the legacy marker into the state. The state is written first and the
    /// marker removed after, so a crash in between only repeats this on the next start.
    fn migrate_energy_marker(&self) -> Result<(), StoreError> {
        let marker = self.path(LEGACY_ENERGY_MARKER);
        match fs::symlink_metadata(&marker) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Read {
                    path: marker,
                    source,
                })
            }
        }
        let mut state = self.load()?;
        if !state.energy_chosen {
            // The marker only said "chosen"; what was chosen is the stored mode.
            state.energy_chosen = true;
            self.write_state(&state)?;
        }
        match fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Write {
                    path: marker,
                    source,
                })
            }
        }
        info!(
            energy_mode = state.energy_mode,
            "the operator's energy choice moved from {LEGACY_ENERGY_MARKER} into {STATE_FILE}"
        );
        Ok(())
    }

    fn write_state(&self, state: &PersistedState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| StoreError::Encode {
            what: "state",
            source,
        })?;
        write_atomic(&self.path(STATE_FILE), &bytes)
    }
}

/// Appends the events of the file at `path` (absent: none) to `out`, keeping only the
/// newest `limit`.
fn read_events_into(
    path: &Path,
    limit: usize,
    out: &mut VecDeque<Event>,
) -> Result<(), StoreError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        // A torn line from a crash mid-append is skipped, not fatal.
        if let Ok(ev) = serde_json::from_str::<Event>(&line) {
            if limit == 0 {
                continue;
            }
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back(ev);
        }
    }
    Ok(())
}

/// Whether the non-empty file `f` of length `len` ends with a newline.
fn ends_with_newline(f: &File, len: u64) -> std::io::Result<bool> {
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

impl Store for FileStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        let path = self.path(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(PersistedState::empty()),
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
        self.write_state(state)
    }

    fn append_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = self.path(EVENTS_FILE);
        let mut buf = Vec::with_capacity(events.len() * 160);
        for ev in events {
            serde_json::to_writer(&mut buf, ev).map_err(|source| StoreError::Encode {
                what: "event",
                source,
            })?;
            buf.push(b'\n');
        }
        let werr = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        match fs::metadata(&path) {
            Ok(m) if m.len() >= self.event_limit => self.rotate_events(&path)?,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => return Err(werr(source)),
        }
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(werr)?;
        let len = f.metadata().map_err(werr)?.len();
        if len > 0 && !ends_with_newline(&f, len).map_err(werr)? {
            // A torn line from a crash mid-append: start a fresh line, or the first
            // new event would be glued to the torn bytes and lost with them.
            buf.insert(0, b'\n');
        }
        if let Err(source) = f.write_all(&buf).and_then(|()| f.sync_data()) {
            // Leave no half batch behind (a full disk): the writer retries the whole
            // batch, which must then not follow a torn line or duplicate events.
            let _ = f.set_len(len);
            return Err(werr(source));
        }
        Ok(())
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut out = VecDeque::with_capacity(limit.min(4096));
        // Oldest first: the rotated file, then the current one.
        for file in [EVENTS_ROTATED, EVENTS_FILE] {
            read_events_into(&self.path(file), limit, &mut out)?;
        }
        Ok(out.into())
    }

    fn load_sla(&self) -> Result<SlaBook, StoreError> {
        let path = self.path(SLA_FILE);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(SlaBook::default()),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    fn save_sla(&mut self, book: &SlaBook) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(book).map_err(|source| StoreError::Encode {
            what: "SLA book",
            source,
        })?;
        write_atomic(&self.path(SLA_FILE), &bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::EventKind;
    use crate::model::sla::{Incident, VmSla};
    use crate::store::{Desired, VmRecord};
    use wisp_common::{HostId, VmId, VmSpec};

    /// A fresh directory per test, removed on drop (also when the test fails).
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d =
                std::env::temp_dir().join(format!("wisp-filestore-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            Self(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn ev(at_ms: u64) -> Event {
        Event::new(at_ms, EventKind::HostUp, None, None, "x")
    }

    fn at_ms(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.at_ms).collect()
    }

    fn one_vm_state() -> PersistedState {
        let mut st = PersistedState::empty();
        st.vms.insert(
            VmId::new("a").unwrap(),
            VmRecord {
                spec: VmSpec::new(VmId::new("a").unwrap(), 1, 64),
                desired: Desired::Running,
                host: Some(HostId::new("h1").unwrap()),
                epoch: 1,
                created_at_ms: 5,
                migrating: None,
            },
        );
        st.next_epoch = 2;
        st
    }

    #[test]
    fn state_round_trips_and_survives_reopen() {
        let dir = Dir::new("rt");
        let mut s = FileStore::open(&dir.0).unwrap();
        assert_eq!(s.load().unwrap(), PersistedState::empty());
        let st = one_vm_state();
        s.save(&st).unwrap();
        let again = FileStore::open(&dir.0).unwrap().load().unwrap();
        assert_eq!(again, st);
        assert!(!dir.0.join("state.json.tmp").exists());
        // Without an operator's choice the file stays readable by an older router.
        let text = fs::read_to_string(dir.0.join(STATE_FILE)).unwrap();
        assert!(!text.contains("energy_chosen"), "{text}");
    }

    #[test]
    fn a_crashed_or_failed_state_write_leaves_the_old_state() {
        let dir = Dir::new("crash");
        let mut s = FileStore::open(&dir.0).unwrap();
        let st = one_vm_state();
        s.save(&st).unwrap();
        // A crash after writing the temporary file, before the rename: it is ignored.
        fs::write(
            dir.0.join("state.json.tmp"),
            b"{\"version\":1,\"vms\":{\"hal",
        )
        .unwrap();
        assert_eq!(FileStore::open(&dir.0).unwrap().load().unwrap(), st);
        // A write that fails (here: the temporary file cannot be created) is an error
        // naming the file, and the old state is still there.
        fs::remove_file(dir.0.join("state.json.tmp")).unwrap();
        fs::create_dir(dir.0.join("state.json.tmp")).unwrap();
        let mut changed = st.clone();
        changed.next_epoch = 9;
        let e = wisp_common::error::chain(&s.save(&changed).unwrap_err());
        assert!(e.contains("state.json.tmp"), "{e}");
        assert_eq!(s.load().unwrap(), st);
    }

    #[test]
    fn the_event_log_is_rotated_and_bounded_and_reads_across_the_rotation() {
        let dir = Dir::new("rot");
        let limit = 600;
        let mut s = FileStore::open(&dir.0).unwrap().with_event_limit(limit);
        let one_line = serde_json::to_vec(&ev(1000)).unwrap().len() as u64 + 1;
        for i in 0..200u64 {
            s.append_events(&[ev(1000 + i)]).unwrap();
            let size = |f: &str| fs::metadata(dir.0.join(f)).map(|m| m.len()).unwrap_or(0);
            let total = size(EVENTS_FILE) + size(EVENTS_ROTATED);
            // Each file stops growing once past the limit: at most one line over it.
            assert!(
                total <= 2 * (limit + one_line),
                "{total} bytes of events after {i}"
            );
        }
        assert!(dir.0.join(EVENTS_ROTATED).exists(), "never rotated");
        // The newest events, in order, whichever file they are in.
        let want: Vec<u64> = (1190..1200).collect();
        assert_eq!(at_ms(&s.recent_events(10).unwrap()), want);
        // Everything kept is a contiguous run ending at the newest event.
        let all = at_ms(&s.recent_events(usize::MAX).unwrap());
        assert!(all.len() > 10, "{all:?}");
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        assert_eq!(all.last(), Some(&1199));
        // A router reopening the directory reads the same.
        let again = FileStore::open(&dir.0).unwrap();
        assert_eq!(at_ms(&again.recent_events(usize::MAX).unwrap()), all);
    }

    #[test]
    fn torn_event_line_is_skipped_and_the_next_append_survives() {
        let dir = Dir::new("ev");
        let mut s = FileStore::open(&dir.0).unwrap();
        s.append_events(&[ev(0), ev(1)]).unwrap();
        s.append_events(&[ev(2)]).unwrap();
        // A crash mid-append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.0.join(EVENTS_FILE))
            .unwrap();
        f.write_all(b"{\"at_ms\":9,\"ki").unwrap();
        drop(f);
        let mut s = FileStore::open(&dir.0).unwrap();
        assert_eq!(at_ms(&s.recent_events(2).unwrap()), vec![1, 2]);
        s.append_events(&[ev(3)]).unwrap();
        assert_eq!(at_ms(&s.recent_events(10).unwrap()), vec![0, 1, 2, 3]);
    }

    #[test]
    fn corrupt_files_are_named() {
        let dir = Dir::new("corrupt");
        let s = FileStore::open(&dir.0).unwrap();
        fs::write(dir.0.join(STATE_FILE), b"{not json").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("corrupt"), "{e}");
        fs::write(dir.0.join(SLA_FILE), b"[").unwrap();
        let e = s.load_sla().unwrap_err().to_string();
        assert!(e.contains("sla.json") && e.contains("corrupt"), "{e}");
    }

    #[test]
    fn sla_book_round_trips() {
        let dir = Dir::new("sla");
        let mut s = FileStore::open(&dir.0).unwrap();
        assert!(s.load_sla().unwrap().vms.is_empty());
        let mut book = SlaBook::default();
        book.vms.insert(
            VmId::new("a").unwrap(),
            VmSla {
                created_ms: 1,
                first_running_ms: Some(2),
                incidents: vec![Incident {
                    start_ms: 3,
                    end_ms: None,
                    cause: "host h1 down".into(),
                }],
                ..Default::default()
            },
        );
        s.save_sla(&book).unwrap();
        assert_eq!(FileStore::open(&dir.0).unwrap().load_sla().unwrap(), book);
        assert!(!dir.0.join("sla.json.tmp").exists());
    }

    /// The previous router wrote sla.json itself; the store reads it as it was.
    #[test]
    fn sla_json_of_the_previous_router_loads() {
        let dir = Dir::new("sla-legacy");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(
            dir.0.join(SLA_FILE),
            br#"{"vms":{"a":{"created_ms":1,"first_running_ms":2,"incidents":[{"start_ms":3,"end_ms":4,"cause":"host h1 down"}]}}}"#,
        )
        .unwrap();
        let book = FileStore::open(&dir.0).unwrap().load_sla().unwrap();
        let a = &book.vms[&VmId::new("a").unwrap()];
        assert_eq!(a.first_running_ms, Some(2));
        assert_eq!(a.incidents[0].end_ms, Some(4));
    }

    /// A state directory written by the previous router (marker file, sla.json and a
    /// state.json without `energy_chosen`) loads, and the marker moves into the state.
    #[test]
    fn legacy_state_dir_loads_and_the_marker_is_migrated() {
        let dir = Dir::new("legacy");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(
            dir.0.join(STATE_FILE),
            br#"{"version":1,"vms":{},"hosts":{"h1":{"maintenance":true,"standby":false}},"next_epoch":7,"energy_mode":false}"#,
        )
        .unwrap();
        fs::write(
            dir.0.join(LEGACY_ENERGY_MARKER),
            b"chosen by router energy on|off\n",
        )
        .unwrap();
        fs::write(
            dir.0.join(SLA_FILE),
            br#"{"vms":{"a":{"created_ms":1,"first_running_ms":2,"incidents":[{"start_ms":3,"end_ms":4,"cause":"host h1 down"}]}}}"#,
        )
        .unwrap();

        let s = FileStore::open(&dir.0).unwrap();
        assert!(!dir.0.join(LEGACY_ENERGY_MARKER).exists());
        let st = s.load().unwrap();
        assert!(st.energy_chosen, "the marker became part of the state");
        assert!(!st.energy_mode, "what was chosen is the stored mode");
        assert_eq!(st.next_epoch, 7);
        assert!(st.hosts[&HostId::new("h1").unwrap()].maintenance);
        let book = s.load_sla().unwrap();
        let a = &book.vms[&VmId::new("a").unwrap()];
        assert_eq!(a.first_running_ms, Some(2));
        assert_eq!(a.incidents[0].end_ms, Some(4));

        // Opening again changes nothing.
        let again = FileStore::open(&dir.0).unwrap();
        assert_eq!(again.load().unwrap(), st);

        // A marker without any state.json (chosen, then state lost): still chosen.
        let bare = Dir::new("legacy-bare");
        fs::create_dir_all(&bare.0).unwrap();
        fs::write(bare.0.join(LEGACY_ENERGY_MARKER), b"x").unwrap();
        assert!(
            FileStore::open(&bare.0)
                .unwrap()
                .load()
                .unwrap()
                .energy_chosen
        );
    }
}
