//! A VM's serial console, kept in a bounded log on the genie.
//!
//! QEMU serves the guest's first serial port on a unix socket (`<vm>.console`,
//! `server=on,wait=off`: the guest never waits for a reader). The genie reads it into
//! `<vm>.console.log`; when that file reaches [`ROTATE_BYTES`] it becomes
//! `<vm>.console.log.1` (replacing the previous one) and a new file starts, so a VM's
//! console never takes more than twice that on the host, whatever the guest prints.
//! While no genie reads (a genie restart), QEMU drops the output. The same reader serves
//! interactive sessions (`crate::console_session`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wisp_common::proto::MAX_CONSOLE_CHUNK;
use wisp_common::VmId;

use crate::console_session;

/// One console file's size limit; two are kept.
pub const ROTATE_BYTES: u64 = 256 * 1024;
/// How often a reader whose socket is not there (yet) tries again.
const RETRY: Duration = Duration::from_millis(500);

/// The rotated-out file beside `log`.
pub fn previous(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Appends `bytes` to `log`, rotating first when it would pass `limit`.
pub fn append(log: &Path, bytes: &[u8], limit: u64) -> std::io::Result<()> {
    let len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    if len > 0 && len + bytes.len() as u64 > limit {
        std::fs::rename(log, previous(log))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    f.write_all(bytes)
}

/// The last `max` bytes of the console (both files), lossily as text.
pub fn tail(log: &Path, max: usize) -> String {
    let mut all = std::fs::read(previous(log)).unwrap_or_default();
    all.extend(std::fs::read(log).unwrap_or_default());
    let start = all.len().saturating_sub(max);
    String::from_utf8_lossy(&all[start..]).into_owned()
}

/// Reads `socket` into `log` for as long as `alive()` says the qemu lives; reconnects
/// after the socket closes (QEMU serves one reader at a time and listens again). What
/// it reads also goes to `vm`'s attached console sessions, and their input goes into
/// the same socket (`crate::console_session`).
pub async fn keep_reading(vm: VmId, socket: PathBuf, log: PathBuf, alive: impl Fn() -> bool) {
    let hub = console_session::register(&vm);
    let mut buf = vec![0u8; MAX_CONSOLE_CHUNK];
    loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => {
                let (mut rd, wr) = s.into_split();
                let (tx, rx) = console_session::input_channel();
                let _writer = AbortOnDrop(tokio::spawn(write_input(wr, rx)));
                hub.set_input(Some(tx));
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            hub.publish(&buf[..n]);
                            if let Err(e) = append(&log, &buf[..n], ROTATE_BYTES) {
                                tracing::warn!(log = %log.display(), error = %e, "cannot write the console log");
                            }
                        }
                    }
                }
                hub.set_input(None);
            }
            Err(_) if !alive() => return,
            Err(_) => {}
        }
        if !alive() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Sessions' keystrokes into the serial port, in order.
async fn write_input(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) {
    while let Some(bytes) = rx.recv().await {
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// The input writer ends with its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("genie-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("vm1.console.log");
        for i in 0..100 {
            append(&log, format!("line {i:03}\n").as_bytes(), 100).unwrap();
        }
        let cur = std::fs::metadata(&log).unwrap().len();
        let prev = std::fs::metadata(previous(&log)).unwrap().len();
        assert!(cur <= 100 && prev <= 100, "{cur} {prev}");
        let t = tail(&log, 1 << 20);
        assert!(t.ends_with("line 099\n") && !t.contains("line 000"), "{t}");
        assert_eq!(tail(&log, 9), "line 099\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
