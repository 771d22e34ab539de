//! One client connection, driven by one task: read requests, let the connection's state
//! (`state::ConnState`, a plain value) decide them, gather every reply that may go now into one
//! send, and wait — on the socket, on the log reaching what the head of the queue waits for,
//! or on a deadline — only when there is nothing to send.
//!
//! A connection waits for the log through the shard's wait list, so a batch made durable
//! wakes only the connections it answers, not every connection of the node. Idle and stalled
//! connections are found by the node's one sweep (`sweep`), from counters kept here. With
//! `--auth-file`, every frame first passes the connection's `auth::Gate`.

mod resp_node;
pub mod state;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::auth::Gate;
use crate::limits::{CONNECTION_READ_BYTES, CONNECTION_WRITE_BYTES_MAX};
use crate::protocol::response::{self, encode_error};
use crate::protocol::Status;
use crate::runtime::TcpStream;

use super::node::ConnectionSlot;
use super::pubsub::Registration;
use super::shard::WaitSlot;
use super::sweep::ConnWatch;
use super::{compactor, frames, leader_stream, stats, Node};
use crate::resp::Session;
use state::{ConnState, Next, Progress, Rules};

/// How long a connection closed for a bad frame keeps reading (and dropping) what the client
/// still sends, so the ERROR reaches it instead of being lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

type Read<'s> = Pin<Box<dyn Future<Output = (std::io::Result<usize>, BytesMut)> + 's>>;

pub fn rules(node: &Node) -> Rules<'_> {
    let config = &node.config;
    Rules {
        limits: config.limits,
        frame_bytes_max: config.frame_bytes_max,
        leader_addr: node.leader_addr(),
        min_acks: config.min_acks,
        ack_timeout: config.ack_timeout,
        min_seq_wait: config.min_seq_wait,
        raft: node.raft().map(|raft| &raft.view),
    }
}

/// Which port a connection came in on: the native one, or `--resp-port` (with its address).
#[derive(Debug, Clone, Copy)]
pub enum Port {
    Native,
    Resp { local: SocketAddr },
}

pub async fn serve(
    node: Rc<Node>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    port: Port,
) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let watch = slot.watch.clone();
    let rules = rules(&node);
    let gate = Gate::new(node.config.auth.as_ref());
    let mut subscriber = None;
    let mut state = match port {
        Port::Native => ConnState::new(gate),
        Port::Resp { local } => {
            let session = Session::new(peer, local);
            subscriber = Some(node.pubsub.register(session.client_id, Some(watch.clone())));
            ConnState::resp(gate, session).with_pubsub(&node.pubsub)
        }
    }
    .recording(&node.stats.requests);
    let resp = matches!(port, Port::Resp { .. });
    let wait = Rc::new(WaitSlot::default());
    let mut shutdown = node.shutdown.subscribe();
    let mut confirmations = node.raft().map(|raft| raft.confirmed.subscribe());
    let mut buf = Some(BytesMut::with_capacity(CONNECTION_READ_BYTES));
    let mut read: Option<Read<'_>> = None;
    let mut out = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    // The client will send nothing more (end of stream, a read error, or shutdown).
    let mut ended = false;
    let mut batch_full = false;
    // The commit window this connection was counted in (see `track_awaiting`).
    let mut window = 0;
    // Counted in `Node::writers` once it sent a write.
    let mut writer = false;
    loop {
        if let Some(buf) = buf.as_mut() {
            let before = state.awaiting_client;
            let mut engine = node.shard.engine.borrow_mut();
            engine.tick(super::unix_now_ms());
            let log = &node.shard.log;
            let mut values = |location| {
                log.read_value_now(location)
                    .map_err(|error| format!("reading a value from the log failed: {error}"))
            };
            let intake = state.take_requests(buf, &mut engine, &rules, Instant::now(), &mut values);
            drop(engine);
            track_awaiting(&node, before, state.awaiting_client, &mut window);
            if intake.wrote {
                node.shard.commit_wake.notify_one();
                if !writer {
                    writer = true;
                    node.writers.set(node.writers.get() + 1);
                }
            }
            for closed in state.take_auth_failures() {
                node.stats.count_auth_failure(closed);
                if closed {
                    tracing::warn!(%peer, "closing a connection that failed to authenticate");
                }
            }
            batch_full = intake.batch_full;
        }
        let next = gather(&node, &rules, &mut state, &mut window, &mut out).await;
        if let Some(subscriber) = &subscriber {
            // Pub/sub messages go once no reply is owed, so a SUBSCRIBE's confirmation
            // precedes its channel's messages. A subscriber cut off for not taking them closes.
            if subscriber.mailbox.is_cut() {
                break;
            }
            if state.is_idle() && out.len() < CONNECTION_WRITE_BYTES_MAX {
                subscriber
                    .mailbox
                    .take_into(&mut out, CONNECTION_WRITE_BYTES_MAX);
            }
        }
        if !out.is_empty() {
            let sent = send(&stream, &watch, &mut out).await;
            if sent.is_err() {
                break;
            }
            continue;
        }
        if state.is_closing() && state.is_idle() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            linger(&stream).await;
            break;
        }
        if let Some(request) = state.take_watch() {
            watch::serve(&node, &stream, &watch, request).await;
            break;
        }
        if let Some(hello) = state.take_handoff().filter(|_| !resp) {
            let rest = buf.take().unwrap_or_default();
            leader_stream::serve(&node, &stream, peer, hello, rest).await;
            break;
        }
        let mut confirming = false;
        let (deadline, waiting) = match next {
            Next::Wait {
                seq,
                replicated,
                deadline,
            } => {
                node.shard.wait_for(seq, replicated, &wait);
                (deadline, true)
            }
            Next::Confirm { arrived, deadline } => {
                // A Raft leader's read: ask for a confirmation round begun after it arrived.
                if let Some(raft) = node.raft() {
                    if raft.confirmed.borrow().is_none_or(|at| at < arrived) {
                        raft.confirm_wake.notify_one();
                    }
                }
                // Woken by the round's success, or by an abandon (`raft_node::follow`).
                confirming = true;
                (deadline, false)
            }
            _ => (None, false),
        };
        if read.is_none() && !ended && state.open() && !state.full() && !batch_full {
            if let Some(taken) = buf.take() {
                if state.has_request(&taken, &rules) {
                    buf = Some(taken);
                    continue;
                }
                read = Some(match resp {
                    false => Box::pin(frames::read_more(
                        &stream,
                        taken,
                        state.frame_bytes_max(&rules),
                    )),
                    true => Box::pin(frames::read_some(&stream, taken)),
                });
            }
        }
        if read.is_none() && !waiting && !batch_full && (ended || !state.open()) && state.is_idle()
        {
            break;
        }
        watch
            .idle_reading
            .set(read.is_some() && state.is_idle() && !state.is_subscribed());
        tokio::select! {
            (result, returned) = poll(&mut read) => {
                read = None;
                buf = Some(returned);
                match result {
                    Ok(0) if watch.idle_closed.get() => {
                        let seconds = node.config.idle_timeout.map_or(0, |idle| idle.as_secs());
                        state.close_with(format!(
                            "closing the connection: it sent nothing for {seconds} s (--idle-timeout-secs)"
                        ));
                    }
                    Ok(0) | Err(_) => ended = true,
                    Ok(n) => watch.bytes_read.set(watch.bytes_read.get() + n as u64),
                }
            }
            _ = wait.notify.notified(), if waiting => {}
            _ = confirmed(confirmations.as_mut()), if confirming => {}
            _ = messages(&subscriber) => {}
            _ = sleep_until(deadline), if deadline.is_some() => {}
            _ = node.shard.batch_taken.notified(), if batch_full => {}
            _ = shutdown.changed(), if !ended => {
                // Answer what was taken; take nothing more.
                ended = true;
                read = None;
            }
        }
    }
    watch.idle_reading.set(false);
    if writer {
        node.writers.set(node.writers.get() - 1);
    }
    track_awaiting(&node, state.awaiting_client, false, &mut window);
    // Out of the pub/sub registry before the socket can close (the registry may cut it).
    drop(subscriber);
    drop(slot);
    tracing::debug!(%peer, "connection closed");
}

/// Encodes every reply that may go now into `out`, doing the log reads, STATS and COMPACT the
/// state asks for; returns why it stopped.
async fn gather(
    node: &Node,
    rules: &Rules<'_>,
    state: &mut ConnState<'_>,
    window: &mut u64,
    out: &mut BytesMut,
) -> Next {
    let shard = &node.shard;
    loop {
        let before = state.awaiting_client;
        let next = {
            let engine = shard.engine.borrow();
            let progress = Progress {
                durable: engine.durable_seq(),
                replicated: node.replicated_seq(),
                confirmed: node.raft().and_then(|raft| *raft.confirmed.borrow()),
            };
            let cached = |location, read: &mut dyn FnMut(&[u8])| {
                shard.log.read_cached(location, read).is_some()
            };
            state.replies(&engine, rules, progress, &cached, Instant::now(), out)
        };
        track_awaiting(node, before, state.awaiting_client, window);
        match next {
            Next::ReadValue { id, location } => {
                let value = shard.log.read_value(location).await.map_err(|error| {
                    tracing::error!(%error, ?location, "reading a value from the log failed");
                    format!("reading the value failed: {error}")
                });
                state.encode_read(out, id, value);
            }
            Next::Node { read } => resp_node::answer(node, read, out).await,
            Next::Stats { id } => {
                let text = stats::render(node);
                response::encode(out, Status::Ok, 0, id, &[text.as_bytes()]);
            }
            Next::Compact { id } => {
                let compacted = match node.raft() {
                    Some(raft) => super::raft_compact::compact(raft).await,
                    None => compactor::request(node).await,
                };
                match compacted {
                    Ok(summary) => response::encode(out, Status::Ok, 0, id, &[summary.as_bytes()]),
                    Err(error) => encode_error(out, id, &error),
                }
            }
            Next::Raft { frame } => match node.raft() {
                Some(raft) => super::raft_node::answer(node, raft, &frame, out).await,
                None => encode_error(out, frame.header.id, "not a Raft node"),
            },
            other => return other,
        }
    }
}

/// Keeps the shard's count of connections the commit window waits for: counted in the
/// window (`Shard::window`) the connection was answered in, and uncounted when its client
/// speaks, unless a newer window started meanwhile.
fn track_awaiting(node: &Node, before: bool, after: bool, window: &mut u64) {
    let shard = &node.shard;
    let awaiting = &shard.awaiting_clients;
    match (before, after) {
        (false, true) => {
            *window = shard.window.get();
            awaiting.set(awaiting.get() + 1);
        }
        (true, false) if *window == shard.window.get() => {
            awaiting.set(awaiting.get().saturating_sub(1));
            if awaiting.get() == 0 {
                shard.commit_wake.notify_one();
            }
        }
        _ => {}
    }
}

/// Resolves when a Raft leader's confirmation round succeeds.
async fn confirmed(confirmations: Option<&mut tokio::sync::watch::Receiver<Option<Instant>>>) {
    match confirmations {
        Some(confirmations) => {
            if confirmations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when a pub/sub message (or the cut-off) arrives for this connection.
async fn messages(subscriber: &Option<Registration<'_>>) {
    match subscriber {
        Some(subscriber) => subscriber.mailbox.notify.notified().await,
        None => std::future::pending().await,
    }
}

async fn poll<'s>(read: &mut Option<Read<'s>>) -> (std::io::Result<usize>, BytesMut) {
    match read {
        Some(read) => read.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Writes all of `out` (then empties it), counting the bytes for the sweep.
async fn send(stream: &TcpStream, watch: &ConnWatch, out: &mut BytesMut) -> std::io::Result<()> {
    use crate::runtime::BoundedBuf;
    watch.writing.set(true);
    let mut buf = std::mem::take(out);
    let mut at = 0;
    let result = loop {
        if at == buf.len() {
            break Ok(());
        }
        let (written, slice) = stream.write(buf.slice(at..)).submit().await;
        buf = slice.into_inner();
        match written {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n;
                watch
                    .bytes_written
                    .set(watch.bytes_written.get() + n as u64);
            }
            Err(error) => break Err(error),
        }
    };
    watch.writing.set(false);
    buf.clear();
    *out = buf;
    result
}

/// After a bad frame: drop what the client still sends for a moment, then close.
async fn linger(stream: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut buf = vec![0u8; CONNECTION_READ_BYTES];
    while Instant::now() < deadline {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(buf)).await;
        match read {
            Ok((Ok(n), returned)) if n > 0 => buf = returned,
            _ => return,
        }
    }
}

/// A connection past `--max-connections`: one ERROR (id 0, or RESP's), then close.
pub async fn refuse(stream: TcpStream, connections_max: u32, port: Port) {
    let mut out = BytesMut::new();
    let message = format!("too many connections: this server serves at most {connections_max} (--max-connections); try again later");
    match port {
        Port::Native => encode_error(&mut out, 0, &message),
        Port::Resp { .. } => crate::resp::reply::error(
            &mut out,
            &format!("ERR max number of clients reached: {message}"),
        ),
    }
    let _ = stream.write_all(out).await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    linger(&stream).await;
}
