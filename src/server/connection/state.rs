//! One connection's logic as a plain value: bytes of requests in, the log's progress in,
//! replies that may go now out. It does no I/O and never waits; the connection's task feeds
//! it, does the reads it asks for, and moves bytes. So its ordering rules are unit tests.
//!
//! The rules:
//! - Every request is decided when it is read, against the newest state (`command::accept`);
//!   a write joins the open batch at once, so a pipelining client fills a batch by itself.
//! - A reply leaves only once what it observed is durable: a write's OK once its seq is
//!   durable (and on `--min-acks` followers), a read once the connection's earlier writes are.
//! - Replies leave in request order: the head of the queue holds back everything behind it.
//! - After a failed log write, a pending write is answered ERROR, never OK.
//! - The queue is capped in requests and bytes (`full`): past either cap no more frames are
//!   taken, so a client that never reads its replies costs bounded memory. Reply bodies built
//!   at accept time (a KEYS page, a GET of a pending write) count against the byte cap too.
//!
//! The protocol is a dimension of the state, not a second copy of it: a RESP connection
//! (`resp`) parses commands instead of frames and writes each queued reply in its `Shape`,
//! under the same rules.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::auth::{Gate, Verdict};
use crate::command::{self, Later, Pending};
use crate::engine::{Engine, Values};
use crate::limits::{
    AUTH_FRAME_BYTES_MAX, CONNECTION_BYTES_IN_FLIGHT_MAX, CONNECTION_REQUESTS_IN_FLIGHT_MAX,
    CONNECTION_WRITE_BYTES_MAX,
};
use crate::metrics::RequestMetrics;
use crate::protocol::ext::{self, ExtRequest};
use crate::protocol::frame::{self, Frame, FrameError, BODY_OFFSET, KIND_OFFSET};
use crate::protocol::response::{self, encode_error};
use crate::protocol::RequestLimits;
use crate::protocol::{Request, Status};
use crate::replication::messages;
use crate::resp::{NodeRead, Shape};
use crate::wal::Location;

use super::watch::WatchRequest;
pub use resp::Protocol;

/// What a connection's decisions depend on besides the engine: the node's settings.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub limits: RequestLimits,
    pub frame_bytes_max: u32,
    /// Some on a follower: writes are answered NOT_LEADER with this address.
    pub leader_addr: Option<&'a str>,
    pub min_acks: u32,
    pub ack_timeout: Duration,
    pub min_seq_wait: Duration,
    /// Some on a Raft node (`docs/replication.md`): who may write and read is decided per
    /// request, by whether this node leads with its log applied (`Engine::takes_writes`).
    pub raft: Option<&'a RaftView>,
}

/// What a Raft node's connections decide by besides the engine: the leader's client address
/// (this node's own while it leads), empty while none is known.
#[derive(Debug, Default)]
pub struct RaftView {
    pub leader_addr: std::cell::RefCell<String>,
    /// This node was elected and is applying its log before it takes requests: connections
    /// hold their requests meanwhile (a wait bounded by its lease) rather than refuse them.
    pub becoming_leader: std::cell::Cell<bool>,
}

impl Rules<'_> {
    /// When a write's OK stops waiting: on followers (`--min-acks`), or for a Raft majority.
    pub fn write_deadline(&self, now: Instant) -> Option<Instant> {
        (self.min_acks > 0 || self.raft.is_some()).then(|| now + self.ack_timeout)
    }

    /// Whether requests wait now: a new Raft leader is applying its log.
    pub fn holding(&self) -> bool {
        self.raft.is_some_and(|view| view.becoming_leader.get())
    }

    /// The leader's address if this node does not take writes now.
    pub fn write_refusal(&self, engine: &Engine) -> Option<String> {
        if let Some(leader) = self.leader_addr {
            return Some(leader.to_string());
        }
        match self.raft {
            Some(view) if !engine.takes_writes() => Some(view.leader_addr.borrow().clone()),
            _ => None,
        }
    }

    /// On a Raft node that does not lead: the leader's address, for a read that must be
    /// linearizable (`local` reads, those with `min_seq`, are served by any member).
    pub fn read_refusal(&self, engine: &Engine, local: bool) -> Option<String> {
        match self.raft {
            Some(view) if !local && !engine.leads() => Some(view.leader_addr.borrow().clone()),
            _ => None,
        }
    }
}

struct Queued {
    id: u64,
    /// The request's op code (0 for an ERROR with no request), and when it was read: what
    /// `/metrics` records once it is answered.
    op: u8,
    arrived: Instant,
    pending: Pending,
    /// Bytes of the request and of a reply body built at accept time, counted against the
    /// connection's cap until answered.
    cost: usize,
    /// A write's OK waiting on followers, or a GET's `min_seq`: when to give up waiting.
    deadline: Option<Instant>,
    /// How a RESP reply is written; None on the native protocol.
    shape: Option<Shape>,
    /// The engine's epoch when it was taken (`engine::raft`): a Raft leader that stopped
    /// leading since never answers it from what it had pending.
    epoch: u64,
    /// A Raft leader's read: it goes once a confirmation that this node still leads, begun
    /// after the request arrived, has succeeded (ReadIndex).
    confirm: bool,
}

/// What reading requests did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    /// Writes joined the open batch: the committer should know.
    pub wrote: bool,
    /// Frames wait in the buffer because the open batch is full.
    pub batch_full: bool,
}

/// Why `replies` stopped, and what the connection's task must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing is queued.
    Empty,
    /// The head waits for the log to reach `seq` (on followers too with `replicated`), or
    /// for `deadline`.
    Wait {
        seq: u64,
        replicated: bool,
        deadline: Option<Instant>,
    },
    /// The output holds as much as one send should carry.
    OutputFull,
    /// A GET's value must be read from the log; encode it with `id` and go on.
    ReadValue { id: u64, location: Location },
    /// STATS: render the node's counters for `id`.
    Stats { id: u64 },
    /// COMPACT: run a pass, answer `id` with its summary.
    Compact { id: u64 },
    /// RESP's INFO, ROLE, WAIT: answer from the node (`resp_node`).
    Node { read: NodeRead },
    /// A Raft leader's read waits for a leadership confirmation begun after `arrived`.
    Confirm {
        arrived: Instant,
        deadline: Option<Instant>,
    },
    /// A Raft RPC or a cluster admin op: the Raft node answers it (`raft_node::answer`).
    Raft { frame: Frame },
}

/// The value cache as a reply reads it: hands the value at a location to the reader in place
/// and says whether it was there (if not, the connection's task reads the log).
pub type Cached<'a> = dyn Fn(Location, &mut dyn FnMut(&[u8])) -> bool + 'a;

/// How the log stands, as a reply sees it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub durable: u64,
    /// Durable on `--min-acks` followers (u64::MAX without them).
    pub replicated: u64,
    /// A Raft leader: when the newest successful confirmation that it leads began.
    pub confirmed: Option<Instant>,
}

pub struct ConnState<'a> {
    queue: VecDeque<Queued>,
    bytes_in_flight: usize,
    /// The newest write this connection sent: its later reads wait for it.
    last_write_seq: u64,
    /// Writes in the queue, not yet answered.
    writes_queued: usize,
    gate: Gate<'a>,
    /// Answer what is queued, then close: a bad frame, failed authentication, idle.
    closing: bool,
    /// A follower's HELLO: once the queue is answered the connection becomes a stream.
    handoff: Option<Frame>,
    /// A WATCH: once the queue is answered the connection becomes its event stream.
    watch: Option<WatchRequest>,
    /// Answered a write and owes nothing: the commit window may wait for its client.
    pub awaiting_client: bool,
    /// Where each reply is counted, by op and status, with its latency (none in unit tests).
    requests: Option<&'a RequestMetrics>,
    /// Failed AUTHs since last asked, each with whether it closed the connection.
    auth_failures: Vec<bool>,
    auth_failures_seen: u32,
    protocol: Protocol,
    /// The shape of the reply whose value the task is reading (`Next::ReadValue`).
    reading: Option<Shape>,
    /// RESP's pub/sub registry (`with_pubsub`; None on the native port).
    pubsub: Option<&'a crate::server::pubsub::PubSub>,
    /// The engine's epoch, and whether reads need a leadership confirmation, as of the
    /// requests being taken (set by `take_requests`).
    epoch: u64,
    confirm_reads: bool,
}

impl<'a> ConnState<'a> {
    pub fn new(gate: Gate<'a>) -> ConnState<'a> {
        ConnState {
            queue: VecDeque::new(),
            bytes_in_flight: 0,
            last_write_seq: 0,
            writes_queued: 0,
            gate,
            closing: false,
            handoff: None,
            watch: None,
            awaiting_client: false,
            requests: None,
            auth_failures: Vec::new(),
            auth_failures_seen: 0,
            protocol: Protocol::Native,
            reading: None,
            pubsub: None,
            epoch: 0,
            confirm_reads: false,
        }
    }

    /// At either cap: take no more frames until replies drain.
    pub fn full(&self) -> bool {
        self.queue.len() >= CONNECTION_REQUESTS_IN_FLIGHT_MAX
            || self.bytes_in_flight >= CONNECTION_BYTES_IN_FLIGHT_MAX
    }

    /// Whether it still takes requests (not closing, not handed off).
    pub fn open(&self) -> bool {
        !self.closing && self.handoff.is_none() && self.watch.is_none()
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The largest frame the next read may complete (smaller until AUTH).
    pub fn frame_bytes_max(&self, rules: &Rules) -> u32 {
        self.gate.frame_bytes_max(rules.frame_bytes_max)
    }

    /// Counts each reply in `requests` from now on.
    pub fn recording(mut self, requests: &'a RequestMetrics) -> Self {
        self.requests = Some(requests);
        self
    }

    /// A reply to the request `op` read at `arrived`, with status byte `status`.
    fn answered(&self, op: u8, arrived: Instant, now: Instant, status: Option<u8>) {
        if let (Some(requests), Some(status)) = (self.requests, status) {
            requests.record(op, status, now.saturating_duration_since(arrived));
        }
    }

    /// The head was handed to the connection's task, which answers it OK (or ERROR, rarely,
    /// if a log read fails: counted as OK).
    fn handed(&self, op: u8, arrived: Instant, now: Instant, next: Next) -> Next {
        self.answered(op, arrived, now, Some(Status::Ok as u8));
        next
    }

    /// Failed AUTHs since the last call, each with whether it closed the connection.
    pub fn take_auth_failures(&mut self) -> Vec<bool> {
        std::mem::take(&mut self.auth_failures)
    }

    /// The follower's HELLO, once every earlier request is answered.
    pub fn take_handoff(&mut self) -> Option<Frame> {
        match self.queue.is_empty() {
            true => self.handoff.take(),
            false => None,
        }
    }

    /// The WATCH to serve, once every earlier request is answered.
    pub fn take_watch(&mut self) -> Option<WatchRequest> {
        match self.queue.is_empty() {
            true => self.watch.take(),
            false => None,
        }
    }

    /// Queues an ERROR with id 0 and closes after it (the connection broke a rule or idled).
    pub fn close_with(&mut self, message: String) {
        let shape = self.reply_shape();
        self.push(0, command::error(message), 0, None, shape);
        self.closing = true;
    }

    /// The shape of a reply decided now: RESP bytes on a RESP connection.
    fn reply_shape(&self) -> Option<Shape> {
        match self.protocol {
            Protocol::Native => None,
            Protocol::Resp(_) => Some(Shape::Raw),
        }
    }

    /// Whether `buf` holds a whole request (or one that breaks the protocol) to take now.
    pub fn has_request(&self, buf: &[u8], rules: &Rules) -> bool {
        match self.protocol {
            Protocol::Native => {
                frame::check(buf, self.frame_bytes_max(rules)).is_ok_and(|whole| whole.is_some())
            }
            Protocol::Resp(_) => self.resp_has_command(buf, rules),
        }
    }

    /// Encodes the value the task read for `Next::ReadValue` (or why it could not).
    pub fn encode_read(&mut self, out: &mut BytesMut, id: u64, value: Result<Bytes, String>) {
        match (self.reading.take(), value) {
            (None, Ok(value)) => response::encode(out, Status::Ok, 0, id, &[&value]),
            (None, Err(error)) => encode_error(out, id, &error),
            (Some(_), Ok(value)) => resp::encode_value(out, &value),
            (Some(_), Err(error)) => resp::encode_failure(out, "ERR", error.as_bytes()),
        }
    }

    /// Queues a reply not counted as a request of a native op (errors, RESP commands).
    fn push(
        &mut self,
        id: u64,
        pending: Pending,
        cost: usize,
        deadline: Option<Instant>,
        shape: Option<Shape>,
    ) {
        let op = match shape {
            Some(_) => crate::metrics::requests::RESP,
            None => 0,
        };
        self.push_op(op, Instant::now(), id, pending, cost, deadline, shape);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_op(
        &mut self,
        op: u8,
        arrived: Instant,
        id: u64,
        pending: Pending,
        cost: usize,
        deadline: Option<Instant>,
        shape: Option<Shape>,
    ) {
        let write = matches!(pending, Pending::Write { .. });
        if write {
            self.writes_queued += 1;
        }
        // What reads no key needs no confirmation: STATS, COMPACT, the node's own answers.
        let keyless = matches!(
            pending,
            Pending::Later {
                read: Later::Raft(_) | Later::Stats | Later::Compact | Later::Node(_),
                ..
            }
        );
        let confirm = self.confirm_reads && !write && !keyless;
        let deadline = match confirm {
            true => Some(deadline.unwrap_or(arrived + CONFIRM_WAIT_MAX)),
            false => deadline,
        };
        self.bytes_in_flight += cost;
        self.queue.push_back(Queued {
            id,
            op,
            arrived,
            pending,
            cost,
            deadline,
            shape,
            epoch: self.epoch,
            confirm,
        });
    }

    /// Takes the whole frames in `buf` while the queue has room, deciding each against the
    /// engine. Stops at a frame that cannot be read (answered, then the connection closes),
    /// at a follower's HELLO, and while the open batch is full.
    pub fn take_requests(
        &mut self,
        buf: &mut BytesMut,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> Intake {
        self.epoch = engine.epoch();
        self.confirm_reads = rules.raft.is_some() && engine.leads();
        if let Protocol::Resp(_) = self.protocol {
            return self.take_resp_requests(buf, engine, rules, now, values);
        }
        let mut intake = Intake::default();
        while self.open() && !self.full() {
            let whole = || {
                frame::check(buf, self.frame_bytes_max(rules)).is_ok_and(|whole| whole.is_some())
            };
            if engine.open_batch_full() {
                intake.batch_full = whole();
                break;
            }
            // A new Raft leader applying its log: the client's requests wait (not the Raft
            // RPCs and admin ops, which the election itself may need).
            let raft_op = buf
                .get(KIND_OFFSET)
                .is_some_and(|kind| crate::raft::op::is_raft_node_op(*kind));
            if rules.holding() && !raft_op {
                intake.batch_full = whole();
                break;
            }
            let frame = match frame::decode(buf, self.frame_bytes_max(rules)) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let message = match error {
                        FrameError::TooLong { len, .. } if !self.gate.is_open() => format!(
                            "frame length {len} exceeds the {AUTH_FRAME_BYTES_MAX} bytes a connection may send before it authenticates: send AUTH first; closing the connection"
                        ),
                        error => format!("{error}; closing the connection"),
                    };
                    self.close_with(message);
                    break;
                }
            };
            // The client spoke: the commit window no longer waits for it.
            self.awaiting_client = false;
            if self.take_frame(frame, engine, rules, now, values) {
                intake.wrote = true;
            }
        }
        intake
    }

    /// One frame; true if it was a write that joined the open batch.
    fn take_frame(
        &mut self,
        frame: Frame,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> bool {
        let id = frame.header.id;
        let op = frame.header.kind;
        match self
            .gate
            .admit(frame.header.kind, frame.header.flags, &frame.body)
        {
            Verdict::Pass => {}
            Verdict::Accepted => {
                self.push_op(op, now, id, command::ok_empty(), 0, None, None);
                return false;
            }
            Verdict::Refused { message, close } => {
                let failures = self.gate.failures();
                self.push_op(op, now, id, command::error(message), 0, None, None);
                self.closing |= close;
                if failures > self.auth_failures_seen {
                    self.auth_failures_seen = failures;
                    self.auth_failures.push(close);
                }
                return false;
            }
        }
        if rules.raft.is_some() && crate::raft::op::is_raft_node_op(frame.header.kind) {
            let cost = BODY_OFFSET + frame.body.len();
            let pending = Pending::Later {
                read: Later::Raft(frame),
                after_seq: 0,
            };
            self.push_op(op, now, id, pending, cost, None, None);
            return false;
        }
        if frame.header.kind == messages::op::HELLO {
            match rules.leader_addr {
                None if rules.raft.is_some() => {
                    let message = "this node is a Raft member: it streams no log to a --leader-addr follower; add a member with --join instead".to_string();
                    self.push_op(op, now, id, command::error(message), 0, None, None);
                }
                None => self.handoff = Some(frame),
                Some(leader) => {
                    let message = format!(
                        "this node is a follower; point --leader-addr at the leader ({leader})"
                    );
                    self.push_op(op, now, id, command::error(message), 0, None, None);
                }
            }
            return false;
        }
        if frame.header.kind == ext::op::WATCH {
            match Request::decode(&frame, rules.limits) {
                Ok(Request::Ext(ExtRequest::Watch {
                    key,
                    prefix,
                    from_seq,
                })) => {
                    self.watch = Some(WatchRequest {
                        id,
                        key,
                        prefix,
                        from_seq,
                    })
                }
                Ok(_) => unreachable!("a WATCH op decodes to a WATCH"),
                Err(error) => self.push(id, command::error(error.to_string()), 0, None, None),
            }
            return false;
        }
        let cost = BODY_OFFSET + frame.body.len();
        let mut deadline = None;
        let decoded = Request::decode(&frame, rules.limits);
        let confirm_reads = self.confirm_reads;
        if decoded.as_ref().is_ok_and(served_by_any) {
            self.confirm_reads = false;
        }
        let pending = match decoded {
            Err(error) => command::error(error.to_string()),
            Ok(request) if request.is_write() && rules.write_refusal(engine).is_some() => {
                not_leader(rules.write_refusal(engine).unwrap_or_default())
            }
            Ok(request)
                if rules
                    .read_refusal(engine, served_by_any(&request))
                    .is_some() =>
            {
                not_leader(rules.read_refusal(engine, false).unwrap_or_default())
            }
            Ok(request) => {
                if request.is_write() {
                    deadline = rules.write_deadline(now);
                }
                if let Request::Get {
                    min_seq: Some(_), ..
                } = &request
                {
                    deadline = Some(now + rules.min_seq_wait);
                }
                let keys_body_max =
                    rules.frame_bytes_max as usize - (BODY_OFFSET - frame::KIND_OFFSET);
                command::accept(engine, request, self.last_write_seq, keys_body_max, values)
            }
        };
        let wrote = match pending {
            Pending::Write { seq, .. } => {
                self.last_write_seq = seq;
                true
            }
            _ => false,
        };
        let cost = cost + pending.reply_body_bytes();
        self.push_op(op, now, id, pending, cost, deadline, None);
        self.confirm_reads = confirm_reads;
        wrote
    }

    /// Encodes into `out`, in request order, every reply that may go now; stops at the first
    /// that must wait or needs the connection's task (a log read, STATS, COMPACT).
    pub fn replies(
        &mut self,
        engine: &Engine,
        rules: &Rules,
        progress: Progress,
        cached: &Cached<'_>,
        now: Instant,
        out: &mut BytesMut,
    ) -> Next {
        loop {
            if out.len() >= CONNECTION_WRITE_BYTES_MAX {
                return Next::OutputFull;
            }
            let Some(head) = self.queue.front() else {
                return Next::Empty;
            };
            let failed = engine.write_failed();
            let expired = head.deadline.is_some_and(|deadline| now >= deadline);
            let (seq, replicated) = match &head.pending {
                Pending::Write { seq, .. } => (*seq, true),
                pending => (pending.after_seq(), false),
            };
            if engine.is_raft() {
                let lost = engine.outcome_lost(head.epoch, seq)
                    || (head.confirm && head.epoch != engine.epoch());
                let unconfirmed = head.confirm
                    && progress.confirmed.is_none_or(|at| at < head.arrived)
                    && seq <= progress.durable;
                let uncommitted = matches!(head.pending, Pending::Write { .. })
                    && expired
                    && seq > progress.durable;
                if lost || (unconfirmed && expired) || uncommitted {
                    let head = self.queue.pop_front().expect("head exists");
                    self.answer_unknown(head, rules, lost, out, now);
                    continue;
                }
                if unconfirmed {
                    return Next::Confirm {
                        arrived: head.arrived,
                        deadline: head.deadline,
                    };
                }
            }
            let reached = match replicated {
                true => progress.durable.min(progress.replicated),
                false => progress.durable,
            };
            let ready = seq <= reached
                || failed.is_some()
                || (expired && (!replicated || seq <= progress.durable));
            if !ready {
                return Next::Wait {
                    seq,
                    replicated,
                    deadline: head.deadline,
                };
            }
            let head = self.queue.pop_front().expect("head exists");
            self.bytes_in_flight -= head.cost;
            let (op, arrived, start) = (head.op, head.arrived, out.len());
            let id = head.id;
            let durable = progress.durable;
            let shape = head.shape;
            let native = shape.is_none();
            // An error in the connection's protocol.
            let fail = |out: &mut BytesMut, code: &str, message: &str| match &shape {
                None => encode_error(out, id, message),
                Some(_) => resp::encode_failure(out, code, message.as_bytes()),
            };
            let value = |out: &mut BytesMut, value: &[u8]| match &shape {
                None => response::encode(out, Status::Ok, 0, id, &[value]),
                Some(_) => resp::encode_value(out, value),
            };
            match head.pending {
                Pending::Write { seq, body } => {
                    self.writes_queued -= 1;
                    if seq <= durable && seq <= progress.replicated {
                        match (&shape, body) {
                            (None, Some(body)) => {
                                response::encode(out, Status::Ok, 0, id, &[&body])
                            }
                            (None, None) => {
                                response::encode(out, Status::Ok, 0, id, &[&seq.to_le_bytes()])
                            }
                            (Some(shape), _) => resp::encode_written(out, shape),
                        }
                        // Its client will likely write again: the commit window may wait.
                        self.awaiting_client = self.queue.is_empty() && self.open();
                    } else if seq <= durable {
                        let message = format!(
                            "the write (seq {seq}) is durable on the leader but was not confirmed by {} follower(s) within {} ms (--min-acks, --ack-timeout-ms)",
                            rules.min_acks,
                            rules.ack_timeout.as_millis()
                        );
                        fail(out, "NOREPLICAS", &message);
                    } else {
                        let failed = failed.map(|f| f.to_string()).unwrap_or_default();
                        let message = format!("this write (seq {seq}) was not acknowledged and may or may not be on disk: {failed}");
                        fail(out, "ERR", &message);
                    }
                }
                _ if seq > durable => {
                    let message = match failed {
                        Some(failed) => {
                            format!("cannot answer: what it read was not made durable: {failed}")
                        }
                        None => format!(
                            "seq {seq} was not applied within {} ms (applied up to {durable}); retry later",
                            rules.min_seq_wait.as_millis()
                        ),
                    };
                    fail(out, "ERR", &message);
                }
                Pending::Reply {
                    status,
                    flags,
                    body,
                    ..
                } => match &shape {
                    None => response::encode(out, status, flags, id, &[&body]),
                    Some(shape) => resp::encode_reply(out, shape, status, &body),
                },
                Pending::Value { location, .. } => {
                    if !cached(location, &mut |bytes| value(out, bytes)) {
                        self.reading = shape;
                        return self.handed(op, arrived, now, Next::ReadValue { id, location });
                    }
                }
                Pending::Later {
                    read: Later::Get { key },
                    ..
                } => match engine.get(&key) {
                    Some(location) => {
                        if !cached(location, &mut |bytes| value(out, bytes)) {
                            self.reading = shape;
                            return self.handed(op, arrived, now, Next::ReadValue { id, location });
                        }
                    }
                    None => response::encode(out, Status::NotFound, 0, id, &[]),
                },
                Pending::Later {
                    read: Later::Stats, ..
                } => return self.handed(op, arrived, now, Next::Stats { id }),
                Pending::Later {
                    read: Later::Compact,
                    ..
                } => return self.handed(op, arrived, now, Next::Compact { id }),
                Pending::Later {
                    read: Later::Node(read),
                    ..
                } => return Next::Node { read },
                Pending::Later {
                    read: Later::Raft(frame),
                    ..
                } => return self.handed(op, arrived, now, Next::Raft { frame }),
            }
            // A native reply's status byte; a RESP reply counts as OK or, if an error, ERROR.
            let status = match (native, out.get(start)) {
                (true, _) => out.get(start + KIND_OFFSET).copied(),
                (false, Some(b'-' | b'!')) => Some(Status::Error as u8),
                (false, Some(_)) => Some(Status::Ok as u8),
                (false, None) => None,
            };
            self.answered(op, arrived, now, status);
        }
    }
}

impl ConnState<'_> {
    /// Answers `head`, taken while this Raft node led, now that it cannot be answered from
    /// that: `lost`, it stopped leading (a write's outcome is unknown; a read goes elsewhere);
    /// else its leadership could not be confirmed in time.
    fn answer_unknown(
        &mut self,
        head: Queued,
        rules: &Rules,
        lost: bool,
        out: &mut BytesMut,
        now: Instant,
    ) {
        self.bytes_in_flight -= head.cost;
        let leader = rules
            .raft
            .map(|view| view.leader_addr.borrow().clone())
            .unwrap_or_default();
        let write = matches!(head.pending, Pending::Write { .. });
        if write {
            self.writes_queued -= 1;
        }
        let message = match (write, lost) {
            (true, false) => format!(
                "the write was not committed within {} ms (--ack-timeout-ms; no majority reached): it may or may not be applied later",
                rules.ack_timeout.as_millis()
            ),
            (true, true) => format!(
                "the outcome of this write is unknown: this node stopped leading before it was committed; the new leader may or may not have applied it (leader: {})",
                if leader.is_empty() { "not known yet" } else { &leader }
            ),
            (false, true) => format!(
                "this node stopped leading before the read could be answered; retry at the leader ({})",
                if leader.is_empty() { "not known yet" } else { &leader }
            ),
            (false, false) => "this node could not confirm it still leads (no quorum answered in time): retry".to_string(),
        };
        let start = out.len();
        match (&head.shape, write || !lost) {
            (None, true) => encode_error(out, head.id, &message),
            (None, false) => {
                response::encode(out, Status::NotLeader, 0, head.id, &[leader.as_bytes()])
            }
            (Some(_), _) => resp::encode_failure(out, "ERR", message.as_bytes()),
        }
        let status = match head.shape {
            None => out.get(start + KIND_OFFSET).copied(),
            Some(_) => Some(Status::Error as u8),
        };
        self.answered(head.op, head.arrived, now, status);
    }
}

/// NOT_LEADER naming `leader` (empty while no leader is known).
fn not_leader(leader: String) -> Pending {
    Pending::Reply {
        status: Status::NotLeader,
        flags: 0,
        body: Bytes::from(leader),
        after_seq: 0,
    }
}

/// How long a Raft leader's read waits for the confirmation that it still leads.
const CONFIRM_WAIT_MAX: Duration = Duration::from_secs(5);

/// Requests any Raft member answers from its own state: a GET with `min_seq` (read-your-
/// writes on followers and learners), and those that read no key.
fn served_by_any(request: &Request) -> bool {
    matches!(
        request,
        Request::Get {
            min_seq: Some(_),
            ..
        } | Request::Ping { .. }
            | Request::Stats
            | Request::Compact
            | Request::Auth { .. }
    )
}

mod resp;

#[cfg(test)]
mod tests;
