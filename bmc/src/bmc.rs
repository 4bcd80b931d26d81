//! The `Bmc` trait: what the router may ask of a server's management controller, its
//! configuration, and the errors a caller sees (each names the BMC address).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use wisp_common::secret::Secret;

/// A boxed, sendable future: keeps the traits object-safe without `async_trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Chassis power as reported by Get Chassis Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// A Chassis Control request (`router power on|off|soft|cycle|reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    /// Power up.
    On,
    /// Hard power down (what fencing uses).
    Off,
    /// ACPI soft shutdown: the OS is asked to shut down.
    Soft,
    /// Power down, then up again.
    Cycle,
    /// Hard reset.
    Reset,
}

impl PowerAction {
    /// Whether sending the request twice has the same effect as once. Only these are
    /// retried when a reply was lost after the request may have reached the BMC: a
    /// second `cycle` or `reset` would hit a server that is already booting.
    pub fn is_idempotent(self) -> bool {
        matches!(self, PowerAction::On | PowerAction::Off | PowerAction::Soft)
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::Soft => "soft",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        })
    }
}

/// One server's BMC. Implementations must never block the async runtime and must
/// return within their configured timeout, whatever the BMC does.
pub trait Bmc: Send + Sync + fmt::Debug {
    /// Reads chassis power.
    fn power_status(&self) -> BoxFuture<'_, Result<PowerState, BmcError>>;
    /// Sends a Chassis Control request; `Ok` means the BMC accepted it (the power
    /// state may change a moment later: confirm with `power_status`).
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), BmcError>>;
    /// The BMC's address, for logs and errors.
    fn address(&self) -> SocketAddr;
    /// Closes any open session (router shutdown). Later calls open a new one.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// How to reach one BMC. The password is a `Secret` (read it with
/// `Secret::from_file`, which checks mode 0600); it never appears in Debug output.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    pub addr: SocketAddr,
    pub user: String,
    pub password: Secret,
    /// Upper bound for one call (`power_status`, `power`) including retries.
    pub timeout: Duration,
    /// Extra attempts after a timeout or network error within `timeout`. Never used
    /// after an authentication failure (retrying a wrong password can lock the user).
    pub retries: u32,
}

impl BmcConfig {
    /// Defaults that suit a LAN: 5 s per call, 2 retries.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_RETRIES: u32 = 2;

    pub fn new(addr: SocketAddr, user: impl Into<String>, password: Secret) -> Self {
        Self {
            addr,
            user: user.into(),
            password,
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
        }
    }
}

/// What went wrong talking to a BMC. Every variant names the BMC address; none
/// carries the password.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    #[error("BMC {addr}: no answer within {} ms (is it powered and reachable?)", after.as_millis())]
    Timeout { addr: SocketAddr, after: Duration },
    #[error("BMC {addr}: authentication failed for user {user:?} ({detail}): check the BMC user and password file")]
    Auth {
        addr: SocketAddr,
        user: String,
        detail: String,
    },
    #[error("BMC {addr}: connection refused (ICMP port unreachable): nothing answers IPMI on that address")]
    Refused { addr: SocketAddr },
    #[error("BMC {addr}: cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) is not supported ({detail}): enable it on the BMC")]
    UnsupportedCipherSuite { addr: SocketAddr, detail: String },
    #[error("BMC {addr}: {command} failed with completion code {code:#04x} ({meaning})")]
    Completion {
        addr: SocketAddr,
        command: &'static str,
        code: u8,
        meaning: &'static str,
    },
    #[error("BMC {addr}: protocol error during {stage}: {detail}")]
    Protocol {
        addr: SocketAddr,
        stage: &'static str,
        detail: String,
    },
    #[error("BMC {addr}: network error during {stage}")]
    Io {
        addr: SocketAddr,
        stage: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("BMC {addr}: the IPMI worker failed ({what}); the next call starts a fresh session")]
    Worker { addr: SocketAddr, what: String },
}

impl BmcError {
    pub fn addr(&self) -> SocketAddr {
        match self {
            BmcError::Timeout { addr, .. }
            | BmcError::Auth { addr, .. }
            | BmcError::Refused { addr }
            | BmcError::UnsupportedCipherSuite { addr, .. }
            | BmcError::Completion { addr, .. }
            | BmcError::Protocol { addr, .. }
            | BmcError::Io { addr, .. }
            | BmcError::Worker { addr, .. } => *addr,
        }
    }

    /// Whether another attempt (new session) may help: timeouts and network or
    /// protocol hiccups yes; a wrong password, a missing cipher suite or a BMC that
    /// answered "no" (completion code) no.
    pub fn is_transient(&self) -> bool {
        match self {
            BmcError::Timeout { .. }
            | BmcError::Refused { .. }
            | BmcError::Protocol { .. }
            | BmcError::Io { .. }
            | BmcError::Worker { .. } => true,
            BmcError::Completion { code, .. } => matches!(code, 0xc0 | 0xc3 | 0xce),
            BmcError::Auth { .. } | BmcError::UnsupportedCipherSuite { .. } => false,
        }
    }
}
