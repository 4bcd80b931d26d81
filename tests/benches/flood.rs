//! The router under a flood on its genie port, side by side with the same router
//! unflooded, on the lab with 4 real genies (issue 12's goals):
//! - the real hosts' report age (`last_report_age_ms`, worst host) stays < 500 ms;
//! - API p99 (`GET /v1/hosts` on the local socket, what `router hosts` does) < 200 ms;
//! - the router's RSS stays < 64 MB.
//!
//! Phases, 10 s each (`WISP_FLOOD_SECS`), on the same lab one after the other:
//! 1. quiet: no flood (the baseline the others are read against);
//! 2. connect-and-close paced at 1,000 per second from the core namespace;
//! 3. the same plus 1,000 connections each announcing a 1 MiB frame, sending 64 KiB of
//!    it and holding the connection open (half-open frames).
//!
//! Run: `cargo build --workspace --bins && cargo bench --profile dev -p wisp-tests
//! --bench flood` (as root; the figures are the router's, whichever profile the bench
//! itself has, so build the bins in release for production-like figures).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use router::api::types::HostView;
use router::cli::Client;
use wisp_tests::lab::configs::ROUTER_PORT;
use wisp_tests::lab::names::Names;
use wisp_tests::lab::{poll, Lab, LabSpec, WAIT};

const HOSTS: usize = 4;
const CONNECTS_PER_S: u64 = 1000;
const HALF_OPEN: usize = 1000;

/// What one phase measured.
struct Phase {
    name: &'static str,
    connects_per_s: f64,
    slow_connects: usize,
    held: usize,
    report_age_p99: u64,
    report_age_max: u64,
    api_p50: Duration,
    api_p99: Duration,
    api_errors: usize,
    rss_max: u64,
}

fn main() {
    let secs: u64 = std::env::var("WISP_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let lab = Lab::start(LabSpec {
        hosts: HOSTS,
        wol_listener: false,
        ..LabSpec::default().bench_bins()
    })
    .unwrap();
    poll(WAIT, "every lab host up", |last| {
        let rows = lab.hosts_json().ok()?;
        *last = format!("{} rows", rows.len());
        (rows.len() == HOSTS && rows.iter().all(|r| r.state == "up")).then_some(())
    })
    .unwrap();
    let pid = lab.router_pid().expect("the lab runs a router");
    let core = format!("/run/netns/{}", lab.core_ns());
    let link = SocketAddr::from((Names::router_ip(), ROUTER_PORT));
    let duration = Duration::from_secs(secs);

    let mut phases = vec![measure(&lab, pid, "quiet", duration, Flood::none)];
    phases.push(measure(
        &lab,
        pid,
        "connect-and-close 1,000/s",
        duration,
        || Flood::start(&core, link, 0),
    ));
    phases.push(measure(
        &lab,
        pid,
        "+ 1,000 half-open 1 MiB frames",
        duration,
        || Flood::start(&core, link, HALF_OPEN),
    ));

    println!("\nrouter under a genie-port flood, {HOSTS} real genies, {secs} s per phase");
    println!(
        "{:<32} {:>8} {:>6} {:>6} {:>14} {:>18} {:>7} {:>8}",
        "phase", "conn/s", "slow", "held", "report age ms", "API p50/p99 ms", "errors", "RSS MB"
    );
    for p in &phases {
        println!(
            "{:<32} {:>8.0} {:>6} {:>6} {:>6} / {:>5} {:>8.1} / {:>7.1} {:>7} {:>8.1}",
            p.name,
            p.connects_per_s,
            p.slow_connects,
            p.held,
            p.report_age_p99,
            p.report_age_max,
            p.api_p50.as_secs_f64() * 1e3,
            p.api_p99.as_secs_f64() * 1e3,
            p.api_errors,
            p.rss_max as f64 / (1 << 20) as f64,
        );
    }
    let flooded = &phases[1..];
    let worst_age = flooded.iter().map(|p| p.report_age_max).max().unwrap();
    let worst_p99 = flooded.iter().map(|p| p.api_p99).max().unwrap();
    let worst_rss = flooded.iter().map(|p| p.rss_max).max().unwrap();
    let verdict = |ok: bool| if ok { "OK" } else { "MISSED" };
    println!(
        "goals under flood: report age max {worst_age} ms (< 500) {}; API p99 {:.1} ms (< 200) {}; RSS {:.1} MB (< 64) {}",
        verdict(worst_age < 500),
        worst_p99.as_secs_f64() * 1e3,
        verdict(worst_p99 < Duration::from_millis(200)),
        worst_rss as f64 / (1 << 20) as f64,
        verdict(worst_rss < 64 << 20),
    );
    println!(
        "(report age is read on the API every 50 ms: it includes up to one heartbeat, 200 ms, by construction)"
    );
}

/// Runs `flood` for `duration` while sampling the API, the hosts' report ages and the
/// router's RSS every 50 ms.
fn measure(
    lab: &Lab,
    pid: u32,
    name: &'static str,
    duration: Duration,
    flood: impl FnOnce() -> Flood,
) -> Phase {
    let client = Client::new(&lab.api_arg(), Some(Duration::from_secs(10)));
    let flood = flood();
    let start = Instant::now();
    let (mut api, mut ages, mut rss_max, mut api_errors) = (Vec::new(), Vec::new(), 0u64, 0);
    while start.elapsed() < duration {
        let t0 = Instant::now();
        match client.get::<Vec<HostView>>("/v1/hosts") {
            Ok(hosts) => {
                api.push(t0.elapsed());
                let worst = hosts
                    .iter()
                    .map(|h| h.last_report_age_ms.unwrap_or(u64::MAX))
                    .max()
                    .unwrap_or(u64::MAX);
                ages.push(worst);
            }
            Err(e) => {
                api_errors += 1;
                eprintln!("{name}: API error: {e}");
            }
        }
        rss_max = rss_max.max(rss(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (connects_per_s, slow_connects, held) = flood.stop(start.elapsed());
    api.sort();
    ages.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    Phase {
        name,
        connects_per_s,
        slow_connects,
        held,
        report_age_p99: ages[((ages.len() - 1) as f64 * 0.99) as usize],
        report_age_max: *ages.last().unwrap(),
        api_p50: pct(&api, 0.5),
        api_p99: pct(&api, 0.99),
        api_errors,
        rss_max,
    }
}

/// Resident memory of `pid`, bytes (0 when it is gone).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The attacker: threads in the core namespace (setns is per thread).
struct Flood {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    /// The pacers (each returns its connects that failed or took over 100 ms).
    threads: Vec<JoinHandle<usize>>,
    /// The half-open holder (returns how many it held).
    holder: Option<JoinHandle<usize>>,
}

impl Flood {
    fn none() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            connects: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
            holder: None,
        }
    }

    /// Connect-and-close paced at [`CONNECTS_PER_S`], and `half_open` connections that
    /// each announce a 1 MiB frame, send 64 KiB of it and stay open.
    fn start(netns: &str, link: SocketAddr, half_open: usize) -> Self {
        let mut f = Self::none();
        // Several pacers, so that a connect stuck in a full accept queue (up to its 1 s
        // timeout) does not lower the rate: each keeps its share of the schedule.
        let pacers = 16u64;
        for _ in 0..pacers {
            let (stop, connects) = (f.stop.clone(), f.connects.clone());
            let ns = netns.to_owned();
            f.threads.push(std::thread::spawn(move || {
                enter(&ns);
                let t0 = Instant::now();
                let (mut mine, mut slow) = (0u64, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    // Paced: this pacer's n-th connect is due at n / (rate / pacers) s.
                    let due = Duration::from_secs_f64(
                        mine as f64 * pacers as f64 / CONNECTS_PER_S as f64,
                    );
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let t = Instant::now();
                    let ok = TcpStream::connect_timeout(&link, Duration::from_secs(1)).is_ok();
                    mine += 1;
                    connects.fetch_add(1, Ordering::Relaxed);
                    if !ok || t.elapsed() > Duration::from_millis(100) {
                        slow += 1;
                    }
                }
                slow
            }));
        }
        if half_open > 0 {
            let stop = f.stop.clone();
            let ns = netns.to_owned();
            f.holder = Some(std::thread::spawn(move || {
                enter(&ns);
                let mut held = Vec::new();
                let body = vec![b'x'; 64 << 10];
                for _ in 0..half_open {
                    let Ok(mut s) = TcpStream::connect_timeout(&link, Duration::from_secs(1))
                    else {
                        continue;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = s.write_all(&(1u32 << 20).to_be_bytes());
                    let _ = s.write_all(&body);
                    held.push(s);
                }
                let n = held.len();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(held);
                n
            }));
        }
        f
    }

    /// Stops the flood; returns the connect rate reached, how many connects failed or
    /// took over 100 ms (the router's accept queue was full) and how many half-open
    /// connections were held.
    fn stop(self, elapsed: Duration) -> (f64, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let slow = self.threads.into_iter().map(|t| t.join().unwrap()).sum();
        let held = self.holder.map(|t| t.join().unwrap()).unwrap_or(0);
        (
            self.connects.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
            slow,
            held,
        )
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}
