//! `router init`: a working configuration from a few answers. It writes router.toml,
//! a fresh cluster secret and the BMC password files (mode 0600) into /etc/wisp (or
//! `--dir`), and prints the genie.toml of every server. Answers come from flags; on a
//! terminal, missing ones are asked for. Secrets never come from the command line:
//! the BMC password is typed (without echo) or read from stdin.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

/// The genie link's port when `--listen` names only an address.
const DEFAULT_LINK_PORT: u16 = 7100;

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Where to write router.toml, cluster.secret and the BMC password files.
    #[arg(long, default_value = "/etc/wisp", value_name = "DIR")]
    pub dir: PathBuf,
    /// The router's address on the servers' network (genies connect here), IP or
    /// IP:PORT (port 7100 by default).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A server: NAME=ADDRESS,mac=MAC[,bmc=IP[:PORT]]; repeat for each server.
    #[arg(long = "host", value_name = "SPEC", value_parser = parse_host)]
    pub hosts: Vec<HostSpec>,
    /// The BMC user name (the password is asked for, or read from stdin).
    #[arg(long, default_value = "admin")]
    pub bmc_user: String,
    /// The router's state directory.
    #[arg(long, default_value = "/var/lib/wisp/router", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The router's network interface for Wake-on-LAN frames (e.g. eth0).
    #[arg(long, value_name = "IFACE")]
    pub wol_interface: Option<String>,
    /// Replace files that exist already (the cluster secret too: every genie then
    /// needs the new one).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    pub name: String,
    pub address: IpAddr,
    pub mac: String,
    pub bmc: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Answer(String),
    #[error("{path} exists already: pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the answer from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("cannot read random bytes for the cluster secret")]
    Random(#[source] std::io::Error),
}

fn parse_host(s: &str) -> Result<HostSpec, String> {
    let bad =
        |why: &str| format!("--host {s:?}: {why} (expected NAME=ADDRESS,mac=MAC[,bmc=IP[:PORT]])");
    let mut parts = s.split(',');
    let first = parts.next().unwrap_or_default();
    let (name, addr) = first
        .split_once('=')
        .ok_or_else(|| bad("no NAME=ADDRESS"))?;
    wisp_common::HostId::new(name).map_err(|e| bad(&e.to_string()))?;
    let address: IpAddr = addr
        .parse()
        .map_err(|_| bad("ADDRESS is not an IP address"))?;
    let (mut mac, mut bmc) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => {
                m.parse::<wisp_bmc::MacAddr>()
                    .map_err(|_| bad("mac is not a MAC address like 02:00:00:00:00:01"))?;
                mac = Some(m.to_owned());
            }
            Some(("bmc", b)) => {
                let ok = b.parse::<IpAddr>().is_ok() || b.parse::<SocketAddr>().is_ok();
                if !ok {
                    return Err(bad("bmc is not IP or IP:PORT"));
                }
                bmc = Some(b.to_owned());
            }
            _ => return Err(bad(&format!("unknown part {p:?}"))),
        }
    }
    Ok(HostSpec {
        name: name.to_owned(),
        address,
        mac: mac.ok_or_else(|| bad("mac= is missing (Wake-on-LAN needs it)"))?,
        bmc,
    })
}

/// Asks on the terminal; `None` when stdin is not one.
fn ask(question: &str) -> Result<Option<String>, InitError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("{question}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(InitError::Stdin)?;
    Ok(Some(line.trim().to_owned()))
}

/// The BMC password: typed without echo on a terminal, else the first line of stdin.
fn bmc_password(user: &str) -> Result<String, InitError> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        eprint!("BMC password of user {user} (the same on every BMC; not shown): ");
        let _ = std::io::stderr().flush();
        let old = tcgetattr(&stdin).ok();
        if let Some(old) = &old {
            let mut quiet = old.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
        }
        let r = stdin.lock().read_line(&mut line);
        if let Some(old) = &old {
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, old);
        }
        eprintln!();
        r.map_err(InitError::Stdin)?;
    } else {
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(InitError::Stdin)?;
    }
    let pw = line.trim_end_matches(['\n', '\r']).to_owned();
    if pw.is_empty() {
        return Err(InitError::Answer(
            "no BMC password given (type it, or pipe it on stdin)".into(),
        ));
    }
    Ok(pw)
}

/// Writes `bytes` to `path` with `mode`, refusing to replace a file unless `force`.
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), InitError> {
    if path.exists() && !force {
        return Err(InitError::Exists {
            path: path.to_owned(),
        });
    }
    let err = |source| InitError::Write {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn cluster_secret() -> Result<String, InitError> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(InitError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// What `init` writes and prints, from complete answers (pure, for tests).
pub fn render_router_toml(a: &InitArgs, listen: &SocketAddr, hosts: &[HostSpec]) -> String {
    let mut s = String::new();
    let dir = a.dir.display();
    let _ = writeln!(
        s,
        "# {dir}/router.toml: written by `router init`. Every key is documented in README.md."
    );
    let _ = writeln!(
        s,
        "listen = \"{listen}\"              # where genies connect"
    );
    let _ = writeln!(
        s,
        "api = \"127.0.0.1:7101\"                 # local API for the `router` CLI"
    );
    let _ = writeln!(s, "state_dir = \"{}\"", a.state_dir.display());
    let _ = writeln!(
        s,
        "secret_file = \"{dir}/cluster.secret\"   # same file on every server, mode 0600"
    );
    if let Some(i) = &a.wol_interface {
        let _ = writeln!(s, "wol_interface = \"{i}\"");
    }
    for h in hosts {
        let _ = writeln!(
            s,
            "\n[[host]]\nname = \"{}\"\nmac = \"{}\"\naddress = \"{}\"",
            h.name, h.mac, h.address
        );
        if let Some(b) = &h.bmc {
            let _ = writeln!(
                s,
                "bmc = \"{b}\"\nbmc_user = \"{}\"\nbmc_password_file = \"{dir}/bmc-{}.password\"",
                a.bmc_user, h.name
            );
        }
    }
    s
}

pub fn render_genie_toml(dir: &Path, listen: &SocketAddr, h: &HostSpec) -> String {
    format!(
        "# /etc/wisp/genie.toml on {name}: written by `router init`.\n\
         host = \"{name}\"\n\
         router = \"{listen}\"\n\
         secret_file = \"{dir}/cluster.secret\"   # copy the router's, mode 0600\n\
         vm_dir = \"/var/lib/wisp/vms\"\n\
         address = \"{addr}\"\n\
         qemu = \"qemu-system-x86_64\"\n\
         suspend_command = [\"systemctl\", \"suspend\"]\n\
         migration_ports = \"49152-49215\"   # open in the firewall between servers\n",
        name = h.name,
        dir = dir.display(),
        addr = h.address,
    )
}

pub fn run(a: &InitArgs) -> Result<(), InitError> {
    let listen = match &a.listen {
        Some(l) => l.clone(),
        None => ask("The router's address on the servers' network (IP or IP:PORT)")?.ok_or_else(
            || {
                InitError::Answer(
                    "--listen is missing (the router's address the genies connect to)".into(),
                )
            },
        )?,
    };
    let listen: SocketAddr = match listen.parse::<SocketAddr>() {
        Ok(s) => s,
        Err(_) => listen
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, DEFAULT_LINK_PORT))
            .map_err(|_| InitError::Answer(format!("--listen {listen:?}: not an IP or IP:PORT")))?,
    };
    let mut hosts = a.hosts.clone();
    if hosts.is_empty() {
        while let Some(line) = ask("A server as NAME=ADDRESS,mac=MAC[,bmc=IP] (empty line: done)")?
        {
            if line.is_empty() {
                break;
            }
            match parse_host(&line) {
                Ok(h) => hosts.push(h),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    if hosts.is_empty() {
        return Err(InitError::Answer(
            "no servers: pass --host NAME=ADDRESS,mac=MAC[,bmc=IP] once per server".into(),
        ));
    }
    let password = if hosts.iter().any(|h| h.bmc.is_some()) {
        Some(bmc_password(&a.bmc_user)?)
    } else {
        None
    };
    std::fs::create_dir_all(&a.dir).map_err(|source| InitError::Write {
        path: a.dir.clone(),
        source,
    })?;
    let toml = render_router_toml(a, &listen, &hosts);
    write_file(&a.dir.join("router.toml"), toml.as_bytes(), 0o640, a.force)?;
    write_file(
        &a.dir.join("cluster.secret"),
        format!("{}\n", cluster_secret()?).as_bytes(),
        0o600,
        a.force,
    )?;
    if let Some(pw) = &password {
        for h in hosts.iter().filter(|h| h.bmc.is_some()) {
            let path = a.dir.join(format!("bmc-{}.password", h.name));
            write_file(&path, format!("{pw}\n").as_bytes(), 0o600, a.force)?;
        }
    }
    eprintln!(
        "wrote {}/router.toml, cluster.secret{}; check with `router check-config {}/router.toml`",
        a.dir.display(),
        if password.is_some() {
            " and the BMC password files"
        } else {
            ""
        },
        a.dir.display()
    );
    eprintln!(
        "copy cluster.secret (mode 0600) to /etc/wisp/ on every server, with its genie.toml below:"
    );
    for h in &hosts {
        println!("# ---- genie.toml of {} ----", h.name);
        print!("{}", render_genie_toml(Path::new("/etc/wisp"), &listen, h));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs_parse_or_say_what_is_wrong() {
        let h = parse_host("h1=10.0.0.11,mac=02:00:00:00:00:01,bmc=10.0.1.11:623").expect("parses");
        assert_eq!(h.name, "h1");
        assert_eq!(h.bmc.as_deref(), Some("10.0.1.11:623"));
        for (bad, says) in [
            ("h1", "NAME=ADDRESS"),
            ("h1=x,mac=02:00:00:00:00:01", "not an IP"),
            ("h1=10.0.0.1", "mac= is missing"),
            ("h1=10.0.0.1,mac=zz", "MAC address"),
            ("h1=10.0.0.1,mac=02:00:00:00:00:01,bmc=nope", "bmc"),
            (
                "h1=10.0.0.1,mac=02:00:00:00:00:01,colour=red",
                "unknown part",
            ),
        ] {
            let e = parse_host(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
