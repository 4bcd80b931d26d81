//! One BMC per host: OpenIPMI `ipmi_sim` in its own namespace, IPMI 2.0 LAN on port
//! 623, chassis control wired to the host through `wisp-lab-chassis <hostdir>`.
//!
//! The admin password is random per lab and lives only in a 0600 file (for the router
//! and for `ipmitool -f`) and in lan.conf (which ipmi_sim needs, also 0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::cmd::{self, CmdError};

#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("cannot write BMC file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // getrandom's error implements std::error::Error only with its "std" feature.
    #[error("cannot get random bytes for a secret: {reason}")]
    Random { reason: String },
    #[error("cannot start ipmi_sim for {host}")]
    Start {
        host: String,
        #[source]
        source: CmdError,
    },
}

/// Files of one BMC.
#[derive(Debug, Clone)]
pub struct BmcFiles {
    pub dir: PathBuf,
    pub lan_conf: PathBuf,
    pub emu: PathBuf,
    pub state_dir: PathBuf,
    pub password_file: PathBuf,
    pub log: PathBuf,
}

/// Writes a 0600 file.
pub fn write_private(path: &Path, content: &[u8]) -> Result<(), BmcError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BmcError::Write {
            path: path.to_owned(),
            source,
        })?;
    f.write_all(content).map_err(|source| BmcError::Write {
        path: path.to_owned(),
        source,
    })
}

/// A random printable secret of `bytes` random bytes (hex encoded).
pub fn random_secret(bytes: usize) -> Result<String, BmcError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| BmcError::Random {
        reason: e.to_string(),
    })?;
    Ok(hex::encode(b))
}

/// Writes lan.conf, the emu file, the password file and an empty state dir for the
/// BMC of `host` at `ip`, whose chassis program is `chassis_cmd`.
pub fn write_files(
    dir: &Path,
    host: &str,
    ip: std::net::Ipv4Addr,
    chassis_cmd: &str,
    index: usize,
) -> Result<BmcFiles, BmcError> {
    let w = |path: &Path, s: &str| {
        fs::write(path, s).map_err(|source| BmcError::Write {
            path: path.to_owned(),
            source,
        })
    };
    fs::create_dir_all(dir.join("state")).map_err(|source| BmcError::Write {
        path: dir.join("state"),
        source,
    })?;
    // 16 hex chars: IPMI 1.5 passwords are limited to 16 bytes, 2.0 to 20.
    let password = random_secret(8)?;
    let files = BmcFiles {
        dir: dir.to_owned(),
        lan_conf: dir.join("lan.conf"),
        emu: dir.join("bmc.emu"),
        state_dir: dir.join("state"),
        password_file: dir.join("admin.password"),
        log: dir.join("ipmi_sim.log"),
    };
    write_private(&files.password_file, password.as_bytes())?;
    let lan = format!(
        "name \"{host}-bmc\"\n\
         set_working_mc 0x20\n\
         startlan 1\n\
         \x20 addr {ip} 623\n\
         \x20 priv_limit admin\n\
         \x20 allowed_auths_callback md2 md5 straight\n\
         \x20 allowed_auths_user md2 md5 straight\n\
         \x20 allowed_auths_operator md2 md5 straight\n\
         \x20 allowed_auths_admin md2 md5 straight\n\
         \x20 guid a123456789abcdefa123456789ab{index:04x}\n\
         endlan\n\
         chassis_control \"{chassis_cmd}\"\n\
         user 2 true \"admin\" \"{password}\" admin 10 md2 md5 straight\n"
    );
    write_private(&files.lan_conf, lan.as_bytes())?;
    w(
        &files.emu,
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\n\
         mc_enable 0x20\n",
    )?;
    Ok(files)
}

/// Starts ipmi_sim in namespace `ns` (the returned child is ipmi_sim itself: `ip netns
/// exec` execs it).
pub fn start(ns: &str, host: &str, f: &BmcFiles) -> Result<Child, BmcError> {
    let log = fs::File::create(&f.log).map_err(|source| BmcError::Write {
        path: f.log.clone(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| BmcError::Write {
        path: f.log.clone(),
        source,
    })?;
    let mut c = cmd::in_ns(ns, "ipmi_sim");
    c.arg("-n")
        .arg("-c")
        .arg(&f.lan_conf)
        .arg("-f")
        .arg(&f.emu)
        .arg("-s")
        .arg(&f.state_dir)
        .current_dir(&f.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    c.spawn().map_err(|source| BmcError::Start {
        host: host.to_owned(),
        source: CmdError::Spawn {
            command: cmd::describe(&c),
            source,
        },
    })
}
