//! The few IPMI commands wisp needs, as raw (NetFn, cmd, data) requests, and the
//! parsing of their replies. ipmi-rs has no chassis commands and never sends Set
//! Session Privilege Level, so they are defined here (IPMI 2.0 spec §22, §28).

use crate::bmc::{PowerAction, PowerState};

/// A raw IPMI request to the BMC (LUN 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// Human name for errors ("Get Chassis Status").
    pub name: &'static str,
}

const NETFN_CHASSIS: u8 = 0x00;
const NETFN_APP: u8 = 0x06;

/// Get Chassis Status (Chassis 0x01).
pub fn get_chassis_status() -> RawRequest {
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: 0x01,
        data: vec![],
        name: "Get Chassis Status",
    }
}

/// Chassis Control (Chassis 0x02).
pub fn chassis_control(action: PowerAction) -> RawRequest {
    let code = match action {
        PowerAction::Off => 0x00,
        PowerAction::On => 0x01,
        PowerAction::Cycle => 0x02,
        PowerAction::Reset => 0x03,
        PowerAction::Soft => 0x05,
    };
    RawRequest {
        netfn: NETFN_CHASSIS,
        cmd: 0x02,
        data: vec![code],
        name: "Chassis Control",
    }
}

/// Set Session Privilege Level (App 0x3B) to Administrator. A new RMCP+ session
/// starts at User level; Chassis Control needs Operator or more (else cc 0xD4).
pub fn set_session_privilege_admin() -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: 0x3b,
        data: vec![0x04],
        name: "Set Session Privilege Level",
    }
}

/// Get Session Info (App 0x3D) for the session this request arrives on (index 0):
/// its reply starts with the session handle, which Close Session accepts in place
/// of the session id that ipmi-rs keeps private.
pub fn get_session_info_current() -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: 0x3d,
        data: vec![0x00],
        name: "Get Session Info",
    }
}

/// Close Session (App 0x3C) by handle (session id 0 + handle, IPMI 2.0 §22.19).
pub fn close_session(handle: u8) -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: 0x3c,
        data: vec![0, 0, 0, 0, handle],
        name: "Close Session",
    }
}

/// Close Session (App 0x3C) by the BMC's session id (little-endian).
pub fn close_session_id(id: u32) -> RawRequest {
    RawRequest {
        netfn: NETFN_APP,
        cmd: 0x3c,
        data: id.to_le_bytes().to_vec(),
        name: "Close Session",
    }
}

/// Parses the data (after the completion code) of Get Chassis Status.
pub fn parse_chassis_status(data: &[u8]) -> Option<PowerState> {
    let current = *data.first()?;
    Some(if current & 0x01 != 0 {
        PowerState::On
    } else {
        PowerState::Off
    })
}

/// The meaning of a completion code, for error messages.
pub fn completion_meaning(code: u8) -> &'static str {
    match code {
        0xc0 => "node busy",
        0xc1 => "invalid or unsupported command",
        0xc2 => "command invalid for this LUN",
        0xc3 => "timeout while processing",
        0xc4 => "out of space",
        0xc5 => "reservation cancelled",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return the requested number of bytes",
        0xcb => "requested sensor, data or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for this sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "not supported in present state",
        0xd6 => "sub-function disabled",
        0xff => "unspecified error",
        _ => "unknown completion code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_chassis_control_codes_from_the_spec() {
        let codes: Vec<u8> = [
            PowerAction::Off,
            PowerAction::On,
            PowerAction::Cycle,
            PowerAction::Reset,
            PowerAction::Soft,
        ]
        .into_iter()
        .map(|a| chassis_control(a).data[0])
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 5]);
        assert_eq!(chassis_control(PowerAction::On).netfn, 0);
        assert_eq!(chassis_control(PowerAction::On).cmd, 2);
    }

    #[test]
    fn parses_power_bit() {
        assert_eq!(parse_chassis_status(&[0x01, 0, 0]), Some(PowerState::On));
        assert_eq!(parse_chassis_status(&[0x60, 0, 0]), Some(PowerState::Off));
        assert_eq!(parse_chassis_status(&[]), None);
        assert_eq!(completion_meaning(0xd4), "insufficient privilege level");
    }
}
