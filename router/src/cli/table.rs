//! Plain-text tables for the CLI: columns padded to the widest cell.

/// Renders rows under a header, two spaces between columns.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Bytes as a short human figure (MiB/GiB).
pub fn bytes(b: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    let f = b as f64;
    if f >= GIB {
        format!("{:.1}G", f / GIB)
    } else {
        format!("{:.0}M", f / (1024.0 * 1024.0))
    }
}

/// Seconds with one decimal; `-0.0` (what summing no f64 gives) reads as `0.0 s`.
pub fn secs(s: f64) -> String {
    // Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
    format!("{:.1} s", s + 0.0)
}

/// `1 incident`, `2 incidents`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let t = render(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nxyz  1\n");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
        assert_eq!(bytes(64 * 1024 * 1024), "64M");
    }

    #[test]
    fn empty_table_is_its_header_line() {
        assert_eq!(render(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn seconds_and_counts_read_well() {
        let none: f64 = Vec::<f64>::new().into_iter().sum();
        assert_eq!(secs(none), "0.0 s");
        assert_eq!(secs(2.25), "2.2 s");
        assert_eq!(count(1, "incident", "incidents"), "1 incident");
        assert_eq!(count(0, "incident", "incidents"), "0 incidents");
    }
}
