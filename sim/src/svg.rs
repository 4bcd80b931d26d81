//! A hand-written SVG plot of a simulation over its day: hosts active and on, power,
//! demand, and the energy used so far, with wisp's physical bound and published
//! baselines (CloudSim's LR-MMT and others) drawn beside wisp's own figures.
//!
//! Scales leave out the first step: it still counts the hosts on before the first
//! consolidation, and a scale that fits that spike squashes the rest of the day into the bottom of the
//! panel. A first value off the scale is clipped and its value written at the edge.

use std::fmt::Write;

use crate::report::SimReport;

const W: f64 = 960.0;
const PANEL_H: f64 = 140.0;
const LEFT: f64 = 70.0;
/// Room on the right for the end labels of the energy panel.
const RIGHT: f64 = 190.0;
const TOP: f64 = 74.0;
const GAP: f64 = 40.0;
const PLOT_W: f64 = W - LEFT - RIGHT;

/// A published total to draw beside wisp's (e.g. CloudSim's LR-MMT 1.2 for the day).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub label: String,
    pub energy_kwh: f64,
}

/// One line of a panel.
struct Line {
    label: String,
    colour: &'static str,
    dashed: bool,
    ys: Vec<f64>,
}

/// The plot without published references.
pub fn render_svg(r: &SimReport) -> String {
    render_svg_with(r, &[])
}

/// Four stacked panels sharing the time axis: hosts, power (kW), demand, and energy
/// used so far (kWh) with the physical bound and each of `refs`.
pub fn render_svg_with(r: &SimReport, refs: &[Reference]) -> String {
    let n = r.series.len();
    let ts: Vec<f64> = r.series.iter().map(|x| x.t_s).collect();
    let step = if n > 1 { ts[1] - ts[0] } else { 300.0 };
    let t_end = ts.last().map_or(step, |t| t + step).max(1.0);
    let day_h = t_end / 3600.0;
    let power_kw: Vec<f64> = r.series.iter().map(|x| x.power_w / 1000.0).collect();
    let demand: Vec<f64> = r.series.iter().map(|x| x.demand_mips).collect();
    // The engine adds the bound step by step in proportion to demand (all of it
    // served at the most efficient host's full-load point), so its curve is demand
    // scaled to end at the bound's total.
    let demand_j: f64 = demand.iter().map(|d| d * step).sum();
    let bound_w_per_mips = if demand_j > 0.0 {
        r.bound_kwh * 3.6e6 / demand_j
    } else {
        0.0
    };
    let cum = |per_step_kwh: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let mut acc = 0.0;
        (0..n)
            .map(|i| {
                acc += per_step_kwh(i);
                acc
            })
            .collect()
    };
    let used = cum(&|i| power_kw[i] * step / 3600.0);
    let bound = cum(&|i| demand[i] * bound_w_per_mips * step / 3.6e6);

    let mut s = String::new();
    let height = TOP + 4.0 * (PANEL_H + GAP) - GAP + 30.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="15">wisp simulate — {}: {} VMs on {} hosts over {day_h:.0} h</text>"#,
        escape(&r.scenario),
        r.vms,
        r.hosts
    );
    let mut sub = format!(
        "energy {:.2} kWh, physical bound {:.2} kWh",
        r.energy_kwh, r.bound_kwh
    );
    for f in refs {
        let _ = write!(sub, ", {} {:.2} kWh (published)", f.label, f.energy_kwh);
    }
    let _ = write!(
        sub,
        " · {} migrations · SLATAH {:.2} % · PDM {:.3} %",
        r.migrations,
        r.slatah * 100.0,
        r.pdm * 100.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="38" fill="#444">{}</text>"##,
        escape(&sub)
    );

    let ref_colours = ["#ff7f0e", "#8c564b", "#9467bd"];
    let mut power_lines = vec![
        Line {
            label: "wisp".into(),
            colour: "#d62728",
            dashed: false,
            ys: power_kw.clone(),
        },
        Line {
            label: "physical bound".into(),
            colour: "#7f7f7f",
            dashed: true,
            ys: demand
                .iter()
                .map(|d| d * bound_w_per_mips / 1000.0)
                .collect(),
        },
    ];
    let mut energy_lines = vec![
        Line {
            label: format!("wisp {:.1} kWh", r.energy_kwh),
            colour: "#d62728",
            dashed: false,
            ys: used,
        },
        Line {
            label: format!("bound {:.1} kWh", r.bound_kwh),
            colour: "#7f7f7f",
            dashed: true,
            ys: bound,
        },
    ];
    for (f, colour) in refs.iter().zip(ref_colours) {
        // Only the day's total is published: its average rate is the honest line.
        let avg_kw = f.energy_kwh / (t_end / 3600.0);
        power_lines.push(Line {
            label: format!("{} (day average)", f.label),
            colour,
            dashed: true,
            ys: vec![avg_kw; n],
        });
        energy_lines.push(Line {
            label: format!("{} {:.1} kWh", f.label, f.energy_kwh),
            colour,
            dashed: true,
            ys: ts.iter().map(|t| avg_kw * (t + step) / 3600.0).collect(),
        });
    }
    let panels = [
        (
            "hosts",
            vec![
                Line {
                    label: "active".into(),
                    colour: "#1f77b4",
                    dashed: false,
                    ys: r.series.iter().map(|x| x.hosts_active as f64).collect(),
                },
                Line {
                    label: "powered on".into(),
                    colour: "#9ecae1",
                    dashed: true,
                    ys: r.series.iter().map(|x| x.hosts_on as f64).collect(),
                },
            ],
            false,
        ),
        ("power (kW)", power_lines, false),
        (
            "demand (MIPS)",
            vec![Line {
                label: "VM CPU demand".into(),
                colour: "#2ca02c",
                dashed: false,
                ys: demand,
            }],
            false,
        ),
        ("energy used so far (kWh)", energy_lines, true),
    ];
    for (i, (title, lines, end_labels)) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + GAP);
        panel(&mut s, y0, title, lines, &ts, t_end, *end_labels);
    }
    time_axis(&mut s, TOP + 4.0 * (PANEL_H + GAP) - GAP, t_end);
    s.push_str("</svg>\n");
    s
}

/// The largest value to scale to: every line's maximum after the first step, unless
/// the first step is within 15 % of it (then it is simply on the scale).
fn scale_max(lines: &[Line]) -> f64 {
    let after: f64 = lines
        .iter()
        .flat_map(|l| l.ys.iter().skip(1))
        .fold(0.0, |a, &b| a.max(b));
    let first: f64 = lines
        .iter()
        .filter_map(|l| l.ys.first())
        .fold(0.0, |a, &b| a.max(b));
    if after == 0.0 || first <= after * 1.15 {
        after.max(first)
    } else {
        after
    }
}

/// A step of 1, 2 or 5 times a power of ten giving about four intervals up to `max`.
pub(crate) fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 4.0;
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    (if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    }) * p
}

fn number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn panel(
    s: &mut String,
    y0: f64,
    title: &str,
    lines: &[Line],
    ts: &[f64],
    t_end: f64,
    end_labels: bool,
) {
    let step = nice_step(scale_max(lines));
    let ymax = (scale_max(lines) / step).ceil().max(1.0) * step;
    let x_of = |t: f64| LEFT + PLOT_W * (t / t_end);
    let y_of = |v: f64| y0 + PANEL_H - PANEL_H * (v.min(ymax) / ymax);
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            LEFT + PLOT_W,
            LEFT - 5.0,
            y + 4.0,
            number(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{y0}" width="{PLOT_W}" height="{PANEL_H}" fill="none" stroke="#888"/><text x="{LEFT}" y="{}" font-weight="bold">{}</text>"##,
        y0 - 8.0,
        escape(title)
    );
    // The key, left to right under the title (or labels at the line ends).
    let mut kx = LEFT + 14.0 + 7.5 * title.chars().count() as f64;
    let first_max = lines
        .iter()
        .filter_map(|l| l.ys.first().copied())
        .fold(0.0, f64::max);
    if first_max > ymax {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#555" font-size="11">▲ {} at the start, off scale (the first step, before consolidation settles)</text>"##,
            LEFT + 6.0,
            y0 + 13.0,
            number(first_max)
        );
    }
    for (j, l) in lines.iter().enumerate() {
        let dash = if l.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        if !l.ys.is_empty() {
            let pts: String =
                l.ys.iter()
                    .zip(ts)
                    .map(|(y, t)| format!("{:.1},{:.1}", x_of(*t), y_of(*y)))
                    .collect::<Vec<_>>()
                    .join(" ");
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5"{dash} points="{pts}"/>"#,
                l.colour
            );
        }
        if end_labels {
            let end = l.ys.last().copied().unwrap_or(0.0);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{:.1}" fill="{}">{}</text>"#,
                LEFT + PLOT_W + 6.0,
                y_of(end) + 4.0 + label_nudge(lines, j, ymax),
                l.colour,
                escape(&l.label)
            );
        } else {
            let _ = writeln!(
                s,
                r#"<line x1="{kx}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}" fill="{}">{}</text>"#,
                kx + 16.0,
                y0 - 12.0,
                y0 - 12.0,
                l.colour,
                kx + 20.0,
                y0 - 8.0,
                l.colour,
                escape(&l.label)
            );
            kx += 30.0 + 7.0 * l.label.chars().count() as f64;
        }
    }
}

/// Keeps end labels that would overlap apart (12 px), in the order of their values.
fn label_nudge(lines: &[Line], j: usize, ymax: f64) -> f64 {
    let end = |l: &Line| l.ys.last().copied().unwrap_or(0.0);
    let px = PANEL_H / ymax;
    let mine = end(&lines[j]);
    let close_above = lines
        .iter()
        .enumerate()
        .filter(|(k, l)| *k < j && (end(l) - mine).abs() * px < 12.0)
        .count();
    if close_above == 0 {
        0.0
    } else {
        let sign = if lines[..j].iter().any(|l| end(l) >= mine) {
            1.0
        } else {
            -1.0
        };
        sign * 12.0 * close_above as f64
    }
}

fn time_axis(s: &mut String, y: f64, t_end: f64) {
    let hours = t_end / 3600.0;
    let every = [1.0, 2.0, 3.0, 6.0, 12.0, 24.0]
        .into_iter()
        .find(|e| hours / e <= 9.0)
        .unwrap_or(24.0);
    let mut h = 0.0;
    while h * 3600.0 <= t_end + 1.0 {
        let x = LEFT + PLOT_W * (h * 3600.0 / t_end);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{h:.0} h</text>"#,
            y + 16.0
        );
        h += every;
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepSample;

    fn day() -> SimReport {
        // 288 five-minute steps: every host on at the start, then about 40.
        let series = (0..288)
            .map(|k| StepSample {
                t_s: k as f64 * 300.0,
                hosts_active: if k == 0 { 800 } else { 40 + k % 5 },
                hosts_on: if k == 0 { 800 } else { 45 },
                power_w: if k == 0 { 80_000.0 } else { 6_000.0 },
                demand_mips: 100_000.0,
                migrations: 0,
            })
            .collect();
        SimReport {
            scenario: "cloudsim".into(),
            energy_kwh: 131.7,
            bound_kwh: 80.0,
            series,
            ..Default::default()
        }
    }

    #[test]
    fn steps_are_one_two_or_five() {
        assert_eq!(nice_step(44.0), 20.0);
        assert_eq!(nice_step(8.0), 2.0);
        assert_eq!(nice_step(130.0), 50.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn the_start_spike_does_not_set_the_scale() {
        let lines = [Line {
            label: "x".into(),
            colour: "red",
            dashed: false,
            ys: vec![800.0, 40.0, 44.0],
        }];
        assert_eq!(scale_max(&lines), 44.0);
        let svg = render_svg(&day());
        assert!(svg.contains("800 at the start, off scale"), "{svg}");
        // The hosts axis tops at 50 (the day's 44 on a step of 20 would be 60; 10s: 50).
        assert!(
            svg.contains(">60</text>") || svg.contains(">50</text>"),
            "{svg}"
        );
    }

    #[test]
    fn references_and_the_bound_are_drawn_beside_wisp() {
        let svg = render_svg_with(
            &day(),
            &[Reference {
                label: "CloudSim LR-MMT 1.2".into(),
                energy_kwh: 163.48,
            }],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("CloudSim LR-MMT 1.2 163.5 kWh"), "{svg}");
        assert!(svg.contains("bound 80.0 kWh"), "{svg}");
        assert!(svg.contains("physical bound"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2 + 3 + 1 + 3);
    }
}
