//! One client connection: a reader that cuts frames and hands requests to the engine, and a
//! writer that sends replies in request order as soon as each may go.
//!
//! The two share a queue of pending replies. Writes join the open batch the moment they are
//! read, so a pipelining client fills a batch by itself; their replies wait until the batch is
//! durable. Reads wait for the connection's earlier writes, so one connection's requests take
//! effect in the order sent. The queue is capped in requests and bytes: past either cap the
//! reader stops reading until the writer drains it, so a client that never reads its replies
//! costs bounded memory. Eager reply bodies (a KEYS page, a GET of a pending write) count
//! against the byte cap too, so small requests with large replies cannot pile up memory.
//!
//! A watchdog per connection closes it when it has sent nothing for `--idle-timeout-secs`
//! while owed no reply (a half frame stalled mid-way included), and when replies wait to be
//! sent but the socket takes none of their bytes for `--output-stall-secs` (the client stopped
//! reading). With `--auth-file`, every frame first passes the connection's `auth::Gate`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_uring::net::TcpStream;

use crate::auth::{Gate, Verdict};
use crate::command::{self, Later, Pending};
use crate::limits::{
    AUTH_FRAME_BYTES_MAX, BATCH_BYTES_MAX, CONNECTION_BYTES_IN_FLIGHT_MAX, CONNECTION_READ_BYTES,
    CONNECTION_REQUESTS_IN_FLIGHT_MAX, CONNECTION_WATCH_MS, CONNECTION_WRITE_BYTES_MAX,
};
use crate::protocol::frame::{self, FrameError, BODY_OFFSET};
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
    /// What the watchdog looks at: bytes read and written so far, whether the reader waits
    /// on the socket, and how many writes are under way.
    bytes_read: Cell<u64>,
    bytes_written: Cell<u64>,
    reading: Cell<bool>,
    writes_in_flight: Cell<u32>,
    /// The watchdog closed the read side: the client sent nothing for too long.
    idle_closed: Cell<bool>,
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
    let watchdog = tokio_uring::spawn(watch(shared.clone(), stream.clone(), conn.clone(), peer));
    let handoff = read_requests(&shared, &stream, &conn, peer).await;
    conn.reader_done.set(true);
    conn.writer_wake.notify_one();
    let _ = writer.await;
    watchdog.abort();
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
    peer: SocketAddr,
) -> Option<(Frame, BytesMut)> {
    let config = &shared.config;
    let mut shutdown = shared.shutdown.subscribe();
    let mut buf = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    let mut out = BytesMut::new();
    let mut gate = Gate::new(config.auth.as_ref());
    loop {
        let mut wrote = false;
        // Stop taking frames at the cap even inside one read: 64 KiB of 14-byte requests can
        // ask for gigabytes of replies. The rest stays in `buf` until the replies drain.
        while !conn.full() {
            let frame = match frame::decode(&mut buf, gate.frame_bytes_max(config.frame_bytes_max))
            {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let message = match error {
                        FrameError::TooLong { len, .. } if !gate.is_open() => format!(
                            "frame length {len} exceeds the {AUTH_FRAME_BYTES_MAX} bytes a connection may send before it authenticates: send AUTH first; closing the connection"
                        ),
                        error => format!("{error}; closing the connection"),
                    };
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
            let failures = gate.failures();
            match gate.admit(frame.header.kind, frame.header.flags, &frame.body) {
                Verdict::Pass => {}
                Verdict::Accepted => {
                    conn.push(Queued {
                        id: frame.header.id,
                        pending: command::ok_empty(),
                        cost: 0,
                        deadline: None,
                    });
                    continue;
                }
                Verdict::Refused { message, close } => {
                    if gate.failures() > failures {
                        shared.stats.count_auth_failure(close);
                    }
                    conn.push(Queued {
                        id: frame.header.id,
                        pending: command::error(message),
                        cost: 0,
                        deadline: None,
                    });
                    if close {
                        tracing::warn!(%peer, failures = gate.failures(), "closing a connection that failed to authenticate");
                        conn.fatal.set(true);
                        return None;
                    }
                    continue;
                }
            }
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
            // A reply body built now (a KEYS page, a pending write's value) is held until
            // sent: it counts against the connection's cap like the request does.
            let cost = cost + pending.reply_body_bytes();
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
        // Frames left in the buffer at the cap go first (and a bad one is answered first).
        if !matches!(
            frame::check(&buf, gate.frame_bytes_max(config.frame_bytes_max)),
            Ok(None)
        ) {
            continue;
        }
        conn.reading.set(true);
        let frame_bytes_max = gate.frame_bytes_max(config.frame_bytes_max);
        let (read, returned) = tokio::select! {
            read = frames::read_more(stream, buf, frame_bytes_max) => read,
            _ = shutdown.changed() => return None,
        };
        conn.reading.set(false);
        buf = returned;
        match read {
            Ok(0) if conn.idle_closed.get() => {
                let seconds = config.idle_timeout.map_or(0, |idle| idle.as_secs());
                let message = format!(
                    "closing the connection: it sent nothing for {seconds} s (--idle-timeout-secs)"
                );
                conn.push(Queued {
                    id: 0,
                    pending: command::error(message),
                    cost: 0,
                    deadline: None,
                });
                conn.fatal.set(true);
                return None;
            }
            Ok(0) | Err(_) => return None,
            Ok(read) => conn.bytes_read.set(conn.bytes_read.get() + read as u64),
        }
    }
}

/// Closes the connection when it idles past `--idle-timeout-secs` (it sent nothing, waits on
/// the socket, and is owed no reply) or its output stalls past `--output-stall-secs` (a write
/// is under way and the socket took none of its bytes). Looks every `CONNECTION_WATCH_MS`,
/// from counters the reader and writer keep, so the request path pays no timer.
async fn watch(shared: Rc<Shared>, stream: Rc<TcpStream>, conn: Rc<Conn>, peer: SocketAddr) {
    let config = &shared.config;
    let tick = Duration::from_millis(CONNECTION_WATCH_MS);
    let (mut idle_for, mut stalled_for) = (Duration::ZERO, Duration::ZERO);
    let (mut last_read, mut last_written) = (conn.bytes_read.get(), conn.bytes_written.get());
    loop {
        tokio::time::sleep(tick).await;
        let (read, written) = (conn.bytes_read.get(), conn.bytes_written.get());
        let writing = conn.writes_in_flight.get() > 0;
        let idle =
            conn.reading.get() && read == last_read && !writing && conn.queue.borrow().is_empty();
        idle_for = if idle {
            idle_for + tick
        } else {
            Duration::ZERO
        };
        let stalled = writing && written == last_written;
        stalled_for = if stalled {
            stalled_for + tick
        } else {
            Duration::ZERO
        };
        (last_read, last_written) = (read, written);
        if config
            .idle_timeout
            .is_some_and(|timeout| idle_for >= timeout)
        {
            tracing::debug!(%peer, idle_s = idle_for.as_secs(), "closing an idle connection (--idle-timeout-secs)");
            shared.stats.count_idle_closed();
            conn.idle_closed.set(true);
            // The reader sees the end of the stream, says why, and closes.
            let _ = stream.shutdown(std::net::Shutdown::Read);
            return;
        }
        if stalled_for >= config.output_stall {
            tracing::warn!(%peer, stalled_s = stalled_for.as_secs(), "closing a connection that takes none of its replies (--output-stall-secs)");
            shared.stats.count_output_stalled();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Writes all of `out`, one socket write at a time, counting the bytes for the watchdog.
async fn send(stream: &TcpStream, conn: &Conn, out: BytesMut) -> (std::io::Result<()>, BytesMut) {
    use tokio_uring::buf::BoundedBuf;
    conn.writes_in_flight.set(conn.writes_in_flight.get() + 1);
    let mut buf = out;
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
                conn.bytes_written.set(conn.bytes_written.get() + n as u64);
            }
            Err(error) => break Err(error),
        }
    };
    conn.writes_in_flight.set(conn.writes_in_flight.get() - 1);
    (result, buf)
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
    let (written, returned) = send(stream, conn, std::mem::take(out)).await;
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
            let (written, returned) = send(&stream, &conn, out).await;
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
