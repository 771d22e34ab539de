//! Reading whole frames from an io_uring socket into a growing buffer.

use crate::runtime::BoundedBuf;
use crate::runtime::TcpStream;
use bytes::BytesMut;

use crate::limits::CONNECTION_READ_BYTES;
use crate::protocol::frame::{self, Frame, FrameError};

/// Reads more bytes onto the end of `buf`, making room for the rest of a frame whose length
/// is known (bounded by `frame_bytes_max`) or for one ordinary read. Returns the buffer and the
/// bytes read (0 at end of stream).
pub async fn read_more(
    stream: &TcpStream,
    mut buf: BytesMut,
    frame_bytes_max: u32,
) -> (std::io::Result<usize>, BytesMut) {
    let want = match frame::check(&buf, frame_bytes_max) {
        Ok(None) if buf.len() >= frame::LEN_BYTES => {
            let len = u32::from_le_bytes(buf[..frame::LEN_BYTES].try_into().expect("4 bytes"));
            (frame::LEN_BYTES + len as usize)
                .saturating_sub(buf.len())
                .max(CONNECTION_READ_BYTES / 4)
        }
        _ => CONNECTION_READ_BYTES,
    };
    buf.reserve(want);
    // tokio-uring reads into the start of the buffer it is given, so hand it only the spare
    // capacity: a partial frame already read must stay where it is.
    let (filled, capacity) = (buf.len(), buf.capacity());
    let (read, slice) = stream.read(buf.slice(filled..capacity)).await;
    (read, slice.into_inner())
}

/// Reads whatever comes next onto the end of `buf` (one ordinary read): for RESP, whose
/// commands do not say their length up front. Returns the buffer and the bytes read.
pub async fn read_some(
    stream: &TcpStream,
    mut buf: BytesMut,
) -> (std::io::Result<usize>, BytesMut) {
    buf.reserve(CONNECTION_READ_BYTES);
    let (filled, capacity) = (buf.len(), buf.capacity());
    let (read, slice) = stream.read(buf.slice(filled..capacity)).await;
    (read, slice.into_inner())
}

/// Why a stream of frames ended.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads the next whole frame, keeping any bytes after it in `buf`.
pub async fn next_frame(
    stream: &TcpStream,
    buf: &mut BytesMut,
    frame_bytes_max: u32,
) -> Result<Frame, ReadError> {
    loop {
        if let Some(frame) = frame::decode(buf, frame_bytes_max)? {
            return Ok(frame);
        }
        let (read, returned) = read_more(stream, std::mem::take(buf), frame_bytes_max).await;
        *buf = returned;
        if read? == 0 {
            return Err(ReadError::Closed);
        }
    }
}
