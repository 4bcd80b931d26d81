//! What the lab benches share: printing a series of times (median, min, max) next to
//! its goal or note.

/// One line: `name  median … min … max … (n=…) note`; "no runs" when `ms` is empty.
pub fn stats(name: &str, mut ms: Vec<u64>, note: &str) {
    if ms.is_empty() {
        println!("{name:<44} no runs {note}");
        return;
    }
    ms.sort_unstable();
    let (min, median, max) = (ms[0], ms[ms.len() / 2], ms[ms.len() - 1]);
    println!(
        "{name:<44} median {median:>6} ms  min {min:>6} ms  max {max:>6} ms  (n={}) {note}",
        ms.len()
    );
}
