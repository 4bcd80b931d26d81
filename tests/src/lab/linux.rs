//! A real Linux guest, assembled at test time from what Debian's packages installed:
//! the distribution's kernel (`linux-image-amd64`, `/boot/vmlinuz-*`) and an
//! initramfs built here from `busybox-static` and the kernel's own virtio modules.
//!
//! The kernel is booted uncompressed when `xz` can unpack it (the bzImage under TCG
//! spends seconds decompressing itself). The initramfs is an uncompressed newc cpio (the kernel takes it as is; no `cpio`
//! binary needed). Its `/init` loads the virtio modules in dependency order (the
//! package ships no modules.dep; ARCHITECTURE.md, Guests), brings `eth0` up with the
//! address `wisp.ip=A.B.C.D/N` from the kernel command line, prints [`UP_MARKER`] on
//! the serial console and idles. A guest that answers ping on that address has booted
//! and its NIC, tap and bridge all work.

use std::fs;
use std::path::{Path, PathBuf};

use super::{io_err, Lab, LabError};

/// Printed on the console once eth0 has its address.
pub const UP_MARKER: &str = "WISP-GUEST-UP";

/// The virtio modules eth0 needs, in load order.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Memory a guest gets: the kernel and the 2 MiB initramfs boot in far less.
pub const GUEST_MEM_MIB: u64 = 160;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod /m/$m.ko || echo "wisp-guest: insmod $m failed"; done
ip=$(sed -n 's/.*wisp\.ip=\([0-9./]*\).*/\1/p' /proc/cmdline)
ip link set lo up
ip link set eth0 up
ip addr add "$ip" dev eth0
echo "MARKER ip=$ip mac=$(cat /sys/class/net/eth0/address)"
# A shell on the serial console (`router vm console`), again whenever it exits.
while true; do setsid cttyhack sh; sleep 1; done
"#;

/// The kernel and initramfs of the Linux guest, in a lab's image directory.
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl LinuxGuest {
    /// The kernel command line for address `ip_cidr` (e.g. `10.77.0.200/24`).
    pub fn append(ip_cidr: &str) -> String {
        format!("console=ttyS0 quiet panic=-1 wisp.ip={ip_cidr}")
    }
}

fn missing(what: &'static str, package: &'static str) -> LabError {
    LabError::MissingTool {
        program: what,
        package,
    }
}

/// The newest `/boot/vmlinuz-*` and its version.
fn debian_kernel() -> Result<(PathBuf, String), LabError> {
    let mut found: Vec<(PathBuf, String)> = fs::read_dir("/boot")
        .map_err(|_| missing("/boot/vmlinuz-*", "linux-image-amd64"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((e.path(), v))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
        .pop()
        .ok_or_else(|| missing("/boot/vmlinuz-*", "linux-image-amd64"))
}

/// The ELF `vmlinux` inside a bzImage whose payload is XZ (Debian's), unpacked with
/// `xz` (which reports the bytes after the stream as corrupt: the output is whole).
fn vmlinux(bzimage: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\0";
    let at = bzimage
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)?;
    let mut child = std::process::Command::new("xz")
        .args(["-dc", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let payload = bzimage[at..].to_vec();
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&payload);
    });
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    let elf = out.stdout;
    (elf.starts_with(b"\x7fELF") && elf.len() > (1 << 20)).then_some(elf)
}

/// Finds `name.ko` under the kernel's module tree.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_module(&p, name) {
                return Some(f);
            }
        } else if e.file_name().to_str() == Some(&format!("{name}.ko")) {
            return Some(p);
        }
    }
    None
}

impl Lab {
    /// Writes the Linux guest into the lab's image directory (once per lab).
    pub fn linux_guest(&self) -> Result<LinuxGuest, LabError> {
        let images = self.images_dir();
        let g = LinuxGuest {
            kernel: images.join("vmlinuz"),
            initrd: images.join("initramfs.cpio"),
        };
        if g.kernel.exists() && g.initrd.exists() {
            return Ok(g);
        }
        let (kernel, version) = debian_kernel()?;
        let bzimage = fs::read(&kernel).map_err(io_err(&kernel))?;
        // The uncompressed kernel boots in about half the time under TCG (QEMU enters
        // it at its PVH note); the bzImage is the fallback.
        let image = vmlinux(&bzimage).unwrap_or(bzimage);
        fs::write(&g.kernel, image).map_err(io_err(&g.kernel))?;
        let busybox =
            fs::read("/bin/busybox").map_err(|_| missing("/bin/busybox", "busybox-static"))?;
        let mod_dir = PathBuf::from("/lib/modules").join(&version).join("kernel");
        let mut files: Vec<(String, u32, Vec<u8>)> = vec![
            ("bin/busybox".into(), 0o100755, busybox),
            (
                "init".into(),
                0o100755,
                INIT.replace("MODULES", &MODULES.join(" "))
                    .replace("MARKER", UP_MARKER)
                    .into_bytes(),
            ),
        ];
        for m in MODULES {
            let p = find_module(&mod_dir, m)
                .ok_or_else(|| missing("a virtio module of the kernel", "linux-image-amd64"))?;
            files.push((
                format!("m/{m}.ko"),
                0o100644,
                fs::read(&p).map_err(io_err(&p))?,
            ));
        }
        fs::write(&g.initrd, newc(&["bin", "dev", "m", "proc", "sys"], &files))
            .map_err(io_err(&g.initrd))?;
        Ok(g)
    }
}

impl Lab {
    /// `router vm create NAME --mem 160 --kernel K --initrd I --append "... wisp.ip=IP"
    /// --nic lan [--host HOST]`: the Linux guest on the lab network at `ip_cidr`.
    pub fn create_linux_vm(
        &self,
        name: &str,
        ip_cidr: &str,
        host: Option<&str>,
    ) -> Result<String, LabError> {
        let g = self.linux_guest()?;
        let (k, i) = (g.kernel.to_string_lossy(), g.initrd.to_string_lossy());
        let append = LinuxGuest::append(ip_cidr);
        let mem = GUEST_MEM_MIB.to_string();
        let mut args = vec![
            "vm",
            "create",
            name,
            "--mem",
            &mem,
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--append",
            &append,
            "--nic",
            super::configs::LAB_NETWORK,
        ];
        if let Some(h) = host {
            args.extend(["--host", h]);
        }
        self.router_ok(&args)
    }

    /// One ping from the core namespace (the router's), waiting at most 1 s.
    pub fn ping_from_core(&self, ip: &str) -> bool {
        self.exec_in(&self.core_ns(), "ping", &["-c", "1", "-W", "1", "-n", ip])
            .is_ok_and(|o| o.status.success())
    }

    /// The MAC the core namespace's neighbour table holds for `ip` (who answered).
    pub fn core_neighbour_mac(&self, ip: &str) -> Option<String> {
        let out = self
            .exec_in(&self.core_ns(), "ip", &["neigh", "show", "to", ip])
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_owned)
    }
}

/// A newc ("070701") cpio archive: `dirs`, `/dev/console` (the kernel opens it for
/// init's stdio before anything is mounted), then `files` (path, mode, data).
pub fn newc(dirs: &[&str], files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let mut entry = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        ino += 1;
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    for d in dirs {
        entry(&mut out, d, 0o040755, (0, 0), &[]);
    }
    entry(&mut out, "dev/console", 0o020600, (5, 1), &[]);
    for (name, mode, data) in files {
        entry(&mut out, name, *mode, (0, 0), data);
    }
    entry(&mut out, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let a = newc(
            &["bin"],
            &[("init".into(), 0o100755, b"#!/bin/sh\n".to_vec())],
        );
        assert!(a.starts_with(b"070701"));
        assert!(a.len().is_multiple_of(4));
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("dev/console") && text.contains("TRAILER!!!"));
        // The init's header: mode 0100755, size 10, name "init" + NUL (5).
        let at = text.find("init\0").unwrap();
        let hdr = &text[at - 110..at];
        assert_eq!(&hdr[14..22], "000081ed");
        assert_eq!(&hdr[54..62], "0000000a");
        assert_eq!(&hdr[94..102], "00000005");
    }
}
