//! The web dashboard in a real browser: Debian's headless Chromium, driven over
//! WebDriver, against a lab cluster whose router serves the page. What a person sees
//! is read from the page itself (its host cards and VM rows), never from the API, and
//! every state is kept as a screenshot under `target/wisp-artifacts/dashboard/`.
//!
//! Needs root (the lab), `chromium` and `chromium-driver` (tests/install-deps.sh).

// A test's unwrap is its assertion: the panic names what failed.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use wisp_tests::browser::{Browser, Forward};
use wisp_tests::lab::{poll, procs, Census, Lab, LabSpec, WAIT};

/// A laptop screen and a phone.
const DESKTOP: (u32, u32) = (1366, 768);
const PHONE: (u32, u32) = (390, 844);

/// Heartbeat timing that a loaded 2-core machine does not trip by itself (the lab's
/// 600 ms fences a host whose genie is merely starved of CPU, which this test is not
/// about). A host powered off still shows at once: its link closes and its BMC says off.
const PATIENT: &str = "suspect_after_ms = 3000\nunreachable_after_ms = 5000\nlease_ms = 10000\n";

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"
const q = (s) => [...document.querySelectorAll(s)];
const main = document.getElementById('main');
return {
  path: location.pathname,
  shown: !!main && !main.hidden,
  login_error: (document.getElementById('login-error') || {}).hidden === false
    ? document.getElementById('login-error').textContent : null,
  hosts: q('#hosts article[data-host]').map((e) => ({
    name: e.dataset.host, state: e.dataset.state,
    vms: [...e.querySelectorAll('.chip')].map((c) => c.dataset.vm) })),
  vms: q('#vms tbody tr').map((r) => ({ name: r.dataset.vm, host: r.dataset.host, state: r.dataset.state, op: r.dataset.op })),
  toast: document.getElementById('toast') && !document.getElementById('toast').hidden
    ? document.getElementById('toast').textContent : null,
  failovers: q('[data-failover]').map((e) => e.textContent),
  events: q('#events li').length,
  energy_on: (document.getElementById('energy-toggle') || {dataset: {}}).dataset.on === 'true',
  overflow: document.documentElement.scrollWidth - window.innerWidth,
};
"#;

fn artifacts() -> PathBuf {
    // <target>/debug/deps/dashboard-<hash>: the artifacts go next to the build.
    let exe = std::env::current_exe().expect("the test's own path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("wisp-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

fn page(b: &Browser) -> Value {
    b.script(READ_PAGE, json!([]))
        .expect("the page answers a script")
}

/// Polls the page until `ok` holds; fails with the page's last state.
fn wait_page(b: &Browser, timeout: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    poll(timeout, what, |last| {
        let p = page(b);
        *last = p.to_string();
        ok(&p).then_some(p)
    })
    .unwrap()
}

fn host<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["name"] == name))
        .unwrap_or(&Value::Null)
}

fn vm<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["vms"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == name))
        .unwrap_or(&Value::Null)
}

fn shot(b: &Browser, name: &str) {
    let path = artifacts().join(format!("{name}.png"));
    b.screenshot(&path).expect("screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Polls the census until `ok` holds, failing at once if a VM runs twice.
fn wait_census(lab: &Lab, what: &str, ok: impl Fn(&Census) -> bool) -> Census {
    poll(Duration::from_secs(60), what, |last| {
        let c = lab.census_never_twice();
        *last = format!("{:?}", c.seen);
        ok(&c).then_some(c)
    })
    .unwrap_or_else(|e| panic!("{e}\nrouter log:\n{}", lab.router_log_tail(40)))
}

/// A lab of three hosts with vm1 on h1 and vm2 on h2, and its dashboard's address
/// as reached from here.
fn lab_with_vms() -> (Lab, Forward) {
    let lab = Lab::start_with_witness(LabSpec::vms(3).router_toml(PATIENT)).unwrap();
    lab.wait_all_up().unwrap();
    for (name, h) in [("vm1", 1), ("vm2", 2)] {
        lab.create_guest_vm(name, 64, Some(h), 0).unwrap();
    }
    wait_census(&lab, "vm1 on h1 and vm2 on h2", |c| {
        c.each_once(&["vm1", "vm2"])
            && c.running_on("vm1") == ["h1"]
            && c.running_on("vm2") == ["h2"]
    });
    let api = wisp_tests::lab::configs::API_ADDR
        .parse()
        .expect("an address");
    let fwd = Forward::start(&lab.core_ns(), api, 0).expect("forward to the router's API");
    (lab, fwd)
}

/// Logs in through the login page with `token`.
fn log_in(b: &Browser, base: &str, token: &str) {
    b.open(&format!("{base}/login")).unwrap();
    let input = b.find("#token").unwrap().expect("a token field");
    b.type_text(&input, token).unwrap();
    click(b, "#login-submit");
}

/// Clicks the confirmation dialog's OK, which the action must have opened.
fn confirm(b: &Browser) {
    let shown = poll(WAIT, "the confirmation dialog", |_| {
        let v = b
            .script(
                "return !document.getElementById('confirm').hidden",
                json!([]),
            )
            .unwrap();
        (v == true).then_some(())
    });
    shown.unwrap();
    click(b, "#confirm-ok");
}

#[test]
fn the_dashboard_shows_the_cluster_live_follows_a_failover_and_puts_a_host_in_maintenance() {
    let (mut lab, fwd) = lab_with_vms();
    let base = format!("http://{}", fwd.local());
    let b = Browser::start(&artifacts().join("profile-main"), DESKTOP.0, DESKTOP.1).unwrap();

    // No token yet: the dashboard sends the browser to the login page, showing nothing.
    b.open(&format!("{base}/")).unwrap();
    let p = wait_page(&b, WAIT, "the login page", |p| p["path"] == "/login");
    assert_eq!(p["hosts"], json!([]), "no data without a token: {p}");
    shot(&b, "01-login");

    // The lab's admin token, typed into the login page.
    log_in(&b, &base, &lab.admin_token());
    let p = wait_page(&b, WAIT, "every host and VM on the dashboard", |p| {
        p["path"] == "/"
            && p["shown"] == true
            && ["h1", "h2", "h3"]
                .iter()
                .all(|h| host(p, h)["state"] == "up")
            && vm(p, "vm1")["host"] == "h1"
            && vm(p, "vm2")["host"] == "h2"
            && host(p, "h1")["vms"] == json!(["vm1"])
    });
    assert_eq!(vm(&p, "vm1")["state"], "running", "{p}");
    assert!(
        p["events"].as_u64() > Some(0),
        "the timeline shows events: {p}"
    );
    assert!(
        p["overflow"].as_i64() <= Some(0),
        "no sideways scroll at 1366: {p}"
    );
    shot(&b, "02-cluster-1366x768");

    b.resize(PHONE.0, PHONE.1).unwrap();
    let p = wait_page(&b, WAIT, "the page laid out for a phone", |p| {
        p["shown"] == true && p["overflow"].as_i64() <= Some(0)
    });
    assert_eq!(p["hosts"].as_array().map(Vec::len), Some(3), "{p}");
    shot(&b, "03-cluster-phone");
    b.resize(DESKTOP.0, DESKTOP.1).unwrap();

    // h1 loses power through its BMC: the page shows it down and vm1 elsewhere.
    let t0 = Instant::now();
    let out = lab.ipmitool(1, &["chassis", "power", "off"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_page(&b, WAIT, "h1 shown down or fenced", |p| {
        matches!(host(p, "h1")["state"].as_str(), Some("down" | "fenced"))
    });
    let down_after = t0.elapsed();
    let p = wait_page(
        &b,
        Duration::from_secs(60),
        "vm1 shown running on another host",
        |p| {
            let v = vm(p, "vm1");
            v["state"] == "running" && v["host"] != "h1" && v["host"] != ""
        },
    );
    let moved_after = t0.elapsed();
    eprintln!(
        "measured: h1 shown down {} ms and vm1 shown running on {} {} ms after the BMC power-off",
        down_after.as_millis(),
        vm(&p, "vm1")["host"],
        moved_after.as_millis()
    );
    let c = lab.census_never_twice();
    assert_eq!(
        c.running_on("vm1"),
        [vm(&p, "vm1")["host"].as_str().unwrap_or_default()],
        "the page shows where vm1 really runs: {:?}",
        c.seen
    );
    let p = wait_page(&b, WAIT, "the failover with its proof", |p| {
        p["failovers"].as_array().is_some_and(|f| {
            f.iter().any(|t| {
                t.as_str().is_some_and(|t| {
                    t.contains("h1") && t.contains("proven off") && t.contains("restarted vm1")
                })
            })
        })
    });
    eprintln!("failover on the page: {}", p["failovers"]);
    shot(&b, "04-failover");

    // Maintenance on h2 from its card: its VMs move away, live.
    click(
        &b,
        r#"#hosts [data-host="h2"] button[data-action="maintenance"]"#,
    );
    confirm(&b);
    let p = wait_page(
        &b,
        Duration::from_secs(60),
        "h2 in maintenance and empty",
        |p| {
            let h2 = host(p, "h2");
            h2["state"] == "maintenance"
                && h2["vms"] == json!([])
                && p["vms"].as_array().is_some_and(|vs| {
                    vs.iter()
                        .all(|v| v["host"] != "h2" && v["state"] == "running")
                })
        },
    );
    let c = wait_census(&lab, "nothing on h2, each VM once", |c| {
        c.each_once(&["vm1", "vm2"]) && c.on_host("h2").is_empty()
    });
    assert_eq!(
        c.running_on("vm2"),
        [vm(&p, "vm2")["host"].as_str().unwrap_or_default()]
    );
    shot(&b, "05-maintenance");
    b.resize(PHONE.0, PHONE.1).unwrap();
    wait_page(&b, WAIT, "the phone layout", |p| {
        p["overflow"].as_i64() <= Some(0)
    });
    shot(&b, "06-maintenance-phone");
    b.resize(DESKTOP.0, DESKTOP.1).unwrap();

    // Maintenance off (no confirmation: nothing stops), then vm2 moved back by hand.
    click(
        &b,
        r#"#hosts [data-host="h2"] button[data-action="maintenance"]"#,
    );
    wait_page(&b, WAIT, "h2 up again", |p| host(p, "h2")["state"] == "up");
    pick_and_move(&b, "vm2", "h2");
    let p = wait_page(&b, WAIT, "vm2 shown on h2", |p| {
        vm(p, "vm2")["host"] == "h2" && vm(p, "vm2")["state"] == "running"
    });
    wait_census(&lab, "vm2 on h2", |c| {
        c.each_once(&["vm1", "vm2"]) && c.running_on("vm2") == ["h2"]
    });
    eprintln!("moved by the page: {}", p["toast"]);

    // Another client acts on vm1 at the same time (a graceful stop, which holds it
    // while the guest ignores ACPI): the page's move is refused with the very words
    // the CLI gets for the same move, whatever the router's reason.
    let mut stop = lab.spawn_router_cli(&["vm", "stop", "vm1"]).unwrap();
    wait_page(&b, WAIT, "vm1 shown stopping", |p| {
        vm(p, "vm1")["op"] == "stop"
    });
    let cli = lab
        .router_cli(&["vm", "migrate", "vm1", "--to", "h2"])
        .unwrap();
    let cli_err = String::from_utf8_lossy(&cli.stderr).into_owned();
    assert!(!cli.status.success(), "the CLI's move is refused: {cli:?}");
    let refusal = cli_err
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| panic!("the CLI says why: {cli_err}"))
        .to_owned();
    pick_and_move(&b, "vm1", "h2");
    let p = wait_page(&b, WAIT, "the page's refusal", |p| {
        p["toast"].as_str().is_some_and(|t| t.contains("refused"))
    });
    let shown = p["toast"].as_str().unwrap_or_default();
    assert!(
        shown.contains(&refusal),
        "page: {shown:?}, CLI: {refusal:?}"
    );
    eprintln!("refused alike: page {shown:?}, CLI {refusal:?}");
    shot(&b, "07-refusal");
    let _ = stop.kill();
    let _ = stop.wait();

    // h1, off since its failure, woken from its card (no Wake-on-LAN listener in this
    // lab: the router falls back to IPMI power-on).
    click(&b, r#"#hosts [data-host="h1"] button[data-action="wake"]"#);
    wait_page(&b, Duration::from_secs(60), "h1 shown up again", |p| {
        host(p, "h1")["state"] == "up"
    });
    assert_eq!(lab.host_state("h1"), "up");

    // A busy VM: while the CLI moves vm2 to h1 (whose genie is held frozen, so the
    // move waits for it), the page's move of vm2 gets the CLI's own "busy" refusal.
    let genie = lab.genie_pids(1).unwrap();
    assert!(!genie.is_empty(), "h1's genie runs");
    for &pid in &genie {
        procs::signal(pid, Signal::SIGSTOP);
    }
    let mut first = lab
        .spawn_router_cli(&["vm", "migrate", "vm2", "--to", "h1"])
        .unwrap();
    let seen = poll(WAIT, "vm2 shown moving", |last| {
        let p = page(&b);
        *last = vm(&p, "vm2").to_string();
        (vm(&p, "vm2")["op"] == "migrate").then_some(())
    });
    let busy = seen.and_then(|()| {
        let cli = lab.router_cli(&["vm", "migrate", "vm2", "--to", "h3"])?;
        pick_and_move(&b, "vm2", "h3");
        let p = poll(WAIT, "the page's refusal of the busy vm2", |last| {
            let p = page(&b);
            *last = p["toast"].to_string();
            p["toast"]
                .as_str()
                .is_some_and(|t| t.contains("refused"))
                .then_some(p)
        })?;
        Ok((cli, p))
    });
    // Thawed before any assertion: a failed one must not leave a host frozen.
    for &pid in &genie {
        procs::signal(pid, Signal::SIGCONT);
    }
    let (cli, p) = busy.unwrap();
    let cli_err = String::from_utf8_lossy(&cli.stderr).into_owned();
    let refusal = cli_err
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_default()
        .to_owned();
    assert!(refusal.contains("busy"), "the CLI's refusal: {cli:?}");
    let shown = p["toast"].as_str().unwrap_or_default();
    assert!(
        shown.contains(&refusal),
        "page: {shown:?}, CLI: {refusal:?}"
    );
    eprintln!("busy alike: page {shown:?}, CLI {refusal:?}");
    shot(&b, "08-busy");
    let _ = first.wait();
    wait_census(&lab, "vm2 running once after the held move", |c| {
        c.running_on("vm2").len() == 1
    });

    // Energy mode from the header, confirmed by the CLI.
    click(&b, "#energy-toggle");
    wait_page(&b, WAIT, "energy mode shown on", |p| p["energy_on"] == true);
    let st = lab.router_json(&["energy", "status", "--json"]).unwrap();
    assert_eq!(st["enabled"], true, "{st}");
    shot(&b, "09-energy-on");

    // The router stops cleanly with the page still streaming (an open stream must not
    // hold its graceful shutdown), and the page says it lost the router. A held stream
    // is not judged by the time the stop took (a loaded machine is slow anyway): the
    // router logs any connection still busy when its shutdown grace ran out.
    let t0 = Instant::now();
    lab.stop_router();
    let took = t0.elapsed();
    eprintln!(
        "measured: the router stopped {} ms after SIGTERM with the page open",
        took.as_millis()
    );
    let log = std::fs::read_to_string(lab.router_log()).unwrap_or_default();
    assert!(
        log.contains("router stopped") && !log.contains("still busy"),
        "the router did not stop by itself with a dashboard open ({} ms):\n{}",
        took.as_millis(),
        lab.router_log_tail(20)
    );
    poll(WAIT, "the page to show it lost the router", |last| {
        let v = b
            .script(
                "return document.getElementById('conn').textContent",
                json!([]),
            )
            .unwrap();
        *last = v.to_string();
        v.as_str()
            .is_some_and(|t| t.starts_with("reconnecting"))
            .then_some(())
    })
    .unwrap();
}

fn click(b: &Browser, css: &str) {
    assert!(b.click_on(css).unwrap(), "no {css} on the page");
}

/// Picks `to` in `vm`'s "move to" list and presses its move button.
fn pick_and_move(b: &Browser, vm: &str, to: &str) {
    let option = format!(r#"#vms tr[data-vm="{vm}"] select option[value="{to}"]"#);
    poll(WAIT, &format!("{to} offered for {vm}"), |_| {
        b.find(&option).ok().flatten().map(drop)
    })
    .unwrap();
    click(b, &option);
    click(
        b,
        &format!(r#"#vms tr[data-vm="{vm}"] button[data-action="migrate"]"#),
    );
}

#[test]
fn a_wrong_token_shows_the_login_page_and_no_data() {
    let lab = Lab::start(LabSpec::vms(1)).unwrap();
    lab.wait_all_up().unwrap();
    let api = wisp_tests::lab::configs::API_ADDR
        .parse()
        .expect("an address");
    let fwd = Forward::start(&lab.core_ns(), api, 0).unwrap();
    let base = format!("http://{}", fwd.local());
    let b = Browser::start(&artifacts().join("profile-wrong"), DESKTOP.0, DESKTOP.1).unwrap();

    log_in(&b, &base, "not-the-token");
    let p = wait_page(&b, WAIT, "the login page refusing the token", |p| {
        p["path"] == "/login" && p["login_error"].is_string()
    });
    assert_eq!(p["hosts"], json!([]), "{p}");
    shot(&b, "10-wrong-token");

    // A token stored some other way (an old tab, a revoked token): the dashboard's
    // stream is refused and the page goes back to the login, showing nothing.
    b.script("sessionStorage.setItem('wisp.token', 'revoked')", json!([]))
        .unwrap();
    b.open(&format!("{base}/")).unwrap();
    let p = wait_page(&b, WAIT, "back to the login page", |p| {
        p["path"] == "/login"
    });
    assert_eq!(p["shown"], false, "{p}");
    assert_eq!(p["hosts"], json!([]), "{p}");
}
