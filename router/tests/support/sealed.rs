//! A played genie's link after the handshake: the stream with the session's keys,
//! split into sealed halves, and `read_frame`/`write_frame` with the signatures of
//! `wisp_common::proto::frame`'s, so a test reads like a plain-frame one while every
//! frame it sends is sealed as a real genie's.
#![allow(dead_code)]

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use wisp_common::proto::frame::FrameError;
use wisp_common::proto::session::{SealedReader, SealedWriter, SessionKeys};

/// The genie's sending half.
pub type Writer = SealedWriter<OwnedWriteHalf>;
/// The genie's reading half.
pub type Reader = SealedReader<OwnedReadHalf>;

/// A welcomed genie's connection.
#[derive(Debug)]
pub struct SealedStream {
    reader: Reader,
    writer: Writer,
}

impl SealedStream {
    pub fn new(stream: TcpStream, keys: SessionKeys) -> Self {
        let (r, w) = stream.into_split();
        Self {
            reader: SealedReader::new(r, keys.open),
            writer: SealedWriter::new(w, keys.seal),
        }
    }

    pub fn into_split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }

    /// The raw socket, to send bytes no genie would (a malformed frame).
    pub fn raw(&mut self) -> &mut OwnedWriteHalf {
        &mut self.writer.inner
    }
}

/// Whatever a played genie writes sealed frames to.
pub trait SealedWrite {
    fn writer(&mut self) -> &mut Writer;
}
impl SealedWrite for Writer {
    fn writer(&mut self) -> &mut Writer {
        self
    }
}
impl SealedWrite for SealedStream {
    fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }
}

/// Whatever a played genie reads sealed frames from.
pub trait SealedRead {
    fn reader(&mut self) -> &mut Reader;
}
impl SealedRead for Reader {
    fn reader(&mut self) -> &mut Reader {
        self
    }
}
impl SealedRead for SealedStream {
    fn reader(&mut self) -> &mut Reader {
        &mut self.reader
    }
}

/// Seals and writes one frame.
pub async fn write_frame<S: SealedWrite, T: Serialize>(
    s: &mut S,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    s.writer().send(msg, max).await
}

/// Reads and opens one frame; `Ok(None)` at a clean end.
pub async fn read_frame<S: SealedRead, T: DeserializeOwned>(
    s: &mut S,
    max: usize,
) -> Result<Option<T>, FrameError> {
    s.reader().recv(max).await
}

// The generic bounds the sealed halves need, spelled once for the compiler.
#[allow(unused)]
fn _bounds<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>() {}
