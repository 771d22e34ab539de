//! Responses, server to client: status codes and the bodies the server builds.
//!
//! | status | name       | body                                                   |
//! |--------|------------|--------------------------------------------------------|
//! | 0x00   | OK         | per request (`docs/protocol.md`)                       |
//! | 0x01   | NOT_FOUND  | empty                                                  |
//! | 0x02   | NOT_LEADER | the leader's client address, UTF-8 `host:port`, or "" |
//! | 0x03   | ERROR      | a UTF-8 message for a person                           |
//! | 0x04   | CONDITION_FAILED | `seq` u64: the key's current seq (0: absent); nothing written |
//! | 0x05   | EVENT      | WATCH: one change, pushed with the WATCH's id (`docs/protocol.md`) |

use bytes::{Bytes, BytesMut};

use super::frame::{self, Frame, Header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0x00,
    NotFound = 0x01,
    NotLeader = 0x02,
    Error = 0x03,
    ConditionFailed = 0x04,
    Event = 0x05,
}

impl Status {
    pub fn from_u8(byte: u8) -> Option<Status> {
        Some(match byte {
            0x00 => Status::Ok,
            0x01 => Status::NotFound,
            0x02 => Status::NotLeader,
            0x03 => Status::Error,
            0x04 => Status::ConditionFailed,
            0x05 => Status::Event,
            _ => return None,
        })
    }
}

pub mod flag {
    /// KEYS: the reply stopped early to fit one frame; ask again after its last key.
    pub const KEYS_MORE: u8 = 0x01;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub flags: u8,
    pub id: u64,
    pub body: Bytes,
}

/// A frame that a client cannot take as a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown response status 0x{status:02x}")]
pub struct UnknownStatus {
    pub status: u8,
}

impl Response {
    pub fn decode(frame: Frame) -> Result<Response, UnknownStatus> {
        let status = Status::from_u8(frame.header.kind).ok_or(UnknownStatus {
            status: frame.header.kind,
        })?;
        Ok(Response {
            status,
            flags: frame.header.flags,
            id: frame.header.id,
            body: frame.body,
        })
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        encode(dst, self.status, self.flags, self.id, &[&self.body]);
    }

    /// The `seq` in the OK body of a SET or DEL.
    pub fn seq(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.body.get(..8)?.try_into().ok()?))
    }

    /// The keys in the OK body of a KEYS; `None` if the body is malformed.
    pub fn keys(&self) -> Option<Vec<Bytes>> {
        let count = u32::from_le_bytes(self.body.get(..4)?.try_into().ok()?);
        let mut keys = Vec::with_capacity((count as usize).min(self.body.len() / 4));
        let mut at = 4;
        for _ in 0..count {
            let len = u32::from_le_bytes(self.body.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            let end = at.checked_add(len).filter(|end| *end <= self.body.len())?;
            keys.push(self.body.slice(at..end));
            at = end;
        }
        (at == self.body.len()).then_some(keys)
    }
}

/// Appends a response frame whose body is the concatenation of `body_parts`.
pub fn encode(dst: &mut BytesMut, status: Status, flags: u8, id: u64, body_parts: &[&[u8]]) {
    frame::encode(
        dst,
        Header {
            kind: status as u8,
            flags,
            id,
        },
        body_parts,
    );
}

/// Appends an ERROR frame carrying `message`.
pub fn encode_error(dst: &mut BytesMut, id: u64, message: &str) {
    encode(dst, Status::Error, 0, id, &[message.as_bytes()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::put_key_entry;
    use bytes::BufMut;

    #[test]
    fn keys_body_round_trips() {
        let mut body = BytesMut::new();
        body.put_u32_le(2);
        put_key_entry(&mut body, b"a");
        put_key_entry(&mut body, b"");
        let response = Response {
            status: Status::Ok,
            flags: 0,
            id: 1,
            body: body.freeze(),
        };
        assert_eq!(
            response.keys().unwrap(),
            vec![Bytes::from_static(b"a"), Bytes::new()]
        );
        let cut = Response {
            body: response.body.slice(..6),
            ..response.clone()
        };
        assert_eq!(cut.keys(), None);
    }

    #[test]
    fn response_round_trips() {
        let mut buf = BytesMut::new();
        encode(&mut buf, Status::NotLeader, 0, 77, &[b"127.0.0.1:1"]);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        let response = Response::decode(frame).unwrap();
        assert_eq!(response.status, Status::NotLeader);
        assert_eq!(response.id, 77);
        assert_eq!(&response.body[..], b"127.0.0.1:1");
    }
}
