//! A request's effect on the engine and the reply it will get. Never touches a socket or a
//! file: the server decides when a reply may go and does the I/O.
//!
//! Every request is decided when it is read, against the newest state (pending writes
//! included), so a connection's requests take effect in the order sent even when many are in
//! flight. What a reply observed must be durable before it is sent: each pending reply names the
//! seq it waits for.

pub mod ext;

use bytes::{BufMut, Bytes, BytesMut};

use crate::engine::{Current, Deleted, Engine, Values};
use crate::protocol::request::put_key_entry;
use crate::protocol::response::flag as response_flag;
use crate::protocol::{Request, Status};
use crate::wal::Location;

/// A request accepted on a connection and not yet answered.
#[derive(Debug)]
pub enum Pending {
    /// The answer is decided; it may go once `after_seq` is durable.
    Reply {
        status: Status,
        flags: u8,
        body: Bytes,
        after_seq: u64,
    },
    /// OK once `seq` is durable (and replicated as configured), with `body`, or without one
    /// with the seq.
    Write { seq: u64, body: Option<Bytes> },
    /// GET of a durable value: read it from the log once `after_seq` is durable.
    Value { location: Location, after_seq: u64 },
    /// Answered from the state at the time it may go: STATS, and a GET whose `min_seq` this
    /// node has not reached yet (a follower catching up).
    Later { read: Later, after_seq: u64 },
}

impl Pending {
    /// The seq that must be durable before this reply may go (a write's own seq aside).
    pub fn after_seq(&self) -> u64 {
        match self {
            Pending::Write { .. } => 0,
            Pending::Reply { after_seq, .. }
            | Pending::Value { after_seq, .. }
            | Pending::Later { after_seq, .. } => *after_seq,
        }
    }

    /// Bytes of a reply body built at accept time and held until the reply is sent.
    pub fn reply_body_bytes(&self) -> usize {
        match self {
            Pending::Reply { body, .. } => body.len(),
            Pending::Write {
                body: Some(body), ..
            } => body.len(),
            _ => 0,
        }
    }
}

#[derive(Debug)]
pub enum Later {
    Get {
        key: Bytes,
    },
    Stats,
    /// COMPACT: answered when a compaction pass started after it has finished.
    Compact,
    /// RESP's INFO, ROLE and WAIT: answered from the node by the connection's task.
    Node(crate::resp::NodeRead),
    /// A Raft RPC or cluster admin op (ops 0x20–0x26, 0x45–0x47): the Raft node answers it.
    Raft(crate::protocol::frame::Frame),
}

/// Takes `request` into the engine and says what its reply waits for. Writes join the open
/// batch at once, so pipelined writes share a batch. `after_seq` is the newest write this
/// connection sent before it; `keys_body_max` bounds a KEYS (or MGET) reply; `values` reads a
/// stored value for the few requests that decide on one (INCRBY, MGET, TXN).
pub fn accept(
    engine: &mut Engine,
    request: Request,
    after_seq: u64,
    keys_body_max: usize,
    values: &mut Values<'_>,
) -> Pending {
    let reply = |status, body, after_seq| Pending::Reply {
        status,
        flags: 0,
        body,
        after_seq,
    };
    // Once a log write failed, the engine holds nothing pending: whatever a read sees now is
    // durable, so it waits for no earlier write of this connection (or, for KEYS, of any),
    // which the failure would never let become durable. (`min_seq` still waits.)
    let settled = |seq: u64| match engine.write_failed() {
        Some(_) => seq.min(engine.durable_seq()),
        None => seq,
    };
    let after_seq = settled(after_seq);
    match request {
        Request::Set { key, value } => match engine.set(&key, value) {
            Ok(seq) => Pending::Write { seq, body: None },
            Err(failed) => error(failed.to_string()),
        },
        Request::Del { key } => match engine.del(&key) {
            Ok(Deleted::Written { seq }) => Pending::Write { seq, body: None },
            Ok(Deleted::NotFound { after_seq: pending }) => {
                reply(Status::NotFound, Bytes::new(), pending.max(after_seq))
            }
            Err(failed) => error(failed.to_string()),
        },
        Request::Get { key, min_seq } => {
            let min_seq = min_seq.unwrap_or(0);
            if min_seq > engine.last_seq() {
                return Pending::Later {
                    read: Later::Get { key },
                    after_seq: after_seq.max(min_seq),
                };
            }
            let after_seq = after_seq.max(min_seq);
            match engine.current(&key) {
                Current::Value {
                    value,
                    after_seq: seq,
                    ..
                } => reply(Status::Ok, value, after_seq.max(seq)),
                Current::Absent { after_seq: seq } => {
                    reply(Status::NotFound, Bytes::new(), after_seq.max(seq))
                }
                Current::Stored {
                    location,
                    after_seq: seq,
                    ..
                } => Pending::Value {
                    location,
                    after_seq: after_seq.max(seq),
                },
            }
        }
        Request::Keys {
            prefix,
            start_after,
        } => {
            let (flags, body) = keys_reply(engine, &prefix, start_after.as_deref(), keys_body_max);
            // It may list pending writes of any connection: wait until all of them are durable.
            Pending::Reply {
                status: Status::Ok,
                flags,
                body,
                after_seq: settled(engine.last_seq()),
            }
        }
        Request::Stats => Pending::Later {
            read: Later::Stats,
            after_seq,
        },
        Request::Ping { payload } => reply(Status::Ok, payload, 0),
        Request::Compact => Pending::Later {
            read: Later::Compact,
            after_seq: 0,
        },
        // The connection's `auth::Gate` answers AUTH before a request gets here; this is what
        // AUTH means on its own, on a server without `--auth-file`: a no-op.
        Request::Auth { .. } => ok_empty(),
        Request::Ext(request) => ext::accept(engine, request, after_seq, keys_body_max, values),
    }
}

/// OK with an empty body, at once.
pub fn ok_empty() -> Pending {
    Pending::Reply {
        status: Status::Ok,
        flags: 0,
        body: Bytes::new(),
        after_seq: 0,
    }
}

pub fn error(message: String) -> Pending {
    Pending::Reply {
        status: Status::Error,
        flags: 0,
        body: Bytes::from(message),
        after_seq: 0,
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
    engine.keys_newest(prefix, start_after, |key| {
        if body.len() + 4 + key.len() > body_bytes_max {
            flags = response_flag::KEYS_MORE;
            return false;
        }
        put_key_entry(&mut body, key);
        count += 1;
        true
    });
    body[..4].copy_from_slice(&count.to_le_bytes());
    (flags, body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Response;

    fn keys(engine: &Engine, prefix: &[u8], after: Option<&[u8]>, max: usize) -> (u8, Vec<Bytes>) {
        let (flags, body) = keys_reply(engine, prefix, after, max);
        (
            flags,
            Response {
                status: Status::Ok,
                flags,
                id: 0,
                body,
            }
            .keys()
            .unwrap(),
        )
    }

    #[test]
    fn keys_reply_pages_to_fit_and_sees_pending_writes() {
        let mut engine = Engine::new(0);
        for k in ["a1", "a2", "b"] {
            engine.set(k.as_bytes(), Bytes::from_static(b"v")).unwrap();
        }
        let mut batch = engine.take_batch(Default::default()).unwrap();
        let buf = batch.take_buf();
        batch.restore_buf(buf);
        engine.apply_durable(&batch, 1, 0);
        engine.set(b"a3", Bytes::new()).unwrap();
        engine.del(b"a1").unwrap();
        let (flags, page) = keys(&engine, b"a", None, 4 + 6);
        assert_eq!(
            (flags, page),
            (response_flag::KEYS_MORE, vec![Bytes::from("a2")])
        );
        let (flags, page) = keys(&engine, b"a", Some(b"a2"), 1024);
        assert_eq!((flags, page), (0, vec![Bytes::from("a3")]));
    }

    #[test]
    fn a_get_answers_as_of_its_place_in_the_connection() {
        let mut engine = Engine::new(0);
        let get = |engine: &mut Engine| {
            accept(
                engine,
                Request::Get {
                    key: Bytes::from("k"),
                    min_seq: None,
                },
                0,
                1024,
                &mut |_| Err("no log in this test".to_string()),
            )
        };
        engine.set(b"k", Bytes::from("first")).unwrap();
        let first = get(&mut engine);
        engine.set(b"k", Bytes::from("second")).unwrap();
        engine.del(b"k").unwrap();
        let gone = get(&mut engine);
        match (first, gone) {
            (
                Pending::Reply {
                    status: Status::Ok,
                    body,
                    after_seq: 1,
                    ..
                },
                Pending::Reply {
                    status: Status::NotFound,
                    after_seq: 3,
                    ..
                },
            ) => assert_eq!(body, "first"),
            other => panic!("{other:?}"),
        }
    }
}
