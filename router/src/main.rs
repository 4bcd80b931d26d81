//! `router`: the daemon (`router serve`) and the CLI for everything else.

use std::process::ExitCode;

use clap::Parser;
use router::cli::{self, Cli, Cmd};
use router::config::RouterConfig;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Cmd::Serve { config } => serve(config),
        Cmd::CheckConfig { file } => match router::config::check(file) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}", wisp_common::error::chain(&e));
                ExitCode::FAILURE
            }
        },
        _ => match cli::run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = (|| -> anyhow::Result<()> {
        let config = RouterConfig::load(path)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async {
            let shutdown = router::daemon::shutdown_on_signals();
            router::daemon::run(config, shutdown).await
        })?;
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // {:#} prints the whole chain: "state store: cannot write ...: No space left".
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
