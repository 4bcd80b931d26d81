//! The router's API on the lab, as issue 12's attacker tried it: user `nobody` can
//! neither read nor stop anything through the local socket; the TCP API wants a token
//! (none: refused; read: lists but cannot stop); writes are recorded with who made them.
//!
//! Needs `cargo build --workspace --bins` first, root, and the lab's tools; fails loudly
//! without them.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use wisp_tests::lab::cmd::in_ns;
use wisp_tests::lab::{cli_result, configs::API_ADDR, Lab, LabSpec};

fn token_file(lab: &Lab, name: &str, token: &str) -> PathBuf {
    let f = lab.dir().join(name);
    std::fs::write(&f, token).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// `router <args>` in the core namespace as `user` (root when None).
fn router_as(lab: &Lab, user: Option<&str>, args: &[&str]) -> (Option<i32>, String, String) {
    let bin = lab.router_bin().unwrap().to_owned();
    let mut c = match user {
        Some(u) => {
            let mut c = in_ns(&lab.core_ns(), "runuser");
            c.args(["-u", u, "--"]).arg(&bin);
            c
        }
        None => in_ns(&lab.core_ns(), &bin),
    };
    c.args(args);
    cli_result(&c.output().unwrap())
}

#[test]
fn nobody_is_locked_out_tokens_decide_over_tcp_and_writes_name_their_caller() {
    let lab = Lab::start(LabSpec {
        hosts: 1,
        wol_listener: false,
        ..LabSpec::default()
    })
    .unwrap();
    lab.wait_all_up().unwrap();
    let sock = lab.api_arg();

    // nobody, on the local socket: nothing at all.
    for args in [&["hosts"][..], &["vm", "stop", "vm1", "--force"][..]] {
        let mut a = vec!["--api", sock.as_str()];
        a.extend_from_slice(args);
        let (code, err, _) = router_as(&lab, Some("nobody"), &a);
        assert_eq!(code, Some(1), "nobody ran {args:?}: {err}");
        assert!(err.contains("Permission denied"), "{err}");
    }

    // TCP without a token, with the read token, with the admin token.
    let read = token_file(&lab, "read.tok", &lab.read_token());
    let admin = token_file(&lab, "admin.tok", &lab.admin_token());
    let (code, err, _) = router_as(&lab, None, &["--api", API_ADDR, "hosts"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("missing bearer token"), "{err}");
    let read_arg = read.to_str().unwrap();
    let (code, err, out) = router_as(
        &lab,
        None,
        &[
            "--api",
            API_ADDR,
            "--token-file",
            read_arg,
            "hosts",
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"h1\""), "{out}");
    let stop = ["vm", "stop", "nosuch", "--force"];
    let mut a = vec!["--api", API_ADDR, "--token-file", read_arg];
    a.extend_from_slice(&stop);
    let (code, err, _) = router_as(&lab, None, &a);
    assert_eq!(code, Some(1));
    assert!(err.contains("may only read"), "{err}");
    let mut a = vec!["--api", API_ADDR, "--token-file", admin.to_str().unwrap()];
    a.extend_from_slice(&stop);
    let (code, err, _) = router_as(&lab, None, &a);
    assert_eq!(code, Some(1));
    assert!(err.contains("nosuch") && !err.contains("token"), "{err}");

    // root on the socket, then the event log: both writes, each with its caller.
    lab.router_cli(&stop).unwrap();
    let evs = lab.events_json(200).unwrap();
    let writes: Vec<&str> = evs
        .iter()
        .filter(|e| e.kind == "api_request")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        writes
            .iter()
            .any(|m| m.contains("admin token from 127.0.0.1")),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|m| m.contains("uid 0") && m.contains("/v1/vms/nosuch")),
        "{writes:?}"
    );
    assert_eq!(writes.len(), 2, "only the two allowed writes: {writes:?}");
}
