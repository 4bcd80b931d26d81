//! `router man --out DIR` and `router completions SHELL`: the man pages (one per
//! command, `router.1`, `router-vm-migrate.1`, ...) and shell completions, generated
//! from the same command tree that parses the arguments, so they never drift from it.
//! The Debian package build runs both.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot write the man pages to {dir}")]
    Man {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `router.1` and one page per subcommand into `dir` (created if missing);
/// returns how many pages.
pub fn man(dir: &Path) -> Result<usize, DocsError> {
    let err = |source| DocsError::Man {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut cmd = super::command();
    cmd.build();
    let mut n = 0;
    write_pages(&cmd, "router", dir, &mut n).map_err(err)?;
    Ok(n)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, n: &mut usize) -> std::io::Result<()> {
    let page = cmd.clone().name(name.to_owned());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)?;
    *n += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, n)?;
    }
    Ok(())
}

/// The completion script for `shell`, on stdout.
pub fn completions(shell: Shell) {
    let mut cmd = super::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into a buffer first: clap_complete panics on a write error (`| head`).
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "router", &mut buf);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_for_every_command() {
        let dir = std::env::temp_dir().join(format!("wisp-man-{}", std::process::id()));
        let n = man(&dir).expect("man pages");
        assert!(n > 20, "{n} pages");
        let top = std::fs::read_to_string(dir.join("router.1")).expect("router.1");
        assert!(top.contains(".TH router"), "{top}");
        let mig = std::fs::read_to_string(dir.join("router-vm-migrate.1")).expect("page");
        assert!(mig.contains("destination host"), "{mig}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
