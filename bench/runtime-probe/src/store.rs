//! What every variant serves, identically: frames cut and requests decoded by `kvs::protocol`,
//! answered from an in-memory map prefilled with the keys kvs-bench asks for. Pure: no I/O, so
//! the three runtimes differ only in how bytes reach this code and leave it.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kvs::limits::{FRAME_BYTES_MAX_DEFAULT, KEY_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};
use kvs::protocol::frame;
use kvs::protocol::response::{self, encode_error};
use kvs::protocol::{Request, RequestLimits, Status};

/// Bytes of every prefilled value (the figure `tools/compare` uses).
pub const VALUE_BYTES: usize = 100;

const LIMITS: RequestLimits = RequestLimits {
    key_bytes_max: KEY_BYTES_MAX_DEFAULT,
    value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
};

/// After answering what it could: keep reading, or send what is queued and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A frame could not be read (bad length): its ERROR is queued, nothing after it is read.
    Close,
}

pub struct Store {
    map: HashMap<Bytes, Bytes>,
    /// The seq a SET answers with; SET is served so `kvs-bench --prefill` works too.
    seq: u64,
}

impl Store {
    /// Keys `key:000000000000` .. below `keys`, kvs-bench's key format (`make_key`).
    pub fn prefilled(keys: u64) -> Store {
        let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
        let map = (0..keys)
            .map(|index| (Bytes::from(format!("key:{index:012}")), value.clone()))
            .collect();
        Store { map, seq: 0 }
    }

    /// Cuts every whole frame off the front of `input` and appends its reply to `out`; a partial
    /// frame stays in `input` for the next read. Client input never panics here: a bad frame
    /// is answered ERROR with id 0 (then the caller closes), a bad request ERROR with its id.
    pub fn answer_all(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Flow {
        loop {
            let frame = match frame::decode(input, FRAME_BYTES_MAX_DEFAULT) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Flow::Continue,
                Err(error) => {
                    encode_error(out, 0, &format!("{error}; closing the connection"));
                    input.clear();
                    return Flow::Close;
                }
            };
            let id = frame.header.id;
            match Request::decode(&frame, LIMITS) {
                Ok(Request::Get { key, .. }) => match self.map.get(&key) {
                    Some(value) => response::encode(out, Status::Ok, 0, id, &[value]),
                    None => response::encode(out, Status::NotFound, 0, id, &[]),
                },
                Ok(Request::Ping { payload }) => {
                    response::encode(out, Status::Ok, 0, id, &[&payload])
                }
                Ok(Request::Set { key, value }) => {
                    self.seq += 1;
                    self.map.insert(key, value);
                    response::encode(out, Status::Ok, 0, id, &[&self.seq.to_le_bytes()]);
                }
                Ok(other) => encode_error(
                    out,
                    id,
                    &format!("{} is not served by runtime-probe", other.name()),
                ),
                Err(error) => encode_error(out, id, &error.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs::protocol::{Frame, Response};

    fn reply(out: &mut BytesMut) -> Response {
        let frame: Frame = frame::decode(out, u32::MAX).unwrap().unwrap();
        Response::decode(frame).unwrap()
    }

    #[test]
    fn answers_pipelined_requests_in_order_and_keeps_a_partial_frame() {
        let mut store = Store::prefilled(10);
        let mut input = BytesMut::new();
        let get = |key: &'static [u8]| Request::Get {
            key: Bytes::from_static(key),
            min_seq: None,
        };
        get(b"key:000000000003").encode(1, &mut input);
        get(b"key:000000000010").encode(2, &mut input);
        Request::Ping {
            payload: Bytes::from_static(b"hi"),
        }
        .encode(3, &mut input);
        let mut partial = BytesMut::new();
        get(b"key:000000000004").encode(4, &mut partial);
        input.extend_from_slice(&partial[..5]);

        let mut out = BytesMut::new();
        assert_eq!(store.answer_all(&mut input, &mut out), Flow::Continue);
        assert_eq!(&input[..], &partial[..5]);
        let first = reply(&mut out);
        assert_eq!((first.status, first.id), (Status::Ok, 1));
        assert_eq!(first.body.len(), VALUE_BYTES);
        let second = reply(&mut out);
        assert_eq!((second.status, second.id), (Status::NotFound, 2));
        let third = reply(&mut out);
        assert_eq!((third.id, &third.body[..]), (3, &b"hi"[..]));
        assert!(out.is_empty());
    }

    #[test]
    fn a_bad_length_is_answered_and_closes() {
        let mut store = Store::prefilled(1);
        let mut input = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let mut out = BytesMut::new();
        assert_eq!(store.answer_all(&mut input, &mut out), Flow::Close);
        let error = reply(&mut out);
        assert_eq!((error.status, error.id), (Status::Error, 0));
    }
}
