//! Loading workload traces: the only file reading in this crate.
//!
//! Format (CloudSim's PlanetLab traces): a directory with one file per VM, one integer CPU
//! utilisation percent per line, one line per 5-minute interval. Files are taken in
//! sorted file-name order, which is how CloudSim assigns VM types in blocks.

use std::path::{Path, PathBuf};

/// CPU utilisation traces, percent (0–100), one row per VM, equally spaced samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// File name of each VM's trace (for reports).
    pub names: Vec<String>,
    /// `samples[vm][i]`: utilisation percent during sample i.
    pub samples: Vec<Vec<f64>>,
}

impl Workload {
    /// A workload built in memory (tests, synthetic benchmarks).
    pub fn from_samples(samples: Vec<Vec<f64>>) -> Self {
        let names = (0..samples.len()).map(|i| format!("vm{i:05}")).collect();
        Self { names, samples }
    }

    /// Samples per VM (the shortest trace decides).
    pub fn len(&self) -> usize {
        self.samples.iter().map(Vec::len).min().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read trace directory {dir}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read trace file {file}")]
    ReadFile {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {text:?} is not an integer CPU percent between 0 and 100")]
    BadSample {
        file: PathBuf,
        line: usize,
        text: String,
    },
    #[error("trace directory {dir} has no trace files")]
    Empty { dir: PathBuf },
}

/// Loads one day of PlanetLab traces (`…/planetlab/<day>/`), files in sorted name order.
pub fn load_planetlab_day(dir: &Path) -> Result<Workload, TraceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TraceError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    for e in entries {
        let e = e.map_err(|source| TraceError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = e.path();
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(TraceError::Empty {
            dir: dir.to_owned(),
        });
    }
    files.sort();
    let mut names = Vec::with_capacity(files.len());
    let mut samples = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| TraceError::ReadFile {
            file: file.clone(),
            source,
        })?;
        let mut row = Vec::with_capacity(289);
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            match t.parse::<u32>() {
                Ok(v) if v <= 100 => row.push(v as f64),
                _ => {
                    return Err(TraceError::BadSample {
                        file: file.clone(),
                        line: i + 1,
                        text: t.to_owned(),
                    })
                }
            }
        }
        names.push(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        samples.push(row);
    }
    Ok(Workload { names, samples })
}
