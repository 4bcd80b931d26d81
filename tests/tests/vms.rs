//! End-to-end tests of VMs and live migration on the lab (issue 4): VMs created with
//! `router vm create`, moved with `router vm migrate`, through real genies and qemu.
//!
//! Witnesses are independent of the code under test: the qemu processes themselves
//! (found in each host's namespace by `-name`), QEMU's own QMP answers over the witness
//! socket the lab's qemu wrapper adds (`Lab::start_with_witness`, read with the lab's
//! QMP client: run state and the guest's counter, see `lab::witness`), and `router vms
//! --json` for what the router believes. A live migration is told apart from a restart
//! by the counter (a restarted guest counts from 0) and by the destination qemu's
//! `-incoming`.
//!
//! Needs `cargo build --workspace --bins` first, root, ip, ipmi_sim, ipmitool and qemu;
//! fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wisp_tests::lab::configs::LAB_MIGRATION_PORTS;
use wisp_tests::lab::witness::qemu_cmdline;
use wisp_tests::lab::{cli_result, poll, query_status, Lab, LabSpec, VmRow, WAIT};

/// The VM lab preset: `hosts` hosts with the witness wrapper, every host up with
/// metrics (placement needs a host's capacity).
fn lab(hosts: usize, router_extra_toml: &str) -> Lab {
    Lab::start_vms(LabSpec::vms(hosts).router_toml(router_extra_toml)).unwrap()
}

fn rows_of(lab: &Lab, vm: &str) -> Vec<VmRow> {
    lab.vms_json()
        .unwrap()
        .into_iter()
        .filter(|r| r.name == vm)
        .collect()
}

/// Waits until `router vms` shows `vm` exactly once: running on `host` with `pid`.
fn wait_row(lab: &Lab, vm: &str, host: &str, pid: i32) -> VmRow {
    poll(
        WAIT,
        &format!("`router vms` to show {vm} only on {host}, running, pid {pid}"),
        |last| {
            let rows = rows_of(lab, vm);
            *last = format!("{rows:?}");
            match &rows[..] {
                [r] if r.host.as_deref() == Some(host)
                    && r.state == "running"
                    && r.pid == Some(pid as u32)
                    && r.desired.as_deref() == Some("running") =>
                {
                    Some(r.clone())
                }
                _ => None,
            }
        },
    )
    .unwrap()
}

/// QEMU's own word, over the witness QMP socket of `vm` on host `i`: it runs there,
/// and no other host has a qemu of it that says so.
fn assert_qmp_running_only_on(lab: &Lab, i: usize, vm: &str) {
    let st = query_status(&lab.witness_qmp(i, vm).unwrap()).unwrap();
    assert_eq!(st, "running", "QMP status of {vm} on h{i}");
    let census = lab.census().unwrap();
    assert_eq!(
        census.running_on(vm),
        vec![format!("h{i}")],
        "QMP census of every qemu: {census:?}"
    );
}

/// Reads the counter, then waits until it moves: the guest runs.
fn assert_counting(lab: &Lab, host: usize, vm: &str) -> u32 {
    let c = lab.guest_counter(host, vm).unwrap();
    poll(
        WAIT,
        &format!("the counter of {vm} on h{host} to move from {c}"),
        |last| {
            let now = lab.guest_counter(host, vm).unwrap();
            *last = now.to_string();
            (now != c).then_some(now)
        },
    )
    .unwrap()
}

/// Checks `check` over and over for `d`: a bounded observation that something does
/// NOT happen (no restart, no resurrection), not a sleep before a single assert.
fn holds_for(d: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A failed CLI call: exit status 1 and one line `error: ...` containing every needle.
fn assert_cli_error(lab: &Lab, args: &[&str], needles: &[&str]) -> String {
    let out = lab.router_cli(args).unwrap();
    let (code, stderr, stdout) = cli_result(&out);
    eprintln!("router {}: {stderr}", args.join(" "));
    assert_eq!(
        code,
        Some(1),
        "`router {}` should fail: stdout {stdout:?} stderr {stderr:?}",
        args.join(" ")
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    for n in needles {
        assert!(
            stderr.contains(n),
            "`router {}`: {stderr:?} should name {n:?}",
            args.join(" ")
        );
    }
    stderr
}

/// (name, host, pid, desired) of one `router vms` row.
type RowKey = (String, Option<String>, Option<u32>, Option<String>);

/// Every row's key: what "nothing changed" compares.
fn snapshot(lab: &Lab) -> Vec<RowKey> {
    let mut v: Vec<_> = lab
        .vms_json()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.host, r.pid, r.desired))
        .collect();
    v.sort();
    v
}

#[test]
fn live_migration_moves_the_running_guest_to_the_destination() {
    let lab = lab(2, "");
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("vm1", 64, &guest, Some("h1")).unwrap();
    let src = lab.qemu_pid(1, "vm1").unwrap();
    wait_row(&lab, "vm1", "h1", src);
    // Let it count for a while, so a restart (from 0) could not catch up with it.
    let c0 = assert_counting(&lab, 1, "vm1");
    let before = lab
        .wait_counter_above(1, "vm1", c0.saturating_mul(4))
        .unwrap();

    let rep = lab.vm_migrate("vm1", "h2").unwrap();
    eprintln!("migration h1 -> h2: {rep:?}");
    assert_eq!(
        (rep.vm.as_str(), rep.from.as_str(), rep.to.as_str()),
        ("vm1", "h1", "h2")
    );
    assert!(rep.total_ms > 0, "{rep:?}");
    assert!(rep.downtime_ms <= rep.total_ms, "{rep:?}");
    assert!(rep.to_migrate_command_ms <= rep.elapsed_ms, "{rep:?}");

    // The source qemu is gone; the destination qemu is the migrated one.
    lab.wait_no_qemu(1, "vm1").unwrap();
    let dst = lab.qemu_pid(2, "vm1").unwrap();
    assert!(
        qemu_cmdline(dst).iter().any(|a| a == "-incoming"),
        "the qemu on h2 was not started for an incoming migration: {:?}",
        qemu_cmdline(dst)
    );
    let after = lab.guest_counter(2, "vm1").unwrap();
    assert!(
        after >= before,
        "counter went back from {before} to {after}: the guest restarted"
    );
    lab.wait_counter_above(2, "vm1", after).unwrap();
    wait_row(&lab, "vm1", "h2", dst);
    assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), Vec::<i32>::new());
    // QEMU agrees, over QMP: running on h2 only, and the counter it shows (read by
    // the lab's own QMP client) continues from the source's.
    assert_qmp_running_only_on(&lab, 2, "vm1");
    let later = lab.guest_counter(2, "vm1").unwrap();
    assert!(
        later >= after,
        "QMP counter went back from {after} to {later}"
    );

    // And back: the placement really moved (a second migration starts from h2).
    let back = lab.vm_migrate("vm1", "h1").unwrap();
    assert_eq!((back.from.as_str(), back.to.as_str()), ("h2", "h1"));
    lab.wait_no_qemu(2, "vm1").unwrap();
    let home = lab.qemu_pid(1, "vm1").unwrap();
    let last = lab.guest_counter(1, "vm1").unwrap();
    assert!(last >= after, "counter went back from {after} to {last}");
    wait_row(&lab, "vm1", "h1", home);
    assert_qmp_running_only_on(&lab, 1, "vm1");
}

/// 8 MiB/s and 128 MiB of non-zero guest memory: a copy takes ~16 s, plenty of time
/// to interrupt it in the middle.
fn slow_migration_lab() -> Lab {
    lab(2, "[migration]\nmax_bandwidth_mib_s = 8\n")
}

/// Creates vm1 on h1 with 128 MiB of filled memory, waits until the router shows it
/// and its counter moves (the counter starts once the fill is done: from then on
/// memory is non-zero). Returns its qemu's pid.
fn filled_vm1_on_h1(lab: &Lab) -> i32 {
    let guest = lab.filled_guest(128).unwrap();
    lab.vm_create("vm1", 160, &guest, Some("h1")).unwrap();
    let src = lab.qemu_pid(1, "vm1").unwrap();
    wait_row(lab, "vm1", "h1", src);
    lab.wait_counter_above(1, "vm1", 0).unwrap();
    src
}

/// Starts `router vm migrate vm1 --to h2` and waits until the migration is moving
/// bytes (progress reported by the source genie) with the destination qemu up.
fn start_slow_migration(lab: &Lab) -> (Child, i32) {
    let child = lab
        .spawn_router_cli(&["vm", "migrate", "vm1", "--to", "h2", "--json"])
        .unwrap();
    poll(WAIT, "the migration of vm1 to be under way", |last| {
        let out = lab.router_cli(&["vm", "show", "vm1", "--json"]).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let sent = v["migration"]["transferred_bytes"].as_u64().unwrap_or(0);
        let dst = lab.qemu_pids(2, "vm1").unwrap();
        *last = format!("sent {sent} bytes, qemu on h2 {dst:?}, {}", v["migration"]);
        match dst[..] {
            [p] if sent >= 2 << 20 => Some(p),
            _ => None,
        }
    })
    .map(|p| (child, p))
    .unwrap()
}

/// The ports on host `to` of the established TCP connections from host `from` (a
/// migration's stream: nothing else connects one lab host to another), as `ss` in
/// `to`'s namespace lists them.
fn stream_ports(lab: &Lab, from: usize, to: usize) -> Vec<u16> {
    let (src, dst) = (lab.host(from).unwrap(), lab.host(to).unwrap());
    let out = lab
        .exec_in(&dst.ns, "ss", &["-tnH", "state", "established"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let peer = format!("{}:", src.ip);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // Recv-Q Send-Q Local:Port Peer:Port (a state filter drops the State column)
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (cols.get(2)?, cols.get(3)?);
            remote
                .starts_with(&peer)
                .then(|| local.rsplit(':').next().unwrap().parse().unwrap())
        })
        .collect()
}

/// Waits for the CLI to exit and returns (exit code, stderr).
fn finish(mut child: Child) -> (Option<i32>, String) {
    poll(
        Duration::from_secs(120),
        "the migrate command to return",
        |_| child.try_wait().unwrap().map(|_| ()),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let (code, stderr, _) = cli_result(&out);
    (code, stderr)
}

#[test]
fn a_destination_killed_mid_migration_leaves_the_vm_running_on_its_source() {
    let lab = slow_migration_lab();
    let src = filled_vm1_on_h1(&lab);

    // 1. The destination qemu dies.
    let (child, dst) = start_slow_migration(&lab);
    // The stream arrives on a port of the lab genies' migration_ports.
    let (lo, hi) = LAB_MIGRATION_PORTS;
    let ports = stream_ports(&lab, 1, 2);
    assert!(
        matches!(ports[..], [p] if (lo..=hi).contains(&p)),
        "migration stream ports on h2: {ports:?}, not one in {lo}-{hi}"
    );
    kill(Pid::from_raw(dst), Signal::SIGKILL).unwrap();
    let (code, stderr) = finish(child);
    eprintln!("destination qemu killed: {stderr}");
    assert_eq!(code, Some(1), "the migration should fail: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("vm1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("from h1 to h2 failed; vm1 keeps running on h1"),
        "{stderr}"
    );
    assert_eq!(
        lab.qemu_pid(1, "vm1").unwrap(),
        src,
        "the source qemu changed"
    );
    let c = assert_counting(&lab, 1, "vm1");
    lab.wait_no_qemu(2, "vm1").unwrap();
    wait_row(&lab, "vm1", "h1", src);
    assert_qmp_running_only_on(&lab, 1, "vm1");

    // 2. The destination genie and its qemu die (the host's software crashes).
    let (child, dst) = start_slow_migration(&lab);
    lab.kill_genie(2).unwrap();
    kill(Pid::from_raw(dst), Signal::SIGKILL).unwrap();
    let (code, stderr) = finish(child);
    eprintln!("destination genie and qemu killed: {stderr}");
    assert_eq!(code, Some(1), "the migration should fail: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("vm1"),
        "{stderr}"
    );
    lab.start_genie(2).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    assert_eq!(
        lab.qemu_pid(1, "vm1").unwrap(),
        src,
        "the source qemu changed"
    );
    lab.wait_counter_above(1, "vm1", c).unwrap();
    lab.wait_no_qemu(2, "vm1").unwrap();
    wait_row(&lab, "vm1", "h1", src);
    assert_qmp_running_only_on(&lab, 1, "vm1");
    // The router does not retry on its own or resurrect the dead copy.
    holds_for(Duration::from_secs(2), || {
        assert_eq!(lab.qemu_pids(2, "vm1").unwrap(), Vec::<i32>::new());
        assert_eq!(lab.qemu_pid(1, "vm1").unwrap(), src);
    });

    // The VM is still fine to migrate afterwards (nothing left claimed or half-done).
    // Uncapped would be nicer, but the cap is the router's config: ~16 s at 8 MiB/s.
    let rep = lab.vm_migrate("vm1", "h2").unwrap();
    assert_eq!(rep.to, "h2");
    lab.wait_no_qemu(1, "vm1").unwrap();
    let moved = lab.qemu_pid(2, "vm1").unwrap();
    wait_row(&lab, "vm1", "h2", moved);
}

/// After a migration of vm1 from h1 (qemu `src`) to h2 (qemu `dst`) was interrupted:
/// settled, exactly one copy runs, one of the two qemu processes of the migration
/// (never a restart: its counter goes on from `before`), the router shows it where it
/// runs, QEMU agrees over QMP, and it stays that way. Returns the host it settled on.
fn assert_single_copy_settled(lab: &Lab, src: i32, dst: i32, before: u32) -> usize {
    let (host, pid) = poll(WAIT, "exactly one copy of vm1 left running", |last| {
        let on1 = lab.qemu_pids(1, "vm1").unwrap();
        let on2 = lab.qemu_pids(2, "vm1").unwrap();
        *last = format!("h1 {on1:?}, h2 {on2:?}");
        match (&on1[..], &on2[..]) {
            ([p], []) => Some((1, *p)),
            ([], [p]) => Some((2, *p)),
            _ => None,
        }
    })
    .unwrap();
    assert_eq!(
        pid,
        if host == 1 { src } else { dst },
        "vm1 was restarted: settled on h{host}, source pid {src}, destination pid {dst}"
    );
    wait_row(lab, "vm1", &format!("h{host}"), pid);
    let after = lab.wait_counter_above(host, "vm1", before).unwrap();
    eprintln!("vm1 settled on h{host} (pid {pid}), counter {before} -> {after}");
    assert_qmp_running_only_on(lab, host, "vm1");
    holds_for(Duration::from_secs(2), || {
        assert_eq!(lab.qemu_pids(host, "vm1").unwrap(), vec![pid]);
        assert!(lab.qemu_pids(3 - host, "vm1").unwrap().is_empty());
    });
    host
}

#[test]
fn a_source_genie_killed_mid_migration_keeps_exactly_one_copy_running() {
    let lab = slow_migration_lab();
    let src = filled_vm1_on_h1(&lab);

    // The genie that runs the migration dies; QEMU itself goes on streaming, so the
    // router cannot know how it ends and must not kill either copy.
    let (child, dst) = start_slow_migration(&lab);
    let before = lab.guest_counter(1, "vm1").unwrap();
    lab.kill_genie(1).unwrap();
    let (code, stderr) = finish(child);
    eprintln!("source genie killed: {stderr}");
    assert_eq!(code, Some(1), "the migration should fail: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("vm1") && stderr.contains("h1"),
        "{stderr}"
    );
    lab.start_genie(1).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    assert_single_copy_settled(&lab, src, dst, before);
}

#[test]
fn a_router_crash_mid_migration_keeps_exactly_one_copy_running() {
    let mut lab = slow_migration_lab();
    let src = filled_vm1_on_h1(&lab);

    // The router dies while the genies and QEMU are mid-way; it comes back at once
    // (well within the genies' self-fence lease).
    let (child, dst) = start_slow_migration(&lab);
    let before = lab.guest_counter(1, "vm1").unwrap();
    lab.kill_router();
    let (code, stderr) = finish(child);
    eprintln!("router killed: {stderr}");
    assert_eq!(code, Some(1), "the CLI lost its router: {stderr}");
    lab.start_router().unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    let host = assert_single_copy_settled(&lab, src, dst, before);
    // Nothing is left claimed: the VM migrates again.
    let to = if host == 1 { "h2" } else { "h1" };
    let rep = lab.vm_migrate("vm1", to).unwrap();
    assert_eq!(rep.to, to);
}

#[test]
fn a_router_restart_loses_nothing_and_restarts_nothing() {
    let mut lab = lab(2, "");
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("vm1", 64, &guest, Some("h1")).unwrap();
    lab.vm_create("vm2", 64, &guest, Some("h2")).unwrap();
    let p1 = lab.qemu_pid(1, "vm1").unwrap();
    let p2 = lab.qemu_pid(2, "vm2").unwrap();
    wait_row(&lab, "vm1", "h1", p1);
    wait_row(&lab, "vm2", "h2", p2);

    // The router crashes and comes back.
    lab.kill_router();
    let c1 = assert_counting(&lab, 1, "vm1");
    lab.start_router().unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    wait_row(&lab, "vm1", "h1", p1);
    wait_row(&lab, "vm2", "h2", p2);
    holds_for(Duration::from_secs(3), || {
        assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), vec![p1]);
        assert_eq!(lab.qemu_pids(2, "vm2").unwrap(), vec![p2]);
        assert!(lab.qemu_pids(2, "vm1").unwrap().is_empty());
        assert!(lab.qemu_pids(1, "vm2").unwrap().is_empty());
    });
    lab.wait_counter_above(1, "vm1", c1).unwrap();
    lab.wait_counter_above(2, "vm2", 0).unwrap();
    assert_qmp_running_only_on(&lab, 1, "vm1");
    assert_qmp_running_only_on(&lab, 2, "vm2");
}

#[test]
fn a_genie_restart_leaves_its_vms_untouched_and_rediscovers_them() {
    let lab = lab(2, "");
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("vm1", 64, &guest, Some("h1")).unwrap();
    lab.vm_create("vm2", 64, &guest, Some("h2")).unwrap();
    let p1 = lab.qemu_pid(1, "vm1").unwrap();
    let p2 = lab.qemu_pid(2, "vm2").unwrap();
    wait_row(&lab, "vm1", "h1", p1);
    wait_row(&lab, "vm2", "h2", p2);

    // The genie of h1 crashes: its VM runs on without it, and is found again.
    lab.kill_genie(1).unwrap();
    let c1 = assert_counting(&lab, 1, "vm1");
    assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), vec![p1]);
    lab.start_genie(1).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    wait_row(&lab, "vm1", "h1", p1);
    holds_for(Duration::from_secs(3), || {
        assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), vec![p1]);
        assert!(lab.qemu_pids(2, "vm1").unwrap().is_empty());
    });
    lab.wait_counter_above(1, "vm1", c1).unwrap();
    wait_row(&lab, "vm2", "h2", p2);
    assert_qmp_running_only_on(&lab, 1, "vm1");
    assert_qmp_running_only_on(&lab, 2, "vm2");
}

#[test]
fn impossible_requests_fail_clearly_and_change_nothing() {
    let mut lab = lab(2, "");
    // Every lab host sees the whole machine's memory: give them a small, known size.
    lab.set_host_capacity(8, 1024).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    let guest = lab.guest_elf().to_owned();
    lab.vm_create("vm1", 512, &guest, Some("h1")).unwrap();
    lab.vm_create("vm2", 768, &guest, Some("h2")).unwrap();
    let p1 = lab.qemu_pid(1, "vm1").unwrap();
    let p2 = lab.qemu_pid(2, "vm2").unwrap();
    wait_row(&lab, "vm1", "h1", p1);
    wait_row(&lab, "vm2", "h2", p2);
    let before = snapshot(&lab);

    let k = lab.guest_elf().to_string_lossy().into_owned();
    assert_cli_error(
        &lab,
        &["vm", "create", "huge", "--mem", "4096", "--kernel", &k],
        &["room", "4096 MiB"],
    );
    assert_cli_error(
        &lab,
        &[
            "vm", "create", "huge", "--mem", "4096", "--kernel", &k, "--host", "h1",
        ],
        &["h1", "room"],
    );
    assert_cli_error(
        &lab,
        &["vm", "create", "vm1", "--mem", "64", "--kernel", &k],
        &["vm1", "already exists"],
    );
    assert_cli_error(
        &lab,
        &[
            "vm", "create", "vm3", "--mem", "64", "--kernel", &k, "--host", "h9",
        ],
        &["h9"],
    );
    // A kernel qemu cannot load: the create fails on the host and leaves no VM behind
    // (no record the reconciler would retry forever, no name taken).
    assert_cli_error(
        &lab,
        &[
            "vm",
            "create",
            "bad",
            "--mem",
            "64",
            "--kernel",
            "/nonexistent/guest.elf",
        ],
        &["bad", "/nonexistent/guest.elf"],
    );
    assert_cli_error(
        &lab,
        &["vm", "migrate", "nosuch", "--to", "h2"],
        &["nosuch"],
    );
    assert_cli_error(&lab, &["vm", "migrate", "vm1", "--to", "h9"], &["h9"]);
    assert_cli_error(
        &lab,
        &["vm", "migrate", "vm1", "--to", "h2"],
        &["h2", "room"],
    );
    assert_cli_error(
        &lab,
        &["vm", "migrate", "vm1", "--to", "h1"],
        &["vm1", "h1"],
    );

    assert_eq!(snapshot(&lab), before);
    for h in 1..=2 {
        for vm in ["huge", "vm3", "bad"] {
            assert!(lab.qemu_pids(h, vm).unwrap().is_empty(), "{vm} on h{h}");
        }
    }
    assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), vec![p1]);
    assert_eq!(lab.qemu_pids(2, "vm2").unwrap(), vec![p2]);
    assert!(lab.qemu_pids(2, "vm1").unwrap().is_empty());
    assert_counting(&lab, 1, "vm1");
    // The refused migration left nothing claimed: a legal one still works.
    lab.router_ok(&["vm", "delete", "vm2"]).unwrap();
    lab.wait_no_qemu(2, "vm2").unwrap();
    // A host in maintenance takes no VMs, room or not.
    lab.router_ok(&["maintenance", "on", "h2"]).unwrap();
    assert_cli_error(
        &lab,
        &["vm", "migrate", "vm1", "--to", "h2"],
        &["h2", "maintenance"],
    );
    assert_eq!(lab.qemu_pids(1, "vm1").unwrap(), vec![p1]);
    lab.router_ok(&["maintenance", "off", "h2"]).unwrap();
    lab.wait_all_up_with_metrics().unwrap();
    let rep = lab.vm_migrate("vm1", "h2").unwrap();
    assert_eq!(rep.to, "h2");
}

/// The host a VM row is on, once it is running.
fn wait_running_anywhere(lab: &Lab, vm: &str) -> (usize, i32) {
    poll(WAIT, &format!("{vm} running somewhere"), |last| {
        let rows = rows_of(lab, vm);
        *last = format!("{rows:?}");
        let r = rows.iter().find(|r| r.state == "running")?;
        let h: usize = r.host.as_deref()?.strip_prefix('h')?.parse().ok()?;
        let pid = lab.qemu_pid(h, vm).ok()?;
        (r.pid == Some(pid as u32)).then_some((h, pid))
    })
    .unwrap()
}

fn assert_no_qemu_anywhere(lab: &Lab, vm: &str) {
    for h in 1..=lab.hosts().len() {
        assert!(
            lab.qemu_pids(h, vm).unwrap().is_empty(),
            "{vm} runs on h{h}"
        );
    }
}

#[test]
fn vm_lifecycle_create_stop_start_restart_delete() {
    let lab = lab(2, "");
    let k = lab.guest_elf().to_owned();

    // create: placed by the router (no --host), running where `router vms` says.
    let out = lab.vm_create("vm1", 64, &k, None).unwrap();
    let (h, pid) = wait_running_anywhere(&lab, "vm1");
    assert!(
        out.contains(&format!("h{h}")),
        "create said {out:?}, VM is on h{h}"
    );
    wait_row(&lab, "vm1", &format!("h{h}"), pid);
    assert_counting(&lab, h, "vm1");
    assert_qmp_running_only_on(&lab, h, "vm1");

    // stop: gone, desired stopped, and the reconciler leaves it stopped.
    lab.router_ok(&["vm", "stop", "vm1", "--force"]).unwrap();
    lab.wait_no_qemu(h, "vm1").unwrap();
    poll(WAIT, "vm1 shown stopped", |last| {
        let rows = rows_of(&lab, "vm1");
        *last = format!("{rows:?}");
        rows.iter()
            .all(|r| r.state != "running" && r.desired.as_deref() == Some("stopped"))
            .then_some(())
    })
    .unwrap();
    holds_for(Duration::from_secs(3), || {
        assert_no_qemu_anywhere(&lab, "vm1")
    });

    // start: running again, a new qemu.
    lab.router_ok(&["vm", "start", "vm1"]).unwrap();
    let (h, pid2) = wait_running_anywhere(&lab, "vm1");
    assert_ne!(pid2, pid);
    assert_counting(&lab, h, "vm1");
    assert_qmp_running_only_on(&lab, h, "vm1");

    // restart: a new qemu again, the old one gone (graceful stop: this tiny guest
    // ignores ACPI, so the genie quits it after its grace period).
    lab.router_ok(&["vm", "restart", "vm1"]).unwrap();
    let (h, pid3) = wait_running_anywhere(&lab, "vm1");
    assert_ne!(pid3, pid2);
    assert_eq!(lab.qemu_pids(h, "vm1").unwrap(), vec![pid3]);
    assert_counting(&lab, h, "vm1");
    assert_qmp_running_only_on(&lab, h, "vm1");

    // a name already taken.
    let k2 = k.to_string_lossy().into_owned();
    assert_cli_error(
        &lab,
        &["vm", "create", "vm1", "--mem", "64", "--kernel", &k2],
        &["vm1", "already exists"],
    );
    assert_eq!(lab.qemu_pids(h, "vm1").unwrap(), vec![pid3]);

    // delete: gone and forgotten.
    lab.router_ok(&["vm", "delete", "vm1"]).unwrap();
    lab.wait_no_qemu(h, "vm1").unwrap();
    poll(WAIT, "vm1 forgotten by `router vms`", |last| {
        let rows = rows_of(&lab, "vm1");
        *last = format!("{rows:?}");
        rows.is_empty().then_some(())
    })
    .unwrap();
    assert_cli_error(&lab, &["vm", "show", "vm1"], &["vm1"]);
    holds_for(Duration::from_secs(3), || {
        assert_no_qemu_anywhere(&lab, "vm1")
    });
    // Forgotten means the name is free again.
    lab.vm_create("vm1", 64, &k, Some("h2")).unwrap();
    let pid4 = lab.qemu_pid(2, "vm1").unwrap();
    wait_row(&lab, "vm1", "h2", pid4);
}
