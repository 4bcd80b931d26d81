//! Energy shapes of the API: `POST /v1/energy` (`{"on": true|false}`) and the status
//! `GET /v1/energy` answers with. The status is what the energy task publishes, so it
//! is defined there (`crate::energy`) and re-exported here.

use serde::{Deserialize, Serialize};

pub use crate::energy::{Decision, EnergyStatus, HostEnergy, HostPower};

/// `POST /v1/energy`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EnergyRequest {
    pub on: bool,
}

#[cfg(test)]
mod tests {
    use wisp_common::HostId;

    use super::*;
    use crate::model::host::HostStatus;

    /// The row keeps the strings it had when `state` and `power` were `String`s.
    #[test]
    fn host_energy_row_keeps_its_words() {
        for (p, word) in [
            (HostPower::On, "on"),
            (HostPower::Asleep, "asleep"),
            (HostPower::Off, "off"),
            (HostPower::Waking, "waking"),
            (HostPower::Unavailable, "unavailable"),
        ] {
            assert_eq!(
                serde_json::to_string(&p).expect("serializes"),
                format!("\"{word}\"")
            );
            assert_eq!(p.to_string(), word);
            assert_eq!(
                serde_json::from_str::<HostPower>(&format!("\"{word}\"")).ok(),
                Some(p)
            );
        }
        let row = HostEnergy {
            host: HostId::new("h1").expect("valid"),
            state: HostStatus::Standby,
            power: HostPower::Asleep,
            vms: 0,
            watts: None,
            depth: Some("S3".into()),
            depth_why: Some("needed soon".into()),
        };
        let v = serde_json::to_value(&row).expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({"host":"h1","state":"standby","power":"asleep","vms":0,"watts":null,"depth":"S3","depth_why":"needed soon"})
        );
        let back: HostEnergy = serde_json::from_value(v).expect("parses");
        assert_eq!(back, row);
    }
}
