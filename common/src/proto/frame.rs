//! Length-delimited JSON frames: a 4-byte big-endian length, then that many bytes of
//! JSON. Generic over the stream so TLS can wrap it.
//!
//! The length is checked against the maximum *before* allocating, so a peer announcing
//! a 4 GiB frame costs us four bytes of reading, not 4 GiB of memory.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame ({len} bytes): {reason}")]
    Malformed { len: usize, reason: String },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A frame after the handshake whose MAC does not verify: modified in transit or
    /// injected by someone without the session keys.
    #[error("frame {seq} failed authentication (modified, or injected by someone without the session key)")]
    Forged { seq: u64 },
    /// A frame whose sequence number is not the next one: replayed, reordered or
    /// dropped on the way.
    #[error("frame carries sequence number {got} where {expected} was due (replayed, reordered or dropped)")]
    OutOfOrder { got: u64, expected: u64 },
    #[error("i/o error on the connection")]
    Io(#[source] std::io::Error),
}

/// Serialises `msg` into a frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg).map_err(|e| FrameError::Malformed {
        len: 0,
        reason: e.to_string(),
    })?;
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Parses a frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed {
        len: body.len(),
        reason: e.to_string(),
    })
}

/// Writes one frame and flushes.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode(msg, max)?;
    w.write_all(&buf).await.map_err(FrameError::Io)?;
    w.flush().await.map_err(FrameError::Io)
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_body(r, max).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
    }
}

/// Writes one frame of raw `body` bytes and flushes.
pub async fn write_body<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    if body.len() > max {
        return Err(FrameError::TooLarge {
            len: body.len(),
            max,
        });
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf).await.map_err(FrameError::Io)?;
    w.flush().await.map_err(FrameError::Io)
}

/// Reads one frame's raw body. `Ok(None)` on a clean end of stream between frames.
pub async fn read_body<R>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_buf[got..]).await.map_err(FrameError::Io)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Grown as bytes arrive, not allocated at the announced length: a peer that
    // announces 1 MiB and sends 10 bytes costs 10 bytes.
    let mut body = Vec::new();
    (&mut *r)
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(FrameError::Io)?;
    if body.len() < len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GenieMsg, Report, MAX_FRAME_BYTES};

    fn heartbeat(gen: u64) -> GenieMsg {
        GenieMsg::Report(Report {
            gen,
            sent_at_ms: 5,
            metrics: None,
            vms: None,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn round_trip_and_clean_eof() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &heartbeat(1), MAX_FRAME_BYTES)
            .await
            .unwrap();
        write_frame(&mut a, &heartbeat(2), MAX_FRAME_BYTES)
            .await
            .unwrap();
        drop(a);
        let m1: Option<GenieMsg> = read_frame(&mut b, MAX_FRAME_BYTES).await.unwrap();
        let m2: Option<GenieMsg> = read_frame(&mut b, MAX_FRAME_BYTES).await.unwrap();
        let end: Option<GenieMsg> = read_frame(&mut b, MAX_FRAME_BYTES).await.unwrap();
        assert_eq!(m1, Some(heartbeat(1)));
        assert_eq!(m2, Some(heartbeat(2)));
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading_it() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let r: Result<Option<GenieMsg>, _> = read_frame(&mut b, MAX_FRAME_BYTES).await;
        assert!(matches!(r, Err(FrameError::TooLarge { len, .. }) if len == u32::MAX as usize));
    }

    #[tokio::test]
    async fn malformed_and_truncated_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        let r: Result<Option<GenieMsg>, _> = read_frame(&mut b, MAX_FRAME_BYTES).await;
        assert!(
            matches!(r, Err(FrameError::Malformed { len: 3, .. })),
            "{r:?}"
        );

        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{}").await.unwrap();
        drop(a);
        let r: Result<Option<GenieMsg>, _> = read_frame(&mut b, MAX_FRAME_BYTES).await;
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");
    }

    #[test]
    fn encode_refuses_oversized_message() {
        let r = encode(&"x".repeat(100), 10);
        assert!(matches!(r, Err(FrameError::TooLarge { .. })));
    }
}
