//! The interactive console (issue 11 item 4): `router vm console NAME` reaches the
//! Linux guest's shell on its serial port through the router and the genie of its
//! host, and Ctrl-] (0x1d) leaves with exit status 0.
//!
//! Witness: a command typed into the console whose output differs from its echo
//! (`$((40+2))` prints 42), read back on the CLI's stdout; a stopped VM ends an
//! attached session with its reason on the terminal. Needs root, qemu, ipmi_sim,
//! linux-image-amd64 and busybox-static, and `cargo build --workspace --bins` first;
//! fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wisp_tests::lab::linux::UP_MARKER;
use wisp_tests::lab::{bins, cmd, poll, Lab, LabSpec};

/// A Debian kernel under TCG on a loaded 2-core machine (see guest.rs).
const BOOT: Duration = Duration::from_secs(240);
/// The shell answers a line within this even on a starved machine.
const ANSWER: Duration = Duration::from_secs(90);

#[test]
fn a_typed_command_answers_ctrl_bracket_leaves_and_a_stopped_vm_ends_the_session() {
    let lab = Lab::start_vms(LabSpec::vms(1)).unwrap();
    lab.create_linux_vm("g1", "10.77.0.201/24", Some("h1"))
        .unwrap();
    // Booted: the init printed its line (the shell starts right after it).
    poll(BOOT, "the guest's boot line in its console log", |last| {
        let out = lab.router_cli(&["vm", "console", "g1", "--log"]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        *last = text.chars().rev().take(200).collect::<String>();
        text.contains(UP_MARKER).then_some(())
    })
    .unwrap();

    let router = bins::find(&bins::bin_dir(None).unwrap(), "router").unwrap();
    let mut child = cmd::in_ns(&lab.core_ns(), &router)
        .args(["--api", &lab.api_arg(), "vm", "console", "g1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (out, mut stdout) = (out.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut stdin = child.stdin.take().unwrap();
    // Typed again now and then: the first line may reach the shell before it reads.
    let mut sent_at = None::<std::time::Instant>;
    let answered = poll(
        ANSWER,
        "the guest's shell to answer on the console",
        |last| {
            if sent_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                stdin.write_all(b"echo wisp-$((40+2))-marker\n").ok()?;
                stdin.flush().ok()?;
                sent_at = Some(std::time::Instant::now());
            }
            let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
            *last = text.chars().rev().take(300).collect::<String>();
            text.contains("wisp-42-marker").then_some(())
        },
    );
    if let Err(e) = answered {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("{e}\nconsole stderr: {err}");
    }

    // Ctrl-] leaves, and says so with status 0.
    stdin.write_all(&[0x1d]).unwrap();
    stdin.flush().unwrap();
    let status = poll(ANSWER, "the console CLI to exit after Ctrl-]", |last| {
        let s = child.try_wait().ok()?;
        *last = format!("{s:?}");
        s
    })
    .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("Connected to g1 on h1; Ctrl-] leaves"),
        "{err}"
    );

    // Attached again, the VM stops under it: the session ends, says why on the
    // terminal, and the CLI exits with a failure.
    let mut child = cmd::in_ns(&lab.core_ns(), &router)
        .args(["--api", &lab.api_arg(), "vm", "console", "g1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _keep_stdin_open = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0u8; 16];
    // The greeting comes once the session is attached on the genie.
    stderr.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"Connected to g1 ");
    let o = lab.router_cli(&["vm", "stop", "g1", "--force"]).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = poll(
        ANSWER,
        "the console CLI to exit after the VM stopped",
        |last| {
            let s = child.try_wait().ok()?;
            *last = format!("{s:?}");
            s
        },
    )
    .unwrap();
    let mut said = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(!status.success(), "{status}");
    assert!(said.contains("[wisp: console of g1 closed: "), "{said}");

    // A VM that does not exist is a clear error before any console opens.
    let o = lab.router_cli(&["vm", "console", "nope"]).unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("no VM named nope"), "{e}");
    // The typed line and its answer went through the same serial line the log keeps.
    let o = lab.router_cli(&["vm", "console", "g1", "--log"]).unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("wisp-42-marker"));
}
