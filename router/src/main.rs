//! `router`: the daemon (`router serve`) and the CLI for everything else.

use std::process::ExitCode;

use router::cli::{self, Cmd, Parsed};
use router::config::RouterConfig;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Parsed::Run(cli) => cli,
        Parsed::Info(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Usage(line) => {
            eprintln!("{line}");
            return ExitCode::FAILURE;
        }
    };
    match &cli.command {
        Cmd::Serve { config, log_format } => serve(config, *log_format),
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

fn serve(path: &std::path::Path, log_format: cli::LogFormat) -> ExitCode {
    cli::init_logging(log_format);
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
