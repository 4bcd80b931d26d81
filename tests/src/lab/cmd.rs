//! Running external programs (`ip`, `ipmitool`, ...) and turning failures into errors
//! that say which command failed and what it printed.
//!
//! Nothing the lab passes on a command line is secret: passwords go through files
//! (`ipmitool -f`), so echoing argv into an error is safe.

use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot run `{command}`: is it installed and on PATH?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Renders a command for an error message.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing its output, without judging the exit status.
pub fn output(cmd: &mut Command) -> Result<Output, CmdError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| CmdError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(CmdError::Failed {
            command: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// `ip netns exec <ns> <program> <args...>` as a `Command` ready to be configured.
pub fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}
