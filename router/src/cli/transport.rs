//! How the CLI reaches the router's API: a Unix socket (`unix:/run/wisp/router.sock`
//! or a bare path, the default), plain TCP on loopback (`host:port`), or TLS
//! (`https://host:port`, trusting the certificate in `--ca-file`). TCP carries a bearer
//! token read from a file (`--token-file`): a token never goes on the command line.
//!
//! HTTP/1.1 is written by hand, one request per connection (`Connection: close`): the
//! CLI sends a handful of requests, and a socket path is something no HTTP client
//! crate of ours accepts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use wisp_common::secret::Secret;

/// Largest answer the CLI reads (event lists, VM lists): far above any real one.
const MAX_RESPONSE: usize = 64 << 20;

/// Where the API is and what to present there.
#[derive(Clone, PartialEq, Eq)]
pub struct Api {
    pub target: Target,
    pub token: Option<Secret>,
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("target", &self.target)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
    Tls { host: String, addr: String },
}

impl Target {
    /// `unix:/path` or `/path`, `https://host:port`, `http://host:port` or `host:port`.
    pub fn parse(s: &str) -> Self {
        if let Some(p) = s.strip_prefix("unix:") {
            return Self::Unix(PathBuf::from(p));
        }
        if s.starts_with('/') {
            return Self::Unix(PathBuf::from(s));
        }
        if let Some(a) = s.strip_prefix("https://") {
            let addr = a.trim_end_matches('/').to_owned();
            let host = match addr.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                None => addr.clone(),
            };
            return Self::Tls { host, addr };
        }
        Self::Tcp(
            s.strip_prefix("http://")
                .unwrap_or(s)
                .trim_end_matches('/')
                .to_owned(),
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => f.write_str(a),
            Self::Tls { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

impl From<&str> for Api {
    fn from(s: &str) -> Self {
        Self {
            target: Target::parse(s),
            token: None,
            ca: None,
        }
    }
}
impl From<&String> for Api {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}
impl From<&Api> for Api {
    fn from(a: &Api) -> Self {
        a.clone()
    }
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("malformed HTTP answer: {0}")]
    Http(String),
}

impl Api {
    /// The API at `target`, with the token in `token_file` and the CA in `ca`.
    pub fn new(
        target: &str,
        token_file: Option<&Path>,
        ca: Option<PathBuf>,
    ) -> Result<Self, wisp_common::secret::SecretError> {
        let token = token_file.map(Secret::from_file).transpose()?;
        Ok(Self {
            target: Target::parse(target),
            token,
            ca,
        })
    }

    /// Sends one request; returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), TransportError> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            match &self.target {
                Target::Unix(_) => "localhost",
                Target::Tcp(a) | Target::Tls { addr: a, .. } => a,
            }
        )
        .into_bytes();
        if let Some(t) = &self.token {
            req.extend_from_slice(b"Authorization: Bearer ");
            req.extend_from_slice(t.expose());
            req.extend_from_slice(b"\r\n");
        }
        match body {
            Some(b) => {
                req.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                req.extend_from_slice(b);
            }
            None => req.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        match &self.target {
            Target::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        std::io::Error::new(
                            e.kind(),
                            format!(
                                "{e}: only root and members of the `wisp` group may use {}",
                                p.display()
                            ),
                        )
                    } else {
                        e
                    }
                })?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                exchange(s, &req)
            }
            Target::Tcp(a) => exchange(tcp(a, timeout)?, &req),
            Target::Tls { host, addr } => {
                let config = self.tls_config()?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| TransportError::Tls(format!("server name {host:?}: {e}")))?;
                let conn = rustls::ClientConnection::new(config, name)
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                exchange(rustls::StreamOwned::new(conn, tcp(addr, timeout)?), &req)
            }
        }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, TransportError> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            TransportError::Tls(
                "an https API needs --ca-file (or WISP_CA_FILE): the PEM certificate to trust"
                    .into(),
            )
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TransportError::Tls(format!("--ca-file {}: {e}", ca.display())))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| TransportError::Tls(format!("--ca-file {}: {e}", ca.display())))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, TransportError> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))
        .into())
}

/// Writes `req` and reads the whole answer (by Content-Length, chunks, or to the end).
fn exchange<S: Read + Write>(mut s: S, req: &[u8]) -> Result<(u16, Vec<u8>), TransportError> {
    s.write_all(req)?;
    s.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut head: Option<(u16, usize, Framing)> = None;
    loop {
        if head.is_none() {
            head = parse_head(&buf)?;
        }
        if let Some((status, start, framing)) = &head {
            let body = &buf[*start..];
            match framing {
                Framing::Length(n) if body.len() >= *n => {
                    return Ok((*status, body[..*n].to_vec()))
                }
                Framing::Chunked => {
                    if let Some(b) = dechunk(body)? {
                        return Ok((*status, b));
                    }
                }
                _ => {}
            }
        }
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: what we have is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return match head {
                Some((status, start, Framing::ToEnd)) => Ok((status, buf[start..].to_vec())),
                _ => Err(TransportError::Http(
                    "connection closed before the whole answer".into(),
                )),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(TransportError::Http(format!(
                "answer above {MAX_RESPONSE} bytes"
            )));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    ToEnd,
}

fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Framing)>, TransportError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| TransportError::Http("head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| TransportError::Http(format!("bad status line in {head:?}")))?;
    let mut framing = Framing::ToEnd;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            let n = v
                .parse()
                .map_err(|_| TransportError::Http(format!("content-length {v:?}")))?;
            framing = Framing::Length(n);
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        }
    }
    Ok(Some((status, end + 4, framing)))
}

/// The body of a complete chunked message, or None while chunks are missing.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>, TransportError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .ok_or_else(|| TransportError::Http("bad chunk size".into()))?;
        let data = eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if b.len() < data + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&b[data..data + size]);
        b = &b[data + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads from a cursor, swallows writes.
    struct Fake(std::io::Cursor<Vec<u8>>);
    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("unix:/run/wisp/router.sock"),
            Target::Unix("/run/wisp/router.sock".into())
        );
        assert_eq!(Target::parse("/x.sock"), Target::Unix("/x.sock".into()));
        assert_eq!(
            Target::parse("127.0.0.1:7101"),
            Target::Tcp("127.0.0.1:7101".into())
        );
        assert_eq!(
            Target::parse("http://127.0.0.1:7101/"),
            Target::Tcp("127.0.0.1:7101".into())
        );
        assert_eq!(
            Target::parse("https://wisp.example:7443"),
            Target::Tls {
                host: "wisp.example".into(),
                addr: "wisp.example:7443".into()
            }
        );
    }

    #[test]
    fn answers_by_length_chunks_and_end() {
        let by_len = Fake(std::io::Cursor::new(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing".to_vec(),
        ));
        assert_eq!(exchange(by_len, b"GET").ok(), Some((200, b"{}".to_vec())));
        let to_end = Fake(std::io::Cursor::new(b"HTTP/1.0 500 x\r\n\r\nboom".to_vec()));
        assert_eq!(exchange(to_end, b"GET").ok(), Some((500, b"boom".to_vec())));
        let (s, _, f) = parse_head(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n")
            .ok()
            .flatten()
            .expect("head parses");
        assert_eq!(s, 404);
        assert!(matches!(f, Framing::Chunked));
        assert_eq!(
            dechunk(b"2\r\n{}\r\n3\r\nabc\r\n0\r\n\r\n").ok().flatten(),
            Some(b"{}abc".to_vec())
        );
        assert_eq!(dechunk(b"5\r\nab").ok().flatten(), None);
    }
}
