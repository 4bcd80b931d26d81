//! A loopback port in this namespace that forwards each connection to an address
//! inside another network namespace (the lab's router API listens on 127.0.0.1 of the
//! core namespace). One thread enters the namespace once and opens every outgoing
//! socket there; a socket keeps the namespace it was created in, so the copying
//! threads can run anywhere.

use std::fs::File;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot listen on 127.0.0.1 for the forward")]
    Listen(#[source] io::Error),
    #[error("cannot open network namespace {ns} (/run/netns/{ns})")]
    Namespace {
        ns: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter network namespace {ns}")]
    Enter {
        ns: String,
        #[source]
        source: nix::Error,
    },
}

type Connect = (SocketAddr, mpsc::Sender<io::Result<TcpStream>>);

/// Forwards `127.0.0.1:<port>` here to `target` in namespace `ns` until dropped.
#[derive(Debug)]
pub struct Forward {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub fn start(ns: &str, target: SocketAddr, port: u16) -> Result<Self, ForwardError> {
        let nsfile =
            File::open(format!("/run/netns/{ns}")).map_err(|source| ForwardError::Namespace {
                ns: ns.to_owned(),
                source,
            })?;
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(ForwardError::Listen)?;
        let local = listener.local_addr().map_err(ForwardError::Listen)?;
        // The connector: the only thread that changes namespace, and it never leaves.
        let (ctx, crx) = mpsc::channel::<Connect>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ns_name = ns.to_owned();
        thread::spawn(move || {
            if let Err(source) = setns(&nsfile, CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(ForwardError::Enter {
                    ns: ns_name,
                    source,
                }));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            for (addr, reply) in crx {
                let _ = reply.send(TcpStream::connect(addr));
            }
        });
        ready_rx
            .recv()
            .unwrap_or(Err(ForwardError::Listen(io::Error::other(
                "the namespace thread ended",
            ))))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (tx, rx) = mpsc::channel();
                if ctx.send((target, tx)).is_err() {
                    return;
                }
                match rx.recv() {
                    Ok(Ok(upstream)) => pipe(client, upstream),
                    // The router is not listening (yet, or any more): the client sees
                    // its connection closed, as it would without the forward.
                    _ => drop(client),
                }
            }
        });
        Ok(Self { local, stop })
    }

    /// The address to open, e.g. in the browser.
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.local);
    }
}

/// Copies both ways until each side has closed its half.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    thread::spawn(move || copy_half(a, b2));
    thread::spawn(move || copy_half(b, a2));
}

fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
