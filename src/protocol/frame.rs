//! The envelope every message travels in, in both directions.
//!
//! | offset | size | field | meaning                                               |
//! |--------|------|-------|-------------------------------------------------------|
//! | 0      | 4    | len   | u32 LE: bytes after this field; `10 <= len <= max`    |
//! | 4      | 1    | kind  | request: op code; response: status                    |
//! | 5      | 1    | flags | bit flags, meaning set per kind                       |
//! | 6      | 8    | id    | u64 LE, echoed unchanged in the response              |
//! | 14     | len-10 | body | per kind                                             |

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const LEN_OFFSET: usize = 0;
pub const KIND_OFFSET: usize = 4;
pub const FLAGS_OFFSET: usize = 5;
pub const ID_OFFSET: usize = 6;
pub const BODY_OFFSET: usize = 14;
/// Bytes of `len` itself.
pub const LEN_BYTES: usize = KIND_OFFSET - LEN_OFFSET;
/// The smallest `len`: kind, flags and id with an empty body.
pub const LEN_MIN: u32 = (BODY_OFFSET - KIND_OFFSET) as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u8,
    pub id: u64,
}

/// A frame that cannot be read: the receiver answers one ERROR with id 0 and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is below the minimum of {LEN_MIN}")]
    TooShort { len: u32 },
    #[error("frame length {len} exceeds this server's maximum of {max} bytes (--max-frame-bytes)")]
    TooLong { len: u32, max: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub body: Bytes,
}

/// Looks at the front of `buf`: `Ok(None)` while the frame is not all there, else the whole
/// frame's size in bytes. The length is judged before anything is allocated for it, so a
/// header that claims 4 GiB costs nothing.
pub fn check(buf: &[u8], frame_bytes_max: u32) -> Result<Option<usize>, FrameError> {
    let Some(len_bytes) = buf.get(LEN_OFFSET..LEN_OFFSET + LEN_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes"));
    if len < LEN_MIN {
        return Err(FrameError::TooShort { len });
    }
    if len > frame_bytes_max {
        return Err(FrameError::TooLong {
            len,
            max: frame_bytes_max,
        });
    }
    let total = LEN_BYTES + len as usize;
    Ok((buf.len() >= total).then_some(total))
}

/// Cuts one complete frame off the front of `buf`, without copying its body.
pub fn decode(buf: &mut BytesMut, frame_bytes_max: u32) -> Result<Option<Frame>, FrameError> {
    let Some(total) = check(buf, frame_bytes_max)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(total);
    frame.advance(KIND_OFFSET);
    let kind = frame.get_u8();
    let flags = frame.get_u8();
    let id = frame.get_u64_le();
    Ok(Some(Frame {
        header: Header { kind, flags, id },
        body: frame.freeze(),
    }))
}

/// Appends a frame whose body is the concatenation of `body_parts`.
pub fn encode(dst: &mut BytesMut, header: Header, body_parts: &[&[u8]]) {
    let body_bytes: usize = body_parts.iter().map(|part| part.len()).sum();
    encode_header(dst, header, body_bytes);
    for part in body_parts {
        dst.put_slice(part);
    }
}

/// Appends only the header of a frame whose body of `body_bytes` the caller appends next.
pub fn encode_header(dst: &mut BytesMut, header: Header, body_bytes: usize) {
    let len = u32::try_from(body_bytes + (BODY_OFFSET - KIND_OFFSET)).expect("frame fits u32");
    dst.reserve(BODY_OFFSET + body_bytes);
    dst.put_u32_le(len);
    dst.put_u8(header.kind);
    dst.put_u8(header.flags);
    dst.put_u64_le(header.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = BytesMut::new();
        let header = Header {
            kind: 2,
            flags: 1,
            id: 0xdead_beef_0102,
        };
        encode(&mut buf, header, &[b"ab", b"", b"cde"]);
        assert_eq!(buf.len(), BODY_OFFSET + 5);
        buf.put_slice(b"\x0a"); // the start of the next frame stays behind
        let frame = decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.header, header);
        assert_eq!(&frame.body[..], b"abcde");
        assert_eq!(&buf[..], b"\x0a");
    }

    #[test]
    fn incomplete_frames_wait_at_every_cut() {
        let mut full = BytesMut::new();
        encode(
            &mut full,
            Header {
                kind: 5,
                flags: 0,
                id: 7,
            },
            &[b"hello"],
        );
        for cut in 0..full.len() {
            assert_eq!(check(&full[..cut], 1024), Ok(None), "cut at {cut}");
        }
        assert_eq!(check(&full, 1024), Ok(Some(full.len())));
    }

    #[test]
    fn bad_lengths_are_refused_before_the_body_arrives() {
        assert_eq!(
            check(&9u32.to_le_bytes(), 1024),
            Err(FrameError::TooShort { len: 9 })
        );
        assert_eq!(
            check(&u32::MAX.to_le_bytes(), 1024),
            Err(FrameError::TooLong {
                len: u32::MAX,
                max: 1024
            })
        );
        assert_eq!(check(&10u32.to_le_bytes(), 1024), Ok(None));
    }
}
