//! What a long command waits for, said while it waits: on a terminal one line that
//! counts the seconds in place; otherwise a plain line once the wait passes
//! `PLAIN_FIRST` and one every `PLAIN_EVERY`, so a log or a CI transcript shows a long
//! wait without a flood, and a quick command (or a quick failure, one `error:` line)
//! prints nothing more.
//! Everything goes to stderr: stdout stays the command's result (and `--json`).

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Before the first plain line when stderr is not a terminal.
const PLAIN_FIRST: Duration = Duration::from_secs(2);
/// Between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// The in-place counter's refresh on a terminal.
const TICK: Duration = Duration::from_millis(500);

/// Says `what` until dropped; then clears the in-place line.
#[derive(Debug)]
pub struct Waiting {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Waiting {
    /// Starts saying "`what` (N s)"; `quiet` (for `--json`) says nothing at all.
    pub fn start(what: String, quiet: bool) -> Self {
        if quiet {
            return Self {
                stop: None,
                thread: None,
            };
        }
        let tty = std::io::stderr().is_terminal();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut err = std::io::stderr();
            if !tty {
                match rx.recv_timeout(PLAIN_FIRST) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let _ = writeln!(err, "{what}");
                    }
                    _ => return,
                }
            }
            let mut last_plain = t0;
            loop {
                let tick = if tty { TICK } else { PLAIN_EVERY };
                match rx.recv_timeout(tick) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                let s = t0.elapsed().as_secs();
                if tty {
                    let _ = write!(err, "\r{what} ({s} s)\x1b[K");
                    let _ = err.flush();
                } else if last_plain.elapsed() >= PLAIN_EVERY {
                    last_plain = Instant::now();
                    let _ = writeln!(err, "  still waiting ({s} s)");
                }
            }
            if tty {
                let _ = write!(err, "\r\x1b[K");
                let _ = err.flush();
            }
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
