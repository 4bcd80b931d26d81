//! The devices a new VM claims across the cluster: its disk and its NICs' MACs. Checked
//! in the cluster task at create (atomically with storing the record), so two creates
//! can never both take one disk or one MAC.
//!
//! The router cannot open the images (it may not see the storage), so disks are
//! compared by their path with `.` and `..` applied; a second name for one file (a
//! symlink) is caught by the genie, which resolves paths, and by QEMU's image lock.

use std::collections::BTreeMap;

use wisp_common::vm::random_local_mac;
use wisp_common::{MacAddr, VmId, VmSpec};

use super::ops::UNASSIGNED_MAC;
use super::VmError;
use crate::store::VmRecord;

/// `path` with `.` and `..` applied to its text.
pub use wisp_common::vm::lexical_path as normalize;

/// Refuses a disk or MAC another stored VM has, and gives each NIC without a MAC a
/// fresh locally administered one.
pub fn check_and_assign(
    spec: &mut VmSpec,
    records: &BTreeMap<VmId, VmRecord>,
) -> Result<(), VmError> {
    let others = || records.iter().filter(|(id, _)| **id != spec.name);
    if let Some(d) = &spec.disk {
        let mine = normalize(d);
        if let Some((other, _)) =
            others().find(|(_, r)| r.spec.disk.as_deref().is_some_and(|o| normalize(o) == mine))
        {
            return Err(VmError::DiskInUse {
                vm: spec.name.clone(),
                disk: d.clone(),
                other: other.clone(),
            });
        }
    }
    let used: BTreeMap<MacAddr, VmId> = others()
        .flat_map(|(id, r)| r.spec.nics.iter().map(move |n| (n.mac, id.clone())))
        .collect();
    for (i, n) in spec.nics.iter().enumerate() {
        if n.mac == UNASSIGNED_MAC {
            continue;
        }
        if let Some(other) = used.get(&n.mac) {
            return Err(VmError::MacInUse {
                vm: spec.name.clone(),
                field: format!("nic{i} mac"),
                mac: n.mac,
                other: other.clone(),
            });
        }
    }
    let mut taken: Vec<MacAddr> = spec.nics.iter().map(|n| n.mac).collect();
    for n in spec.nics.iter_mut().filter(|n| n.mac == UNASSIGNED_MAC) {
        // 46 random bits: a clash is astronomically rare, and checked anyway.
        let mac = std::iter::repeat_with(random_local_mac)
            .find(|m| !used.contains_key(m) && !taken.contains(m))
            .unwrap_or(UNASSIGNED_MAC);
        n.mac = mac;
        taken.push(mac);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Desired;
    use std::path::PathBuf;
    use wisp_common::NicSpec;

    fn rec(name: &str, disk: Option<&str>, macs: &[&str]) -> (VmId, VmRecord) {
        let mut spec = VmSpec::new(VmId::new(name).unwrap(), 1, 64);
        spec.disk = disk.map(PathBuf::from);
        spec.nics = macs
            .iter()
            .map(|m| NicSpec {
                network: "lan".into(),
                mac: m.parse().unwrap(),
            })
            .collect();
        (
            spec.name.clone(),
            VmRecord {
                spec,
                desired: Desired::Running,
                host: None,
                epoch: 1,
                created_at_ms: 0,
                migrating: None,
            },
        )
    }

    #[test]
    fn a_disk_of_another_vm_is_refused_by_name_even_written_differently() {
        let records: BTreeMap<_, _> = [rec("a", Some("/img/a.qcow2"), &[])].into_iter().collect();
        let (_, mut b) = rec("b", Some("/img/x/../a.qcow2"), &[]);
        let e = check_and_assign(&mut b.spec, &records)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VM b") && e.contains("disk") && e.contains("VM a"),
            "{e}"
        );
        let (_, mut c) = rec("c", Some("/img/c.qcow2"), &[]);
        check_and_assign(&mut c.spec, &records).unwrap();
    }

    #[test]
    fn macs_are_generated_unique_and_a_used_one_is_refused() {
        let records: BTreeMap<_, _> = [rec("a", None, &["02:00:00:00:00:01"])]
            .into_iter()
            .collect();
        let (_, mut b) = rec("b", None, &["02:00:00:00:00:01"]);
        let e = check_and_assign(&mut b.spec, &records)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VM b") && e.contains("nic0 mac") && e.contains("VM a"),
            "{e}"
        );
        let (_, mut c) = rec("c", None, &["00:00:00:00:00:00", "00:00:00:00:00:00"]);
        check_and_assign(&mut c.spec, &records).unwrap();
        let [m0, m1] = [c.spec.nics[0].mac, c.spec.nics[1].mac];
        assert_ne!(m0, m1);
        for m in [m0, m1] {
            assert!(m != UNASSIGNED_MAC && m.0[0] & 3 == 2, "{m}");
        }
    }
}
