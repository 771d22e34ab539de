//! The kvs protocol (`docs/protocol.md`), spoken through `kvs::protocol`: SET and GET with the
//! request id echoed in each reply.

use bytes::BytesMut;
use kvs::limits::FRAME_BYTES_MAX_CEILING;
use kvs::protocol::ext::{Expiry, ExtRequest, SetOptions};
use kvs::protocol::{frame, Response, Status};

use super::{Codec, CodecError};
use crate::workload::{OpKind, Reply, Request};

/// Bytes of the `seq` in the OK body of a SET.
const SEQ_BYTES: usize = 8;

pub struct KvsCodec;

impl Codec for KvsCodec {
    type Raw = Response;
    const REPLIES_CARRY_ID: bool = true;

    fn encode(id: u64, request: &Request, dst: &mut BytesMut) {
        let request = match request.op {
            OpKind::Set if request.ttl_ms > 0 => kvs::protocol::Request::Ext(ExtRequest::SetX {
                key: request.key.clone(),
                value: request.value.clone(),
                options: SetOptions {
                    expiry: Some(Expiry::InMs(request.ttl_ms)),
                    ..Default::default()
                },
            }),
            OpKind::Set => kvs::protocol::Request::Set {
                key: request.key.clone(),
                value: request.value.clone(),
            },
            OpKind::Get => kvs::protocol::Request::Get {
                key: request.key.clone(),
                min_seq: None,
            },
        };
        request.encode(id, dst);
    }

    fn decode(src: &mut BytesMut) -> Result<Option<(u64, Response)>, CodecError> {
        // Any server's max_frame is at most the ceiling; the length is checked before the
        // frame is buffered whole, so a bad length costs nothing.
        let frame = frame::decode(src, FRAME_BYTES_MAX_CEILING)
            .map_err(|error| CodecError(format!("unreadable kvs frame: {error}")))?;
        let Some(frame) = frame else {
            return Ok(None);
        };
        let id = frame.header.id;
        let response = Response::decode(frame)
            .map_err(|error| CodecError(format!("kvs reply to id {id}: {error}")))?;
        Ok(Some((id, response)))
    }

    fn interpret(op: OpKind, response: Response) -> Reply {
        let text = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
        match (response.status, op) {
            (Status::Ok, OpKind::Get) => Reply::Value(response.body),
            (Status::Ok, OpKind::Set) if response.body.len() == SEQ_BYTES => Reply::Stored,
            (Status::Ok, OpKind::Set) => Reply::Error(format!(
                "SET answered OK with a {}-byte body, not an 8-byte seq",
                response.body.len()
            )),
            (Status::NotFound, OpKind::Get) => Reply::NotFound,
            (Status::NotFound, OpKind::Set) => Reply::Error("SET answered NOT_FOUND".to_string()),
            (Status::NotLeader, _) => Reply::Error(format!(
                "NOT_LEADER: the leader is {:?}",
                text(&response.body)
            )),
            (Status::Error, _) => Reply::Error(format!("ERROR: {}", text(&response.body))),
            (Status::ConditionFailed | Status::Event, _) => Reply::Error(format!(
                "{} to a plain {op:?}",
                kvs::client::status_name(response.status)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Phase;
    use bytes::Bytes;
    use kvs::protocol::response;
    use std::time::Instant;

    #[test]
    fn requests_are_kvs_frames() {
        let request = Request {
            op: OpKind::Set,
            key: Bytes::from_static(b"name"),
            value: Bytes::from_static(b"alice"),
            ttl_ms: 0,
            start: Instant::now(),
            phase: Phase::Measure,
            check: crate::workload::Check::None,
        };
        let mut buf = BytesMut::new();
        KvsCodec::encode(1, &request, &mut buf);
        // The SET example of docs/protocol.md.
        assert_eq!(
            &buf[..],
            b"\x17\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00namealice"
        );
    }

    #[test]
    fn replies_decode_at_every_cut() {
        let mut full = BytesMut::new();
        response::encode(&mut full, Status::Ok, 0, 9, &[&1u64.to_le_bytes()]);
        response::encode(&mut full, Status::NotFound, 0, 10, &[]);
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            let mut got = Vec::new();
            while let Some((id, raw)) = KvsCodec::decode(&mut buf).unwrap() {
                got.push(id);
                let _ = raw;
            }
            let expect: &[u64] = if cut < 22 { &[] } else { &[9] };
            assert_eq!(got, expect, "cut {cut}");
        }
        let mut buf = full.clone();
        let (id, raw) = KvsCodec::decode(&mut buf).unwrap().unwrap();
        assert_eq!(id, 9);
        assert_eq!(KvsCodec::interpret(OpKind::Set, raw), Reply::Stored);
        let (_, raw) = KvsCodec::decode(&mut buf).unwrap().unwrap();
        assert_eq!(KvsCodec::interpret(OpKind::Get, raw), Reply::NotFound);
    }

    #[test]
    fn bad_lengths_and_statuses_are_errors() {
        let mut buf = BytesMut::from(&b"\x05\x00\x00\x00"[..]);
        assert!(KvsCodec::decode(&mut buf).is_err());
        let mut buf = BytesMut::new();
        frame::encode(
            &mut buf,
            frame::Header {
                kind: 0x7f,
                flags: 0,
                id: 3,
            },
            &[],
        );
        assert!(KvsCodec::decode(&mut buf).is_err());
    }
}
