//! Lab helpers for VMs the router created through a genie.
//!
//! The genie holds the only QMP socket of the qemu it starts (a QMP socket serves one
//! client), so the lab's witness QMP socket does not exist for these VMs. The witness
//! here is the qemu process itself: we find it in the host's namespace by its `-name`
//! and read the guest's counter straight out of its memory (`/proc/<pid>/mem`, at the
//! guest-RAM mapping whose size is the `-m` of its command line). That path shares no
//! code with the genie, the router or QMP, so none of their bugs can hide behind it.
//!
//! Also: the lab's guest with a prologue that first fills part of its memory with
//! non-zero words (QEMU sends zero pages as a flag, so only a filled guest makes a
//! migration move real bytes and last long enough under a bandwidth cap to be
//! interrupted), the router CLI's migration report typed for tests, and host capacity
//! limits written into router.toml.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use serde::Deserialize;

use super::{cmd, guest, poll, procs, Lab, LabError, WAIT};

#[derive(Debug, thiserror::Error)]
pub enum VmExtError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("no live qemu of VM {vm} in the namespace of h{host}")]
    NoQemu { vm: String, host: usize },
    #[error("{count} live qemu processes of VM {vm} in the namespace of h{host}: {pids:?}")]
    ManyQemu {
        vm: String,
        host: usize,
        count: usize,
        pids: Vec<i32>,
    },
    #[error("cannot read /proc/{pid}/{what} of qemu")]
    Proc {
        pid: i32,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu {pid} has no `-m <MiB>` on its command line")]
    NoMemArg { pid: i32 },
    #[error(
        "qemu {pid}: no private rw mapping of {mem_mib} MiB (its guest RAM) in /proc/{pid}/maps"
    )]
    NoRamMapping { pid: i32, mem_mib: u64 },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`router {args}` failed: {stderr}")]
    Cli { args: String, stderr: String },
    #[error("`router {args}` printed JSON that does not match the contract: {text}")]
    BadJson {
        args: String,
        text: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `router vm migrate NAME --to HOST --json`, typed for tests (the CLI's contract).
#[derive(Debug, Clone, Deserialize)]
pub struct MigrationRow {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub total_ms: u64,
    pub downtime_ms: u64,
    pub to_migrate_command_ms: u64,
    pub elapsed_ms: u64,
}

/// Where the lab's guest keeps its tick counter (32 bits, 1 kHz).
pub const COUNTER_ADDR: u32 = guest::COUNTER_ADDR;
/// Where the filler starts: above the guest image (1 MiB), its counter and IDT (2 MiB).
pub const FILL_ADDR: u32 = 0x0030_0000;
const LOAD_ADDR: u32 = 0x0010_0000;
/// ELF offsets of the fields we patch in the lab guest's image.
const E_ENTRY: usize = 24;
const P_FILESZ: usize = 52 + 16;
const P_MEMSZ: usize = 52 + 20;

/// The lab's idle tick-counting guest (`guest::elf`) with a prologue that first fills
/// `fill_mib` MiB from [`FILL_ADDR`] with a non-zero word, then jumps to the guest's
/// own entry. The VM needs at least `3 + fill_mib` MiB of memory.
pub fn filled_guest_elf(fill_mib: u32) -> Vec<u8> {
    let mut f = guest::elf();
    let entry = u32::from_le_bytes(f[E_ENTRY..E_ENTRY + 4].try_into().expect("4 bytes"));
    let dwords = fill_mib * (1 << 20) / 4;
    let prologue: Vec<u8> = [
        &[0xFA][..],                     // cli
        &[0xBF],                         // mov edi, FILL_ADDR
        &FILL_ADDR.to_le_bytes(),        //
        &[0xB9],                         // mov ecx, dwords
        &dwords.to_le_bytes(),           //
        &[0xB8, 0xEF, 0xBE, 0xAD, 0xDE], // mov eax, 0xdeadbeef
        &[0xFC],                         // cld
        &[0xF3, 0xAB],                   // rep stosd (nothing when ecx = 0)
        &[0xB8],                         // mov eax, entry
        &entry.to_le_bytes(),            //
        &[0xFF, 0xE0],                   // jmp eax
    ]
    .concat();
    // The prologue goes after the image, inside the one PT_LOAD segment, which grows.
    let new_entry = LOAD_ADDR + f.len() as u32;
    f.extend_from_slice(&prologue);
    let total = (f.len() as u32).to_le_bytes();
    f[E_ENTRY..E_ENTRY + 4].copy_from_slice(&new_entry.to_le_bytes());
    f[P_FILESZ..P_FILESZ + 4].copy_from_slice(&total);
    f[P_MEMSZ..P_MEMSZ + 4].copy_from_slice(&total);
    f
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The value after `flag` on a command line.
fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// True if `args` is a qemu command line for VM `vm` (`-name vm` or `-name vm,...`).
fn is_qemu_of(args: &[String], vm: &str) -> bool {
    args.first().is_some_and(|p| p.contains("qemu-system"))
        && arg_after(args, "-name").is_some_and(|n| {
            let first = n.split(',').next().unwrap_or_default();
            first.strip_prefix("guest=").unwrap_or(first) == vm
        })
}

/// `-m 64`, `-m 64M`, `-m 1G`, `-m size=64` → MiB.
fn mem_mib_of(args: &[String]) -> Option<u64> {
    let v = arg_after(args, "-m")?;
    let v = v.strip_prefix("size=").unwrap_or(v);
    let v = v.split(',').next()?;
    if let Some(g) = v.strip_suffix(['G', 'g']) {
        return g.parse::<u64>().ok().map(|g| g * 1024);
    }
    v.strip_suffix(['M', 'm']).unwrap_or(v).parse().ok()
}

/// Start address of the private rw anonymous mapping of exactly `mem_mib` MiB.
fn ram_mapping(pid: i32, mem_mib: u64) -> Result<u64, VmExtError> {
    let maps =
        fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|source| VmExtError::Proc {
            pid,
            what: "maps",
            source,
        })?;
    let want = mem_mib << 20;
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let (a, b) = range.split_once('-')?;
            let (a, b) = (
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            );
            (perms.starts_with("rw") && perms.ends_with('p') && b - a == want).then_some(a)
        })
        .next()
        .ok_or(VmExtError::NoRamMapping { pid, mem_mib })
}

/// Reads `N` bytes of qemu `pid`'s guest-physical memory at `addr`.
fn read_guest<const N: usize>(pid: i32, addr: u32) -> Result<[u8; N], VmExtError> {
    let args = cmdline(pid).ok_or_else(|| VmExtError::Proc {
        pid,
        what: "cmdline",
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let mem_mib = mem_mib_of(&args).ok_or(VmExtError::NoMemArg { pid })?;
    let base = ram_mapping(pid, mem_mib)?;
    let proc_err = |source| VmExtError::Proc {
        pid,
        what: "mem",
        source,
    };
    let mut f = fs::File::open(format!("/proc/{pid}/mem")).map_err(proc_err)?;
    f.seek(SeekFrom::Start(base + u64::from(addr)))
        .map_err(proc_err)?;
    let mut buf = [0u8; N];
    f.read_exact(&mut buf).map_err(proc_err)?;
    Ok(buf)
}

/// The guest's tick counter in qemu `pid`, read from the qemu's memory.
pub fn read_counter(pid: i32) -> Result<u32, VmExtError> {
    Ok(u32::from_le_bytes(read_guest::<4>(pid, COUNTER_ADDR)?))
}

/// The whole command line of `pid` (for assertions such as "started with -incoming").
pub fn qemu_cmdline(pid: i32) -> Vec<String> {
    cmdline(pid).unwrap_or_default()
}

impl Lab {
    /// Live (non-zombie) qemu processes of VM `vm` in host `i`'s namespace, found by
    /// their `-name` (independently of the genie's files and reports).
    pub fn qemu_pids(&self, i: usize, vm: &str) -> Result<Vec<i32>, VmExtError> {
        let ns = &self.host(i)?.ns;
        let pids = procs::ns_pids(ns).map_err(LabError::Cmd)?;
        Ok(pids
            .into_iter()
            .filter(|&p| cmdline(p).is_some_and(|a| is_qemu_of(&a, vm)) && procs::is_alive(p))
            .collect())
    }

    /// The one live qemu of `vm` on host `i`.
    pub fn qemu_pid(&self, i: usize, vm: &str) -> Result<i32, VmExtError> {
        let pids = self.qemu_pids(i, vm)?;
        match pids[..] {
            [p] => Ok(p),
            [] => Err(VmExtError::NoQemu {
                vm: vm.to_owned(),
                host: i,
            }),
            _ => Err(VmExtError::ManyQemu {
                vm: vm.to_owned(),
                host: i,
                count: pids.len(),
                pids,
            }),
        }
    }

    /// The guest counter of `vm` on host `i`, read from its qemu's memory.
    pub fn guest_counter(&self, i: usize, vm: &str) -> Result<u32, VmExtError> {
        read_counter(self.qemu_pid(i, vm)?)
    }

    /// Polls until the counter of `vm` on host `i` is above `above`; returns it.
    pub fn wait_counter_above(&self, i: usize, vm: &str, above: u32) -> Result<u32, LabError> {
        poll(
            WAIT,
            &format!("the guest counter of {vm} on h{i} to pass {above}"),
            |last| match self.guest_counter(i, vm) {
                Ok(c) if c > above => Some(c),
                Ok(c) => {
                    *last = format!("counter {c}");
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            },
        )
    }

    /// Polls until no live qemu of `vm` is left on host `i`.
    pub fn wait_no_qemu(&self, i: usize, vm: &str) -> Result<(), LabError> {
        poll(
            WAIT,
            &format!("no qemu of {vm} left on h{i}"),
            |last| match self.qemu_pids(i, vm) {
                Ok(p) if p.is_empty() => Some(()),
                Ok(p) => {
                    *last = format!("still alive: {p:?}");
                    None
                }
                Err(e) => {
                    *last = e.to_string();
                    None
                }
            },
        )
    }

    /// Writes the filled guest (see [`filled_guest_elf`]) into the lab dir, which
    /// every host reaches (the lab's shared storage), and returns its path.
    pub fn filled_guest(&self, fill_mib: u32) -> Result<PathBuf, VmExtError> {
        let path = self.dir().join(format!("guest-fill{fill_mib}.elf"));
        fs::write(&path, filled_guest_elf(fill_mib)).map_err(|source| VmExtError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// `router <args>`, which must succeed; returns its stdout.
    pub fn router_ok(&self, args: &[&str]) -> Result<String, VmExtError> {
        let out = self.router_cli(args)?;
        if !out.status.success() {
            return Err(VmExtError::Cli {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `router vm create NAME --vcpus 1 --mem MIB --kernel KERNEL [--host HOST]`.
    pub fn vm_create(
        &self,
        name: &str,
        mem_mib: u64,
        kernel: &Path,
        host: Option<&str>,
    ) -> Result<String, VmExtError> {
        let mem = mem_mib.to_string();
        let kernel = kernel.to_string_lossy();
        let mut args = vec![
            "vm", "create", name, "--vcpus", "1", "--mem", &mem, "--kernel", &kernel,
        ];
        if let Some(h) = host {
            args.extend(["--host", h]);
        }
        self.router_ok(&args)
    }

    /// `router vm migrate NAME --to HOST --json`, typed.
    pub fn vm_migrate(&self, name: &str, to: &str) -> Result<MigrationRow, VmExtError> {
        let args = ["vm", "migrate", name, "--to", to, "--json"];
        let text = self.router_ok(&args)?;
        serde_json::from_str(&text).map_err(|source| VmExtError::BadJson {
            args: args.join(" "),
            text,
            source,
        })
    }

    /// Starts `router <args>` in the core namespace without waiting (for a migration
    /// to interrupt); collect it with `wait_with_output`.
    pub fn spawn_router_cli(&self, args: &[&str]) -> Result<Child, LabError> {
        let router = self.bins.router.as_ref().ok_or(LabError::NoRouter)?;
        let mut c = cmd::in_ns(&self.names.core_ns(), router);
        c.args(["--api", super::configs::API_ADDR])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().map_err(|source| {
            LabError::Cmd(cmd::CmdError::Spawn {
                command: cmd::describe(&c),
                source,
            })
        })
    }

    /// Gives every host a fixed capacity in router.toml (`vcpus`, `mem_mib` in each
    /// `[[host]]`) instead of the figures derived from metrics (every lab host sees the
    /// whole machine), then (re)starts the router so it reads them.
    pub fn set_host_capacity(&mut self, vcpus: u32, mem_mib: u64) -> Result<(), VmExtError> {
        let path = self.router_toml().to_owned();
        let text = fs::read_to_string(&path).map_err(|source| VmExtError::Write {
            path: path.clone(),
            source,
        })?;
        let text = text.replace(
            "bmc_user = \"admin\"\n",
            &format!("bmc_user = \"admin\"\nvcpus = {vcpus}\nmem_mib = {mem_mib}\n"),
        );
        fs::write(&path, text).map_err(|source| VmExtError::Write {
            path: path.clone(),
            source,
        })?;
        self.stop_router();
        self.start_router()?;
        Ok(())
    }
}

/// A finished CLI call as (exit code, one-line trimmed stderr, stdout).
pub fn cli_result(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filled_guest_enters_the_fill_then_jumps_to_the_lab_guest() {
        let base = guest::elf();
        let e = filled_guest_elf(5);
        assert_eq!(&e[84..96], &base[84..96], "multiboot header unchanged");
        let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let entry = word(&e, E_ENTRY);
        assert_eq!(entry, LOAD_ADDR + base.len() as u32);
        assert_eq!(
            (word(&e, P_FILESZ), word(&e, P_MEMSZ)),
            (e.len() as u32, e.len() as u32)
        );
        let code = &e[(entry - LOAD_ADDR) as usize..];
        assert_eq!(word(code, 7), 5 << 18, "dwords to fill");
        assert_eq!(&code[code.len() - 2..], [0xFF, 0xE0]);
        assert_eq!(word(code, code.len() - 6), word(&base, E_ENTRY));
    }

    #[test]
    fn mem_and_name_are_read_from_qemu_command_lines() {
        let a: Vec<String> = [
            "qemu-system-x86_64",
            "-name",
            "vm1,debug-threads=on",
            "-m",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(is_qemu_of(&a, "vm1"));
        assert!(!is_qemu_of(&a, "vm"));
        assert_eq!(mem_mib_of(&a), Some(64));
        let b: Vec<String> = ["qemu-system-x86_64", "-m", "1G"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(mem_mib_of(&b), Some(1024));
    }
}
