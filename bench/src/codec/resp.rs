//! RESP2, the Redis protocol, as much as SET and GET need: commands go out as arrays of bulk
//! strings; replies are read whole from the front of the buffer, whatever the read split.
//!
//! | first byte | reply          | rest                                  |
//! |------------|----------------|---------------------------------------|
//! | `+`        | simple string  | text `\r\n`                           |
//! | `-`        | error          | text `\r\n`                           |
//! | `:`        | integer        | digits `\r\n`                         |
//! | `$`        | bulk string    | length `\r\n` bytes `\r\n`; `$-1` nil |
//! | `*`        | array          | count `\r\n` elements; `*-1` nil      |
//!
//! Redis answers a connection's commands in order, so replies carry no id: the driver matches
//! each to the oldest request in flight.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Codec, CodecError};
use crate::workload::{OpKind, Reply, Request};

/// Redis's own bound on a bulk string (`proto-max-bulk-len`).
const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;
/// A line (simple string, error, number) longer than this is not a reply of ours.
const LINE_BYTES_MAX: usize = 64 * 1024;
/// Nested arrays deeper than this are refused rather than followed.
const DEPTH_MAX: usize = 8;
/// Elements of one array, bounded so a bad count allocates nothing large.
const ARRAY_LEN_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Value>),
}

pub struct RespCodec;

impl Codec for RespCodec {
    type Raw = Value;
    const REPLIES_CARRY_ID: bool = false;

    fn encode(_id: u64, request: &Request, dst: &mut BytesMut) {
        match request.op {
            OpKind::Set => encode_command(dst, &[b"SET", &request.key, &request.value]),
            OpKind::Get => encode_command(dst, &[b"GET", &request.key]),
        }
    }

    fn decode(src: &mut BytesMut) -> Result<Option<(u64, Value)>, CodecError> {
        match parse(src, 0)? {
            Some((value, used)) => {
                src.advance(used);
                Ok(Some((0, value)))
            }
            None => Ok(None),
        }
    }

    fn interpret(op: OpKind, value: Value) -> Reply {
        match (op, value) {
            (_, Value::Error(message)) => Reply::Error(String::from_utf8_lossy(&message).into()),
            (OpKind::Set, Value::Simple(text)) if &text[..] == b"OK" => Reply::Stored,
            (OpKind::Get, Value::Bulk(value)) => Reply::Value(value),
            (OpKind::Get, Value::Nil) => Reply::NotFound,
            (op, other) => {
                Reply::Error(format!("unexpected RESP reply to {}: {other:?}", op.name()))
            }
        }
    }
}

/// Appends `*n\r\n` and each part as `$len\r\n part \r\n`.
pub fn encode_command(dst: &mut BytesMut, parts: &[&[u8]]) {
    let bytes: usize = parts.iter().map(|part| part.len() + 16).sum();
    dst.reserve(bytes + 16);
    put_header(dst, b'*', parts.len());
    for part in parts {
        put_header(dst, b'$', part.len());
        dst.put_slice(part);
        dst.put_slice(b"\r\n");
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, n: usize) {
    dst.put_u8(kind);
    dst.put_slice(n.to_string().as_bytes());
    dst.put_slice(b"\r\n");
}

/// One value from the front of `buf`: the value and the bytes it took, `None` while incomplete.
pub fn parse(buf: &[u8], depth: usize) -> Result<Option<(Value, usize)>, CodecError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((line, after_line)) = line(&buf[1..])? else {
        return Ok(None);
    };
    let after_line = after_line + 1;
    let value = match kind {
        b'+' => Value::Simple(Bytes::copy_from_slice(line)),
        b'-' => Value::Error(Bytes::copy_from_slice(line)),
        b':' => Value::Integer(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len == -1 {
                return Ok(Some((Value::Nil, after_line)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= BULK_BYTES_MAX)
                .ok_or_else(|| CodecError(format!("RESP bulk length {len} is out of range")))?;
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(CodecError("RESP bulk string does not end in CRLF".into()));
            }
            return Ok(Some((
                Value::Bulk(Bytes::copy_from_slice(&buf[after_line..end])),
                end + 2,
            )));
        }
        b'*' => {
            let count = number(line)?;
            if count == -1 {
                return Ok(Some((Value::Nil, after_line)));
            }
            if depth >= DEPTH_MAX {
                return Err(CodecError("RESP arrays nested too deep".into()));
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|count| *count <= ARRAY_LEN_MAX)
                .ok_or_else(|| CodecError(format!("RESP array length {count} is out of range")))?;
            let mut items = Vec::new();
            let mut at = after_line;
            for _ in 0..count {
                let Some((item, used)) = parse(&buf[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        other => {
            return Err(CodecError(format!(
                "not a RESP reply: starts with byte 0x{other:02x}"
            )))
        }
    };
    Ok(Some((value, after_line)))
}

/// The bytes before the first CRLF and the offset just past it.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, CodecError> {
    let scan = &buf[..buf.len().min(LINE_BYTES_MAX + 2)];
    match scan.windows(2).position(|pair| pair == b"\r\n") {
        Some(at) => Ok(Some((&buf[..at], at + 2))),
        None if buf.len() > LINE_BYTES_MAX => Err(CodecError(format!(
            "RESP line longer than {LINE_BYTES_MAX} bytes"
        ))),
        None => Ok(None),
    }
}

fn number(line: &[u8]) -> Result<i64, CodecError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            CodecError(format!(
                "RESP number {:?} is not a number",
                String::from_utf8_lossy(line)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut buf: BytesMut) -> Result<Vec<Value>, CodecError> {
        let mut values = Vec::new();
        while let Some((_, value)) = RespCodec::decode(&mut buf)? {
            values.push(value);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(values)
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut buf = BytesMut::new();
        encode_command(&mut buf, &[b"SET", b"k", b"v\r\n"]);
        assert_eq!(&buf[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    #[test]
    fn every_reply_kind_parses() {
        let wire = b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n:-1\r\n*-1\r\n$0\r\n\r\n";
        assert_eq!(
            all(BytesMut::from(&wire[..])).unwrap(),
            vec![
                Value::Simple(Bytes::from_static(b"OK")),
                Value::Error(Bytes::from_static(b"ERR no")),
                Value::Integer(42),
                Value::Bulk(Bytes::from_static(b"a\r\n")),
                Value::Nil,
                Value::Array(vec![
                    Value::Bulk(Bytes::from_static(b"x")),
                    Value::Integer(-1)
                ]),
                Value::Nil,
                Value::Bulk(Bytes::new()),
            ]
        );
    }

    #[test]
    fn partial_reads_wait_and_then_parse_the_same() {
        let wire = b"+OK\r\n$5\r\nhello\r\n*2\r\n+a\r\n$-1\r\n";
        let whole = all(BytesMut::from(&wire[..])).unwrap();
        // Fed one byte at a time, as the worst split of reads would.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(*byte);
            while let Some((_, value)) = RespCodec::decode(&mut buf).unwrap() {
                got.push(value);
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde\r\n",
            b"*-5\r\n",
            b":9999999999999999999999\r\n",
        ] {
            assert!(
                RespCodec::decode(&mut BytesMut::from(bad)).is_err(),
                "{bad:?}"
            );
        }
        let deep = b"*1\r\n".repeat(DEPTH_MAX + 1);
        assert!(RespCodec::decode(&mut BytesMut::from(&deep[..])).is_err());
        // A huge claimed length costs nothing and waits.
        assert_eq!(
            RespCodec::decode(&mut BytesMut::from(&b"$536870912\r\n"[..])),
            Ok(None)
        );
    }

    #[test]
    fn replies_mean_what_the_op_expects() {
        let ok = Value::Simple(Bytes::from_static(b"OK"));
        assert_eq!(RespCodec::interpret(OpKind::Set, ok.clone()), Reply::Stored);
        assert!(matches!(
            RespCodec::interpret(OpKind::Get, ok),
            Reply::Error(_)
        ));
        assert_eq!(
            RespCodec::interpret(OpKind::Get, Value::Nil),
            Reply::NotFound
        );
        assert_eq!(
            RespCodec::interpret(OpKind::Get, Value::Error(Bytes::from_static(b"ERR x"))),
            Reply::Error("ERR x".into())
        );
    }
}
