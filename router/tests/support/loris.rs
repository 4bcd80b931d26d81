//! Slow-loris clients of the router's TCP API: connections that send half a request
//! and wait, and the check that the router closed every one of them in time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `n` connections to `tcp`, each having sent `request_line` and one header, never
/// the blank line that ends the request.
pub fn half_sent_requests(tcp: &str, request_line: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(tcp).unwrap();
            let _ = s.write_all(format!("{request_line}\r\nHost: x\r\n").as_bytes());
            s
        })
        .collect()
}

/// How many of `conns` the peer had not closed (EOF or reset) within `deadline`,
/// counted from the call.
pub fn still_open_after(conns: Vec<TcpStream>, deadline: Duration) -> usize {
    let start = Instant::now();
    let mut open = 0;
    for mut s in conns {
        let left = deadline
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut b = [0u8; 512];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => {
                    open += 1;
                    break;
                }
            }
        }
    }
    open
}
