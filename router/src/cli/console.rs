//! `router vm console NAME`: the interactive serial console. One HTTP/1.1 request
//! upgraded to raw bytes (`GET /v1/vms/{name}/console/attach`, `Upgrade:
//! wisp-console`), then stdin goes to the VM's serial port and its output to stdout
//! until Ctrl-] (0x1d) or the router closes the session (it says why in a last line).
//!
//! On a terminal, stdin is put in raw mode (keys such as Ctrl-C go to the guest), and a
//! guard restores it on every way out. Without a terminal the bytes are relayed as they
//! come, which is what scripts and tests use.

use std::io::{IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use nix::sys::termios::{self, SetArg, Termios};

use super::transport::Target;
use super::{Api, ClientError};
use crate::vms::api::{CONSOLE_HOST_HEADER, CONSOLE_PROTOCOL};

/// The key that leaves the console: Ctrl-], as telnet and virsh have it.
pub const ESCAPE: u8 = 0x1d;
/// The response head is small; anything larger is not our router.
const MAX_HEAD: usize = 16 * 1024;

/// Puts stdin into raw mode; the previous mode comes back on drop.
struct RawMode(Termios);

impl RawMode {
    fn enter() -> nix::Result<Self> {
        let stdin = std::io::stdin();
        let before = termios::tcgetattr(&stdin)?;
        let mut raw = before.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Self(before))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// The upgraded connection: the local socket or TCP (TLS is not offered here).
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Unix(s) => Self::Unix(s.try_clone()?),
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.shutdown(how),
            Self::Tcp(s) => s.shutdown(how),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

enum Event {
    Input(Vec<u8>),
    Escape(Vec<u8>),
    StdinEnd,
    ServerEnd,
}

/// Attaches to `name`'s console through the router API at `api` (its local socket, or
/// TCP with the API's token).
pub fn attach(api_target: &Api, name: &str) -> Result<(), ClientError> {
    let api_text = api_target.target.to_string();
    let api = api_text.as_str();
    let unreachable = |e: std::io::Error| ClientError::Unreachable {
        api: api.to_owned(),
        reason: e.to_string(),
    };
    let (mut sock, host_header) = match &api_target.target {
        Target::Unix(p) => (
            Conn::Unix(UnixStream::connect(p).map_err(unreachable)?),
            "localhost".to_owned(),
        ),
        Target::Tcp(a) => {
            let s = TcpStream::connect(a).map_err(unreachable)?;
            let _ = s.set_nodelay(true);
            (Conn::Tcp(s), a.clone())
        }
        Target::Tls { .. } => {
            return Err(ClientError::Api {
                status: 0,
                message: "the interactive console needs the router's local socket or a \
                          loopback TCP API (not https)"
                    .into(),
            })
        }
    };
    let auth = match &api_target.token {
        Some(t) => format!(
            "Authorization: Bearer {}\r\n",
            String::from_utf8_lossy(t.expose())
        ),
        None => String::new(),
    };
    let req = format!(
        "GET /v1/vms/{name}/console/attach HTTP/1.1\r\nHost: {host_header}\r\n{auth}Connection: upgrade\r\nUpgrade: {CONSOLE_PROTOCOL}\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).map_err(unreachable)?;
    let host = read_head(api, &mut sock)?;
    eprint!("Connected to {name} on {host}; Ctrl-] leaves\r\n");

    let _raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enter().map_err(|e| ClientError::Decode {
            api: api.to_owned(),
            reason: format!("cannot put the terminal in raw mode: {e}"),
        })?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel();
    let mut from_server = sock.try_clone().map_err(unreachable)?;
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = from_server.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                break;
            }
        }
        let _ = out_tx.send(Event::ServerEnd);
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin();
        loop {
            let ev = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Event::StdinEnd,
                Ok(n) => match buf[..n].iter().position(|b| *b == ESCAPE) {
                    Some(i) => Event::Escape(buf[..i].to_vec()),
                    None => Event::Input(buf[..n].to_vec()),
                },
            };
            let stop = !matches!(ev, Event::Input(_));
            if tx.send(ev).is_err() || stop {
                return;
            }
        }
    });
    // Stdin's end is not a goodbye: output keeps coming until Ctrl-] or the router ends.
    while let Ok(ev) = rx.recv() {
        match ev {
            Event::Input(b) => {
                if sock.write_all(&b).is_err() {
                    break;
                }
            }
            Event::Escape(b) => {
                let _ = sock.write_all(&b);
                let _ = sock.shutdown(Shutdown::Both);
                drop(_raw);
                eprintln!("\r\nLeft the console of {name}.");
                return Ok(());
            }
            Event::StdinEnd => {}
            Event::ServerEnd => break,
        }
    }
    drop(_raw);
    Err(ClientError::Api {
        status: 502,
        message: format!("the console of {name} closed"),
    })
}

/// Reads the response head; a 101 gives the host's name, anything else the API's error.
fn read_head(api: &str, sock: &mut Conn) -> Result<String, ClientError> {
    let decode = |reason: String| ClientError::Decode {
        api: api.to_owned(),
        reason,
    };
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    // Byte by byte: whatever follows the head already belongs to the console.
    while !head.ends_with(b"\r\n\r\n") {
        match sock.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => return Err(decode("the connection closed in the response head".into())),
            Err(e) => return Err(decode(e.to_string())),
        }
        if head.len() > MAX_HEAD {
            return Err(decode(format!("response head over {MAX_HEAD} bytes")));
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| decode(format!("not an HTTP response: {text:?}")))?;
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if status == 101 {
        return Ok(header(CONSOLE_HOST_HEADER).unwrap_or_else(|| "?".into()));
    }
    // An error: its body is JSON `{"error": ...}` of Content-Length bytes.
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    let mut body = vec![0u8; len];
    let _ = sock.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}: {body}"));
    Err(ClientError::Api { status, message })
}
