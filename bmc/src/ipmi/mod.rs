//! `IpmiBmc`: the real `Bmc`, an async handle to a per-BMC worker thread.
//!
//! The handle enforces each call's deadline with `tokio::time::timeout` on the
//! worker's oneshot reply. If the deadline passes or the worker thread died, the
//! worker is abandoned (its channel dropped; it exits after its current request) and
//! the next call starts a fresh worker with a fresh session. So a BMC that hangs, or
//! a panic inside ipmi-rs, costs one call its timeout and never stalls the router or
//! other BMCs (each BMC has its own thread).

pub mod chassis;
mod rmcp;
pub mod worker;

use std::net::SocketAddr;
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::bmc::{Bmc, BmcConfig, BmcError, BoxFuture, PowerAction, PowerState};
use worker::{Connector, Job, Op, Reply, Settings};

type ConnectorFactory = Box<dyn Fn() -> Box<dyn Connector> + Send + Sync>;

/// A BMC reached over IPMI 2.0 LAN (RMCP+, cipher suite 3).
pub struct IpmiBmc {
    addr: SocketAddr,
    settings: Settings,
    new_connector: ConnectorFactory,
    /// The current worker's channel and a generation number, so that a caller only
    /// abandons the worker it actually waited on. Locked only to clone or swap.
    worker: Mutex<Option<(mpsc::Sender<Job>, u64)>>,
}

impl std::fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiBmc")
            .field("addr", &self.addr)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IpmiBmc {
    /// Creates the handle; nothing is sent until the first call.
    pub fn new(config: BmcConfig) -> Self {
        let BmcConfig {
            addr,
            user,
            password,
            timeout,
            retries,
        } = config;
        Self::with_connector(
            addr,
            Settings { timeout, retries },
            Box::new(move || {
                Box::new(rmcp::RmcpConnector {
                    addr,
                    user: user.clone(),
                    password: password.clone(),
                })
            }),
        )
    }

    /// Same handle over any `Connector` (tests drive the worker with fakes).
    pub fn with_connector(
        addr: SocketAddr,
        settings: Settings,
        new_connector: ConnectorFactory,
    ) -> Self {
        Self {
            addr,
            settings,
            new_connector,
            worker: Mutex::new(None),
        }
    }

    fn sender(&self) -> Result<(mpsc::Sender<Job>, u64), BmcError> {
        let mut slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, generation)) = slot.as_ref() {
            return Ok((tx.clone(), *generation));
        }
        let tx = worker::spawn(self.addr, self.settings, (self.new_connector)()).map_err(|e| {
            BmcError::Worker {
                addr: self.addr,
                what: format!("cannot start worker thread: {e}"),
            }
        })?;
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Some((tx.clone(), generation));
        Ok((tx, generation))
    }

    fn abandon(&self, generation: u64) {
        let mut slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(slot.as_ref(), Some((_, g)) if *g == generation) {
            *slot = None;
        }
    }

    async fn call(&self, op: Op) -> Result<Reply, BmcError> {
        let timeout = self.settings.timeout;
        let (reply_tx, reply_rx) = oneshot::channel();
        let mut job = Job {
            op,
            deadline: Instant::now() + timeout,
            reply: reply_tx,
        };
        // A worker whose thread is gone refuses the job: start another, once.
        let mut generation = 0;
        for _ in 0..2 {
            let (tx, g) = self.sender()?;
            generation = g;
            match tx.send(job) {
                Ok(()) => break,
                Err(mpsc::SendError(j)) => {
                    self.abandon(g);
                    job = j;
                }
            }
        }
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => {
                self.abandon(generation);
                Err(BmcError::Worker {
                    addr: self.addr,
                    what: "worker thread ended without a reply".into(),
                })
            }
            Err(_) => {
                // Stuck inside ipmi-rs or queued behind a stuck request.
                self.abandon(generation);
                Err(BmcError::Timeout {
                    addr: self.addr,
                    after: timeout,
                })
            }
        }
    }
}

impl Bmc for IpmiBmc {
    fn power_status(&self) -> BoxFuture<'_, Result<PowerState, BmcError>> {
        Box::pin(async move {
            match self.call(Op::Status).await? {
                Reply::Status(s) => Ok(s),
                Reply::Done => Err(BmcError::Worker {
                    addr: self.addr,
                    what: "wrong reply kind".into(),
                }),
            }
        })
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BmcError>> {
        Box::pin(async move { self.call(Op::Power(action)).await.map(|_| ()) })
    }

    fn address(&self) -> SocketAddr {
        self.addr
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let live = self
                .worker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if live {
                let _ = self.call(Op::Close).await;
            }
            // Dropping the channel ends the thread.
            *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = None;
        })
    }
}
