//! A hand-written SVG plot of a simulation: hosts active, power and demand over time.

use std::fmt::Write;

use crate::report::SimReport;

const W: f64 = 900.0;
const PANEL_H: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 40.0;

/// Renders three stacked panels (hosts active, power W, demand MIPS) sharing the time axis.
pub fn render_svg(r: &SimReport) -> String {
    let n = r.series.len();
    let height = TOP + 3.0 * (PANEL_H + GAP) + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14">wisp simulate — {}: {:.2} kWh, {} migrations, SLATAH {:.2} %, PDM {:.3} %</text>"#,
        escape(&r.scenario),
        r.energy_kwh,
        r.migrations,
        r.slatah * 100.0,
        r.pdm * 100.0
    );
    let t_end = r.series.last().map_or(1.0, |x| x.t_s.max(1.0));
    let panels: [(&str, &str, Vec<f64>); 3] = [
        (
            "hosts active",
            "#1f77b4",
            r.series.iter().map(|x| x.hosts_active as f64).collect(),
        ),
        (
            "power (W)",
            "#d62728",
            r.series.iter().map(|x| x.power_w).collect(),
        ),
        (
            "demand (MIPS)",
            "#2ca02c",
            r.series.iter().map(|x| x.demand_mips).collect(),
        ),
    ];
    for (i, (label, colour, ys)) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + GAP);
        let ymax = ys.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.1;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            W - LEFT - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" fill="{colour}">{label}</text>"#,
            LEFT + 5.0,
            y0 + 14.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text><text x="{}" y="{}" text-anchor="end">0</text>"#,
            LEFT - 4.0,
            y0 + 10.0,
            ymax,
            LEFT - 4.0,
            y0 + PANEL_H
        );
        let mut pts = String::new();
        for (j, y) in ys.iter().enumerate() {
            let x = LEFT + (W - LEFT - RIGHT) * (r.series[j].t_s / t_end);
            let yy = y0 + PANEL_H - PANEL_H * (y / ymax);
            let _ = write!(pts, "{x:.1},{yy:.1} ");
        }
        if n > 0 {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                pts.trim_end()
            );
        }
    }
    let base = TOP + 3.0 * (PANEL_H + GAP) - GAP + 16.0;
    for hour in (0..=24).step_by(3) {
        let ts = hour as f64 * 3600.0;
        if ts > t_end {
            break;
        }
        let x = LEFT + (W - LEFT - RIGHT) * (ts / t_end);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{base}" text-anchor="middle">{hour} h</text>"#
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
