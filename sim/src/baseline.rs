//! The published CloudSim 3.0.3 figures we compare against (sim/README.md, "Baselines").

/// One row of the baseline table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub day: &'static str,
    pub policy: &'static str,
    pub energy_kwh: f64,
    pub migrations: usize,
    /// Percent, as published.
    pub slav_pct: f64,
    pub slatah_pct: f64,
    pub pdm_pct: f64,
    pub host_shutdowns: usize,
}

// One argument per column keeps the table below readable as a table.
#[allow(clippy::too_many_arguments)]
const fn row(
    day: &'static str,
    policy: &'static str,
    energy_kwh: f64,
    migrations: usize,
    slav_pct: f64,
    slatah_pct: f64,
    pdm_pct: f64,
    host_shutdowns: usize,
) -> Baseline {
    Baseline {
        day,
        policy,
        energy_kwh,
        migrations,
        slav_pct,
        slatah_pct,
        pdm_pct,
        host_shutdowns,
    }
}

pub const BASELINES: [Baseline; 9] = [
    row(
        "20110303",
        "LR-MMT 1.2",
        163.48,
        27_859,
        0.00464,
        5.86,
        0.08,
        5_053,
    ),
    row(
        "20110303",
        "MAD-MMT 2.5",
        185.79,
        26_556,
        0.00334,
        5.05,
        0.07,
        5_828,
    ),
    row(
        "20110303",
        "THR-MMT 0.8",
        192.62,
        26_711,
        0.00318,
        4.91,
        0.06,
        5_885,
    ),
    row(
        "20110306",
        "LR-MMT 1.2",
        123.28,
        20_878,
        0.00462,
        5.88,
        0.08,
        4_018,
    ),
    row(
        "20110306",
        "MAD-MMT 2.5",
        140.07,
        20_682,
        0.00374,
        5.20,
        0.07,
        4_593,
    ),
    row(
        "20110306",
        "THR-MMT 0.8",
        144.74,
        20_908,
        0.00360,
        5.13,
        0.07,
        4_682,
    ),
    row(
        "20110309",
        "LR-MMT 1.2",
        142.09,
        24_959,
        0.00602,
        6.55,
        0.09,
        4_563,
    ),
    row(
        "20110309",
        "MAD-MMT 2.5",
        163.01,
        23_476,
        0.00391,
        5.25,
        0.07,
        5_178,
    ),
    row(
        "20110309",
        "THR-MMT 0.8",
        165.27,
        23_475,
        0.00405,
        5.26,
        0.08,
        5_139,
    ),
];

/// The physical bound of each day (sim/README.md, "The physical bound"), kWh.
pub const BOUNDS_KWH: [(&str, f64); 3] =
    [("20110303", 116.7), ("20110306", 93.9), ("20110309", 101.7)];

/// The rows of `day`, best energy (LR-MMT 1.2) first.
pub fn for_day(day: &str) -> Vec<Baseline> {
    BASELINES.iter().copied().filter(|b| b.day == day).collect()
}
