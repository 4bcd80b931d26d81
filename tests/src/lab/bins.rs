//! Where the lab finds the binaries it runs: `genie`, `router` and its own helpers.
//!
//! `$WISP_BIN_DIR` if set, else the cargo target directory of the running executable
//! (`<target>/debug/deps/test-xxx` or `<target>/debug/wisp-demo` → `<target>/debug`).
//! The lab never builds anything: a missing binary is an error telling what to run.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BinError {
    #[error(
        "binary `{name}` not found: run `cargo build --workspace --bins` first (looked in {dir})"
    )]
    Missing { name: String, dir: PathBuf },
    #[error("cannot locate the running executable to find the binaries; set WISP_BIN_DIR")]
    NoExe(#[source] std::io::Error),
}

/// The directory binaries are looked up in.
pub fn bin_dir(override_dir: Option<&Path>) -> Result<PathBuf, BinError> {
    if let Some(d) = override_dir {
        return Ok(d.to_owned());
    }
    if let Some(d) = std::env::var_os("WISP_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(BinError::NoExe)?;
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of binary `name` in `dir`, which must exist.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf, BinError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(BinError::Missing {
            name: name.to_owned(),
            dir: dir.to_owned(),
        })
    }
}

/// Where a bench finds the lab's binaries: benches build in release, but `cargo build
/// --workspace --bins` builds debug binaries, so `<target>/debug` unless
/// `WISP_BIN_DIR` is set (then `None`: [`bin_dir`] reads it).
pub fn bench_bin_dir() -> Option<PathBuf> {
    if std::env::var_os("WISP_BIN_DIR").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    // <target>/release/deps/<bench>-xxx -> <target>/debug
    Some(exe.parent()?.parent()?.parent()?.join("debug"))
}
