//! The follower's link to its leader: dial, handshake, take the stream of records into the
//! local log through the same group committer, and report what is durable here (ACK).
//!
//! The link heals by itself: any failure closes it and it is dialled again after a capped,
//! jittered backoff. Each change of state is logged once, not once per retry.

use std::net::ToSocketAddrs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::runtime::TcpStream;
use bytes::{Bytes, BytesMut};

use crate::limits::{
    BATCH_BYTES_MAX, REPLICATION_BACKOFF_MS_MAX, REPLICATION_BACKOFF_MS_MIN,
    REPLICATION_FRAME_BYTES_MAX, REPLICATION_HEARTBEAT_MS, REPLICATION_SILENCE_MS_MAX,
};
use crate::protocol::request::SecretBytes;
use crate::protocol::{Request, Status};
use crate::replication::messages::{self, Hello, Welcome};
use crate::wal::record;
use crate::wal::snapshot::SnapshotWriter;

use super::frames::{self, ReadError};
use super::role::{LinkInfo, LinkState};
use super::Node;

/// The link's state: this task runs only on a follower.
fn link(node: &Node) -> &std::cell::RefCell<LinkInfo> {
    &node.follower().expect("the link runs on a follower").link
}

pub async fn run(node: Rc<Node>, leader_addr: String) {
    let Some(follower) = node.follower() else {
        return;
    };
    let mut backoff = REPLICATION_BACKOFF_MS_MIN;
    let mut last_failure = String::new();
    let mut shutdown = node.shutdown.subscribe();
    loop {
        let received_before = follower.link.borrow().records_received_total;
        let failure = tokio::select! {
            failure = follow(&node, &leader_addr) => failure,
            _ = shutdown.changed() => return,
        };
        {
            let mut link = follower.link.borrow_mut();
            link.state = LinkState::Disconnected;
            link.connected_at = None;
        }
        let made_progress = follower.link.borrow().records_received_total > received_before;
        if made_progress {
            backoff = REPLICATION_BACKOFF_MS_MIN;
        }
        if failure != last_failure {
            tracing::warn!(leader = %leader_addr, reason = %failure, "replication link down; retrying until it heals");
            last_failure = failure;
        }
        let jitter = jitter_ms(backoff / 2);
        tokio::time::sleep(Duration::from_millis(backoff / 2 + jitter)).await;
        backoff = (backoff * 2).min(REPLICATION_BACKOFF_MS_MAX);
    }
}

/// A cheap jitter in 0..=max from the clock: followers that lost the same leader should not
/// all dial it in the same millisecond.
fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    nanos % (max + 1)
}

/// One session with the leader; returns why it ended.
async fn follow(node: &Rc<Node>, leader_addr: &str) -> String {
    let addr = match leader_addr.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return format!("{leader_addr} resolves to no address"),
        Err(error) => return format!("cannot resolve {leader_addr}: {error}"),
    };
    let silence = Duration::from_millis(REPLICATION_SILENCE_MS_MAX);
    let stream = match tokio::time::timeout(silence, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Rc::new(stream),
        Ok(Err(error)) => return format!("cannot connect: {error}"),
        Err(_) => return "connecting timed out".into(),
    };
    let _ = stream.set_nodelay(true);
    let log_id = node.shard.log.log_id();
    let (last_seq, last_crc) = {
        let engine = node.shard.engine.borrow();
        (engine.last_seq(), engine.last_crc())
    };
    let mut out = BytesMut::new();
    // With --auth-file, AUTH goes first, in the same write: the leader serves nothing before it.
    const AUTH_ID: u64 = 1;
    if let Some(secret) = &node.config.auth {
        let secret = SecretBytes(Bytes::copy_from_slice(secret.bytes()));
        Request::Auth { secret }.encode(AUTH_ID, &mut out);
    }
    let node_id = node.config.node_id.clone();
    Hello {
        log_id,
        last_seq,
        last_crc,
        node_id,
        resync: node.config.resync,
    }
    .encode(&mut out);
    if let Err(error) = stream.write_all(out).await.0 {
        return format!("sending HELLO: {error}");
    }
    let mut buf = BytesMut::new();
    if node.config.auth.is_some() {
        match next_frame(&stream, &mut buf, silence).await {
            Ok(frame) if frame.header.kind == Status::Ok as u8 && frame.header.id == AUTH_ID => {}
            Ok(frame) if frame.header.kind == Status::Error as u8 => {
                let reason = String::from_utf8_lossy(&frame.body).into_owned();
                return format!("the leader refused this follower's secret: {reason}; check that this follower's --auth-file holds the leader's secret");
            }
            Ok(frame) => {
                return format!(
                    "unexpected frame kind 0x{:02x} instead of the answer to AUTH",
                    frame.header.kind
                )
            }
            Err(error) => return error,
        }
    }
    let welcome = match next_frame(&stream, &mut buf, silence).await {
        Ok(frame) if frame.header.kind == messages::op::WELCOME => {
            match Welcome::decode(frame.header.flags, &frame.body) {
                Ok(welcome) => welcome,
                Err(error) => return error.to_string(),
            }
        }
        Ok(frame) if frame.header.kind == Status::Error as u8 => {
            let reason = String::from_utf8_lossy(&frame.body).into_owned();
            if node.config.auth.is_none() && reason.contains("authentication required") {
                return format!("the leader refused this follower: {reason}; start this follower with --auth-file holding the leader's secret");
            }
            return format!("the leader refused this follower: {reason}");
        }
        Ok(frame) => {
            return format!(
                "unexpected frame kind 0x{:02x} instead of WELCOME",
                frame.header.kind
            )
        }
        Err(error) => return error,
    };
    if let Some(snapshot_seq) = welcome.snapshot_seq {
        tracing::info!(leader = %leader_addr, snapshot_seq, "the leader sends a snapshot: this follower's log cannot continue into the leader's (receiving it beside the current data, which serves reads until the snapshot is complete)");
        link(node).borrow_mut().state = LinkState::ReceivingSnapshot;
        let reason = take_snapshot(
            node,
            &stream,
            &mut buf,
            silence,
            welcome.log_id,
            snapshot_seq,
        )
        .await;
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return reason;
    }
    if welcome.log_id != log_id {
        if node.shard.engine.borrow().last_seq() != 0 {
            return format!(
                "the leader's log is {} but this follower holds log {log_id}",
                welcome.log_id
            );
        }
        if let Err(error) = node.shard.log.adopt(welcome.log_id).await {
            return format!("taking the leader's log id: {error}");
        }
        tracing::info!(log_id = %welcome.log_id, "empty log: took the leader's log id");
    }
    {
        let mut link = link(node).borrow_mut();
        link.state = LinkState::Connected;
        link.connected_at = Some(Instant::now());
        link.leader_durable_seq = welcome.durable_seq;
        link.records_received = 0;
    }
    tracing::info!(leader = %leader_addr, from_seq = last_seq + 1, leader_durable_seq = welcome.durable_seq, "following the leader");

    let acker = crate::runtime::spawn(send_acks(node.clone(), stream.clone()));
    let reason = take_records(node, &stream, &mut buf, silence).await;
    acker.abort();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    reason
}

async fn next_frame(
    stream: &TcpStream,
    buf: &mut BytesMut,
    silence: Duration,
) -> Result<crate::protocol::Frame, String> {
    match tokio::time::timeout(
        silence,
        frames::next_frame(stream, buf, REPLICATION_FRAME_BYTES_MAX),
    )
    .await
    {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(ReadError::Closed)) => Err("the leader closed the link".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "no word from the leader for {} ms",
            silence.as_millis()
        )),
    }
}

/// Verifies each record (CRC, seq exactly the next) and appends it to the open batch; a record
/// is taken whole or not at all.
async fn take_records(
    node: &Node,
    stream: &TcpStream,
    buf: &mut BytesMut,
    silence: Duration,
) -> String {
    loop {
        let frame = match next_frame(stream, buf, silence).await {
            Ok(frame) if frame.header.kind == messages::op::RECORDS => frame,
            Ok(frame) => {
                return format!(
                    "unexpected frame kind 0x{:02x} in the record stream",
                    frame.header.kind
                )
            }
            Err(reason) => return reason,
        };
        let mut at = 0;
        let mut taken = 0;
        while at < frame.body.len() {
            let (header, record) = match record::decode(&frame.body[at..]) {
                Ok(decoded) => decoded,
                Err(error) => return format!("damaged record from the leader: {error}"),
            };
            while node.shard.engine.borrow().open_batch_bytes() >= BATCH_BYTES_MAX {
                node.shard.batch_taken.notified().await;
            }
            let value_start = at + header.value_offset();
            let value = frame.body.slice(value_start..at + header.total_bytes);
            if let Err(reason) = node
                .shard
                .engine
                .borrow_mut()
                .append_replicated(&record, value)
            {
                return format!("cannot apply the leader's record: {reason}");
            }
            at += header.total_bytes;
            taken += 1;
        }
        if taken > 0 {
            node.shard.commit_wake.notify_one();
        }
        let mut link = link(node).borrow_mut();
        link.leader_durable_seq = link.leader_durable_seq.max(frame.header.id);
        link.records_received += taken;
        link.records_received_total += taken;
    }
}

/// Receives a snapshot into the data dir's snapshot area; once complete, asks the server to
/// start again on it (install happens at start, see `wal::snapshot`).
async fn take_snapshot(
    node: &Node,
    stream: &TcpStream,
    buf: &mut BytesMut,
    silence: Duration,
    log_id: crate::wal::LogId,
    snapshot_seq: u64,
) -> String {
    let config = &node.config;
    let mut writer = match SnapshotWriter::create(&config.data_dir, log_id, config.segment_bytes) {
        Ok(writer) => writer,
        Err(error) => return format!("cannot start a snapshot: {error}"),
    };
    loop {
        let frame = match next_frame(stream, buf, silence).await {
            Ok(frame) => frame,
            Err(reason) => return format!("snapshot transfer broke off: {reason}"),
        };
        match frame.header.kind {
            messages::op::RECORDS => {}
            messages::op::SNAPSHOT_DONE if frame.header.id == snapshot_seq => {
                let records = writer.records;
                if let Err(error) = writer.finish(snapshot_seq).await {
                    return format!("cannot finish the snapshot: {error}");
                }
                tracing::info!(
                    records,
                    snapshot_seq,
                    "snapshot received; starting again on it"
                );
                node.restart.notify_one();
                return "snapshot received; restarting on it".into();
            }
            kind => return format!("unexpected frame kind 0x{kind:02x} in a snapshot transfer"),
        }
        let mut at = 0;
        let mut taken = 0;
        while at < frame.body.len() {
            let header = match record::decode(&frame.body[at..]) {
                Ok((header, _)) if header.seq <= snapshot_seq => header,
                Ok((header, _)) => {
                    return format!("snapshot record seq {} past {snapshot_seq}", header.seq)
                }
                Err(error) => return format!("damaged record from the leader: {error}"),
            };
            let bytes = &frame.body[at..at + header.total_bytes];
            if let Err(error) = writer.push(&header, bytes).await {
                return format!("cannot write the snapshot: {error}");
            }
            at += header.total_bytes;
            taken += 1;
        }
        let mut link = link(node).borrow_mut();
        link.records_received += taken;
        link.records_received_total += taken;
        drop(link);
        node.crash_point("snapshot", "partial");
    }
}

/// Tells the leader what is durable here whenever that moves, and every heartbeat anyway.
async fn send_acks(node: Rc<Node>, stream: Rc<TcpStream>) {
    let mut progress = node.shard.progress.subscribe();
    let heartbeat = Duration::from_millis(REPLICATION_HEARTBEAT_MS);
    let mut out = BytesMut::new();
    loop {
        messages::encode_ack(&mut out, node.shard.engine.borrow().durable_seq());
        let (written, returned) = stream.write_all(out).await;
        out = returned;
        out.clear();
        if written.is_err() {
            return;
        }
        tokio::select! {
            _ = progress.changed() => {}
            _ = tokio::time::sleep(heartbeat) => {}
        }
    }
}
