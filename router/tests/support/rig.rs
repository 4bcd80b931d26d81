//! The router test rig, written once: a private temp dir with a 0600 cluster secret, a
//! router.toml whose hosts `h1..hN` all live on loopback, and the real daemon
//! (`daemon::run_on`) with its link and TCP API on port 0 and its API socket in the
//! dir, so tests run in parallel. The TCP API has an admin and a read token
//! ([`ADMIN_TOKEN`], [`READ_TOKEN`]); `api` is the socket, which needs none.
//!
//! ```ignore
//! let r = TestRouter::builder().tag("up").secret(SECRET).start().await;
//! let rig = TestRouter::builder().hosts(2).energy("[energy]\nenabled = true\n");
//! let dir = rig.dir(); // keep it to restart a router on the same state
//! let r = rig.start_in(&dir).await;
//! ```
//!
//! Tests that assemble the router's parts themselves (cluster task, link, fakes) take
//! only the dir and its config: `builder().dir().config()`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use router::config::RouterConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The rig's TCP API tokens (in 0600 files of the dir).
pub const ADMIN_TOKEN: &[u8] = b"rig-admin-token-0123456789";
pub const READ_TOKEN: &[u8] = b"rig-read-token-0123456789";

/// What to build; see the module doc.
#[derive(Debug, Clone)]
pub struct TestRouterBuilder {
    tag: String,
    hosts: usize,
    energy: String,
    secret: Vec<u8>,
    admin_token: bool,
}

/// The rig's temp dir (secret, router.toml's text, the router's state): removed on
/// drop, also when a test fails.
#[derive(Debug)]
pub struct RigDir {
    path: PathBuf,
    text: String,
}

impl RigDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The router.toml's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The router.toml of the rig, parsed as the daemon parses it.
    pub fn config(&self) -> RouterConfig {
        RouterConfig::parse(&self.path.join("router.toml"), &self.text).unwrap()
    }
}

impl Drop for RigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running router daemon; stopped on drop (or with [`TestRouter::stop`], which
/// waits until it has finished).
#[derive(Debug)]
pub struct TestRouter {
    /// The genie link (where a played genie connects).
    pub link: SocketAddr,
    /// The local API, `unix:<socket>` (what `router::cli::Client` takes).
    pub api: String,
    /// The TCP API, `host:port`: needs a token ([`ADMIN_TOKEN`], [`READ_TOKEN`]).
    pub tcp_api: String,
    stop: watch::Sender<bool>,
    join: Option<JoinHandle<()>>,
    /// The dir when the router owns it (`start`), not when a test keeps it.
    _dir: Option<RigDir>,
}

impl TestRouter {
    /// Two hosts, no `[energy]` table, a test secret.
    pub fn builder() -> TestRouterBuilder {
        TestRouterBuilder {
            tag: "rt".into(),
            hosts: 2,
            energy: String::new(),
            secret: b"test-cluster-secret".to_vec(),
            admin_token: true,
        }
    }

    /// Stops the daemon and waits until its task has ended.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(j) = self.join.take() {
            j.await.unwrap();
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TestRouterBuilder {
    /// A word in the temp dir's name, to find a failed test's files.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_owned();
        self
    }

    /// Hosts `h1..h<n>`, MAC `02:00:00:00:00:0<i>`, address 127.0.0.1.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// TOML put between the top-level keys and the hosts (an `[energy]` table).
    pub fn energy(mut self, toml: &str) -> Self {
        self.energy = toml.to_owned();
        self
    }

    /// The cluster secret (what played genies must prove).
    pub fn secret(mut self, secret: &[u8]) -> Self {
        self.secret = secret.to_vec();
        self
    }

    /// No admin `[[api_token]]` (the read one only).
    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = false;
        self
    }

    /// Creates a fresh temp dir with the 0600 secret file, and the router.toml text.
    pub fn dir(&self) -> RigDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("wisp-rt-{}-{}-{n}", self.tag, std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let secret = path.join("secret");
        std::fs::File::create(&secret)
            .unwrap()
            .write_all(&self.secret)
            .unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut tokens = String::new();
        for (role, token) in [("admin", ADMIN_TOKEN), ("read", READ_TOKEN)] {
            if role == "admin" && !self.admin_token {
                continue;
            }
            let f = path.join(format!("{role}.token"));
            std::fs::write(&f, token).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
            tokens += &format!(
                "[[api_token]]\nrole = \"{role}\"\nfile = \"{}\"\n",
                f.display()
            );
        }
        // The link address is never bound: `run_on` gets listeners on port 0.
        let mut text = format!(
            "listen = \"127.0.0.1:1\"\napi_socket = \"{}\"\nstate_dir = \"{}\"\nsecret_file = \"{}\"\n{}\n{tokens}",
            path.join("router.sock").display(),
            path.join("state").display(),
            secret.display(),
            self.energy
        );
        for i in 1..=self.hosts {
            text += &format!(
                "[[host]]\nname = \"h{i}\"\nmac = \"02:00:00:00:00:{i:02x}\"\naddress = \"127.0.0.1\"\n"
            );
        }
        RigDir { path, text }
    }

    /// Starts a router in a fresh dir, which it owns.
    pub async fn start(&self) -> TestRouter {
        let dir = self.dir();
        let mut r = self.start_in(&dir).await;
        r._dir = Some(dir);
        r
    }

    /// Starts a router on `dir` (kept by the test, e.g. to restart on the same state).
    pub async fn start_in(&self, dir: &RigDir) -> TestRouter {
        let config = dir.config();
        let socket = config.api_socket.clone();
        let link = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (link_addr, api_addr) = (link.local_addr().unwrap(), api.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let join =
            tokio::spawn(
                async move { router::daemon::run_on(config, link, api, rx).await.unwrap() },
            );
        // The socket is bound once the daemon has opened its store (a replicated
        // router's follower binds one too).
        {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                assert!(
                    !join.is_finished(),
                    "the router ended before binding {}",
                    socket.display()
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "no API socket at {}",
                    socket.display()
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        TestRouter {
            link: link_addr,
            api: format!("unix:{}", socket.display()),
            tcp_api: api_addr.to_string(),
            stop,
            join: Some(join),
            _dir: None,
        }
    }
}
