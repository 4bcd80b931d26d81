//! `wisp-lab-chassis <hostdir> ...`: a lab host's chassis, as seen by its BMC.
//!
//! ipmi_sim runs it synchronously (popen) as `<prog> <hostdir> get power` (prints
//! `power:0|1`) and `<prog> <hostdir> set power 1|0`, `set reset 1`, `set shutdown 1`,
//! `set boot <dev>`. It must answer within ~1 s and leave nothing holding its stdout,
//! which is why power-on starts the genie fully detached.
//!
//! The genie's `suspend_command` is `<prog> <hostdir> suspend`: it is run by the genie,
//! inside the host namespace, and freezes the genie; so it detaches a copy of itself
//! (`suspend-now`) that is spared by the freeze, and returns at once. A suspended host
//! is off as the BMC sees it (`power:0`); power-on wakes it, power-off (hard or soft)
//! kills it without a word (S3 to S5).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use wisp_tests::lab::power::{self, OffHow, Power};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, rest)) = args.split_first() else {
        bail!("usage: wisp-lab-chassis <hostdir> get power | set <param> <value> ... | suspend");
    };
    let dir = PathBuf::from(dir);
    // ipmi_sim may insert words of its own (an MC address) before the verb: skip to it.
    let verb_at = rest
        .iter()
        .position(|a| matches!(a.as_str(), "get" | "set" | "suspend" | "suspend-now"))
        .context("no verb (get, set, suspend) in the arguments")?;
    let verb = rest[verb_at].as_str();
    let params = &rest[verb_at + 1..];
    match verb {
        "get" => get(&dir, params),
        "set" => set(&dir, params),
        "suspend" => suspend_detached(&dir),
        "suspend-now" => {
            // Give the genie a moment to see its command succeed and log it.
            std::thread::sleep(std::time::Duration::from_millis(100));
            power::suspend(&dir, Some(std::process::id() as i32)).context("suspend")
        }
        _ => unreachable!("verb matched above"),
    }
}

fn get(dir: &Path, params: &[String]) -> Result<()> {
    let params: Vec<&str> = if params.is_empty() {
        vec!["power"]
    } else {
        params.iter().map(String::as_str).collect()
    };
    for p in params {
        if p == "power" {
            let on = power::state(dir)? == Power::On;
            println!("power:{}", u8::from(on));
        }
    }
    Ok(())
}

fn set(dir: &Path, params: &[String]) -> Result<()> {
    for pair in params.chunks(2) {
        let (param, value) = (pair[0].as_str(), pair.get(1).map(String::as_str));
        match (param, value) {
            ("power", Some("1")) => {
                power::power_on(dir)?;
            }
            ("power", Some("0")) => power::power_off(dir, OffHow::Hard, None)?,
            ("shutdown", Some("1")) => power::power_off(dir, OffHow::Soft, None)?,
            // A reset of a host that is off does nothing (as on real iron).
            ("reset", Some("1")) if power::state(dir)? == Power::On => {
                power::power_off(dir, OffHow::Hard, None)?;
                power::power_on(dir)?;
            }
            // Boot device and other parameters do not matter in the lab.
            _ => {}
        }
    }
    Ok(())
}

/// Starts `suspend-now` detached; its output (an error, if the suspend fails) goes to
/// `<hostdir>/suspend.log`, since nobody waits for it.
fn suspend_detached(dir: &Path) -> Result<()> {
    let me = std::env::current_exe().context("locating myself")?;
    let log_path = dir.join("suspend.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let status = Command::new("setsid")
        .arg("-f")
        .arg(me)
        .arg(dir)
        .arg("suspend-now")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .context("starting the detached suspend")?;
    if !status.success() {
        bail!("setsid -f failed: {status}");
    }
    Ok(())
}
