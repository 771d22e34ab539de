//! A small TCP fault proxy for the scenario tests: it listens on 127.0.0.1, forwards every
//! connection it accepts to a target address, and misbehaves on demand.
//!
//! ```text
//! let proxy = Proxy::start(&leader.addr);   // follower: --leader-addr <proxy.addr>
//! proxy.cut();                              // every open connection is closed now
//! proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
//! proxy.set_mode(Mode::ByteByByte);
//! proxy.set_mode(Mode::Down);               // closed now, and new ones closed on accept
//! proxy.set_mode(Mode::Pass);
//! ```
//!
//! Each direction of a connection is two threads: a reader that stamps each chunk with its
//! arrival time, and a writer that forwards it the way the mode says when it forwards it (so
//! a delay is latency, not a cap on throughput). When either direction ends, both sockets of
//! the connection are shut down: the proxy never half-closes.
//!
//! Only `std`, so that `tools/fault-proxy` can build it with plain `rustc`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes as they come.
    Pass,
    /// Forward each chunk this long after it arrived.
    Delay(Duration),
    /// Forward one byte per write, with TCP_NODELAY: the far side reads frames in pieces.
    ByteByByte,
    /// Close every open connection, and every new one as soon as it is accepted.
    Down,
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// `pass`, `delay=<ms>`, `bytes`, `down`.
    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "pass" => Ok(Mode::Pass),
            "bytes" => Ok(Mode::ByteByByte),
            "down" => Ok(Mode::Down),
            _ => match text.strip_prefix("delay=").map(str::parse) {
                Some(Ok(ms)) => Ok(Mode::Delay(Duration::from_millis(ms))),
                _ => Err(format!(
                    "'{text}' is not a mode: pass, delay=<ms>, bytes, down"
                )),
            },
        }
    }
}

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct Proxy {
    /// `127.0.0.1:<port>`: where to point the client.
    pub addr: String,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

struct Shared {
    target: String,
    mode: Mutex<Mode>,
    /// Open connections by number: both sockets, to shut down on a cut.
    open: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    accepted: AtomicU64,
    cuts: AtomicU64,
    stopping: AtomicBool,
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn cut_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        if !open.is_empty() {
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
        for (_, a, b) in open {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn forget(&self, number: u64) {
        self.open.lock().unwrap().retain(|(n, _, _)| *n != number);
    }
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target` (`host:port`).
    pub fn start(target: &str) -> Proxy {
        Proxy::start_on(0, target)
    }

    /// As `start`, on `port` of 127.0.0.1 (0: a free one).
    pub fn start_on(port: u16, target: &str) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy: bind");
        let addr = listener
            .local_addr()
            .expect("proxy: local addr")
            .to_string();
        let shared = Arc::new(Shared {
            target: target.to_string(),
            mode: Mutex::new(Mode::Pass),
            open: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || accept_loop(listener, shared))
        };
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches the mode; `Mode::Down` also cuts every open connection.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        if mode == Mode::Down {
            self.shared.cut_all();
        }
    }

    /// Closes every open connection now; new ones are accepted as the mode says.
    pub fn cut(&self) {
        self.shared.cut_all();
    }

    /// Connections accepted since start (each reconnection of a client counts).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Cuts that found at least one open connection.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor, which then sees `stopping`.
        let _ = TcpStream::connect(&self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.cut_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut number = 0;
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.mode() == Mode::Down {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(&shared.target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        number += 1;
        if let Err(error) = connect_pair(&shared, number, client, server) {
            eprintln!("fault proxy: connection {number}: {error}");
        }
    }
}

fn connect_pair(
    shared: &Arc<Shared>,
    number: u64,
    client: TcpStream,
    server: TcpStream,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    shared
        .open
        .lock()
        .unwrap()
        .push((number, client.try_clone()?, server.try_clone()?));
    pump(
        shared.clone(),
        number,
        client.try_clone()?,
        server.try_clone()?,
    )?;
    pump(shared.clone(), number, server, client)
}

/// Forwards `from` → `to` until either side fails, then shuts both down.
fn pump(
    shared: Arc<Shared>,
    number: u64,
    mut from: TcpStream,
    mut to: TcpStream,
) -> std::io::Result<()> {
    let (chunks_tx, chunks_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let (from_end, to_end) = (from.try_clone()?, to.try_clone()?);
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks_tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // The writer forwards what was read, then ends the connection.
    });
    thread::spawn(move || {
        for (arrived, chunk) in chunks_rx {
            let written = match shared.mode() {
                Mode::Pass => to.write_all(&chunk),
                Mode::Delay(delay) => {
                    let due = arrived + delay;
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    to.write_all(&chunk)
                }
                Mode::ByteByByte => chunk
                    .iter()
                    .try_for_each(|byte| to.write_all(std::slice::from_ref(byte))),
                Mode::Down => Err(std::io::ErrorKind::ConnectionAborted.into()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = from_end.shutdown(Shutdown::Both);
        let _ = to_end.shutdown(Shutdown::Both);
        shared.forget(number);
    });
    Ok(())
}
