//! `wisp-lab-wol <labdir>`: the lab's Wake-on-LAN listener, run on `br0` in the core
//! namespace. A magic packet (EtherType 0x0842 or UDP port 9) for the MAC of a lab host
//! that is off or suspended powers that host on (a suspended one resumes), through the
//! same action as IPMI. A host the lab marked with `Lab::set_wol_ignored` loses its
//! magic packets: each is logged as ignored, with the MAC.
//!
//! The socket is promiscuous: the bridge does not hand known-unicast frames to a
//! listener on the bridge device otherwise (see ARCHITECTURE.md, Wake-on-LAN).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use pnet::datalink::{self, Channel, Config};
use serde::Deserialize;
use wisp_tests::lab::names::mac_string;
use wisp_tests::lab::power::{self, Power};
use wisp_tests::wol;

#[derive(Deserialize)]
struct LabFile {
    bridge: String,
    hosts: Vec<LabHost>,
}

#[derive(Deserialize)]
struct LabHost {
    mac: String,
    dir: PathBuf,
}

fn main() -> Result<()> {
    let Some(lab_dir) = std::env::args().nth(1) else {
        bail!("usage: wisp-lab-wol <labdir>");
    };
    let path = PathBuf::from(lab_dir).join("lab.json");
    let lab: LabFile = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let hosts: HashMap<String, PathBuf> = lab
        .hosts
        .into_iter()
        .map(|h| (h.mac.to_ascii_lowercase(), h.dir))
        .collect();

    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == lab.bridge)
        .with_context(|| format!("no interface {}", lab.bridge))?;
    let config = Config {
        promiscuous: true,
        ..Config::default()
    };
    let Channel::Ethernet(_tx, mut rx) = datalink::channel(&iface, config)
        .with_context(|| format!("opening a packet socket on {}", lab.bridge))?
    else {
        bail!("unexpected channel type on {}", lab.bridge);
    };
    println!(
        "wisp-lab-wol: listening on {} for {} hosts",
        lab.bridge,
        hosts.len()
    );
    std::io::stdout().flush().ok();

    loop {
        let frame = rx.next().context("receiving")?;
        let Some((mac, method)) = wol::parse_frame(frame) else {
            continue;
        };
        let mac = mac_string(&mac);
        let Some(dir) = hosts.get(&mac) else {
            println!("wisp-lab-wol: magic packet ({method}) for unknown MAC {mac}: ignored");
            continue;
        };
        let host = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Read per packet: a test turns it on and off while the listener runs.
        if power::wol_ignored(dir) {
            println!(
                "wisp-lab-wol: magic packet ({method}) for {host} ({mac}): ignored (the lab loses magic packets for this host)"
            );
            std::io::stdout().flush().ok();
            continue;
        }
        match power::state(dir) {
            Ok(Power::On) => {
                println!("wisp-lab-wol: magic packet ({method}) for {host} ({mac}): already on")
            }
            Ok(_) => match power::power_on(dir) {
                Ok(_) => println!("wisp-lab-wol: wake {host} ({mac}) by {method}: powered on"),
                Err(e) => println!(
                    "wisp-lab-wol: wake {host} ({mac}) by {method} failed: {:#}",
                    anyhow::Error::from(e)
                ),
            },
            Err(e) => println!(
                "wisp-lab-wol: {host}: cannot read power state: {:#}",
                anyhow::Error::from(e)
            ),
        }
        std::io::stdout().flush().ok();
    }
}
