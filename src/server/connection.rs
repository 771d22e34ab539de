//! One client connection: a reader that cuts frames and hands requests to the engine, and a
//! writer that sends replies in request order as soon as each may go.
//!
//! The two share a queue of pending replies. Writes join the open batch the moment they are
//! read, so a pipelining client fills a batch by itself; their replies wait until the batch is
//! durable. Reads wait for the connection's earlier writes, so one connection's requests take
//! effect in the order sent. The queue is capped in requests and bytes: past either cap the
//! reader stops reading until the writer drains it, so a client that never reads its replies
//! costs bounded memory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_uring::net::TcpStream;

use crate::command::{self, Later, Pending};
use crate::limits::{
    BATCH_BYTES_MAX, CONNECTION_BYTES_IN_FLIGHT_MAX, CONNECTION_READ_BYTES,
    CONNECTION_REQUESTS_IN_FLIGHT_MAX, CONNECTION_WRITE_BYTES_MAX,
};
use crate::protocol::frame::{self, BODY_OFFSET};
use crate::protocol::response::{self, encode_error};
use crate::protocol::{Request, Status};

use super::{frames, leader_stream, stats, Shared};
use crate::protocol::Frame;
use crate::replication::messages;

/// How long a connection closed for a bad frame keeps reading (and dropping) what the client
/// still sends, so the ERROR reaches it instead of being lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);

struct Queued {
    id: u64,
    pending: Pending,
    /// Bytes of the request, counted against the connection's cap until answered.
    cost: usize,
    /// GET with `min_seq`: when to give up waiting.
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Conn {
    queue: RefCell<VecDeque<Queued>>,
    bytes_in_flight: Cell<usize>,
    /// The newest write this connection sent: its later reads wait for it.
    last_write_seq: Cell<u64>,
    reader_done: Cell<bool>,
    writer_dead: Cell<bool>,
    /// A frame could not be read: answer, then close.
    fatal: Cell<bool>,
    /// The writer holds popped replies it has not finished writing, or the reader is writing
    /// replies itself: whoever holds the socket's write side must finish before the other
    /// pops more, so replies stay in order.
    writer_busy: Cell<bool>,
    reader_writing: Cell<bool>,
    writer_wake: tokio::sync::Notify,
    reader_wake: tokio::sync::Notify,
}

impl Conn {
    fn push(&self, queued: Queued) {
        self.bytes_in_flight
            .set(self.bytes_in_flight.get() + queued.cost);
        self.queue.borrow_mut().push_back(queued);
    }

    fn full(&self) -> bool {
        self.queue.borrow().len() >= CONNECTION_REQUESTS_IN_FLIGHT_MAX
            || self.bytes_in_flight.get() >= CONNECTION_BYTES_IN_FLIGHT_MAX
    }
}

pub async fn serve(shared: Rc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let conn = Rc::new(Conn::default());
    let writer = tokio_uring::spawn(write_replies(shared.clone(), stream.clone(), conn.clone()));
    let handoff = read_requests(&shared, &stream, &conn).await;
    conn.reader_done.set(true);
    conn.writer_wake.notify_one();
    let _ = writer.await;
    if conn.fatal.get() {
        linger(&stream).await;
    }
    if let Some((hello, buf)) = handoff {
        if !conn.writer_dead.get() {
            leader_stream::serve(&shared, &stream, peer, hello, buf).await;
        }
    }
    shared.connections.set(shared.connections.get() - 1);
    tracing::debug!(%peer, "connection closed");
}

/// Reads requests until the client leaves, a frame cannot be read, or shutdown. A follower's
/// HELLO turns the connection into a replication stream: it is returned with the bytes after it.
async fn read_requests(
    shared: &Shared,
    stream: &TcpStream,
    conn: &Conn,
) -> Option<(Frame, BytesMut)> {
    let config = &shared.config;
    let mut shutdown = shared.shutdown.subscribe();
    let mut buf = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    let mut out = BytesMut::new();
    loop {
        let mut wrote = false;
        loop {
            let frame = match frame::decode(&mut buf, config.frame_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let message = format!("{error}; closing the connection");
                    let pending = command::error(message);
                    conn.push(Queued {
                        id: 0,
                        pending,
                        cost: 0,
                        deadline: None,
                    });
                    conn.fatal.set(true);
                    return None;
                }
            };
            if frame.header.kind == messages::op::HELLO {
                match shared.leader_addr() {
                    None => return Some((frame, buf)),
                    Some(leader) => {
                        let message = format!(
                            "this node is a follower; point --leader-addr at the leader ({leader})"
                        );
                        let pending = command::error(message);
                        conn.push(Queued {
                            id: frame.header.id,
                            pending,
                            cost: 0,
                            deadline: None,
                        });
                        continue;
                    }
                }
            }
            let id = frame.header.id;
            let cost = BODY_OFFSET + frame.body.len();
            let mut deadline = None;
            let pending = match Request::decode(&frame, config.limits) {
                Err(error) => command::error(error.to_string()),
                Ok(request) if request.is_write() && shared.leader_addr().is_some() => {
                    let leader = shared.leader_addr().unwrap_or_default();
                    let body = Bytes::copy_from_slice(leader.as_bytes());
                    Pending::Reply {
                        status: Status::NotLeader,
                        flags: 0,
                        body,
                        after_seq: 0,
                    }
                }
                Ok(request) => {
                    if request.is_write() {
                        wait_for_batch_room(shared).await;
                        if config.min_acks > 0 {
                            deadline = Some(Instant::now() + config.ack_timeout);
                        }
                    }
                    if let Request::Get {
                        min_seq: Some(_), ..
                    } = &request
                    {
                        deadline = Some(Instant::now() + config.min_seq_wait);
                    }
                    let after = conn.last_write_seq.get();
                    let keys_body_max =
                        config.frame_bytes_max as usize - (BODY_OFFSET - frame::KIND_OFFSET);
                    let pending = command::accept(
                        &mut shared.engine.borrow_mut(),
                        request,
                        after,
                        keys_body_max,
                    );
                    if let Pending::Write { seq } = pending {
                        conn.last_write_seq.set(seq);
                        wrote = true;
                    }
                    pending
                }
            };
            conn.push(Queued {
                id,
                pending,
                cost,
                deadline,
            });
        }
        if wrote {
            shared.commit_wake.notify_one();
        }
        if !answer_at_once(shared, stream, conn, &mut out).await {
            return None;
        }
        conn.writer_wake.notify_one();
        while conn.full() && !conn.writer_dead.get() {
            conn.reader_wake.notified().await;
        }
        if conn.writer_dead.get() || *shutdown.borrow() {
            return None;
        }
        let (read, returned) = tokio::select! {
            read = frames::read_more(stream, buf, config.frame_bytes_max) => read,
            _ = shutdown.changed() => return None,
        };
        buf = returned;
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The open batch has a size cap; a write that finds it full waits for the committer to take
/// it, which bounds the memory of the batch under any number of clients.
async fn wait_for_batch_room(shared: &Shared) {
    while shared.engine.borrow().open_batch_bytes() >= BATCH_BYTES_MAX {
        shared.batch_taken.notified().await;
    }
}

/// What the writer does next.
enum Step {
    /// A reply was encoded into the output buffer.
    Encoded,
    /// COMPACT: run a pass, then reply.
    Compact {
        id: u64,
    },
    /// A GET found its key: read the value from the log, then reply.
    ReadValue {
        id: u64,
        location: crate::wal::Location,
    },
    /// The head of the queue must wait (until the deadline, if it has one).
    Wait {
        deadline: Option<Instant>,
    },
    Empty,
}

/// The fast path, Redis-style: when the writer is idle, the reader itself sends the replies
/// that need no waiting and no I/O (a PING, a cached GET, an error), saving a hand-off per
/// request. Returns false if the connection is gone.
async fn answer_at_once(
    shared: &Shared,
    stream: &TcpStream,
    conn: &Conn,
    out: &mut BytesMut,
) -> bool {
    if conn.writer_busy.get() || conn.reader_writing.get() {
        return true;
    }
    while out.len() < CONNECTION_WRITE_BYTES_MAX {
        if !matches!(next_step(shared, conn, out, false), Step::Encoded) {
            break;
        }
    }
    if out.is_empty() {
        return true;
    }
    conn.reader_writing.set(true);
    let (written, returned) = stream.write_all(std::mem::take(out)).await;
    *out = returned;
    out.clear();
    conn.reader_writing.set(false);
    conn.writer_wake.notify_one();
    if written.is_err() {
        conn.writer_dead.set(true);
        return false;
    }
    true
}

async fn write_replies(shared: Rc<Shared>, stream: Rc<TcpStream>, conn: Rc<Conn>) {
    let mut progress = shared.progress.subscribe();
    let mut out = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    loop {
        let mut wait = None;
        // While the reader writes, the writer pops nothing: it is woken when the reader is done.
        conn.writer_busy.set(!conn.reader_writing.get());
        while conn.writer_busy.get() && out.len() < CONNECTION_WRITE_BYTES_MAX {
            match next_step(&shared, &conn, &mut out, true) {
                Step::Encoded => {}
                Step::ReadValue { id, location } => match shared.log.read_value(location).await {
                    Ok(value) => response::encode(&mut out, Status::Ok, 0, id, &[&value]),
                    Err(error) => {
                        tracing::error!(%error, ?location, "reading a value from the log failed");
                        encode_error(&mut out, id, &format!("reading the value failed: {error}"));
                    }
                },
                Step::Compact { id } => match super::compactor::request(&shared).await {
                    Ok(summary) => {
                        response::encode(&mut out, Status::Ok, 0, id, &[summary.as_bytes()])
                    }
                    Err(error) => encode_error(&mut out, id, &error),
                },
                Step::Wait { deadline } => {
                    wait = Some(deadline);
                    break;
                }
                Step::Empty => break,
            }
        }
        if !out.is_empty() {
            conn.reader_wake.notify_one();
            let (written, returned) = stream.write_all(out).await;
            out = returned;
            out.clear();
            if written.is_err() {
                conn.writer_dead.set(true);
                conn.reader_wake.notify_one();
                return;
            }
            continue;
        }
        conn.writer_busy.set(false);
        if conn.reader_done.get() && conn.queue.borrow().is_empty() {
            if conn.fatal.get() {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
            return;
        }
        let deadline = wait.flatten();
        tokio::select! {
            _ = conn.writer_wake.notified() => {}
            _ = progress.changed() => {}
            _ = sleep_until(deadline) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Answers the head of the queue if it may be answered now. Without `allow_io`, a head that
/// needs a read from the log is left in place (`Wait`).
fn next_step(shared: &Shared, conn: &Conn, out: &mut BytesMut, allow_io: bool) -> Step {
    let mut queue = conn.queue.borrow_mut();
    let Some(head) = queue.front() else {
        return Step::Empty;
    };
    // Only the reader's fast path (no I/O) asks: the writer reads whatever it must.
    let needs_io = || match &head.pending {
        Pending::Value { location, .. } => !shared.log.is_cached(*location),
        Pending::Later {
            read: Later::Get { .. } | Later::Compact,
            ..
        } => true,
        _ => false,
    };
    if !allow_io && needs_io() {
        return Step::Wait { deadline: None };
    }
    let engine = shared.engine.borrow();
    let durable = engine.durable_seq();
    let failed = engine.write_failed();
    let replicated = shared.replicated_seq();
    let expired = head
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline);
    let waits_for = head.pending.after_seq();
    let ready = match &head.pending {
        Pending::Write { seq } => {
            (*seq <= durable && (*seq <= replicated || expired)) || failed.is_some()
        }
        _ => waits_for <= durable || failed.is_some() || expired,
    };
    if !ready {
        return Step::Wait {
            deadline: head.deadline,
        };
    }
    let head = queue.pop_front().expect("head exists");
    drop(queue);
    conn.bytes_in_flight
        .set(conn.bytes_in_flight.get() - head.cost);
    shared.stats.count_request();
    let id = head.id;
    match head.pending {
        Pending::Write { seq } if seq <= durable && seq <= replicated => {
            response::encode(out, Status::Ok, 0, id, &[&seq.to_le_bytes()])
        }
        Pending::Write { seq } if seq <= durable => {
            let message = format!(
                "the write (seq {seq}) is durable on the leader but was not confirmed by {} follower(s) within {} ms (--min-acks, --ack-timeout-ms)",
                shared.config.min_acks,
                shared.config.ack_timeout.as_millis()
            );
            encode_error(out, id, &message);
        }
        Pending::Write { seq } => {
            let failed = failed.expect("not durable, so failed");
            let message = format!("this write (seq {seq}) was not acknowledged and may or may not be on disk: {failed}");
            encode_error(out, id, &message);
        }
        _ if waits_for > durable => {
            let message = match failed {
                Some(failed) => format!("cannot answer: what it read was not made durable: {failed}"),
                None => format!(
                    "seq {waits_for} was not applied within {} ms (applied up to {durable}); retry later",
                    shared.config.min_seq_wait.as_millis()
                ),
            };
            encode_error(out, id, &message);
        }
        Pending::Reply {
            status,
            flags,
            body,
            ..
        } => response::encode(out, status, flags, id, &[&body]),
        Pending::Value { location, .. } => match shared.log.cached_value(location) {
            Some(value) => response::encode(out, Status::Ok, 0, id, &[&value]),
            None => return Step::ReadValue { id, location },
        },
        Pending::Later {
            read: Later::Get { key },
            ..
        } => match engine.get(&key) {
            Some(location) => match shared.log.cached_value(location) {
                Some(value) => response::encode(out, Status::Ok, 0, id, &[&value]),
                None => return Step::ReadValue { id, location },
            },
            None => response::encode(out, Status::NotFound, 0, id, &[]),
        },
        Pending::Later {
            read: Later::Stats, ..
        } => {
            drop(engine);
            let text = stats::render(shared);
            response::encode(out, Status::Ok, 0, id, &[text.as_bytes()]);
        }
        Pending::Later {
            read: Later::Compact,
            ..
        } => return Step::Compact { id },
    }
    Step::Encoded
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

/// A connection past `--max-connections`: one ERROR with id 0, then close.
pub async fn refuse(stream: TcpStream, connections_max: u32) {
    let mut out = BytesMut::new();
    encode_error(
        &mut out,
        0,
        &format!("too many connections: this server serves at most {connections_max} (--max-connections); try again later"),
    );
    let _ = stream.write_all(out).await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    linger(&stream).await;
}
