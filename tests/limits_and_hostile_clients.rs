//! Limits and hostile clients against the real kvsd: `--max-connections`, clients that send
//! without reading (other clients stay served, memory stays bounded, the reader resumes), and
//! the start-up refusals (a CPU that does not exist, a port in use, a frame limit that cannot
//! hold the largest SET). The client is `common::raw`, packed from the protocol docs.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::raw::{frame, proc_status_kib, set_body, Conn, GET, KEYS, PING, SET};
use common::{start_expecting_exit, Kvsd};

const MIB_AS_KIB: u64 = 1024;

fn start(extra: &[&str]) -> (tempfile::TempDir, Kvsd) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), extra);
    (dir, server)
}

/// Polls STATS on `conn` until `connections` reads `want` (the server notices a close when
/// it next reads that socket, not at once).
fn wait_for_connections(conn: &mut Conn, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: u64 = conn.stats()["connections"].parse().unwrap();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "STATS connections stays at {now}, expected {want}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_past_max_connections_get_error_id_0_and_close() {
    let (_dir, server) = start(&["--max-connections", "4"]);
    let mut served: Vec<Conn> = (0..4).map(|_| Conn::connect(&server.addr)).collect();
    for conn in &mut served {
        conn.ping(b"served");
    }

    for _ in 0..2 {
        let mut refused = Conn::connect(&server.addr);
        refused.reply().assert_error(0);
        refused.expect_closed();
    }
    for conn in &mut served {
        conn.ping(b"still served");
    }

    // One leaves; once the server has seen it go, a newcomer is served.
    drop(served.pop());
    wait_for_connections(&mut served[0], 3);
    let mut newcomer = Conn::connect(&server.addr);
    newcomer.ping(b"newcomer");
    newcomer.set(b"k", b"v");
    served.push(newcomer);

    // Full again.
    let mut refused = Conn::connect(&server.addr);
    refused.reply().assert_error(0);
    refused.expect_closed();
}

/// A connection that writes `frames` from a thread and never reads; `written` counts the bytes
/// the kernel took, `done` says the thread finished (all written, or the socket was shut).
struct Unread {
    conn: Conn,
    written: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<bool>>,
}

impl Unread {
    fn start(addr: &str, frames: Vec<Vec<u8>>) -> Unread {
        let conn = Conn::connect(addr);
        let mut stream = conn.stream.try_clone().unwrap();
        let written = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (written_by_thread, done_by_thread) = (written.clone(), done.clone());
        let thread = thread::spawn(move || {
            let mut all_written = true;
            for bytes in frames {
                if stream.write_all(&bytes).is_err() {
                    all_written = false;
                    break;
                }
                written_by_thread.fetch_add(bytes.len(), Ordering::Relaxed);
            }
            done_by_thread.store(true, Ordering::Relaxed);
            all_written
        });
        Unread {
            conn,
            written,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until the writer finished or has made no progress for a while (the server stopped
    /// reading it). Meanwhile `each` runs, at least `rounds_min` times. Returns true if the
    /// writer finished.
    fn watch(&self, rounds_min: usize, mut each: impl FnMut()) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut last, mut still_since) = (usize::MAX, Instant::now());
        let mut rounds = 0;
        loop {
            each();
            rounds += 1;
            if self.done.load(Ordering::Relaxed) && rounds >= rounds_min {
                return true;
            }
            let now = self.written.load(Ordering::Relaxed);
            if now != last {
                (last, still_since) = (now, Instant::now());
            } else if still_since.elapsed() > Duration::from_millis(500) && rounds >= rounds_min {
                return false;
            }
            if Instant::now() > deadline && rounds >= rounds_min {
                return self.done.load(Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Joins the writer thread; true if it wrote everything.
    fn join(&mut self) -> bool {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        // Unblocks a writer stuck in write_all.
        let _ = self.conn.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn pipelined_sets_never_read_do_not_block_other_clients() {
    let (_dir, server) = start(&[]);
    let pid = server.pid;
    let mut other = Conn::connect(&server.addr);
    other.ping(b"warm up");
    let rss_before = proc_status_kib(pid, "VmRSS");

    // 40 MiB of SETs in 1 KiB values, over 1,000 keys; the replies are never read.
    let value = vec![0x5a; 1024];
    let frames: Vec<Vec<u8>> = (0..40_000u64)
        .map(|i| {
            let key = format!("hostile-{}", i % 1000);
            frame(SET, 0, i, &set_body(key.as_bytes(), &value))
        })
        .collect();
    let hostile = Unread::start(&server.addr, frames);

    let mut rss_max = rss_before;
    let mut round = 0u64;
    hostile.watch(200, || {
        round += 1;
        other.ping(&round.to_le_bytes());
        other.set(b"other", &round.to_le_bytes());
        assert_eq!(other.value(b"other"), Some(round.to_le_bytes().to_vec()));
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
    });
    let growth_kib = rss_max.saturating_sub(rss_before);
    assert!(
        growth_kib < 64 * MIB_AS_KIB,
        "RSS grew by {growth_kib} KiB while a client sent SETs without reading"
    );
    drop(hostile);

    let mut after = Conn::connect(&server.addr);
    after.ping(b"after");
    assert_eq!(after.value(b"other"), Some(round.to_le_bytes().to_vec()));
}

#[test]
fn unread_large_replies_stop_the_reader_bound_memory_and_resume() {
    let (_dir, server) = start(&[]);
    let pid = server.pid;
    let mut other = Conn::connect(&server.addr);
    other.ping(b"warm up");
    let rss_before = proc_status_kib(pid, "VmRSS");

    // 160 MiB of PINGs whose replies are as large: far more than kvsd's 8 MiB per connection
    // plus what the kernel's socket buffers can hold.
    const PINGS: u64 = 2560;
    const BODY_BYTES: usize = 64 * 1024;
    let body = |i: u64| -> Vec<u8> {
        let mut body = vec![(i % 251) as u8; BODY_BYTES];
        body[..8].copy_from_slice(&i.to_le_bytes());
        body
    };
    let frames: Vec<Vec<u8>> = (0..PINGS).map(|i| frame(PING, 0, i, &body(i))).collect();
    let mut hostile = Unread::start(&server.addr, frames);

    let mut rss_max = rss_before;
    let finished = hostile.watch(20, || {
        other.ping(b"other client");
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
    });
    assert!(
        !finished,
        "kvsd read all {} MiB of requests whose replies nobody read",
        (PINGS * BODY_BYTES as u64) >> 20
    );
    let growth_kib = rss_max.saturating_sub(rss_before);
    assert!(
        growth_kib < 64 * MIB_AS_KIB,
        "RSS grew by {growth_kib} KiB for a client that does not read its replies"
    );

    // Once the client reads, the server resumes: every reply arrives, in order, intact.
    for i in 0..PINGS {
        hostile.conn.reply().assert_ok(i, &body(i));
    }
    assert!(
        hostile.join(),
        "the client's writes went through once it read"
    );
    other.ping(b"after");
}

// ---------------------------------------------------------------------------------------------
// Start-up refusals
// ---------------------------------------------------------------------------------------------

/// kvsd's arguments with a data dir, as `OsStr`s.
fn args<'a>(data_dir: &'a tempfile::TempDir, extra: &'a [&'a str]) -> Vec<&'a OsStr> {
    let mut args = vec![OsStr::new("--data-dir"), data_dir.path().as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    args
}

#[test]
fn a_cpu_that_does_not_exist_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = start_expecting_exit(&args(&dir, &["--port", "0", "--core", "999"]));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("999") && stderr.to_lowercase().contains("cpu"),
        "the message names the CPU:\n{stderr}"
    );
}

#[test]
fn a_port_in_use_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (status, stderr) = start_expecting_exit(&args(&dir, &["--port", &port]));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&port) && stderr.to_lowercase().contains("in use"),
        "the message names the port and says it is in use:\n{stderr}"
    );
}

#[test]
fn max_frame_smaller_than_the_largest_set_is_refused_at_start() {
    // The largest SET: len = 10 (header) + 4 (klen) + 64 + 1000 = 1078.
    let limits = ["--max-key-bytes", "64", "--max-value-bytes", "1000"];
    let dir = tempfile::tempdir().unwrap();
    let mut too_small = vec!["--port", "0", "--max-frame-bytes", "1077"];
    too_small.extend(limits);
    let (status, stderr) = start_expecting_exit(&args(&dir, &too_small));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("max-frame-bytes"),
        "the message names the flag to change:\n{stderr}"
    );

    // Exactly enough starts, and the largest SET fits.
    let mut exact = vec!["--max-frame-bytes", "1078"];
    exact.extend(limits);
    let server = common::start(dir.path(), &exact);
    let mut conn = Conn::connect(&server.addr);
    let (key, value) = (vec![b'k'; 64], vec![b'v'; 1000]);
    conn.set(&key, &value);
    assert_eq!(conn.value(&key), Some(value));
}

// ---------------------------------------------------------------------------------------------
// Idle and stalled connections, clients that never read
// ---------------------------------------------------------------------------------------------

/// A STATS figure as a number.
fn figure(conn: &mut Conn, name: &str) -> u64 {
    let stats = conn.stats();
    stats
        .get(name)
        .unwrap_or_else(|| panic!("STATS has no {name}: {stats:?}"))
        .parse()
        .unwrap()
}

#[test]
fn a_thousand_half_frames_are_closed_after_the_idle_timeout_while_others_are_served() {
    const STALLED: usize = 1000;
    let (_dir, server) = start(&["--idle-timeout-secs", "2", "--max-connections", "1100"]);
    let mut other = Conn::connect(&server.addr);
    other.ping(b"warm up");

    // Half a frame each: some only part of the header, most a header and part of the body.
    // They are opened from a thread while the busy client below keeps working.
    let addr = server.addr.clone();
    let mut opener = Some(thread::spawn(move || {
        let whole = frame(SET, 0, 77, &set_body(b"stalled", &[0x33; 100]));
        let stalled: Vec<Conn> = (0..STALLED)
            .map(|i| {
                let mut conn = Conn::connect(&addr);
                let cut = if i % 10 == 0 { 3 } else { whole.len() / 2 };
                conn.send(&whole[..cut]);
                conn
            })
            .collect();
        // And one that sends nothing at all.
        (stalled, Conn::connect(&addr))
    }));

    // The busy client stays served the whole time, and is not closed: it is not idle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0u64;
    let mut opened = None;
    loop {
        round += 1;
        other.ping(&round.to_le_bytes());
        other.set(b"other", &round.to_le_bytes());
        if opener.as_ref().is_some_and(|opener| opener.is_finished()) {
            opened = Some(opener.take().unwrap().join().unwrap());
            continue;
        }
        let open = figure(&mut other, "connections");
        if opened.is_some() && open == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still open 60 s after they went idle"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (mut stalled, mut silent) = opened.unwrap();
    assert!(
        figure(&mut other, "connections_closed_idle_total") > STALLED as u64,
        "the idle closes are counted"
    );
    // Each was told why, with id 0, then closed; nothing of the half frame was applied.
    for conn in stalled.iter_mut().step_by(97).chain([&mut silent]) {
        let reply = conn.reply();
        reply.assert_error(0);
        let message = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(message.contains("--idle-timeout-secs"), "{message}");
        conn.expect_closed();
    }
    assert_eq!(other.value(b"stalled"), None);
    assert_eq!(other.value(b"other"), Some(round.to_le_bytes().to_vec()));
}

#[test]
fn a_client_that_never_reads_is_cut_off_after_the_output_stall() {
    let (_dir, server) = start(&["--output-stall-secs", "1"]);
    let pid = server.pid;
    let mut other = Conn::connect(&server.addr);
    let value = vec![0x61; 512 * 1024];
    other.set(b"big", &value);
    let rss_before = proc_status_kib(pid, "VmRSS");

    // 2 GiB of replies asked for by 64 KiB of GETs; none is ever read.
    let frames: Vec<Vec<u8>> = (0..4096u64).map(|i| frame(GET, 0, i, b"big")).collect();
    let hostile = Unread::start(&server.addr, frames);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rss_max = rss_before;
    while figure(&mut other, "connections_closed_output_stall_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "a client that reads nothing is still connected after 60 s"
        );
        other.ping(b"still served");
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(20));
    }
    wait_for_connections(&mut other, 1);
    let growth_kib = rss_max.saturating_sub(rss_before);
    assert!(
        growth_kib < 64 * MIB_AS_KIB,
        "RSS grew by {growth_kib} KiB for a client that does not read its replies"
    );
    // What the kernel had buffered may still arrive; then the connection ends.
    let mut stream = hostile.conn.stream.try_clone().unwrap();
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(hostile);
    other.ping(b"after");
}

#[test]
fn unread_keys_replies_count_against_the_connection_cap() {
    // Small requests, large replies built at once: each KEYS below answers about 1 MiB.
    let (_dir, server) = start(&[]);
    let pid = server.pid;
    let mut other = Conn::connect(&server.addr);
    for i in 0..260u32 {
        let key = format!("{i:04}{}", "k".repeat(4000));
        other.set(key.as_bytes(), b"");
    }
    other.ping(b"loaded");
    let rss_before = proc_status_kib(pid, "VmRSS");

    // 4,000 KEYS of 14 bytes each, in one write (so one read can take them all): 4 GiB of
    // replies if each were built and kept.
    let burst: Vec<u8> = (0..4000u64).flat_map(|i| frame(KEYS, 0, i, b"")).collect();
    let hostile = Unread::start(&server.addr, vec![burst]);
    let mut rss_max = rss_before;
    hostile.watch(50, || {
        other.ping(b"other");
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
    });
    // Give the server time to build what it would.
    for _ in 0..50 {
        other.ping(b"other");
        rss_max = rss_max.max(proc_status_kib(pid, "VmRSS"));
        thread::sleep(Duration::from_millis(10));
    }
    let growth_kib = rss_max.saturating_sub(rss_before);
    assert!(
        growth_kib < 64 * MIB_AS_KIB,
        "RSS grew by {growth_kib} KiB for unread KEYS replies"
    );
    drop(hostile);
    other.ping(b"after");
}
