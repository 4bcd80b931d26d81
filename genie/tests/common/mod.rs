//! Shared helpers of the genie integration tests: temp dirs that kill their qemus,
//! polling, and the router's side of the handshake.
#![allow(dead_code, clippy::unwrap_used)]

pub mod sealed;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wisp_common::{VmId, VmSpec};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A temp dir unique per test run; on drop, SIGKILLs every qemu whose pid file is in
/// it (checked to be that VM's qemu) and removes it, even when the test failed.
#[derive(Debug)]
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("genie-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".pid") {
                    if let (Ok(vm), Some(pid)) = (VmId::new(stem), genie::qemu::read_pid(&e.path()))
                    {
                        genie::qemu::kill(pid, &vm);
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails loudly when qemu is missing: these tests must never skip silently.
pub fn require_qemu() {
    let ok = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "qemu-system-x86_64 is required for this test (apt-get install qemu-system-x86)"
    );
}

pub fn spec(name: &str) -> VmSpec {
    VmSpec::new(VmId::new(name).unwrap(), 1, 64)
}

/// Polls `f` every 50 ms until true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let check = || std::future::ready(f().then_some(()));
    wisp_common::wait::until(
        deadline,
        Duration::from_millis(50),
        "a test condition",
        check,
    )
    .await
    .is_ok()
}

/// The router's side of the handshake: the real `accept` (which checks the protocol
/// version, that the genie is `host`, and its proof), then `answer` (a Welcome, or a
/// Refused the test wants the genie to see). Returns the genie's Hello instance, or
/// None when the genie hung up instead of sending Auth (it did not trust our proof).
pub async fn router_handshake(
    s: &mut tokio::net::TcpStream,
    secret: &[u8],
    host: &wisp_common::HostId,
    answer: wisp_common::proto::RouterMsg,
) -> Option<u64> {
    use wisp_common::proto::handshake::{accept, AcceptError};
    use wisp_common::proto::MAX_FRAME_BYTES;
    let secret = wisp_common::secret::Secret::from_bytes(secret.to_vec());
    let peer = s.peer_addr().unwrap();
    let greeted = match accept(s, peer, &secret, |h| h == host).await {
        Ok(g) => g,
        Err(AcceptError::ClosedAfterChallenge { .. }) => return None,
        Err(e) => panic!("handshake with the genie failed: {e}"),
    };
    assert!(!greeted.genie_version.is_empty());
    // A Welcome is sealed (the first frame of the session); a refusal is not, as the
    // router's own refusals are sent before it has keys.
    let refusal = matches!(answer, wisp_common::proto::RouterMsg::Refused { .. });
    if !refusal {
        sealed::register(s, greeted.keys);
    }
    sealed::write_frame(s, &answer, MAX_FRAME_BYTES)
        .await
        .unwrap();
    Some(greeted.instance)
}
