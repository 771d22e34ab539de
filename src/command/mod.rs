//! A request's effect on the engine and the reply it will get. Never touches a socket or a
//! file: the server decides when a reply can go (its write durable, its read's turn come) and
//! does the I/O.

use bytes::{BufMut, Bytes, BytesMut};

use crate::engine::{Deleted, Engine};
use crate::protocol::request::put_key_entry;
use crate::protocol::response::flag as response_flag;
use crate::protocol::{Request, Status};

/// A request accepted on a connection and not yet answered.
#[derive(Debug)]
pub enum Pending {
    /// The answer is known now.
    Reply { status: Status, body: Bytes },
    /// OK with `seq` once `seq` is durable (ERROR if the log fails first).
    Write { seq: u64 },
    /// NOT_FOUND once `after_seq` is durable: the answer depends on a pending write.
    NotFound { after_seq: u64 },
    /// A read, answered from the durable state once the connection's earlier writes (and
    /// `min_seq`) are durable.
    Read { read: Read, after_seq: u64 },
}

#[derive(Debug)]
pub enum Read {
    Get {
        key: Bytes,
    },
    Keys {
        prefix: Bytes,
        start_after: Option<Bytes>,
    },
    Stats,
}

/// Takes `request` into the engine (writes join the open batch at once, so pipelined writes
/// share a batch) and says what its reply waits for. `after_seq` is the newest write this
/// connection sent before it.
pub fn accept(engine: &mut Engine, request: Request, after_seq: u64) -> Pending {
    match request {
        Request::Set { key, value } => match engine.set(&key, &value) {
            Ok(seq) => Pending::Write { seq },
            Err(failed) => error(failed.to_string()),
        },
        Request::Del { key } => match engine.del(&key) {
            Ok(Deleted::Written { seq }) => Pending::Write { seq },
            Ok(Deleted::NotFound { after_seq: pending }) => Pending::NotFound {
                after_seq: pending.max(after_seq),
            },
            Err(failed) => error(failed.to_string()),
        },
        Request::Get { key, min_seq } => Pending::Read {
            read: Read::Get { key },
            after_seq: after_seq.max(min_seq.unwrap_or(0)),
        },
        Request::Keys {
            prefix,
            start_after,
        } => Pending::Read {
            read: Read::Keys {
                prefix,
                start_after,
            },
            after_seq,
        },
        Request::Stats => Pending::Read {
            read: Read::Stats,
            after_seq,
        },
        Request::Ping { payload } => Pending::Reply {
            status: Status::Ok,
            body: payload,
        },
    }
}

pub fn error(message: String) -> Pending {
    Pending::Reply {
        status: Status::Error,
        body: Bytes::from(message),
    }
}

/// The body of a KEYS reply that fits `body_bytes_max`, and its flags (more to come or not).
pub fn keys_reply(
    engine: &Engine,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    body_bytes_max: usize,
) -> (u8, Bytes) {
    let mut body = BytesMut::with_capacity(256);
    body.put_u32_le(0);
    let mut count = 0u32;
    let mut flags = 0;
    for key in engine.keys(prefix, start_after) {
        if body.len() + 4 + key.len() > body_bytes_max {
            flags = response_flag::KEYS_MORE;
            break;
        }
        put_key_entry(&mut body, key);
        count += 1;
    }
    body[..4].copy_from_slice(&count.to_le_bytes());
    (flags, body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Response;

    #[test]
    fn keys_reply_pages_to_fit() {
        let mut engine = Engine::new(0);
        for k in ["a1", "a2", "a3", "b"] {
            engine.set(k.as_bytes(), b"v").unwrap();
        }
        let mut batch = engine.take_batch(Default::default()).unwrap();
        let buf = batch.take_buf();
        batch.restore_buf(buf);
        engine.apply_durable(&batch, 1, 0);
        let (flags, body) = keys_reply(&engine, b"a", None, 4 + 2 * 6);
        assert_eq!(flags, response_flag::KEYS_MORE);
        let response = Response {
            status: Status::Ok,
            flags,
            id: 0,
            body,
        };
        assert_eq!(
            response.keys().unwrap(),
            vec![Bytes::from("a1"), Bytes::from("a2")]
        );
        let (flags, body) = keys_reply(&engine, b"a", Some(b"a2"), 1024);
        assert_eq!(flags, 0);
        let response = Response {
            status: Status::Ok,
            flags,
            id: 0,
            body,
        };
        assert_eq!(response.keys().unwrap(), vec![Bytes::from("a3")]);
    }
}
