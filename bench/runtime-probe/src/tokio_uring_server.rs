//! Variants (a) and (b): tokio-uring 0.5 the way kvsd drives it. `tokio_uring::start`, one task
//! per connection that reads into the spare capacity of a growing buffer (as kvsd's
//! `server/frames.rs` does), answers every whole frame, and writes the replies with
//! `write_all` before it reads again.
//!
//! Under tokio-uring each operation is an SQE whose completion wakes a future; tokio's
//! current-thread scheduler polls the woken tasks, and the ring's fd is watched by tokio's
//! epoll driver, which tokio-uring reads when epoll says the fd is readable (and flushes
//! the SQ when the thread parks). (b) changes only the ring's setup flags.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use kvs::limits::CONNECTION_READ_BYTES;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use crate::store::{Flow, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFlags {
    /// `tokio_uring::start`: the ring as kvsd builds it today.
    Default,
    /// COOP_TASKRUN + TASKRUN_FLAG. DEFER_TASKRUN and SINGLE_ISSUER cannot be set here:
    /// tokio-uring flushes the SQ with `io_uring_enter` without GETEVENTS and waits in epoll,
    /// so deferred completions would never be run and the server would hang.
    CoopTaskrun,
}

pub fn run(listener: std::net::TcpListener, store: Store, flags: RingFlags) -> anyhow::Result<()> {
    let serve = async move {
        let listener = TcpListener::from_std(listener);
        let store = Rc::new(RefCell::new(store));
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    tokio_uring::spawn(serve_connection(store.clone(), stream));
                }
                // Out of fds and the like: the listener stays; the next accept may succeed.
                Err(error) => eprintln!("runtime-probe: accept failed: {error}"),
            }
        }
    };
    match flags {
        RingFlags::Default => tokio_uring::start(serve),
        RingFlags::CoopTaskrun => tokio_uring::builder()
            .uring_builder(
                tokio_uring::uring_builder()
                    .setup_coop_taskrun()
                    .setup_taskrun_flag(),
            )
            .start(serve),
    }
}

async fn serve_connection(store: Rc<RefCell<Store>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut input = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    let mut out = BytesMut::with_capacity(CONNECTION_READ_BYTES);
    loop {
        // tokio-uring reads into the start of the buffer it is given, so hand it only the
        // spare capacity: a partial frame already read stays where it is.
        input.reserve(CONNECTION_READ_BYTES);
        let (filled, capacity) = (input.len(), input.capacity());
        let (read, slice) = stream.read(input.slice(filled..capacity)).await;
        input = slice.into_inner();
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let flow = store.borrow_mut().answer_all(&mut input, &mut out);
        if !out.is_empty() {
            let (written, returned) = stream.write_all(out).await;
            out = returned;
            out.clear();
            if written.is_err() {
                return;
            }
        }
        if flow == Flow::Close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}
