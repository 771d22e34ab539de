//! The byte codecs of the pipelined targets. Each says how to write a request with an id, how
//! to cut one reply off the front of the bytes read (`Ok(None)` while it is not all there, so
//! partial reads are fine), and what that reply means for the op it answers.
//!
//! - `kvs`: the native protocol, through `kvs::protocol` (the one codec of the project).
//! - `resp`: RESP2 for Redis, written here (the few lines SET and GET need).

pub mod kvs;
pub mod resp;

use bytes::BytesMut;

use crate::workload::{OpKind, Reply, Request};

/// A reply that cannot be read: the connection is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

pub trait Codec {
    /// A reply as read, before it is matched to its request.
    type Raw;
    /// True when replies carry the request's id; false when they come back in order (RESP).
    const REPLIES_CARRY_ID: bool;

    fn encode(id: u64, request: &Request, dst: &mut BytesMut);
    /// One reply and, when the protocol has them, its request's id.
    fn decode(src: &mut BytesMut) -> Result<Option<(u64, Self::Raw)>, CodecError>;
    fn interpret(op: OpKind, raw: Self::Raw) -> Reply;
}
