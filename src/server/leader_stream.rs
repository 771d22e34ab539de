//! The leader's side of one follower: admission, then a stream of durable records read from
//! the log files, and the follower's ACKs.
//!
//! The cursor always reads from the log on disk (the page cache, mostly): catch-up after a long
//! absence and the live tail are the same loop, a slow follower only slows its own stream, and
//! no record is buffered in memory for it beyond one chunk.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::runtime::TcpStream;
use bytes::BytesMut;

use crate::limits::{
    REPLICATION_CHUNK_BYTES, REPLICATION_FRAME_BYTES_MAX, REPLICATION_HEARTBEAT_MS,
};
use crate::protocol::response::encode_error;
use crate::protocol::Frame;
use crate::replication::cursor::{self, Stop};
use crate::replication::messages::{self, Hello, Welcome};
use crate::wal::record;
use crate::wal::segment;

use super::frames::{self, ReadError};
use super::role::{FollowerInfo, Leader};
use super::Node;

/// The leader's side of replication: a follower's HELLO is handed over only on a leader.
fn leader(node: &Node) -> &Leader {
    node.leader()
        .expect("followers are served only by a leader")
}

pub async fn serve(
    node: &Rc<Node>,
    stream: &Rc<TcpStream>,
    peer: SocketAddr,
    hello: Frame,
    buf: BytesMut,
) {
    let hello = match Hello::decode(hello.header.flags, &hello.body) {
        Ok(hello) => hello,
        Err(error) => return refuse(stream, &error.to_string()).await,
    };
    let durable_seq = node.shard.engine.borrow().durable_seq();
    let start = match admit(node, &hello, durable_seq).await {
        Ok(start) => start,
        Err(reason) => {
            log_refusal(node, peer, &hello.node_id, &reason);
            return refuse(stream, &reason).await;
        }
    };
    let mut out = BytesMut::new();
    Welcome {
        log_id: node.shard.log.log_id(),
        durable_seq,
        snapshot_seq: match start {
            Start::Snapshot { .. } => Some(durable_seq),
            Start::Stream { .. } => None,
        },
    }
    .encode(&mut out);
    if stream.write_all(out).await.0.is_err() {
        return;
    }
    let (segment, offset) = match start {
        Start::Stream { position } => position,
        Start::Snapshot { why } => {
            tracing::info!(%peer, node_id = %hello.node_id, snapshot_seq = durable_seq, %why, "sending a snapshot to a follower");
            let reason = snapshot(node, stream, peer, &hello, durable_seq).await;
            tracing::info!(%peer, node_id = %hello.node_id, %reason, "snapshot transfer ended");
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    };
    let next_seq = hello.last_seq + 1;
    let link_id = leader(node).new_link_id();
    leader(node).followers.borrow_mut().insert(
        link_id,
        FollowerInfo {
            node_id: hello.node_id.clone(),
            addr: peer,
            // Only what it ACKs counts: its last seq may not be durable there yet.
            acked_seq: 0,
            sent_seq: hello.last_seq,
            position: (segment, offset),
            records_sent: 0,
            connected_at: Instant::now(),
        },
    );
    if leader(node).update_replicated(node.config.min_acks) {
        node.progressed();
    }
    leader(node).refusals.borrow_mut().remove(&hello.node_id);
    tracing::info!(%peer, node_id = %hello.node_id, from_seq = next_seq, durable_seq, "follower connected");

    let closed = Rc::new(tokio::sync::Notify::new());
    let acks = crate::runtime::spawn(read_acks(
        node.clone(),
        stream.clone(),
        buf,
        link_id,
        closed.clone(),
    ));
    let reason = send_records(node, stream, link_id, next_seq, (segment, offset), &closed).await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    acks.abort();
    leader(node).followers.borrow_mut().remove(&link_id);
    leader(node).update_replicated(node.config.min_acks);
    tracing::info!(%peer, node_id = %hello.node_id, %reason, "follower disconnected");
}

enum Start {
    /// Stream the log from this position (file, offset): the record after the follower's last.
    Stream { position: (u32, u64) },
    /// The follower cannot continue from its own log: send it a snapshot.
    Snapshot { why: String },
}

/// Decides how a follower starts, or why it is refused.
async fn admit(node: &Node, hello: &Hello, durable_seq: u64) -> Result<Start, String> {
    let horizon = node.shard.log.horizon_seq();
    if let Err(reason) = messages::admit(node.shard.log.log_id(), durable_seq, hello) {
        return match hello.resync {
            true => Ok(Start::Snapshot { why: reason }),
            false => Err(reason),
        };
    }
    if horizon > 0 && hello.last_seq <= horizon {
        let why = format!(
            "its next seq {} is in history this leader compacted (up to seq {horizon})",
            hello.last_seq + 1
        );
        return Ok(Start::Snapshot { why });
    }
    match locate(node, hello.last_seq + 1).await {
        Ok((segment, offset, leader_crc)) => match messages::same_history(hello, leader_crc) {
            Ok(()) => Ok(Start::Stream {
                position: (segment, offset),
            }),
            Err(why) if hello.resync => Ok(Start::Snapshot { why }),
            Err(reason) => Err(reason),
        },
        Err(why) => Ok(Start::Snapshot { why }),
    }
}

/// Sends every record of the log up to `snapshot_seq`, in log order, then SNAPSHOT_DONE.
async fn snapshot(
    node: &Node,
    stream: &TcpStream,
    peer: SocketAddr,
    hello: &Hello,
    snapshot_seq: u64,
) -> String {
    let first = node.shard.log.segments()[0].file_no;
    let link_id = leader(node).new_link_id();
    // Registered as a follower so that compaction leaves the files it has yet to read alone.
    leader(node).followers.borrow_mut().insert(
        link_id,
        FollowerInfo {
            node_id: format!("{} (snapshot)", hello.node_id),
            addr: peer,
            acked_seq: 0,
            sent_seq: 0,
            position: (first, segment::HEADER_BYTES as u64),
            records_sent: 0,
            connected_at: Instant::now(),
        },
    );
    let reason = send_snapshot(node, stream, link_id, snapshot_seq).await;
    leader(node).followers.borrow_mut().remove(&link_id);
    reason
}

async fn send_snapshot(node: &Node, stream: &TcpStream, link_id: u64, snapshot_seq: u64) -> String {
    let (mut file, mut offset) = leader(node).followers.borrow()[&link_id].position;
    let mut after = 0;
    let mut want = REPLICATION_CHUNK_BYTES;
    let mut out = BytesMut::new();
    let mut sent = 0;
    while after < snapshot_seq {
        let chunk = match node.shard.log.read_at(file, offset, want).await {
            Ok(chunk) => chunk,
            Err(error) => return format!("reading the log: {error}"),
        };
        let (bytes, count, last, stop) = cursor::snapshot_sendable(&chunk, after, snapshot_seq);
        want = REPLICATION_CHUNK_BYTES;
        if count == 0 {
            match stop {
                Stop::NotDurable => break,
                Stop::Incomplete { need } => want = need,
                Stop::EndOfChunk => match node.shard.log.next_file(file) {
                    Some(next) => {
                        file = next;
                        offset = segment::HEADER_BYTES as u64;
                    }
                    None => return format!("the log ends before seq {snapshot_seq}"),
                },
                Stop::Damaged(reason) => {
                    return format!("log damaged in file {file} at byte {offset}: {reason}")
                }
            }
            continue;
        }
        messages::encode_records(&mut out, snapshot_seq, &chunk[..bytes]);
        offset += bytes as u64;
        after = last;
        sent += count;
        if let Some(info) = leader(node).followers.borrow_mut().get_mut(&link_id) {
            info.position = (file, offset);
            info.sent_seq = last;
            info.records_sent = sent;
        }
        let (written, returned) = stream.write_all(out).await;
        out = returned;
        out.clear();
        if let Err(error) = written {
            return format!("sending: {error}");
        }
    }
    messages::encode_snapshot_done(&mut out, snapshot_seq);
    if let Err(error) = stream.write_all(out).await.0 {
        return format!("sending: {error}");
    }
    format!("sent {sent} records up to seq {snapshot_seq}")
}

/// Logs a refusal once per follower and reason (a refused follower retries every 2 s).
fn log_refusal(node: &Node, peer: SocketAddr, node_id: &str, reason: &str) {
    let mut refusals = leader(node).refusals.borrow_mut();
    if refusals.get(node_id).map(String::as_str) != Some(reason) {
        tracing::warn!(%peer, node_id, %reason, "refused a follower (logged once while it repeats)");
        refusals.insert(node_id.to_string(), reason.to_string());
    }
}

async fn refuse(stream: &TcpStream, reason: &str) {
    let mut out = BytesMut::new();
    encode_error(&mut out, 0, reason);
    let _ = stream.write_all(out).await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Where the record with `seq` starts (or will start), and the CRC of the record before it
/// (None when `seq` is 1): found by scanning the segment that holds `seq - 1` from its header.
pub(super) async fn locate(node: &Node, seq: u64) -> Result<(u32, u64, Option<u32>), String> {
    let before = seq - 1;
    let segments = node.shard.log.segments();
    let holder = segments
        .iter()
        .rev()
        .find(|s| s.compacted.is_none() && s.first_seq <= before.max(1));
    let Some((segment, first_seq)) = holder.map(|s| (s.file_no, s.first_seq)) else {
        return Err(format!(
            "seq {seq} is no longer in this leader's log in order; a snapshot transfer is needed"
        ));
    };
    let mut offset = segment::HEADER_BYTES as u64;
    let mut next = first_seq;
    let mut crc = None;
    // Walk the record headers through chunks of the log, reading a new chunk only when the
    // next record runs past the one in hand (a read per record would copy a whole chunk per
    // record: minutes, deep in a big segment, and the follower gives up waiting).
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = offset;
    // Bytes asked for by the read that made `chunk`; 0 before the first.
    let mut asked = 0;
    while next < seq {
        let start = (offset - chunk_at) as usize;
        match record::decode_header(&chunk[start..]) {
            Ok(header) if header.seq == next => {
                offset += header.total_bytes as u64;
                crc = Some(header.crc);
                next += 1;
            }
            Ok(header) => {
                return Err(format!(
                    "log segment {segment}: seq {} where {next} was due",
                    header.seq
                ))
            }
            // Past the chunk in hand, or longer than was asked for: read on from this record.
            Err(record::DecodeError::Incomplete { need, .. }) if start > 0 || need > asked => {
                asked = REPLICATION_CHUNK_BYTES.max(need);
                chunk = node
                    .shard
                    .log
                    .read_at(segment, offset, asked)
                    .await
                    .map_err(|e| format!("reading the log: {e}"))?;
                chunk_at = offset;
            }
            Err(_) if start == chunk.len() => {
                return Err(format!("the log ends at seq {} before seq {seq}", next - 1))
            }
            Err(error) => return Err(format!("log segment {segment} at byte {offset}: {error}")),
        }
    }
    Ok((segment, offset, crc))
}

/// The cursor: sends every durable record from `next_seq` on, in order, until the link fails.
async fn send_records(
    node: &Node,
    stream: &TcpStream,
    link_id: u64,
    mut next_seq: u64,
    (mut segment, mut offset): (u32, u64),
    closed: &tokio::sync::Notify,
) -> String {
    let mut progress = node.shard.progress.subscribe();
    let mut shutdown = node.shutdown.subscribe();
    let heartbeat = Duration::from_millis(REPLICATION_HEARTBEAT_MS);
    let mut want = REPLICATION_CHUNK_BYTES;
    let mut out = BytesMut::new();
    loop {
        let durable_seq = node.shard.engine.borrow().durable_seq();
        if next_seq > durable_seq {
            // Caught up: wait for the next durable batch, and say we are alive meanwhile.
            tokio::select! {
                _ = progress.changed() => continue,
                _ = closed.notified() => return "the follower closed the link".into(),
                _ = shutdown.changed() => return "shutting down".into(),
                _ = tokio::time::sleep(heartbeat) => {}
            }
            messages::encode_records(&mut out, durable_seq, &[]);
        } else {
            let chunk = match node.shard.log.read_at(segment, offset, want).await {
                Ok(chunk) => chunk,
                Err(error) => return format!("reading the log: {error}"),
            };
            let (bytes, count, stop) = cursor::sendable(&chunk, next_seq, durable_seq);
            want = REPLICATION_CHUNK_BYTES;
            if count == 0 {
                match stop {
                    Stop::Incomplete { need } => want = need,
                    Stop::EndOfChunk
                        if chunk.is_empty() && segment != node.shard.log.active_file_no() =>
                    {
                        match node.shard.log.next_file(segment) {
                            Some(next) => {
                                segment = next;
                                offset = segment::HEADER_BYTES as u64;
                            }
                            None => {
                                return "the log was compacted under this follower's cursor; \
                                        it will reconnect"
                                    .into()
                            }
                        }
                    }
                    Stop::NotDurable | Stop::EndOfChunk => {
                        // Durable records are written before they count as durable: this is
                        // a bug, not a race. Drop the link rather than spin.
                        return format!("the log ends before durable seq {next_seq}");
                    }
                    Stop::Damaged(reason) => {
                        tracing::error!(segment, offset, %reason, "the log is damaged where a follower reads it");
                        return format!(
                            "log damaged in segment {segment} at byte {offset}: {reason}"
                        );
                    }
                }
                continue;
            }
            messages::encode_records(&mut out, durable_seq, &chunk[..bytes]);
            offset += bytes as u64;
            next_seq += count;
            if let Some(info) = leader(node).followers.borrow_mut().get_mut(&link_id) {
                info.sent_seq = next_seq - 1;
                info.records_sent += count;
                info.position = (segment, offset);
            }
        }
        let (written, returned) = stream.write_all(out).await;
        out = returned;
        out.clear();
        if let Err(error) = written {
            return format!("sending: {error}");
        }
    }
}

/// Reads the follower's ACKs and moves its watermark; wakes the client writers waiting on it.
async fn read_acks(
    node: Rc<Node>,
    stream: Rc<TcpStream>,
    mut buf: BytesMut,
    link_id: u64,
    closed: Rc<tokio::sync::Notify>,
) {
    loop {
        let frame = match frames::next_frame(&stream, &mut buf, REPLICATION_FRAME_BYTES_MAX).await {
            Ok(frame) => frame,
            Err(ReadError::Closed | ReadError::Io(_) | ReadError::Frame(_)) => break,
        };
        let acked = match (frame.header.kind, messages::decode_ack(&frame.body)) {
            (messages::op::ACK, Ok(seq)) => seq,
            _ => {
                tracing::warn!(
                    kind = frame.header.kind,
                    "unexpected frame from a follower; closing its link"
                );
                break;
            }
        };
        if let Some(info) = leader(&node).followers.borrow_mut().get_mut(&link_id) {
            info.acked_seq = info.acked_seq.max(acked);
        }
        if leader(&node).update_replicated(node.config.min_acks) {
            node.progressed();
        }
    }
    closed.notify_one();
}
