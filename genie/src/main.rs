//! genie: the agent on every server (thin CLI over the `genie` library).
//!
//! `genie [--config FILE] [run]` runs the agent; `genie report --once --json` prints
//! one full report as JSON without a router. The config defaults to
//! /etc/wisp/genie.toml, where the Debian package puts it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::{watch, Notify};
use wisp_common::proto::Report;
use wisp_common::secret::Secret;

use genie::commands::Hypervisor;
use genie::config::GenieConfig;
use genie::host_sleep::SystemPower;
use genie::link::{self, Link, LinkConfig};
use genie::manager::VmManager;
use genie::metrics::{MetricsSource, SysinfoMetrics};
use genie::report::Reporter;

#[derive(Debug, Parser)]
#[command(
    name = "genie",
    version,
    about = "wisp agent: host metrics, QEMU VMs, power"
)]
struct Cli {
    /// This server's genie.toml.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Log lines as text or as JSON objects (for a log collector).
    #[arg(long, value_enum, global = true, env = "WISP_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Where the genie looks without `--config`.
const DEFAULT_CONFIG: &str = "/etc/wisp/genie.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines (ANSI colours only on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, fields, message.
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent (the default).
    Run,
    /// Print a report of this host without contacting the router.
    Report {
        /// One report, then exit (the only mode so far).
        #[arg(long)]
        once: bool,
        /// As JSON of wisp_common::proto::Report.
        #[arg(long)]
        json: bool,
    },
    /// Write the man page genie.1 into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the shell completion script (bash, zsh or fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Check a genie.toml and the secret file it names without starting anything:
    /// "ok" and exit 0, or the first problem and exit 1.
    CheckConfig {
        /// The genie.toml to check (default: --config).
        file: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = real_main() {
        // One line, whole cause chain, no backtrace: this is for operators.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn real_main() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if e.kind() == clap::error::ErrorKind::DisplayHelp
                || e.kind() == clap::error::ErrorKind::DisplayVersion =>
        {
            e.exit()
        }
        // One `error:` line and exit 1, like every other error.
        Err(e) => bail!("{}", usage_line(&e)),
    };
    init_logging(cli.log_format);
    let report = match cli.cmd {
        Some(Cmd::Man { out }) => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let mut buf = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut buf)?;
            let page = out.join("genie.1");
            std::fs::write(&page, buf)
                .with_context(|| format!("cannot write {}", page.display()))?;
            return Ok(());
        }
        Some(Cmd::Completions { shell }) => {
            let mut buf = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "genie", &mut buf);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &buf);
            return Ok(());
        }
        Some(Cmd::CheckConfig { file }) => {
            return check_config(file.as_ref().unwrap_or(&cli.config))
        }
        None | Some(Cmd::Run) => false,
        Some(Cmd::Report { once, json }) => {
            if !once || !json {
                bail!("only `report --once --json` is supported");
            }
            true
        }
    };
    let cfg = GenieConfig::load(&cli.config)?;
    // One thread: the genie's work is tiny and this keeps its footprint tiny too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    if report {
        rt.block_on(report_once(cfg))
    } else {
        rt.block_on(run(cfg))
    }
}

/// clap's usage error without its usage block, on one line.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .flat_map(str::split_whitespace)
        .collect();
    let msg = words.join(" ");
    format!(
        "{} (see --help)",
        msg.strip_prefix("error: ").unwrap_or(&msg)
    )
}

/// `genie check-config FILE`: the config and its cluster secret as `run` would read
/// them, starting nothing.
fn check_config(file: &std::path::Path) -> Result<()> {
    let cfg = GenieConfig::load(file)?;
    Secret::cluster_from_file(&cfg.secret_file)
        .with_context(|| format!("{}: secret_file", file.display()))?;
    println!(
        "{}: ok (host {}, router {}, migration_ports {}; cluster secret readable)",
        file.display(),
        cfg.host,
        cfg.router.join(", "),
        cfg.migration_ports
    );
    Ok(())
}

/// The VM manager with genie.toml's accelerator (probed once, here), networks and
/// image directories.
fn vm_manager(cfg: &GenieConfig, changes: Arc<Notify>) -> Result<VmManager> {
    let (accel, note) = genie::accel::resolve(cfg.accel, std::path::Path::new("/dev/kvm"))?;
    tracing::info!(accel = accel.as_str(), "VMs run under this accelerator");
    let opts = genie::launch::VmOptions {
        accel,
        networks: cfg.networks.clone(),
        image_dirs: cfg.image_dirs.clone(),
        migration_ports: cfg.migration_ports,
    };
    Ok(VmManager::with_options(
        &cfg.vm_dir,
        &cfg.qemu,
        changes,
        opts,
        note,
    ))
}

async fn report_once(cfg: GenieConfig) -> Result<()> {
    let mut metrics = SysinfoMetrics::new()?;
    // CPU usage is a difference between two samples.
    let _ = metrics.sample();
    let vms = vm_manager(&cfg, Arc::new(Notify::new()))?;
    vms.learn_cpu_models().await;
    vms.scan();
    let settle = vms.settle(Duration::from_secs(3));
    let (_, ()) = tokio::join!(
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL),
        settle
    );
    let report = Report {
        gen: 1,
        sent_at_ms: wisp_common::time::unix_ms(),
        metrics: Some(metrics.sample()?),
        vms: Some(vms.statuses()),
        power: Some(Box::new(
            genie::power_caps::learn_system(&cfg.sys_power_dir(), cfg.wol_interface.as_deref())
                .await,
        )),
        virt: vms.virt().map(Box::new),
        ..Default::default()
    };
    if let Some(v) = report
        .vms
        .iter()
        .flatten()
        .find(|v| v.state == wisp_common::VmRunState::Unreachable)
    {
        // QEMU serves one QMP client at a time: a running genie daemon holds the socket.
        tracing::warn!(vm = %v.id, socket = %v.qmp_socket.display(),
            "QMP socket does not answer (a running genie holds it, or qemu hangs); reported as unreachable");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(cfg: GenieConfig) -> Result<()> {
    let secret = Secret::cluster_from_file(&cfg.secret_file)?;
    std::fs::create_dir_all(&cfg.vm_dir)
        .with_context(|| format!("cannot create vm_dir {}", cfg.vm_dir.display()))?;
    let changes = Arc::new(Notify::new());
    let vms = vm_manager(&cfg, changes.clone())?;
    let learner = vms.clone();
    tokio::spawn(async move { learner.learn_cpu_models().await });
    let found = vms.scan();
    let lease_file = cfg.vm_dir.join("lease");
    let lease_ms = genie::lease::read_lease_file(&lease_file);
    let lease = genie::lease::spawn(lease_ms, Some(lease_file), vms.clone())?;
    let instance = link::random_instance();
    // Replicated routers: a liveness lease in etcd of our own, with its own self-fence.
    let _liveness = if cfg.etcd.is_empty() {
        None
    } else {
        let ttl = Duration::from_millis(cfg.etcd_ttl_ms);
        let local = genie::liveness::local_deadline(ttl).as_millis() as u64;
        let fence = genie::lease::spawn(local, None, vms.clone())?;
        Some(genie::liveness::spawn(
            genie::liveness::LivenessConfig {
                endpoints: cfg.etcd.clone(),
                cluster: cfg.cluster.clone(),
                host: cfg.host.clone(),
                instance,
                ttl,
            },
            fence,
            Arc::new(vms.clone()),
        )?)
    };
    tracing::info!(host = %cfg.host, router = %cfg.router.join(", "), vms = found, lease_ms, instance, "genie started");

    let link = Link::new(
        LinkConfig {
            host: cfg.host.clone(),
            routers: cfg.router.clone(),
            secret,
            heartbeat_ms: cfg.heartbeat_ms,
            metrics_ms: cfg.metrics_ms,
            address: cfg.address,
            instance,
        },
        Reporter::new(SysinfoMetrics::new()?),
        vms,
        SystemPower {
            wol_interface: cfg.wol_interface.clone(),
            suspend_command: cfg.suspend_command.clone(),
            sys_power_dir: cfg.sys_power_dir(),
        },
        lease,
        changes,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down (VMs keep running)"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down (VMs keep running)"),
        }
        let _ = stop_tx.send(true);
    });
    // Harmless without systemd (no NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "sd_notify READY failed");
    }
    let link_run = link.run(stop_rx);
    tokio::pin!(link_run);
    // The watchdog is pinged from the same single-threaded runtime that runs the link
    // and the VM tasks: a genie whose loop is wedged (a blocking call, a spin) stops
    // pinging and systemd restarts it; its VMs outlive that (KillMode=process).
    match sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
        None => link_run.await,
        Some(timeout) => {
            let mut tick = tokio::time::interval(timeout / 2);
            loop {
                tokio::select! {
                    () = &mut link_run => break,
                    _ = tick.tick() => {
                        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                            tracing::warn!(error = %e, "sd_notify WATCHDOG failed");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
