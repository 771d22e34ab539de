//! One timer for the whole node finds idle and stalled connections, instead of a watchdog task
//! per connection: every `CONNECTION_WATCH_MS` it compares each connection's byte counters
//! with the last look. A connection's task keeps the counters; the request path pays no timer.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use crate::limits::CONNECTION_WATCH_MS;

use super::Node;

/// What the sweep sees of one connection, and how it closes it.
pub struct ConnWatch {
    fd: RawFd,
    pub bytes_read: Cell<u64>,
    pub bytes_written: Cell<u64>,
    /// Waiting on the socket for requests while owed no reply.
    pub idle_reading: Cell<bool>,
    /// A send is under way.
    pub writing: Cell<bool>,
    /// The sweep closed the read side: the client sent nothing for too long.
    pub idle_closed: Cell<bool>,
    /// The sweep's last look: counters then, and for how long nothing moved.
    seen: Cell<(u64, u64)>,
    idle_for: Cell<Duration>,
    stalled_for: Cell<Duration>,
}

impl ConnWatch {
    pub fn new(fd: RawFd) -> ConnWatch {
        ConnWatch {
            fd,
            bytes_read: Cell::new(0),
            bytes_written: Cell::new(0),
            idle_reading: Cell::new(false),
            writing: Cell::new(false),
            idle_closed: Cell::new(false),
            seen: Cell::new((0, 0)),
            idle_for: Cell::new(Duration::ZERO),
            stalled_for: Cell::new(Duration::ZERO),
        }
    }

    /// Closes the socket both ways: the connection's task sees its reads and writes fail and
    /// ends (a subscriber cut off by pub/sub's output limit).
    pub fn cut(&self) {
        self.shutdown(libc::SHUT_RDWR);
    }

    fn shutdown(&self, how: libc::c_int) {
        // SAFETY: the fd is the connection's socket, open while its watch is registered (the
        // connection's slot removes it before the socket closes; one thread).
        unsafe { libc::shutdown(self.fd, how) };
    }
}

/// Runs for the life of the node.
pub async fn run(node: Rc<Node>) {
    let tick = Duration::from_millis(CONNECTION_WATCH_MS);
    let mut shutdown = node.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        for watch in node.connection_watches() {
            look(&node, &watch, tick);
        }
    }
}

fn look(node: &Node, watch: &ConnWatch, tick: Duration) {
    let config = &node.config;
    let now = (watch.bytes_read.get(), watch.bytes_written.get());
    let (read_before, written_before) = watch.seen.replace(now);
    let idle = watch.idle_reading.get() && now.0 == read_before;
    let stalled = watch.writing.get() && now.1 == written_before;
    let grow = |cell: &Cell<Duration>, on: bool| {
        cell.set(if on {
            cell.get() + tick
        } else {
            Duration::ZERO
        });
        cell.get()
    };
    let idle_for = grow(&watch.idle_for, idle);
    let stalled_for = grow(&watch.stalled_for, stalled);
    if !watch.idle_closed.get() && config.idle_timeout.is_some_and(|limit| idle_for >= limit) {
        tracing::debug!(
            idle_s = idle_for.as_secs(),
            "closing an idle connection (--idle-timeout-secs)"
        );
        node.stats.count_idle_closed();
        watch.idle_closed.set(true);
        // The connection's read sees the end of the stream, says why, and closes.
        watch.shutdown(libc::SHUT_RD);
    } else if stalled_for >= config.output_stall {
        tracing::warn!(
            stalled_s = stalled_for.as_secs(),
            "closing a connection that takes none of its replies (--output-stall-secs)"
        );
        node.stats.count_output_stalled();
        watch.stalled_for.set(Duration::ZERO);
        watch.shutdown(libc::SHUT_RDWR);
    }
}
