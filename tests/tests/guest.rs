//! A real Linux guest on the lab network (issue 11): Debian's kernel with a busybox
//! initramfs (`lab::linux`), one virtio NIC on network `lan` (each lab host's `br0`,
//! eth0 its uplink), an address from the kernel command line.
//!
//! Witnesses: ping from the lab's core namespace (the router's), the core's neighbour
//! table for which MAC answered, and `router vm show --json` for the MAC the router
//! stored. Needs root, qemu, ipmi_sim, linux-image-amd64 and busybox-static, and
//! `cargo build --workspace --bins` first; fails loudly without them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wisp_tests::lab::linux::UP_MARKER;
use wisp_tests::lab::{poll, Lab, LabSpec};

/// A Debian kernel under TCG on a loaded 2-core machine: about 10 s to a network-ready
/// guest when idle, several times that when the machine is busy.
const BOOT: Duration = Duration::from_secs(240);
const IP: &str = "10.77.0.200";

fn stored_mac(lab: &Lab, vm: &str) -> String {
    let d = lab.router_json(&["vm", "show", vm, "--json"]).unwrap();
    d["record"]["spec"]["nics"][0]["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no NIC in {d}"))
        .to_owned()
}

fn host_of(lab: &Lab, vm: &str) -> Option<String> {
    let d = lab.router_json(&["vm", "show", vm, "--json"]).ok()?;
    d["record"]["host"].as_str().map(str::to_owned)
}

fn wait_ping(lab: &Lab, what: &str) {
    let r = poll(BOOT, what, |last| {
        let ok = lab.ping_from_core(IP);
        *last = format!("ping {IP}: {ok}");
        ok.then_some(())
    });
    if let Err(e) = r {
        // What the guest and the router said, for whoever reads the failure.
        for args in [
            &["vm", "console", "g1", "--log", "--bytes", "4000"][..],
            &["vm", "show", "g1"][..],
            &["events", "--limit", "30"][..],
        ] {
            let out = lab
                .router_cli(args)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            eprintln!("router {}:\n{}", args.join(" "), out.unwrap_or_default());
        }
        panic!("{e}");
    }
}

#[test]
fn the_guest_answers_ping_across_a_live_migration_and_after_its_host_loses_power() {
    let lab = Lab::start_vms(LabSpec::vms(2)).unwrap();
    lab.create_linux_vm("g1", &format!("{IP}/24"), Some("h1"))
        .unwrap();
    let mac = stored_mac(&lab, "g1");
    let first = mac.parse::<wisp_common::MacAddr>().unwrap().0[0];
    assert_eq!(first & 3, 2, "generated MAC {mac} is local unicast");

    wait_ping(&lab, "the guest on h1 to answer ping from the core");
    assert_eq!(lab.core_neighbour_mac(IP).as_deref(), Some(mac.as_str()));
    // The console log, fetched through router and genie, shows the boot: the init's
    // line with the address and the MAC the guest itself sees (the kernel is `quiet`).
    let want = format!("{UP_MARKER} ip={IP}/24 mac={mac}");
    poll(BOOT, "the console log to show the guest's boot", |last| {
        let out = lab.router_cli(&["vm", "console", "g1", "--log"]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        *last = text
            .chars()
            .rev()
            .take(300)
            .collect::<String>()
            .chars()
            .rev()
            .collect();
        text.contains(&want).then_some(())
    })
    .unwrap();

    // A live migration: the guest keeps its address and MAC and answers from the other
    // host. (From where it runs now: on a starved machine the router may already have
    // failed h1 over, which is its job.)
    let (from, to) = match host_of(&lab, "g1").as_deref() {
        Some("h2") => ("h2", "h1"),
        _ => ("h1", "h2"),
    };
    let m = lab.vm_migrate("g1", to).unwrap();
    assert_eq!((m.from.as_str(), m.to.as_str()), (from, to));
    wait_ping(&lab, "the migrated guest to answer ping");
    assert_eq!(host_of(&lab, "g1").as_deref(), Some(to));
    assert_eq!(
        stored_mac(&lab, "g1"),
        mac,
        "the MAC is the VM's, not the host's"
    );
    assert_eq!(lab.core_neighbour_mac(IP).as_deref(), Some(mac.as_str()));

    // Its host loses power without a word: the router proves it off (its BMC) and
    // restarts the guest on the other host, which boots it with the same MAC and address.
    lab.silent_power_loss(if to == "h1" { 1 } else { 2 })
        .unwrap();
    poll(
        BOOT,
        &format!("the router to restart g1 on {from}"),
        |last| {
            let h = host_of(&lab, "g1");
            *last = format!("{h:?}");
            (h.as_deref() == Some(from)).then_some(())
        },
    )
    .unwrap();
    // Forget the old neighbour entry, so the MAC seen next is the restarted guest's.
    let core = lab.core_ns();
    lab.exec_in(&core, "ip", &["neigh", "flush", "to", IP])
        .unwrap();
    wait_ping(&lab, "the restarted guest to answer ping");
    assert_eq!(lab.core_neighbour_mac(IP).as_deref(), Some(mac.as_str()));
    assert_eq!(stored_mac(&lab, "g1"), mac);
}

#[test]
fn bad_nic_and_disk_input_is_refused_by_name_and_starts_nothing() {
    let lab = Lab::start_vms(LabSpec::vms(1)).unwrap();
    // `router hosts --json` says what the host runs VMs on (the lab says tcg) and that
    // it gives the cluster's CPU model (QEMU's TCG has Nehalem).
    poll(
        BOOT,
        "h1 to report its accelerator and CPU models",
        |last| {
            let hosts = lab.router_json(&["hosts", "--json"]).ok()?;
            let h = &hosts[0];
            *last = format!("{h}");
            (h["accel"] == "tcg" && h["cpu_model_ok"] == true).then_some(())
        },
    )
    .unwrap();
    let g = lab.linux_guest().unwrap();
    let k = g.kernel.to_string_lossy().into_owned();
    let err = |args: &[&str]| {
        let out = lab.router_cli(args).unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let base = ["vm", "create", "bad", "--mem", "64", "--kernel", &k];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    for (extra, needles) in [
        (vec!["--nic", "wan"], vec!["bad", "wan", "lan"]),
        (
            vec!["--nic", "lan,mac=01:00:5e:00:00:01"],
            vec!["bad", "nic0 mac", "multicast"],
        ),
        (
            vec!["--disk", "/etc/shadow"],
            vec!["bad", "disk", "image_dirs"],
        ),
        (
            vec!["--disk", "/x.img,readonly=on"],
            vec!["bad", "disk", "image_dirs"],
        ),
    ] {
        let args = with(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = err(&args);
        for n in needles {
            assert!(e.contains(n), "{extra:?}: {n:?} not in {e}");
        }
    }
    // Nothing was started and nothing is stored.
    let vms = lab.vms_json().unwrap();
    assert!(vms.iter().all(|r| r.name != "bad"), "{vms:?}");
    let qemus = lab
        .exec_in(
            &lab.host(1).unwrap().ns,
            "pgrep",
            &["-f", "qemu.*-name bad"],
        )
        .unwrap();
    assert!(!qemus.status.success(), "a qemu of `bad` runs");

    // A MAC another VM has is refused by the router, naming both VMs.
    lab.create_linux_vm("g1", "10.77.0.201/24", None).unwrap();
    let mac = stored_mac(&lab, "g1");
    let e = err(&[
        "vm",
        "create",
        "g2",
        "--mem",
        "64",
        "--kernel",
        &k,
        "--nic",
        &format!("lan,mac={mac}"),
    ]);
    assert!(
        e.contains("g2") && e.contains("nic0 mac") && e.contains("g1"),
        "{e}"
    );
}

#[test]
fn a_vm_with_a_disk_migrates_and_its_disk_is_refused_to_a_second_vm_by_name() {
    let lab = Lab::start_vms(LabSpec::vms(2)).unwrap();
    let k = lab.guest_elf().to_string_lossy().into_owned();
    // A raw image on the lab's shared storage, its format read from its header; a
    // comma in its name stays inside the name.
    let disk = lab.images_dir().join("d1,readonly=on.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let d = disk.to_string_lossy().into_owned();
    lab.router_ok(&[
        "vm", "create", "d1", "--mem", "64", "--kernel", &k, "--disk", &d, "--host", "h1",
    ])
    .unwrap();
    // QEMU's own word on the disk, over the witness socket of the lab's qemu wrapper.
    let block = |host: usize| -> serde_json::Value {
        let witness = lab.witness_qmp(host, "d1").unwrap();
        let mut q = wisp_tests::lab::Qmp::connect(&witness).unwrap();
        q.execute("query-block", serde_json::json!({})).unwrap()
    };
    let b = block(1);
    let inserted = &b[0]["inserted"];
    assert_eq!(inserted["file"].as_str(), Some(d.as_str()), "{b}");
    assert_eq!(inserted["drv"].as_str(), Some("raw"), "{b}");
    assert_eq!(inserted["ro"].as_bool(), Some(false), "{b}");
    assert_eq!(inserted["cache"]["direct"].as_bool(), Some(true), "{b}");

    // The same file under another name is still the same disk for the router.
    let other = lab
        .images_dir()
        .join("x")
        .join("..")
        .join("d1,readonly=on.img");
    let out = lab
        .router_cli(&[
            "vm",
            "create",
            "d2",
            "--mem",
            "64",
            "--kernel",
            &k,
            "--disk",
            &other.to_string_lossy(),
        ])
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("d2") && e.contains("disk") && e.contains("d1"),
        "{e}"
    );

    // Shared storage with O_DIRECT: the VM live-migrates with its disk.
    let m = lab.vm_migrate("d1", "h2").unwrap();
    assert_eq!(m.to, "h2");
    let b = block(2);
    assert_eq!(b[0]["inserted"]["file"].as_str(), Some(d.as_str()), "{b}");
}
