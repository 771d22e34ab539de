//! Requests, client to server: op codes, flags and body layouts (see `docs/protocol.md`).
//!
//! | op   | name  | body                                                            |
//! |------|-------|-----------------------------------------------------------------|
//! | 0x01 | GET   | key; flag 0x01: `min_seq` u64 LE, then key                      |
//! | 0x02 | SET   | `klen` u32 LE, key (`klen` bytes), value (rest)                 |
//! | 0x03 | DEL   | key                                                             |
//! | 0x04 | KEYS  | prefix; flag 0x01: `plen` u32 LE, prefix, `start_after` (rest)  |
//! | 0x05 | PING  | any bytes                                                       |
//! | 0x06 | STATS | empty                                                           |
//! | 0x07 | AUTH  | the secret (`--auth-file`)                                      |
//! | 0x08 | COMPACT | empty: run a compaction pass now, answer when it is done      |
//!
//! Ops `0x09`–`0x1f` (expiry, counters, conditions, batches, transactions, watch) are
//! `ext.rs`'s, carried here as `Request::Ext`.

use bytes::{BufMut, Bytes, BytesMut};

use super::bounds::{check_key, check_value, RequestError, RequestLimits};
use super::ext::ExtRequest;
use super::frame::{self, Frame, Header};

pub mod op {
    pub const GET: u8 = 0x01;
    pub const SET: u8 = 0x02;
    pub const DEL: u8 = 0x03;
    pub const KEYS: u8 = 0x04;
    pub const PING: u8 = 0x05;
    pub const STATS: u8 = 0x06;
    pub const AUTH: u8 = 0x07;
    pub const COMPACT: u8 = 0x08;
}

pub mod flag {
    /// GET: the body starts with `min_seq` (read-your-writes).
    pub const GET_MIN_SEQ: u8 = 0x01;
    /// KEYS: the body is `plen`, prefix, then the key to continue after.
    pub const KEYS_START_AFTER: u8 = 0x01;
}

const U32_BYTES: usize = 4;
const U64_BYTES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get {
        key: Bytes,
        min_seq: Option<u64>,
    },
    Set {
        key: Bytes,
        value: Bytes,
    },
    Del {
        key: Bytes,
    },
    Keys {
        prefix: Bytes,
        start_after: Option<Bytes>,
    },
    Ping {
        payload: Bytes,
    },
    Stats,
    Compact,
    Auth {
        secret: SecretBytes,
    },
    /// An op of `0x09`–`0x1f`.
    Ext(ExtRequest),
}

/// The body of AUTH; `Debug` shows only its length, so a request logged never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Bytes);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Get { .. } => "GET",
            Request::Set { .. } => "SET",
            Request::Del { .. } => "DEL",
            Request::Keys { .. } => "KEYS",
            Request::Ping { .. } => "PING",
            Request::Stats => "STATS",
            Request::Compact => "COMPACT",
            Request::Auth { .. } => "AUTH",
            Request::Ext(ext) => ext.name(),
        }
    }

    /// True for the requests that change the store.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Set { .. } | Request::Del { .. } => true,
            Request::Ext(ext) => ext.is_write(),
            _ => false,
        }
    }

    pub fn decode(frame: &Frame, limits: RequestLimits) -> Result<Request, RequestError> {
        let Header { kind, flags, .. } = frame.header;
        let body = &frame.body;
        let request = match kind {
            op::GET => {
                known_flags("GET", flags, flag::GET_MIN_SEQ)?;
                if flags & flag::GET_MIN_SEQ != 0 {
                    if body.len() < U64_BYTES {
                        return Err(short("GET", body, "min_seq needs 8 bytes"));
                    }
                    let min_seq = u64::from_le_bytes(body[..U64_BYTES].try_into().expect("8"));
                    Request::Get {
                        key: body.slice(U64_BYTES..),
                        min_seq: Some(min_seq),
                    }
                } else {
                    Request::Get {
                        key: body.clone(),
                        min_seq: None,
                    }
                }
            }
            op::SET => {
                known_flags("SET", flags, 0)?;
                let klen =
                    read_u32(body).ok_or_else(|| short("SET", body, "klen needs 4 bytes"))?;
                let key_end = U32_BYTES
                    .checked_add(klen as usize)
                    .filter(|end| *end <= body.len());
                let key_end =
                    key_end.ok_or_else(|| short("SET", body, "klen runs past the end"))?;
                let value = body.slice(key_end..);
                check_value(&value, limits)?;
                Request::Set {
                    key: body.slice(U32_BYTES..key_end),
                    value,
                }
            }
            op::DEL => {
                known_flags("DEL", flags, 0)?;
                Request::Del { key: body.clone() }
            }
            op::KEYS => {
                known_flags("KEYS", flags, flag::KEYS_START_AFTER)?;
                if flags & flag::KEYS_START_AFTER != 0 {
                    let plen =
                        read_u32(body).ok_or_else(|| short("KEYS", body, "plen needs 4 bytes"))?;
                    let end = U32_BYTES
                        .checked_add(plen as usize)
                        .filter(|end| *end <= body.len());
                    let end = end.ok_or_else(|| short("KEYS", body, "plen runs past the end"))?;
                    Request::Keys {
                        prefix: body.slice(U32_BYTES..end),
                        start_after: Some(body.slice(end..)),
                    }
                } else {
                    Request::Keys {
                        prefix: body.clone(),
                        start_after: None,
                    }
                }
            }
            op::PING => {
                known_flags("PING", flags, 0)?;
                Request::Ping {
                    payload: body.clone(),
                }
            }
            op::STATS => {
                known_flags("STATS", flags, 0)?;
                if !body.is_empty() {
                    return Err(RequestError::BodyNotEmpty {
                        name: "STATS",
                        len: body.len(),
                    });
                }
                Request::Stats
            }
            op::COMPACT => {
                known_flags("COMPACT", flags, 0)?;
                if !body.is_empty() {
                    return Err(RequestError::BodyNotEmpty {
                        name: "COMPACT",
                        len: body.len(),
                    });
                }
                Request::Compact
            }
            op::AUTH => {
                known_flags("AUTH", flags, 0)?;
                Request::Auth {
                    secret: SecretBytes(body.clone()),
                }
            }
            kind if ExtRequest::is_ext_op(kind) => {
                Request::Ext(ExtRequest::decode(kind, flags, body, limits)?)
            }
            _ => return Err(RequestError::UnknownOp { op: kind }),
        };
        if let Request::Get { key, .. } | Request::Set { key, .. } | Request::Del { key } = &request
        {
            check_key(key, limits)?;
        }
        Ok(request)
    }

    /// Appends this request as one frame with `id`.
    pub fn encode(&self, id: u64, dst: &mut BytesMut) {
        let header = |kind, flags| Header { kind, flags, id };
        match self {
            Request::Get { key, min_seq: None } => frame::encode(dst, header(op::GET, 0), &[key]),
            Request::Get {
                key,
                min_seq: Some(seq),
            } => frame::encode(
                dst,
                header(op::GET, flag::GET_MIN_SEQ),
                &[&seq.to_le_bytes(), key],
            ),
            Request::Set { key, value } => {
                let klen = u32::try_from(key.len())
                    .expect("key fits u32")
                    .to_le_bytes();
                frame::encode(dst, header(op::SET, 0), &[&klen, key, value])
            }
            Request::Del { key } => frame::encode(dst, header(op::DEL, 0), &[key]),
            Request::Keys {
                prefix,
                start_after: None,
            } => frame::encode(dst, header(op::KEYS, 0), &[prefix]),
            Request::Keys {
                prefix,
                start_after: Some(after),
            } => {
                let plen = u32::try_from(prefix.len())
                    .expect("prefix fits u32")
                    .to_le_bytes();
                frame::encode(
                    dst,
                    header(op::KEYS, flag::KEYS_START_AFTER),
                    &[&plen, prefix, after],
                )
            }
            Request::Ping { payload } => frame::encode(dst, header(op::PING, 0), &[payload]),
            Request::Stats => frame::encode(dst, header(op::STATS, 0), &[]),
            Request::Compact => frame::encode(dst, header(op::COMPACT, 0), &[]),
            Request::Auth { secret } => frame::encode(dst, header(op::AUTH, 0), &[&secret.0]),
            Request::Ext(ext) => ext.encode(id, dst),
        }
    }
}

/// Builds the body of a KEYS OK response: `count` u32 LE, then per key `klen` u32 LE and key.
pub fn put_key_entry(dst: &mut BytesMut, key: &[u8]) {
    dst.put_u32_le(u32::try_from(key.len()).expect("key fits u32"));
    dst.put_slice(key);
}

fn known_flags(name: &'static str, flags: u8, known: u8) -> Result<(), RequestError> {
    match flags & !known {
        0 => Ok(()),
        unknown => Err(RequestError::UnknownFlags {
            name,
            flags: unknown,
        }),
    }
}

fn read_u32(body: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(body.get(..U32_BYTES)?.try_into().ok()?))
}

fn short(name: &'static str, body: &[u8], need: &'static str) -> RequestError {
    RequestError::BodyTooShort {
        name,
        len: body.len(),
        need,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        key_bytes_max: 8,
        value_bytes_max: 16,
    };

    fn decode_one(request: &Request) -> Result<Request, RequestError> {
        let mut buf = BytesMut::new();
        request.encode(42, &mut buf);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.header.id, 42);
        Request::decode(&frame, LIMITS)
    }

    #[test]
    fn every_request_round_trips() {
        let b = Bytes::from_static;
        for request in [
            Request::Get {
                key: b(b"k"),
                min_seq: None,
            },
            Request::Get {
                key: b(b"k"),
                min_seq: Some(9),
            },
            Request::Set {
                key: b(b"k"),
                value: b(b""),
            },
            Request::Set {
                key: b(b"key\0\xff"),
                value: b(b"v a l"),
            },
            Request::Del { key: b(b"k") },
            Request::Keys {
                prefix: b(b""),
                start_after: None,
            },
            Request::Keys {
                prefix: b(b"p"),
                start_after: Some(b(b"pq")),
            },
            Request::Ping { payload: b(b"") },
            Request::Ping { payload: b(b"hi") },
            Request::Stats,
            Request::Compact,
            Request::Auth {
                secret: SecretBytes(b(b"s3cret")),
            },
        ] {
            assert_eq!(decode_one(&request).as_ref(), Ok(&request));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let b = Bytes::from_static;
        let err = |r: Request| decode_one(&r).unwrap_err();
        assert_eq!(
            err(Request::Get {
                key: b(b""),
                min_seq: None
            }),
            RequestError::KeyEmpty { max: 8 }
        );
        assert_eq!(
            err(Request::Del {
                key: b(b"123456789")
            }),
            RequestError::KeyTooLong { len: 9, max: 8 }
        );
        assert_eq!(
            err(Request::Set {
                key: b(b"k"),
                value: Bytes::from(vec![0; 17])
            }),
            RequestError::ValueTooLong { len: 17, max: 16 }
        );
        let raw = |kind, flags, body: &[u8]| {
            let frame = Frame {
                header: Header { kind, flags, id: 1 },
                body: Bytes::copy_from_slice(body),
            };
            Request::decode(&frame, LIMITS).unwrap_err()
        };
        assert_eq!(raw(0x3f, 0, b""), RequestError::UnknownOp { op: 0x3f });
        assert_eq!(
            raw(op::COMPACT, 0, b"x"),
            RequestError::BodyNotEmpty {
                name: "COMPACT",
                len: 1
            }
        );
        assert!(!format!(
            "{:?}",
            decode_one(&Request::Auth {
                secret: SecretBytes(b(b"pw"))
            })
        )
        .contains("pw"));
        assert_eq!(
            raw(op::GET, 0x02, b"k"),
            RequestError::UnknownFlags {
                name: "GET",
                flags: 2
            }
        );
        assert!(matches!(
            raw(op::SET, 0, b"\x01\x00"),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::SET, 0, b"\x05\x00\x00\x00ab"),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::SET, 0, b"\xff\xff\xff\xffab"),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::GET, 1, b"1234567"),
            RequestError::BodyTooShort { .. }
        ));
        assert_eq!(
            raw(op::STATS, 0, b"x"),
            RequestError::BodyNotEmpty {
                name: "STATS",
                len: 1
            }
        );
    }
}
