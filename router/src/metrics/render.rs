//! The Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`, then
//! samples. Names follow Prometheus' conventions (base units, `_total` on counters),
//! which `promtool check metrics` enforces.

use std::fmt::Write;

use super::registry::{Counter, Histogram, LabeledCounter};

/// Builds one exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(v));
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.header(name, "gauge", help);
        self.sample(name, &[], v);
    }

    /// A gauge family with one sample per label set.
    pub fn gauges(&mut self, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
        self.header(name, "gauge", help);
        for (labels, v) in rows {
            self.sample(name, labels, *v);
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, c: &Counter) {
        self.counter_value(name, help, c.get() as f64);
    }

    pub fn counter_value(&mut self, name: &str, help: &str, v: f64) {
        self.header(name, "counter", help);
        self.sample(name, &[], v);
    }

    /// A counter family labelled `label` (empty families still get their header).
    pub fn labeled(&mut self, name: &str, help: &str, label: &str, c: &LabeledCounter) {
        self.header(name, "counter", help);
        for (value, n) in c.values() {
            self.sample(name, &[(label, value)], n as f64);
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let (buckets, sum, count) = h.read();
        let bucket = format!("{name}_bucket");
        for (le, n) in buckets {
            self.sample(&bucket, &[("le", &number(le))], n as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, `-0` as `0`.
fn number(v: f64) -> String {
    let v = v + 0.0;
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format() {
        let mut e = Exposition::default();
        e.gauges(
            "wisp_hosts",
            "Hosts.",
            &[(vec![("state", "up"), ("power", "on")], 2.0)],
        );
        static H: Histogram = Histogram::new(&[0.5]);
        H.observe(0.25);
        e.histogram("wisp_x_seconds", "X.", &H);
        let t = e.finish();
        assert!(t.contains("# TYPE wisp_hosts gauge\nwisp_hosts{state=\"up\",power=\"on\"} 2\n"));
        assert!(t.contains("wisp_x_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(t.contains("wisp_x_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(t.contains("wisp_x_seconds_sum 0.25\n"));
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
