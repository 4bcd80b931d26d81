//! `router simulate`: replays one day of CPU traces through the same planner and
//! policy code the daemon runs (`wisp_planner::plan` via `wisp_sim::simulate`), in this
//! process (no daemon needed), prints the metrics next to the published CloudSim
//! baselines for that day, and writes an SVG plot (hosts, power, demand over the day).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;
use wisp_sim::{
    baseline, load_planetlab_day, render_svg_with, simulate, Reference, Scenario, SimReport,
};

use super::table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// CloudSim's accounting: hosts switch off and on instantly, no standby draw.
    Cloudsim,
    /// 20 s wakes, 8 W standby, idle power of empty running hosts, N+1 reserve.
    Realistic,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Trace root holding `planetlab/<day>/` (one file per VM, 288 integer lines): the
    /// PlanetLab traces CloudSim publishes (see sim/README.md). Required; there is no
    /// default because the traces are not part of wisp.
    #[arg(long, value_name = "DIR")]
    pub traces: Option<PathBuf>,
    /// Day directory, e.g. 20110303 (or 0303).
    #[arg(long)]
    pub day: String,
    /// How hosts are accounted: CloudSim's instant switches, or realistic wakes.
    #[arg(long, value_enum, default_value_t = ScenarioArg::Cloudsim)]
    pub scenario: ScenarioArg,
    /// Write the plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("no traces given: pass --traces DIR, a directory holding planetlab/<day>/ with one file per VM (the PlanetLab traces published by CloudSim: {TRACES_SOURCE}; see sim/README.md)")]
    NoTraces,
    #[error("cannot load the traces of day {day} (looked in {dir}; --traces names the directory holding planetlab/)")]
    Traces {
        day: String,
        dir: PathBuf,
        #[source]
        source: wisp_sim::TraceError,
    },
    #[error("cannot write the plot to {path}")]
    Svg {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the PlanetLab traces come from (named in the error when `--traces` is missing).
const TRACES_SOURCE: &str = "github.com/Cloudslab/cloudsim, modules/cloudsim-examples/src/main/resources/workload/planetlab";

/// One row of the comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub policy: String,
    pub energy_kwh: f64,
    pub migrations: usize,
    pub slav_pct: f64,
    pub slatah_pct: f64,
    pub pdm_pct: f64,
}

/// What `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct SimulateOutput {
    pub day: String,
    pub scenario: String,
    pub report: SimReport,
    /// The published baselines of this day (empty for other trace sets).
    pub baselines: Vec<Row>,
    pub svg: Option<PathBuf>,
}

/// `0303` means the 2011 PlanetLab day (the days of sim/README.md).
fn day_name(d: &str) -> String {
    if d.len() == 4 && d.chars().all(|c| c.is_ascii_digit()) {
        format!("2011{d}")
    } else {
        d.to_owned()
    }
}

/// Runs the simulation; returns the output and its text form.
pub fn run(args: &SimulateArgs) -> Result<(SimulateOutput, String), SimulateError> {
    let traces = args.traces.as_ref().ok_or(SimulateError::NoTraces)?;
    let day = day_name(&args.day);
    let dir = traces.join("planetlab").join(&day);
    let w = load_planetlab_day(&dir).map_err(|source| SimulateError::Traces {
        day: day.clone(),
        dir: dir.clone(),
        source,
    })?;
    let sc = match args.scenario {
        ScenarioArg::Cloudsim => Scenario::cloudsim(),
        ScenarioArg::Realistic => Scenario::realistic(),
    };
    let report = simulate(&w, &sc, &sc.default_policy());
    if let Some(path) = &args.svg {
        // The best published CloudSim policy of the day (LR-MMT 1.2, listed first).
        let refs: Vec<Reference> = baseline::for_day(&day)
            .iter()
            .take(1)
            .map(|b| Reference {
                label: format!("CloudSim {}", b.policy),
                energy_kwh: b.energy_kwh,
            })
            .collect();
        std::fs::write(path, render_svg_with(&report, &refs)).map_err(|source| {
            SimulateError::Svg {
                path: path.clone(),
                source,
            }
        })?;
    }
    let baselines: Vec<Row> = baseline::for_day(&day)
        .iter()
        .map(|b| Row {
            policy: b.policy.to_owned(),
            energy_kwh: b.energy_kwh,
            migrations: b.migrations,
            slav_pct: b.slav_pct,
            slatah_pct: b.slatah_pct,
            pdm_pct: b.pdm_pct,
        })
        .collect();
    let out = SimulateOutput {
        day,
        scenario: report.scenario.clone(),
        report,
        baselines,
        svg: args.svg.clone(),
    };
    let text = text(&out);
    Ok((out, text))
}

fn text(o: &SimulateOutput) -> String {
    let mut s = format!("day {}\n{}\n", o.day, o.report);
    let ours = Row {
        policy: format!("wisp ({})", o.scenario),
        energy_kwh: o.report.energy_kwh,
        migrations: o.report.migrations,
        slav_pct: o.report.slav * 100.0,
        slatah_pct: o.report.slatah * 100.0,
        pdm_pct: o.report.pdm * 100.0,
    };
    if o.baselines.is_empty() {
        s.push_str("\nno published baseline for this day\n");
    } else {
        // Ratios against the first baseline (LR-MMT 1.2, the best published energy).
        let base = &o.baselines[0];
        let rows: Vec<Vec<String>> = o
            .baselines
            .iter()
            .chain(std::iter::once(&ours))
            .map(|r| {
                vec![
                    r.policy.clone(),
                    format!("{:.2}", r.energy_kwh),
                    format!("{:.3}", r.energy_kwh / base.energy_kwh),
                    r.migrations.to_string(),
                    format!("{:.3}", r.migrations as f64 / base.migrations.max(1) as f64),
                    format!("{:.5}", r.slav_pct),
                    format!("{:.2}", r.slatah_pct),
                    format!("{:.3}", r.pdm_pct),
                ]
            })
            .collect();
        s.push('\n');
        s.push_str(&table::render(
            &[
                "POLICY",
                "ENERGY kWh",
                "x BASE",
                "MIGRATIONS",
                "x BASE",
                "SLAV %",
                "SLATAH %",
                "PDM %",
            ],
            &rows,
        ));
    }
    if let Some(p) = &o.svg {
        s.push_str(&format!("plot written to {}\n", p.display()));
    }
    s
}
