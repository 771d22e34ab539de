//! The metrics port while kvsd recovers its log, before the event loop exists: a plain thread
//! answers every request 503 ("recovering"), so a probe of `/ready` learns that the node is
//! not ready instead of waiting on a port nobody answers. Once recovery is done the listener is
//! handed to the loop (`serve`). The thread polls a non-blocking accept every 20 ms: it lives
//! only for the recovery.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::http::{self, Refusal, Reply, Request};
use crate::limits::{METRICS_HEAD_BYTES_MAX, METRICS_REQUEST_TIMEOUT_MS};

pub struct Recovering {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<TcpListener>>,
}

impl Recovering {
    pub fn start(listener: TcpListener) -> std::io::Result<Recovering> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kvsd-recovering".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                listener
            })?;
        Ok(Recovering {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops answering and returns the listener, blocking again, for the loop.
    pub fn finish(mut self) -> std::io::Result<TcpListener> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let listener = thread
            .join()
            .map_err(|_| std::io::Error::other("the metrics thread panicked"))?;
        listener.set_nonblocking(false)?;
        Ok(listener)
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut stream: TcpStream) {
    let timeout = Some(Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS));
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(timeout).is_err()
        || stream.set_write_timeout(timeout).is_err()
    {
        return;
    }
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let request = loop {
        if let Some(end) = http::head_end(&head) {
            break http::parse(&head[..end]);
        }
        if head.len() >= METRICS_HEAD_BYTES_MAX {
            break Request::Refuse(Refusal::HeadTooLarge);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    };
    let bytes = match request {
        Request::Get { head_only, .. } => {
            Reply::text(503, "recovering the log: not serving yet").encode(head_only)
        }
        Request::Refuse(refusal) => Reply::refusal(refusal).encode(false),
    };
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn while_recovering_every_endpoint_is_503_and_the_listener_is_handed_back() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let recovering = Recovering::start(listener).unwrap();
        for path in ["/ready", "/health", "/metrics"] {
            let reply = get(addr, path);
            assert!(reply.starts_with("HTTP/1.1 503 "), "{path}: {reply}");
            assert!(
                reply.ends_with("recovering the log: not serving yet\n"),
                "{reply}"
            );
        }
        assert!(get(addr, "/other").starts_with("HTTP/1.1 404 "));
        let listener = recovering.finish().unwrap();
        // The same socket, blocking again: a connection made now waits for its new owner.
        assert_eq!(listener.local_addr().unwrap(), addr);
        let _client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(accepted);
    }
}
