//! Variant (c): one loop on the `io-uring` crate itself, no futures and no scheduler.
//!
//! - The ring is SINGLE_ISSUER + DEFER_TASKRUN: only this thread submits, and the kernel runs
//!   completion work only when this thread asks for events, in one batch, instead of
//!   interrupting it whenever a packet lands.
//! - Each connection has one multishot RECV armed for its whole life, reading into buffers the
//!   kernel picks from a provided-buffer ring: no SQE per read, no buffer per idle connection.
//! - Replies are gathered per connection over a loop turn and leave in one SEND per connection
//!   per turn (one more only after the previous one completed, to keep the byte order).
//! - Each turn makes exactly one `io_uring_enter`: `submit_and_wait(1)` hands over the turn's
//!   SENDs and re-arms and collects the completions in the same call.
//!
//! Client input never panics the loop: a bad frame is answered and the connection closed, a
//! client that stops reading is closed when its queued replies pass `OUT_BYTES_MAX`.

use std::alloc::{self, Layout};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::BytesMut;
use io_uring::squeue::Entry;
use io_uring::{cqueue, opcode, types, IoUring, SubmissionQueue, Submitter};

use crate::store::{Flow, Store};

const SQ_ENTRIES: u32 = 1024;
/// Room for a multishot RECV completion per connection and then some; the kernel keeps
/// overflowing completions on a list (IORING_FEAT_NODROP) rather than drop them.
const CQ_ENTRIES: u32 = 8192;
const BUF_GROUP: u16 = 0;
/// Buffers in the provided-buffer ring (a power of two, as the kernel requires). Each is
/// returned in the turn that filled it, so the ring only runs dry if one turn sees more
/// receives than this; then the RECV ends with ENOBUFS and is armed again.
const BUF_COUNT: u16 = 512;
const BUF_BYTES: usize = 4096;
const PAGE_BYTES: usize = 4096;
/// Replies queued on one connection that has not taken them: past this it is closed.
const OUT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What a completion belongs to, packed into its user_data:
/// | bits 56..64: op | bits 32..56: slot generation | bits 0..32: slot |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
}

fn user_data(op: Op, slot: u32, generation: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0xff_ffff) << 32 | u64::from(slot)
}

fn unpack(user_data: u64) -> (u8, u32, u32) {
    (
        (user_data >> 56) as u8,
        (user_data as u32),
        ((user_data >> 32) as u32) & 0xff_ffff,
    )
}

/// The provided-buffer ring: `BUF_COUNT` entries the kernel takes buffers from, and the
/// buffers themselves. The kernel writes into a buffer between our handing it over (`provide`
/// then `publish`) and its completion, so the memory is reached only through raw pointers.
struct BufRing {
    entries: *mut types::BufRingEntry,
    entries_layout: Layout,
    buffers: *mut u8,
    buffers_layout: Layout,
    /// Our copy of the ring's tail; `publish` stores it where the kernel reads it.
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let entries_layout = Layout::from_size_align(
            usize::from(BUF_COUNT) * std::mem::size_of::<types::BufRingEntry>(),
            PAGE_BYTES,
        )
        .map_err(io::Error::other)?;
        let buffers_layout = Layout::from_size_align(usize::from(BUF_COUNT) * BUF_BYTES, 64)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (entries, buffers) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout).cast::<types::BufRingEntry>(),
                alloc::alloc_zeroed(buffers_layout),
            )
        };
        if entries.is_null() || buffers.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut ring = BufRing {
            entries,
            entries_layout,
            buffers,
            buffers_layout,
            tail: 0,
        };
        for bid in 0..BUF_COUNT {
            ring.provide(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn register(&self, submitter: &Submitter) -> io::Result<()> {
        // SAFETY: the entries stay allocated until `self` drops, which is after the ring
        // (`Server` declares `ring` before `bufs`, so it drops first).
        unsafe { submitter.register_buf_ring(self.entries as u64, BUF_COUNT, BUF_GROUP) }
    }

    /// Hands buffer `bid` back to the kernel (seen after the next `publish`).
    fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUF_COUNT - 1));
        // SAFETY: index < BUF_COUNT; bid < BUF_COUNT, so the buffer lies inside `buffers`.
        // The entry slot is free: the kernel has consumed every entry before the tail.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(self.buffers.add(usize::from(bid) * BUF_BYTES) as u64);
            entry.set_len(BUF_BYTES as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry, which the kernel reads atomically;
        // Release orders the entries written above before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The bytes a completion says the kernel put into buffer `bid`.
    fn filled(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= BUF_COUNT || len > BUF_BYTES {
            return None;
        }
        // SAFETY: in bounds (checked), and the kernel is done with the buffer until we
        // `provide` it again.
        Some(unsafe {
            std::slice::from_raw_parts(self.buffers.add(usize::from(bid) * BUF_BYTES), len)
        })
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the io_uring is gone by now.
        unsafe {
            alloc::dealloc(self.entries.cast(), self.entries_layout);
            alloc::dealloc(self.buffers, self.buffers_layout);
        }
    }
}

struct Conn {
    fd: OwnedFd,
    generation: u32,
    /// Bytes received and not yet cut into frames (a partial frame).
    input: BytesMut,
    /// Replies gathered this turn, not yet handed to the kernel.
    out: BytesMut,
    /// The bytes the SEND in flight points into: untouched until it completes.
    sending: BytesMut,
    sent: usize,
    send_in_flight: bool,
    recv_armed: bool,
    /// After a bad frame: input is dropped, and the write side is shut once `out` is sent.
    discard_input: bool,
    write_shut: bool,
    /// The peer left or failed: no more I/O is started; freed when nothing is in flight.
    gone: bool,
    /// In `Server::ready` this turn.
    ready: bool,
}

struct Server {
    // Declared before `bufs`: the ring must close before the buffer memory is freed.
    ring: IoUring,
    bufs: BufRing,
    store: Store,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    next_generation: u32,
    /// Connections with something to send at the end of this turn.
    ready: Vec<u32>,
}

pub fn run(listener: TcpListener, store: Store) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)?;
    let bufs = BufRing::new()?;
    bufs.register(&ring.submitter())?;
    let mut server = Server {
        ring,
        bufs,
        store,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        next_generation: 0,
        ready: Vec::new(),
    };
    server.run()
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let accept = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .build()
            .user_data(user_data(Op::Accept, 0, 0));
        let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(CQ_ENTRIES as usize);
        let (submitter, mut sq, _) = self.ring.split();
        push(&mut sq, &submitter, &accept)?;
        drop(sq);
        loop {
            // The turn's one syscall: hand over the SENDs and re-arms queued last turn, run
            // the deferred completion work, and sleep until there is at least one completion.
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error)
                    if matches!(error.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            completions.clear();
            completions.extend(self.ring.completion());
            for cqe in &completions {
                self.complete(cqe)?;
            }
            // Gather: one SEND per connection per turn carries every reply it has so far.
            let ready = std::mem::take(&mut self.ready);
            for &slot in &ready {
                self.start_send(slot)?;
            }
            self.ready = ready;
            self.ready.clear();
            self.bufs.publish();
        }
    }

    fn complete(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let (op, slot, generation) = unpack(cqe.user_data());
        let (result, flags) = (cqe.result(), cqe.flags());
        match op {
            op if op == Op::Accept as u8 => self.accepted(result, flags),
            op if op == Op::Recv as u8 => self.received(slot, generation, result, flags),
            op if op == Op::Send as u8 => self.send_done(slot, generation, result),
            _ => Ok(()),
        }
    }

    fn accepted(&mut self, result: i32, flags: u32) -> io::Result<()> {
        if result >= 0 {
            // SAFETY: a successful accept returns a new fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            set_nodelay(fd.as_raw_fd());
            let generation = self.next_generation & 0xff_ffff;
            self.next_generation = self.next_generation.wrapping_add(1);
            let conn = Conn {
                fd,
                generation,
                input: BytesMut::new(),
                out: BytesMut::new(),
                sending: BytesMut::new(),
                sent: 0,
                send_in_flight: false,
                recv_armed: false,
                discard_input: false,
                write_shut: false,
                gone: false,
                ready: false,
            };
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.conns[slot as usize] = Some(conn);
                    slot
                }
                None => {
                    self.conns.push(Some(conn));
                    (self.conns.len() - 1) as u32
                }
            };
            self.arm_recv(slot)?;
        } else {
            // Out of fds and the like: the listener stays; a later accept may succeed.
            eprintln!(
                "runtime-probe: accept failed: {}",
                io::Error::from_raw_os_error(-result)
            );
        }
        if !cqueue::more(flags) {
            let accept = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
                .build()
                .user_data(user_data(Op::Accept, 0, 0));
            let (submitter, mut sq, _) = self.ring.split();
            push(&mut sq, &submitter, &accept)?;
        }
        Ok(())
    }

    fn received(&mut self, slot: u32, generation: u32, result: i32, flags: u32) -> io::Result<()> {
        // Whatever happens to the connection, a buffer the kernel filled goes back to the ring.
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = live(&mut self.conns, slot, generation) else {
            if let Some(bid) = bid {
                self.bufs.provide(bid);
            }
            return Ok(());
        };
        let more = cqueue::more(flags);
        conn.recv_armed = more;
        match (result, bid) {
            (len @ 1.., Some(bid)) => {
                if !conn.discard_input && !conn.gone {
                    if let Some(bytes) = self.bufs.filled(bid, len as usize) {
                        conn.input.extend_from_slice(bytes);
                    }
                    if self.store.answer_all(&mut conn.input, &mut conn.out) == Flow::Close {
                        conn.discard_input = true;
                    }
                    if conn.out.len() + conn.sending.len() > OUT_BYTES_MAX {
                        // The client sends and never reads: it gets no more of our memory.
                        conn.gone = true;
                    } else if !conn.out.is_empty() && !conn.ready {
                        conn.ready = true;
                        self.ready.push(slot);
                    }
                }
                self.bufs.provide(bid);
            }
            // The ring ran dry this turn: the RECV ended; arm it again below.
            (result, _) if result == -libc::ENOBUFS => {}
            // End of stream, or an error.
            _ => {
                if let Some(bid) = bid {
                    self.bufs.provide(bid);
                }
                conn.gone = true;
            }
        }
        self.settle(slot)?;
        Ok(())
    }

    fn send_done(&mut self, slot: u32, generation: u32, result: i32) -> io::Result<()> {
        let Some(conn) = live(&mut self.conns, slot, generation) else {
            return Ok(());
        };
        conn.send_in_flight = false;
        match usize::try_from(result) {
            Ok(sent) if sent > 0 => {
                conn.sent += sent;
                // A short send: the rest goes first next turn, then anything gathered since.
                if (conn.sent < conn.sending.len() || !conn.out.is_empty()) && !conn.ready {
                    conn.ready = true;
                    self.ready.push(slot);
                }
            }
            _ => conn.gone = true,
        }
        self.settle(slot)
    }

    /// Starts this connection's one SEND of the turn: the rest of a short send, else every
    /// reply gathered so far.
    fn start_send(&mut self, slot: u32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        conn.ready = false;
        if conn.gone || conn.send_in_flight {
            return Ok(());
        }
        if conn.sent == conn.sending.len() {
            if conn.out.is_empty() {
                return Ok(());
            }
            conn.sending.clear();
            std::mem::swap(&mut conn.sending, &mut conn.out);
            conn.sent = 0;
        }
        let rest = &conn.sending[conn.sent..];
        let send = opcode::Send::new(
            types::Fd(conn.fd.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(Op::Send, slot, conn.generation));
        conn.send_in_flight = true;
        let (submitter, mut sq, _) = self.ring.split();
        push(&mut sq, &submitter, &send)
    }

    /// After a completion: re-arm the RECV, shut the write side after a bad frame's reply,
    /// or free a connection that is gone once the kernel holds nothing of it.
    fn settle(&mut self, slot: u32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        let idle = !conn.send_in_flight && conn.sent == conn.sending.len() && conn.out.is_empty();
        if conn.discard_input && idle && !conn.gone && !conn.write_shut {
            conn.write_shut = true;
            // The ERROR has left: a FIN after it, and the client's close ends the RECV.
            // SAFETY: shutdown on an fd we own.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_WR) };
        }
        if conn.gone {
            if conn.recv_armed || conn.send_in_flight {
                // Ends the armed RECV (it completes with 0) and any SEND in flight.
                // SAFETY: shutdown on an fd we own.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
                return Ok(());
            }
            // Nothing in flight points at this connection: dropping it closes the fd.
            self.conns[slot as usize] = None;
            self.free.push(slot);
            return Ok(());
        }
        if !conn.recv_armed {
            self.arm_recv(slot)?;
        }
        Ok(())
    }

    fn arm_recv(&mut self, slot: u32) -> io::Result<()> {
        let Some(Some(conn)) = self.conns.get_mut(slot as usize) else {
            return Ok(());
        };
        let recv = opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), BUF_GROUP)
            .build()
            .user_data(user_data(Op::Recv, slot, conn.generation));
        conn.recv_armed = true;
        let (submitter, mut sq, _) = self.ring.split();
        push(&mut sq, &submitter, &recv)
    }
}

/// The live connection a completion names; `None` for a stale one (its slot was reused).
fn live(conns: &mut [Option<Conn>], slot: u32, generation: u32) -> Option<&mut Conn> {
    conns
        .get_mut(slot as usize)?
        .as_mut()
        .filter(|conn| conn.generation == generation)
}

/// Queues an SQE; if the SQ is full, submits what is queued (without waiting) to make room.
fn push(sq: &mut SubmissionQueue, submitter: &Submitter, entry: &Entry) -> io::Result<()> {
    // SAFETY: every buffer an SQE points at (a SEND's `sending`, the ring's buffers) stays
    // alive and unmoved until its completion: `Conn` is freed only with nothing in flight.
    while unsafe { sq.push(entry) }.is_err() {
        sq.sync();
        submitter.submit()?;
        sq.sync();
    }
    sq.sync();
    Ok(())
}

fn set_nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
