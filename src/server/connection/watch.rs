//! A connection given over to one WATCH: every change to a key (or to the keys under a
//! prefix) from a seq on, each pushed as an EVENT frame with the WATCH's id, first from the log
//! then live, in seq order, with no gap and no duplicate.
//!
//! Like a follower's stream (`leader_stream`), the cursor reads durable records from the log
//! files (the page cache, mostly): catching up and the live tail are the same loop, and a
//! slow watcher holds at most one chunk of events in memory. One that stops taking them is cut
//! off by the sweep (`--output-stall-secs`), as any connection is. Its position is registered
//! with the node so compaction leaves the segment under it alone. A seq that compaction has
//! already removed is answered ERROR naming the horizon, as etcd answers "compacted".

use std::rc::Rc;

use bytes::BytesMut;

use crate::limits::REPLICATION_CHUNK_BYTES;
use crate::protocol::response::{self, encode_error, Status};
use crate::replication::cursor::{self, Stop};
use crate::runtime::TcpStream;
use crate::wal::record::{self, Op, Record};
use crate::wal::segment;

use super::super::sweep::ConnWatch;
use super::super::{leader_stream, Node};

/// What a WATCH asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub id: u64,
    pub key: bytes::Bytes,
    pub prefix: bool,
    /// 0: from the next durable change on.
    pub from_seq: u64,
}

/// Event kinds on the wire (`docs/protocol.md`, WATCH).
const EVENT_SET: u8 = 1;
const EVENT_DEL: u8 = 2;
const EVENT_EXPIRED: u8 = 3;
const EVENT_EXPIRE: u8 = 4;

/// Appends the EVENT frames for the changes `record` makes that `request` watches.
pub fn encode_events(out: &mut BytesMut, request: &WatchRequest, record: &Record<'_>) {
    // A `from_seq` past the log's end starts the cursor at the end: skip up to it.
    if record.seq < request.from_seq {
        return;
    }
    let matches = |key: &[u8]| match request.prefix {
        true => key.starts_with(&request.key),
        false => key == &request.key[..],
    };
    let mut event = |kind: u8, expires_at_ms: u64, key: &[u8], value: &[u8]| {
        if !matches(key) {
            return;
        }
        let mut head = [0u8; 21];
        head[..8].copy_from_slice(&record.seq.to_le_bytes());
        head[8] = kind;
        head[9..17].copy_from_slice(&expires_at_ms.to_le_bytes());
        head[17..21].copy_from_slice(&(key.len() as u32).to_le_bytes());
        response::encode(out, Status::Event, 0, request.id, &[&head, key, value]);
    };
    match record.op {
        Op::Set => event(EVENT_SET, record.expires_at_ms, record.key, record.value),
        Op::Del => event(EVENT_DEL, 0, record.key, &[]),
        Op::Expired => event(EVENT_EXPIRED, 0, record.key, &[]),
        Op::ExpireAt => event(EVENT_EXPIRE, record.expires_at_ms, record.key, &[]),
        Op::Txn => {
            for op in record::txn_ops(record.value).map_while(|op| op.ok()) {
                match op.op {
                    Op::Set => event(EVENT_SET, op.expires_at_ms, op.key, op.value),
                    Op::Del => event(EVENT_DEL, 0, op.key, &[]),
                    Op::ExpireAt => event(EVENT_EXPIRE, op.expires_at_ms, op.key, &[]),
                    _ => {}
                }
            }
        }
        Op::Blank | Op::Membership => {}
    }
}

/// Serves the watch until the client goes, the connection is cut off, or the node stops.
pub async fn serve(node: &Rc<Node>, stream: &TcpStream, watch: &ConnWatch, request: WatchRequest) {
    let mut out = BytesMut::new();
    let reason = match stream_events(node, stream, watch, &request, &mut out).await {
        Ok(()) => return,
        Err(reason) => reason,
    };
    out.clear();
    encode_error(&mut out, request.id, &reason);
    let _ = super::send(stream, watch, &mut out).await;
}

async fn stream_events(
    node: &Rc<Node>,
    stream: &TcpStream,
    watch: &ConnWatch,
    request: &WatchRequest,
    out: &mut BytesMut,
) -> Result<(), String> {
    watch.idle_reading.set(false);
    let horizon = node.shard.log.horizon_seq();
    let durable_seq = node.shard.engine.borrow().durable_seq();
    let mut next_seq = match request.from_seq {
        0 => durable_seq + 1,
        seq if seq <= horizon => {
            return Err(format!(
                "seq {seq} is compacted: this node's log holds every change only after seq \
                 {horizon} (its horizon); watch from seq {} or later, after reading the \
                 current state",
                horizon + 1
            ))
        }
        seq => seq.min(durable_seq + 1),
    };
    let (mut segment, mut offset) = locate(node, next_seq).await?;
    let _registration = Registration::new(node, (segment, offset));
    let registration_id = _registration.id;
    let mut progress = node.shard.progress.subscribe();
    let mut shutdown = node.shutdown.subscribe();
    let mut want = REPLICATION_CHUNK_BYTES;
    // The client sends nothing more; a read that ends says it has gone.
    let mut gone = std::pin::pin!(client_gone(stream));
    loop {
        let durable_seq = node.shard.engine.borrow().durable_seq();
        if next_seq > durable_seq {
            tokio::select! {
                _ = progress.changed() => continue,
                _ = &mut gone => return Ok(()),
                _ = shutdown.changed() => return Ok(()),
            }
        }
        let chunk = node
            .shard
            .log
            .read_at(segment, offset, want)
            .await
            .map_err(|error| format!("reading the log: {error}"))?;
        let (bytes, count, stop) = cursor::sendable(&chunk, next_seq, durable_seq);
        want = REPLICATION_CHUNK_BYTES;
        if count == 0 {
            match stop {
                Stop::Incomplete { need } => want = need,
                Stop::EndOfChunk if chunk.is_empty() && segment != node.shard.log.active_file_no() => {
                    match node.shard.log.next_file(segment) {
                        Some(next) => {
                            segment = next;
                            offset = segment::HEADER_BYTES as u64;
                        }
                        None => {
                            return Err(format!(
                                "the log was compacted under this watch at seq {next_seq}; watch again from seq {next_seq}"
                            ))
                        }
                    }
                }
                Stop::NotDurable | Stop::EndOfChunk => {
                    return Err(format!("the log ends before durable seq {next_seq}"))
                }
                Stop::Damaged(reason) => {
                    return Err(format!("log damaged in segment {segment} at byte {offset}: {reason}"))
                }
            }
            continue;
        }
        let mut at = 0;
        while at < bytes {
            let (header, record) =
                record::decode(&chunk[at..bytes]).map_err(|error| error.to_string())?;
            encode_events(out, request, &record);
            at += header.total_bytes;
        }
        offset += bytes as u64;
        next_seq += count;
        if let Some(position) = node.watch_positions.borrow_mut().get_mut(&registration_id) {
            *position = (segment, offset);
        }
        if !out.is_empty() {
            super::send(stream, watch, out)
                .await
                .map_err(|error| format!("sending: {error}"))?;
        }
    }
}

/// Where the record with `seq` starts (or will start): the start of an uncompacted segment
/// that begins with it, or found by the replication cursor's scan.
async fn locate(node: &Node, seq: u64) -> Result<(u32, u64), String> {
    let starts_segment = node
        .shard
        .log
        .segments()
        .iter()
        .find(|s| s.compacted.is_none() && s.first_seq == seq)
        .map(|s| s.file_no);
    match starts_segment {
        Some(file_no) => Ok((file_no, segment::HEADER_BYTES as u64)),
        None => leader_stream::locate(node, seq)
            .await
            .map(|(file_no, offset, _)| (file_no, offset)),
    }
}

/// Resolves once the client closes its side (or sends anything: a watch takes no requests).
async fn client_gone(stream: &TcpStream) {
    let buf = vec![0u8; 64];
    let _ = stream.read(buf).await;
}

/// The watch's cursor position, listed with the node while it lives.
struct Registration<'a> {
    node: &'a Node,
    id: u64,
}

impl<'a> Registration<'a> {
    fn new(node: &'a Node, position: (u32, u64)) -> Registration<'a> {
        let id = node.next_watch_id.get();
        node.next_watch_id.set(id + 1);
        node.watch_positions.borrow_mut().insert(id, position);
        Registration { node, id }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.node.watch_positions.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;

    #[test]
    fn events_cover_every_change_a_record_makes_under_the_prefix() {
        let mut txn = Vec::new();
        record::encode_txn_op(&mut txn, Op::Set, 5, b"app/a", b"1");
        record::encode_txn_op(&mut txn, Op::Del, 0, b"other", b"");
        record::encode_txn_op(&mut txn, Op::ExpireAt, 9, b"app/b", b"");
        let record = Record {
            seq: 7,
            term: 0,
            op: Op::Txn,
            expires_at_ms: 0,
            key: b"",
            value: &txn,
        };
        let request = WatchRequest {
            id: 3,
            key: bytes::Bytes::from("app/"),
            prefix: true,
            from_seq: 1,
        };
        let mut out = BytesMut::new();
        encode_events(&mut out, &request, &record);
        let mut events = Vec::new();
        while let Some(frame) = frame::decode(&mut out, 1 << 20).unwrap() {
            assert_eq!(
                (frame.header.kind, frame.header.id),
                (Status::Event as u8, 3)
            );
            events.push(crate::client::Event::decode(&frame.body).unwrap());
        }
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].seq, &events[0].key[..], &events[0].value[..]),
            (7, &b"app/a"[..], &b"1"[..])
        );
        assert_eq!(
            (events[1].expires_at_ms, &events[1].key[..]),
            (9, &b"app/b"[..])
        );
    }
}
