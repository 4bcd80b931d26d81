//! The files a VM is started from (disk, kernel, initrd): only from genie.toml's
//! `image_dirs`, and a disk only in a format given to QEMU explicitly.
//!
//! A path is resolved with `canonicalize` (symlinks and `..` gone) before it is
//! compared with the allowed directories, and the resolved path is what QEMU gets, so
//! `/var/lib/wisp/images/../../../etc/shadow` or a symlink into /etc is refused rather
//! than opened.
//!
//! Formats: raw and qcow2. A disk without a format in its spec is read: the qcow2
//! magic means qcow2, the magic of another format is refused, anything else is raw
//! (raw has no header). A qcow2 with a backing file or an external data file is
//! refused: those name more host files, which the image's author chooses.

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use wisp_common::{DiskFormat, VmId};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("VM {vm}: {field} {path} is outside the image_dirs of genie.toml ({allowed})")]
    Outside {
        vm: VmId,
        field: &'static str,
        path: PathBuf,
        allowed: String,
    },
    #[error("VM {vm}: {field} {path} cannot be used")]
    Unreadable {
        vm: VmId,
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("VM {vm}: {field} {path} is not a regular file{also}")]
    NotAFile {
        vm: VmId,
        field: &'static str,
        path: PathBuf,
        also: &'static str,
    },
    #[error(
        "VM {vm}: disk {path}: unknown image format ({found}); only raw and qcow2 are accepted"
    )]
    UnknownFormat {
        vm: VmId,
        path: PathBuf,
        found: &'static str,
    },
    #[error("VM {vm}: disk {path}: a qcow2 image with {what} is not accepted (it names other host files); flatten it with `qemu-img convert`")]
    Qcow2Refers {
        vm: VmId,
        path: PathBuf,
        what: &'static str,
    },
    #[error("VM {vm}: disk {path} is already used by VM {other} on this host")]
    InUse {
        vm: VmId,
        path: PathBuf,
        other: VmId,
    },
}

/// The QCOW2 magic, "QFI\xfb".
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";
/// Magics of formats QEMU knows and wisp refuses (QEMU would probe them).
const OTHER_MAGICS: &[(&[u8], &str)] = &[
    (b"KDMV", "vmdk"),
    (b"# Disk DescriptorFile", "vmdk descriptor"),
    (b"conectix", "vpc/vhd"),
    (b"vhdxfile", "vhdx"),
    (b"QED\0", "qed"),
    (b"<<< ", "vdi"),
    (b"QFI\xfc", "qcow"),
    (b"LUKS\xba\xbe", "luks"),
];

/// `path` resolved, if it is inside one of `dirs` (themselves resolved; a missing
/// directory allows nothing) and is a regular file (or, for a disk, a block device).
pub fn allowed_path(
    vm: &VmId,
    field: &'static str,
    path: &Path,
    dirs: &[PathBuf],
) -> Result<PathBuf, ImageError> {
    let allowed = || {
        if dirs.is_empty() {
            "none configured".to_owned()
        } else {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let real = path.canonicalize().map_err(|source| {
        // A missing file outside the allowed dirs is reported as outside: saying
        // "no such file" would tell a caller which host paths exist.
        let lexical = wisp_common::vm::lexical_path(path);
        if dirs.iter().any(|d| lexical.starts_with(d)) {
            ImageError::Unreadable {
                vm: vm.clone(),
                field,
                path: path.to_owned(),
                source,
            }
        } else {
            ImageError::Outside {
                vm: vm.clone(),
                field,
                path: path.to_owned(),
                allowed: allowed(),
            }
        }
    })?;
    let inside = dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .any(|d| real.starts_with(&d) && real != d);
    if !inside {
        return Err(ImageError::Outside {
            vm: vm.clone(),
            field,
            path: path.to_owned(),
            allowed: allowed(),
        });
    }
    let meta = std::fs::metadata(&real).map_err(|source| ImageError::Unreadable {
        vm: vm.clone(),
        field,
        path: path.to_owned(),
        source,
    })?;
    let is_disk = field == "disk";
    let ok = meta.is_file() || (is_disk && meta.file_type().is_block_device());
    if !ok {
        return Err(ImageError::NotAFile {
            vm: vm.clone(),
            field,
            path: path.to_owned(),
            also: if is_disk { " or block device" } else { "" },
        });
    }
    Ok(real)
}

/// The disk's format: `given`, or read from its header (see the module comment).
/// A qcow2 that refers to other files is refused either way.
pub fn disk_format(
    vm: &VmId,
    path: &Path,
    given: Option<DiskFormat>,
) -> Result<DiskFormat, ImageError> {
    let mut head = [0u8; 512];
    let n = read_head(path, &mut head).map_err(|source| ImageError::Unreadable {
        vm: vm.clone(),
        field: "disk",
        path: path.to_owned(),
        source,
    })?;
    let head = &head[..n];
    let is_qcow2 = head.starts_with(QCOW2_MAGIC);
    let format = match given {
        Some(f) => f,
        None if is_qcow2 => DiskFormat::Qcow2,
        None => {
            if let Some((_, name)) = OTHER_MAGICS.iter().find(|(m, _)| head.starts_with(m)) {
                return Err(ImageError::UnknownFormat {
                    vm: vm.clone(),
                    path: path.to_owned(),
                    found: name,
                });
            }
            DiskFormat::Raw
        }
    };
    if format == DiskFormat::Qcow2 {
        if !is_qcow2 {
            return Err(ImageError::UnknownFormat {
                vm: vm.clone(),
                path: path.to_owned(),
                found: "said to be qcow2, but no qcow2 header",
            });
        }
        if let Some(what) = qcow2_refers(head) {
            return Err(ImageError::Qcow2Refers {
                vm: vm.clone(),
                path: path.to_owned(),
                what,
            });
        }
    }
    Ok(format)
}

fn read_head(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What a qcow2 header makes QEMU open besides the image: a backing file
/// (`backing_file_offset`, bytes 8..16) or, in version 3, an external data file
/// (incompatible feature bit 2, bytes 72..80).
fn qcow2_refers(head: &[u8]) -> Option<&'static str> {
    let be64 = |at: usize| {
        head.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
    };
    let be32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()))
    };
    if be64(8).unwrap_or(0) != 0 {
        return Some("a backing file");
    }
    if be32(4).unwrap_or(0) >= 3 && be64(72).unwrap_or(0) & (1 << 2) != 0 {
        return Some("an external data file");
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("genie-images-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("images")).unwrap();
        Dir(d)
    }
    fn vm() -> VmId {
        VmId::new("vm1").unwrap()
    }

    #[test]
    fn only_files_inside_image_dirs_are_allowed_after_resolving() {
        let d = dir("paths");
        let images = d.0.join("images");
        let ok = images.join("disk.img");
        std::fs::write(&ok, b"x").unwrap();
        let dirs = vec![images.clone()];
        assert_eq!(
            allowed_path(&vm(), "disk", &ok, &dirs).unwrap(),
            ok.canonicalize().unwrap()
        );
        // `..` out of the directory, an absolute system file, a symlink pointing out.
        let secret = d.0.join("secret");
        std::fs::write(&secret, b"s").unwrap();
        std::os::unix::fs::symlink(&secret, images.join("link.img")).unwrap();
        for bad in [
            images.join("../secret"),
            PathBuf::from("/etc/shadow"),
            images.join("link.img"),
            images.join("nope/../../secret"),
        ] {
            let e = allowed_path(&vm(), "disk", &bad, &dirs).unwrap_err();
            assert!(matches!(e, ImageError::Outside { .. }), "{bad:?}: {e}");
            let t = e.to_string();
            assert!(
                t.contains("vm1") && t.contains("disk") && t.contains("image_dirs"),
                "{t}"
            );
        }
        // The directory itself is not an image; a missing file inside is said so.
        assert!(allowed_path(&vm(), "kernel", &images, &dirs).is_err());
        let e = allowed_path(&vm(), "kernel", &images.join("missing"), &dirs).unwrap_err();
        assert!(matches!(e, ImageError::Unreadable { .. }), "{e}");
        // No image_dirs: nothing is allowed.
        let e = allowed_path(&vm(), "initrd", &ok, &[]).unwrap_err();
        assert!(e.to_string().contains("none configured"), "{e}");
        // A comma is just a character of a file name here.
        let comma = images.join("x.img,readonly=on");
        std::fs::write(&comma, b"x").unwrap();
        assert!(allowed_path(&vm(), "disk", &comma, &dirs).is_ok());
    }

    fn qcow2_header(backing: u64, version: u32, incompat: u64) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(QCOW2_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h
    }

    #[test]
    fn formats_are_detected_given_or_refused() {
        let d = dir("formats");
        let p = |n: &str, body: &[u8]| {
            let f = d.0.join(n);
            std::fs::write(&f, body).unwrap();
            f
        };
        let raw = p("raw", &[0u8; 1024]);
        let q = p("q", &qcow2_header(0, 3, 0));
        let backed = p("b", &qcow2_header(200, 3, 0));
        let datafile = p("df", &qcow2_header(0, 3, 4));
        let vmdk = p("vmdk", b"KDMV\x01\0\0\0");
        assert_eq!(disk_format(&vm(), &raw, None).unwrap(), DiskFormat::Raw);
        assert_eq!(disk_format(&vm(), &q, None).unwrap(), DiskFormat::Qcow2);
        // Given raw, a qcow2 header is data (the guest's business).
        assert_eq!(
            disk_format(&vm(), &q, Some(DiskFormat::Raw)).unwrap(),
            DiskFormat::Raw
        );
        for (f, want) in [
            (&backed, "backing file"),
            (&datafile, "external data file"),
            (&vmdk, "vmdk"),
        ] {
            let e = disk_format(&vm(), f, None).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("vm1"), "{e}");
        }
        let e = disk_format(&vm(), &raw, Some(DiskFormat::Qcow2)).unwrap_err();
        assert!(e.to_string().contains("no qcow2 header"), "{e}");
    }
}
