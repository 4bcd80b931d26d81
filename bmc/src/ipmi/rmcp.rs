//! The real `Connector`/`Session`: IPMI 2.0 RMCP+ (cipher suite 3) with ipmi-rs.
//!
//! ipmi-rs does the session setup (ping, channel auth caps, open session, RAKP 1-4)
//! and message crypto; this file adds Set Session Privilege Level after activation
//! and maps ipmi-rs's nested error enums onto `BmcError` (auth, timeout, refused,
//! unsupported cipher suite, completion code). The password goes to ipmi-rs as bytes
//! and is never formatted anywhere.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ipmi_rs::connection::{IpmiConnection, LogicalUnit, Message, Request, RequestTargetAddress};
use ipmi_rs::rmcp::{
    ActivationError, ParseSessionResponseError, RakpMessage2ErrorStatusCode,
    RakpMessage2ParseError, RakpMessage4ParseError, Rmcp, RmcpIpmiError, RmcpIpmiReceiveError,
    RmcpIpmiSendError, V2_0ActivationError, V2_0WriteError,
};
use wisp_common::secret::Secret;

use super::chassis::{self, RawRequest};
use super::worker::{Connector, Session};
use crate::bmc::BmcError;

/// IPMI user names are at most 16 bytes (ipmi-rs silently sends an empty name
/// instead, which would show up as a confusing auth failure).
const MAX_USER_LEN: usize = 16;
/// RMCP+ passwords are at most 20 bytes.
const MAX_PASSWORD_LEN: usize = 20;

pub struct RmcpConnector {
    pub addr: SocketAddr,
    pub user: String,
    pub password: Secret,
}

impl Connector for RmcpConnector {
    fn connect(&mut self, read_timeout: Duration) -> Result<Box<dyn Session>, BmcError> {
        let addr = self.addr;
        let auth = |detail: &str| BmcError::Auth {
            addr,
            user: self.user.clone(),
            detail: detail.to_owned(),
        };
        if self.user.len() > MAX_USER_LEN {
            return Err(auth("user name longer than 16 bytes"));
        }
        if self.password.expose().len() > MAX_PASSWORD_LEN {
            return Err(auth("password longer than 20 bytes"));
        }
        let mut rmcp = Rmcp::new(addr, read_timeout).map_err(|source| BmcError::Io {
            addr,
            stage: "socket setup",
            source,
        })?;
        rmcp.activate(true, Some(&self.user), Some(self.password.expose()))
            .map_err(|e| map_activation(addr, &self.user, e))?;
        let mut session = RmcpSession { addr, rmcp };
        session.call(&chassis::set_session_privilege_admin())?;
        Ok(Box::new(session))
    }
}

struct RmcpSession {
    addr: SocketAddr,
    rmcp: Rmcp,
}

impl Session for RmcpSession {
    fn call(&mut self, req: &RawRequest) -> Result<Vec<u8>, BmcError> {
        let addr = self.addr;
        let mut request = Request::new(
            Message::new_raw(req.netfn, req.cmd, req.data.clone()),
            RequestTargetAddress::Bmc(LogicalUnit::Zero),
        );
        let resp = self
            .rmcp
            .send_recv(&mut request)
            .map_err(|e| map_connection(addr, req.name, e))?;
        if resp.netfn_raw() != req.netfn | 1 || resp.cmd() != req.cmd {
            return Err(BmcError::Protocol {
                addr,
                stage: req.name,
                detail: format!(
                    "reply is for netfn {:#04x} cmd {:#04x}",
                    resp.netfn_raw(),
                    resp.cmd()
                ),
            });
        }
        if resp.cc() != 0 {
            return Err(BmcError::Completion {
                addr,
                command: req.name,
                code: resp.cc(),
                meaning: chassis::completion_meaning(resp.cc()),
            });
        }
        Ok(resp.data().to_vec())
    }

    /// ipmi-rs keeps the session id private but derives `Debug` on its state: read
    /// it from there (`..., session_id: 1234, ...`). The formatted string holds
    /// session keys too, so it is only searched and dropped, never logged.
    fn session_id(&self) -> Option<u32> {
        let dbg = format!("{:?}", self.rmcp);
        let rest = &dbg[dbg.find(", session_id: ")? + ", session_id: ".len()..];
        let end = rest.find(|c: char| !c.is_ascii_digit())?;
        rest[..end].parse().ok()
    }
}

fn map_io(addr: SocketAddr, stage: &'static str, e: io::Error) -> BmcError {
    match e.kind() {
        // A std socket read timeout shows up as WouldBlock on Linux.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => BmcError::Timeout {
            addr,
            after: Duration::ZERO,
        },
        io::ErrorKind::ConnectionRefused => BmcError::Refused { addr },
        _ => BmcError::Io {
            addr,
            stage,
            source: e,
        },
    }
}

fn map_receive(addr: SocketAddr, stage: &'static str, e: RmcpIpmiReceiveError) -> BmcError {
    match e {
        RmcpIpmiReceiveError::Io(io) => map_io(addr, stage, io),
        other => BmcError::Protocol {
            addr,
            stage,
            detail: format!("{other:?}"),
        },
    }
}

fn map_write(addr: SocketAddr, stage: &'static str, e: V2_0WriteError) -> BmcError {
    match e {
        V2_0WriteError::Io(io) => map_io(addr, stage, io),
        other => BmcError::Protocol {
            addr,
            stage,
            detail: format!("{other:?}"),
        },
    }
}

fn map_connection(addr: SocketAddr, stage: &'static str, e: RmcpIpmiError) -> BmcError {
    match e {
        RmcpIpmiError::Receive(r) => map_receive(addr, stage, r),
        RmcpIpmiError::Send(RmcpIpmiSendError::V2_0(w)) => map_write(addr, stage, w),
        other => BmcError::Protocol {
            addr,
            stage,
            detail: format!("{other:?}"),
        },
    }
}

fn map_activation(addr: SocketAddr, user: &str, e: ActivationError) -> BmcError {
    let auth = |detail: &str| BmcError::Auth {
        addr,
        user: user.to_owned(),
        detail: detail.to_owned(),
    };
    let cipher = |detail: String| BmcError::UnsupportedCipherSuite { addr, detail };
    match e {
        ActivationError::BindSocket(io) => map_io(addr, "socket setup", io),
        ActivationError::PingSend(io) => map_io(addr, "RMCP ping", io),
        ActivationError::PongReceive(io) => map_io(addr, "RMCP ping", io),
        ActivationError::GetChannelAuthenticationCapabilities(ipmi_rs::IpmiError::Connection(
            c,
        )) => map_connection(addr, "Get Channel Authentication Capabilities", c),
        ActivationError::V2_0(v2) => match v2 {
            V2_0ActivationError::Io(io) => map_io(addr, "session setup", io),
            V2_0ActivationError::OpenSessionRequestSend(w) => map_write(addr, "Open Session", w),
            V2_0ActivationError::OpenSessionResponseReceive(r) => {
                map_receive(addr, "Open Session", r)
            }
            V2_0ActivationError::OpenSessionResponseParse(
                ParseSessionResponseError::HaveErrorCode(code),
            ) => {
                // ipmi-rs does not export the status-code enum, so it is matched by
                // its Debug name (names from the IPMI spec, table 13-15).
                let name = format!("{code:?}");
                if name.contains("InvalidRole") {
                    auth("BMC refused the requested role (Administrator)")
                } else if name.contains("Algorithm")
                    || name.contains("NoMatching")
                    || name.contains("CipherSuite")
                {
                    cipher(format!("Open Session status {name}"))
                } else {
                    BmcError::Protocol {
                        addr,
                        stage: "Open Session",
                        detail: format!("status {name}"),
                    }
                }
            }
            V2_0ActivationError::SendRakpMessage1(w) => map_write(addr, "RAKP 1", w),
            V2_0ActivationError::RakpMessage2Receive(r) => map_receive(addr, "RAKP 2", r),
            V2_0ActivationError::RakpMessage2Parse(RakpMessage2ParseError::ErrorStatusCode(c)) => {
                match c {
                    RakpMessage2ErrorStatusCode::UnauthorizedName => auth("unknown user name"),
                    RakpMessage2ErrorStatusCode::InvalidRole
                    | RakpMessage2ErrorStatusCode::UnauthorizedRoleOrPrivilegeLevelRequested => {
                        auth("user may not have the Administrator role")
                    }
                    other => BmcError::Protocol {
                        addr,
                        stage: "RAKP 2",
                        detail: format!("status {other:?}"),
                    },
                }
            }
            V2_0ActivationError::ServerAuthenticationFailed => {
                auth("wrong password (BMC's RAKP 2 key exchange code does not match)")
            }
            V2_0ActivationError::RakpMessage3Send(w) => map_write(addr, "RAKP 3", w),
            V2_0ActivationError::RakpMessage4Receive(r) => map_receive(addr, "RAKP 4", r),
            V2_0ActivationError::RakpMessage4Parse(RakpMessage4ParseError::ErrorStatusCode(c)) => {
                auth(&format!("BMC rejected our RAKP 3 ({c:?})"))
            }
            V2_0ActivationError::RakpMessage4InvalidIntegrityCheckValue => {
                auth("BMC's RAKP 4 integrity check failed")
            }
            other => BmcError::Protocol {
                addr,
                stage: "RMCP+ session setup",
                detail: format!("{other:?}"),
            },
        },
        other => BmcError::Protocol {
            addr,
            stage: "RMCP session setup",
            detail: format!("{other:?}"),
        },
    }
}
