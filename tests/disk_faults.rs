//! Disk-error drills against the real kvsd: a failed fdatasync, a full disk (ENOSPC, with a
//! write cut short), and failed fsyncs at start-up. Each checks that the failed batch is never
//! acknowledged, that later writes are refused with a clear ERROR, that reads keep working,
//! and that a restart (once the disk is fixed) recovers every acknowledged write.
//!
//! What is real and what is simulated:
//! - kvsd fdatasyncs its log through io_uring, which `strace -e inject=` never sees (its small
//!   appends are plain pwrite64 calls, but a page-cache copy rarely fails: the disk's errors come
//!   back from the fdatasync). So the runtime faults come from the kernel itself: an ext4 file system on a loop device
//!   whose backing file lives on a small tmpfs. Once that tmpfs is full, the loop device fails
//!   writes to blocks it holds no memory for (a thin-provisioned volume out of space), ext4
//!   reports the error to the fdatasync, and io_uring hands it to kvsd. Nothing in kvsd is
//!   stubbed; the fault is a real block-device write error.
//! - ENOSPC is a real full tmpfs used as the data dir.
//! - EIO comes from ext4 itself: `xfs_io -x -c shutdown` (the EXT4_IOC_SHUTDOWN ioctl, what
//!   ext4 does to itself when its disk dies) makes every later write, fsync and read fail.
//! - The fsyncs kvsd makes while starting (creating a data dir, truncating a torn tail) are
//!   plain syscalls: there `strace -e inject=fsync:error=EIO` injects the error.
//!
//! These need root (loop devices, mounts) and losetup, mkfs.ext4, filefrag, fallocate, xfs_io, strace
//! (`tools/install-peers` installs them). Without them each test prints `SKIPPED` and why, and
//! passes; set `KVS_REQUIRE_DISK_FAULTS=1` to make a skip fail instead.

mod common;

use common::host::{must, run};

fn skip(test: &str, why: &str) {
    common::host::skip(&format!("disk_faults::{test}"), why);
}

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::raw::{set_body, Conn, ERROR, OK, SET};
use common::{field, Kvsd, KVSD};

// ---------------------------------------------------------------------------------------------
// Prerequisites and the mounts
// ---------------------------------------------------------------------------------------------

/// Why this machine cannot run a drill that needs root (loop devices, mounts) and `tools`.
fn missing(tools: &[&str]) -> Option<String> {
    match run("id", &["-u"]) {
        Ok(uid) if uid.trim() == "0" => missing_tools(tools),
        _ => Some("needs root (loop devices and mounts)".into()),
    }
}

/// Which of `tools` are not installed, if any.
fn missing_tools(tools: &[&str]) -> Option<String> {
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| run("sh", &["-c", &format!("command -v {tool}")]).is_err())
        .collect();
    if !absent.is_empty() {
        return Some(format!(
            "{} not installed (tools/install-peers installs them)",
            absent.join(", ")
        ));
    }
    None
}

/// Mounts and loop devices made by a drill, undone in reverse order when it ends. kvsd must be
/// stopped first (drop the `Kvsd` before this).
struct Mounts {
    root: tempfile::TempDir,
    undo: Vec<(String, Vec<String>)>,
}

impl Mounts {
    fn new() -> Mounts {
        Mounts {
            root: tempfile::tempdir().unwrap(),
            undo: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A tmpfs of `size` (e.g. "1m") at `<root>/<name>`.
    fn tmpfs(&mut self, name: &str, size: &str) -> Result<PathBuf, String> {
        let at = self.path(name);
        fs::create_dir_all(&at).unwrap();
        let at_text = at.to_str().unwrap().to_string();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &at_text,
            ],
        )?;
        self.undo
            .push(("umount".into(), vec!["-l".into(), at_text]));
        Ok(at)
    }

    /// A loop device over `image`.
    fn loop_device(&mut self, image: &Path) -> Result<String, String> {
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()])?
            .trim()
            .to_string();
        self.undo
            .push(("losetup".into(), vec!["-d".into(), device.clone()]));
        Ok(device)
    }

    fn mount(&mut self, device: &str, name: &str) -> PathBuf {
        let at = self.path(name);
        fs::create_dir_all(&at).unwrap();
        let at_text = at.to_str().unwrap().to_string();
        must("mount", &[device, &at_text]);
        self.undo
            .push(("umount".into(), vec!["-l".into(), at_text]));
        at
    }

    /// Unmounts `name` now (it stays on the undo list; a second umount fails harmlessly).
    fn unmount(&mut self, name: &str) {
        must("umount", &[self.path(name).to_str().unwrap()]);
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for (program, args) in self.undo.drain(..).rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = run(&program, &args);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writes and checks
// ---------------------------------------------------------------------------------------------

fn value(i: u64, len: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
    value
}

/// Acknowledged writes: key, value, seq.
type Acked = Vec<(Vec<u8>, Vec<u8>, u64)>;

/// SETs `prefix{i}` one at a time until one is not OK (or `max` are). Returns what was
/// acknowledged and the first reply that was not OK.
fn set_until_refused(
    conn: &mut Conn,
    prefix: &str,
    value_bytes: usize,
    max: u64,
) -> (Acked, Option<(Vec<u8>, common::raw::Reply)>) {
    let mut acked = Vec::new();
    for i in 0..max {
        let key = format!("{prefix}{i}").into_bytes();
        let value = value(i, value_bytes);
        let id = conn.id();
        let reply = conn.call(SET, 0, id, &set_body(&key, &value));
        if reply.status != OK {
            return (acked, Some((key, reply)));
        }
        let seq = reply.seq();
        acked.push((key, value, seq));
    }
    (acked, None)
}

fn error_text(reply: &common::raw::Reply) -> String {
    assert_eq!(reply.status, ERROR, "expected ERROR, got {reply:?}");
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Every acknowledged write reads back as acknowledged.
#[track_caller]
fn assert_acked_present(addr: &str, acked: &Acked, when: &str) {
    let mut conn = Conn::connect(addr);
    for (key, value, seq) in acked {
        let found = conn.value(key);
        assert!(
            found.as_ref() == Some(value),
            "{when}: {} (acknowledged with seq {seq}) reads {:?}",
            String::from_utf8_lossy(key),
            found.map(|v| String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned())
        );
    }
}

/// After a failed write on `conn`: the failed batch was not acknowledged, later writes and
/// deletes are refused with a message that says what to do, reads still work (on `conn` too,
/// and KEYS, which waits for every write), STATS shows it. Returns the failed batch's message.
#[track_caller]
fn assert_refusing_writes(
    server: &Kvsd,
    conn: &mut Conn,
    failed: &common::raw::Reply,
    acked: &Acked,
) -> String {
    let first = error_text(failed);
    assert!(
        first.contains("not acknowledged") && first.contains("may or may not be on disk"),
        "the failed batch's ERROR says it was not acknowledged: {first}"
    );
    for attempt in 0..3 {
        let id = conn.id();
        let reply = conn.call(SET, 0, id, &set_body(b"after-failure", b"x"));
        let message = error_text(&reply);
        assert!(
            message.contains("writes are refused") && message.contains("restart kvsd"),
            "write {attempt} after the failure: {message}"
        );
        let message = error_text(&conn.del(b"after-failure"));
        assert!(message.contains("writes are refused"), "DEL: {message}");
    }
    // Reads on the connection whose write failed, and on a new one.
    for (key, value, seq) in acked.iter().rev().take(20) {
        let found = conn.value(key);
        assert!(
            found.as_ref() == Some(value),
            "{} (seq {seq}) read on the failed write's connection",
            String::from_utf8_lossy(key)
        );
    }
    assert_acked_present(&server.addr, acked, "reads after the failure");
    let (keys, _) = conn.keys(b"", 1 << 20);
    let (keys_new_conn, _) = Conn::connect(&server.addr).keys(b"", 1 << 20);
    assert_eq!(keys, keys_new_conn);
    for (key, _, _) in acked {
        assert!(
            keys.contains(key),
            "KEYS lists {}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(conn.stats()["write_failed"], "1");
    conn.ping(b"still here");
    first
}

fn start(data_dir: &Path, extra: &[&str]) -> Kvsd {
    common::start(data_dir, extra)
}

/// Fills the file system at `dir` with a file until it is full. Returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut file = fs::File::create(dir.join("filler")).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let bytes = vec![0x5au8; chunk];
        while file.write_all(&bytes).is_ok() {
            written += chunk as u64;
        }
    }
    // Whatever part of the last chunk went in counts too; the file's length says.
    file.metadata().map(|m| m.len()).unwrap_or(written)
}

// ---------------------------------------------------------------------------------------------
// fdatasync fails: a real block-device write error under ext4
// ---------------------------------------------------------------------------------------------

/// The physical 4 KiB blocks of `file` on its ext4 device, as (logical, physical, count).
fn extents(file: &Path) -> Vec<(u64, u64, u64)> {
    let text = must("filefrag", &["-v", file.to_str().unwrap()]);
    // "   0:        0..     255:      34816..     35071:    256:             last,eof"
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line
                .split([':', ' ', '.'])
                .filter(|f| !f.is_empty())
                .collect();
            let numbers: Vec<u64> = fields
                .iter()
                .take(6)
                .map_while(|f| f.parse().ok())
                .collect();
            (numbers.len() == 6).then(|| (numbers[1], numbers[3], numbers[5]))
        })
        .collect()
}

#[test]
fn a_failed_fdatasync_is_never_acknowledged_and_stops_writes_until_restart() {
    const TEST: &str = "a_failed_fdatasync_is_never_acknowledged_and_stops_writes_until_restart";
    if let Some(why) = missing(&["losetup", "mkfs.ext4", "filefrag", "fallocate", "e2fsck"]) {
        return skip(TEST, &why);
    }
    let mut mounts = Mounts::new();
    // The "disk": a 64 MiB sparse image on a 40 MiB tmpfs, ext4 with its metadata and journal
    // written out at mkfs (lazy init off), so only new data blocks need backing memory.
    let backing = match mounts.tmpfs("backing", "40m") {
        Ok(at) => at,
        Err(why) => return skip(TEST, &format!("cannot mount a tmpfs: {why}")),
    };
    let image = backing.join("disk.img");
    fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let device = match mounts.loop_device(&image) {
        Ok(device) => device,
        Err(why) => return skip(TEST, &format!("no loop device: {why}")),
    };
    common::host::mkfs_ext4(&device);
    let mnt = mounts.mount(&device, "mnt");
    let data_dir = mnt.join("data");
    // No value cache: reads after the failure go to the file.
    let flags = ["--segment-bytes", "4194304", "--value-cache-bytes", "0"];

    let server = start(&data_dir, &flags);
    let mut conn = Conn::connect(&server.addr);
    let (mut acked, refused) = set_until_refused(&mut conn, "before-", 200, 300);
    assert!(refused.is_none(), "a healthy disk refused: {refused:?}");

    // The device loses the backing of every block of the active segment past the records
    // (blocks that hold only zeros, so nothing written is touched), and has no memory left.
    //
    // A loop device reports a short write on its backing file as success (drivers/block/loop.c
    // completes a write request OK unless the backing write returned an error), so a request
    // that starts in a backed block and runs into a lost one would lose data silently: a lying
    // disk, not a failing one. The log's end is first moved to a block boundary with one record
    // of the right size, so the next write starts in a lost block and fails whole.
    let segment = fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .expect("a segment");
    let data_end = |segment: &Path| {
        let bytes = fs::read(segment).unwrap();
        bytes.iter().rposition(|b| *b != 0).unwrap() as u64 + 1
    };
    // A record is its header, the key and the value (docs/storage.md); the value ends with a
    // non-zero byte, so the end is where the last non-zero byte is.
    let to_boundary = 4096 - data_end(&segment) % 4096;
    let pad_key = b"pad";
    let fixed = (kvs::wal::record::HEADER_BYTES + pad_key.len()) as u64;
    let pad_value_bytes = if to_boundary > fixed {
        to_boundary - fixed
    } else {
        to_boundary + 4096 - fixed
    };
    let pad_value = vec![b'p'; pad_value_bytes as usize];
    let pad_seq = conn.set(pad_key, &pad_value);
    acked.push((pad_key.to_vec(), pad_value, pad_seq));
    let data_end = data_end(&segment);
    assert_eq!(data_end % 4096, 0, "the log ends on a block boundary");
    let first_free_block = data_end / 4096;
    let mut punched = 0;
    for (logical, physical, count) in extents(&segment) {
        let skip_blocks = first_free_block.saturating_sub(logical);
        if skip_blocks >= count {
            continue;
        }
        let offset = (physical + skip_blocks) * 4096;
        let length = (count - skip_blocks) * 4096;
        must(
            "fallocate",
            &[
                "--punch-hole",
                "--offset",
                &offset.to_string(),
                "--length",
                &length.to_string(),
                image.to_str().unwrap(),
            ],
        );
        punched += length;
    }
    assert!(
        punched > 1 << 20,
        "the segment's free blocks were found ({punched} bytes punched)"
    );
    let filled = fill(&backing);

    // Writes go on in the block that still has backing, then one batch's fdatasync fails.
    let (more, refused) = set_until_refused(&mut conn, "during-", 1000, 5000);
    let failed_index = more.len() as u64;
    acked.extend(more);
    let (failed_key, failed) = refused.expect("the device never failed a write: no fault injected");
    let first = assert_refusing_writes(&server, &mut conn, &failed, &acked);
    assert!(
        first.contains("fdatasync"),
        "the failure was the fdatasync: {first}"
    );
    let log = server.drain_log(Duration::from_secs(5)).join("\n");
    assert!(
        log.contains("a log write failed"),
        "kvsd logged the failure:\n{log}"
    );
    println!(
        "fdatasync drill: {} writes acknowledged, {punched} bytes of the device lost their \
         backing, {filled} bytes filled the rest; the failed batch got: {first}",
        acked.len()
    );
    server.kill9();

    // Fix the disk: give the device its memory back, unmount (dropping every cached page, so
    // what kvsd reads next is what the device holds), check the file system, mount again.
    fs::remove_file(backing.join("filler")).unwrap();
    mounts.unmount("mnt");
    // e2fsck exits 1 when it fixed something; 0 or 1 is a usable file system.
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y", &device])
        .output()
        .unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let mnt = mounts.mount(&device, "mnt");
    let data_dir = mnt.join("data");

    let server = start(&data_dir, &flags);
    assert_acked_present(&server.addr, &acked, "after the restart");
    let mut conn = Conn::connect(&server.addr);
    // The failed write may or may not have reached the disk; if it did, it is whole.
    if let Some(found) = conn.value(&failed_key) {
        assert_eq!(found, value(failed_index, 1000));
    }
    let max_acked = acked.iter().map(|a| a.2).max().unwrap();
    let next = conn.set(b"after-restart", b"works");
    assert!(
        next > max_acked,
        "seq {next} after acknowledged {max_acked}"
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// ENOSPC: a full tmpfs data dir, with a write cut short
// ---------------------------------------------------------------------------------------------

#[test]
fn a_full_disk_refuses_writes_with_enospc_and_recovers_once_grown() {
    const TEST: &str = "a_full_disk_refuses_writes_with_enospc_and_recovers_once_grown";
    if let Some(why) = missing(&["mount"]) {
        return skip(TEST, &why);
    }
    let mut mounts = Mounts::new();
    // 960 KiB: three zero-filled 256 KiB segments fit, the fourth does not.
    let disk = match mounts.tmpfs("disk", "960k") {
        Ok(at) => at,
        Err(why) => return skip(TEST, &format!("cannot mount a tmpfs: {why}")),
    };
    let data_dir = disk.join("data");
    let flags = ["--segment-bytes", "262144", "--value-cache-bytes", "0"];
    let server = start(&data_dir, &flags);
    let mut conn = Conn::connect(&server.addr);
    let (acked, refused) = set_until_refused(&mut conn, "k", 3000, 2000);
    let (_, failed) = refused.expect("a 960 KiB disk took 6 MB of writes");
    let first = assert_refusing_writes(&server, &mut conn, &failed, &acked);
    assert!(
        first.contains("No space left on device"),
        "the ERROR names ENOSPC: {first}"
    );
    println!(
        "ENOSPC drill: {} writes of 3000 bytes acknowledged on a 960 KiB disk; the failed batch got: {first}",
        acked.len()
    );
    // A segment that cannot be prepared is given up once, not retried (and logged) on every
    // append, and its part-filled file is removed so the log can use the space.
    let log = server.drain_log(Duration::from_secs(5));
    let warnings = log
        .iter()
        .filter(|line| line.contains("could not prepare the next log segment"))
        .count();
    assert!(
        warnings <= 3,
        "{warnings} warnings about preparing segments:\n{}",
        log.join("\n")
    );
    let leftovers: Vec<_> = fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "part-filled files hold the disk: {leftovers:?}"
    );
    server.kill9();

    // A restart on the still-full disk recovers and serves reads; any write it takes is
    // answered OK or refused with ENOSPC, never a crash.
    let server = start(&data_dir, &flags);
    // The failed write was cut short by the full disk: part of it reached the file, and the
    // restart truncates that torn tail.
    let truncated: u64 = field(&server.ready_line, "truncated_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        truncated > 0,
        "the failing write was expected to be cut short (a partial record on disk): {}",
        server.ready_line
    );
    println!("restart on the full disk truncated the short write's {truncated} bytes");
    assert_acked_present(&server.addr, &acked, "restart on the full disk");
    let mut conn = Conn::connect(&server.addr);
    let id = conn.id();
    let reply = conn.call(SET, 0, id, &set_body(b"while-full", &value(0, 3000)));
    if reply.status != OK {
        assert!(error_text(&reply).contains("No space left"), "{reply:?}");
    }
    conn.ping(b"alive");
    drop(conn);
    server.kill9();

    // Grow the disk, as an operator would, and restart: writes work again.
    must("mount", &["-o", "remount,size=8m", disk.to_str().unwrap()]);
    let server = start(&data_dir, &flags);
    assert_acked_present(&server.addr, &acked, "restart after growing the disk");
    let mut conn = Conn::connect(&server.addr);
    let max_acked = acked.iter().map(|a| a.2).max().unwrap();
    let (more, refused) = set_until_refused(&mut conn, "grown-", 3000, 300);
    assert!(refused.is_none(), "the grown disk refused: {refused:?}");
    assert!(more[0].2 > max_acked);
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// strace: the plain fsyncs kvsd makes while starting
// ---------------------------------------------------------------------------------------------

/// Runs kvsd under `strace -f` injecting `inject` (e.g. `fsync:error=EIO:when=1`); returns
/// whether it got ready, and everything it printed. Stops it if it got ready.
fn start_under_strace(data_dir: &Path, inject: &str) -> (bool, String) {
    let syscall = inject.split(':').next().unwrap();
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={syscall}"))
        .arg("-e")
        .arg(format!("inject={inject}"))
        .arg(KVSD)
        .args(["--port", "0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let ready = line.contains("kvsd ready");
                seen.push_str(&line);
                seen.push('\n');
                if ready {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (true, seen);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kvsd under strace neither started nor exited in 60 s:\n{seen}");
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "kvsd exited 0 without getting ready:\n{seen}"
    );
    (false, seen)
}

#[test]
fn a_failed_fsync_at_start_stops_kvsd_with_a_clear_error() {
    const TEST: &str = "a_failed_fsync_at_start_stops_kvsd_with_a_clear_error";
    if let Some(why) = missing_tools(&["strace"]) {
        return skip(TEST, &why);
    }
    // A new data dir: the first segment's fsync fails.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (ready, log) = start_under_strace(&data_dir, "fsync:error=EIO:when=1");
    assert!(
        !ready,
        "kvsd started although its first fsync failed:\n{log}"
    );
    assert!(
        log.contains("Input/output error") && log.contains(dir.path().to_str().unwrap()),
        "the error names the cause and the file:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Without the fault it starts on what was left behind.
    let server = start(&data_dir, &[]);
    let mut conn = Conn::connect(&server.addr);
    let seq = conn.set(b"k", b"v");
    assert_eq!(seq, 1);
    drop(conn);
    assert!(server.stop().success());

    // A torn tail: its truncation's fsync fails, kvsd refuses to start, and a later start
    // truncates it and keeps every acknowledged write.
    let server = start(&data_dir, &[]);
    let mut conn = Conn::connect(&server.addr);
    let mut acked: Acked = vec![(b"k".to_vec(), b"v".to_vec(), 1)];
    for i in 0..50u64 {
        let (key, value) = (format!("t{i}").into_bytes(), value(i, 100));
        let seq = conn.set(&key, &value);
        acked.push((key, value, seq));
    }
    drop(conn);
    server.kill9();
    let segment = fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    // A torn write after the last record: garbage where the zeros were.
    bytes[end..end + 37].copy_from_slice(&[0xa5; 37]);
    fs::write(&segment, &bytes).unwrap();

    let (ready, log) = start_under_strace(&data_dir, "fsync:error=EIO:when=1");
    assert!(
        !ready,
        "kvsd started although the truncation's fsync failed:\n{log}"
    );
    assert!(log.contains("Input/output error"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let server = start(&data_dir, &[]);
    let truncated: u64 = field(&server.ready_line, "truncated_bytes")
        .unwrap()
        .parse()
        .unwrap();
    println!(
        "startup fsync drill: refused twice with: {}",
        log.lines()
            .find(|l| l.contains("Input/output error"))
            .unwrap_or("")
    );
    assert!(
        truncated > 0 || bytes_now_clean(&segment, end),
        "{}",
        server.ready_line
    );
    assert_acked_present(&server.addr, &acked, "after the refused starts");
    let next = Conn::connect(&server.addr).set(b"next", b"x");
    assert_eq!(next, 52);
}

/// Whether the torn bytes after `end` are gone (zeroed by a refused start that got as far as
/// the write but not the fsync).
fn bytes_now_clean(segment: &Path, end: usize) -> bool {
    let bytes = fs::read(segment).unwrap();
    bytes[end..end + 37].iter().all(|b| *b == 0)
}

// ---------------------------------------------------------------------------------------------
// EIO: the file system shut down under kvsd (ext4's shutdown ioctl, as a dying disk causes)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_dead_file_system_fails_writes_with_eio_and_reads_from_memory_go_on() {
    const TEST: &str = "a_dead_file_system_fails_writes_with_eio_and_reads_from_memory_go_on";
    if let Some(why) = missing(&["losetup", "mkfs.ext4", "xfs_io"]) {
        return skip(TEST, &why);
    }
    let mut mounts = Mounts::new();
    let image = mounts.path("disk.img");
    fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    let device = match mounts.loop_device(&image) {
        Ok(device) => device,
        Err(why) => return skip(TEST, &format!("no loop device: {why}")),
    };
    must("mkfs.ext4", &["-q", "-F", &device]);
    let mnt = mounts.mount(&device, "mnt");
    let data_dir = mnt.join("data");
    let flags = [
        "--segment-bytes",
        "4194304",
        "--metrics-addr",
        "127.0.0.1:0",
    ];

    let server = start(&data_dir, &flags);
    let metrics = server.metrics_addr.clone().expect("metrics_addr");
    assert_eq!(common::http::get(&metrics, "/health"), (200, "ok\n".into()));
    let mut conn = Conn::connect(&server.addr);
    let (mut acked, refused) = set_until_refused(&mut conn, "k", 500, 200);
    assert!(refused.is_none(), "a healthy disk refused: {refused:?}");
    // Larger than the value cache takes: reading it back needs the file.
    let big = vec![b'b'; 100_000];
    let big_seq = conn.set(b"big", &big);
    acked.push((b"big".to_vec(), big.clone(), big_seq));
    // Read everything once, so the small values are in the value cache.
    assert_acked_present(&server.addr, &acked, "before the shutdown");

    // The file system goes down (EXT4_IOC_SHUTDOWN, without flushing its journal): from now
    // on every write, fsync and read on it fails with EIO, in the kernel, under io_uring.
    must("xfs_io", &["-x", "-c", "shutdown", mnt.to_str().unwrap()]);

    let id = conn.id();
    let failed = conn.call(SET, 0, id, &set_body(b"after", b"down"));
    let small: Acked = acked.iter().filter(|a| a.0 != b"big").cloned().collect();
    let first = assert_refusing_writes(&server, &mut conn, &failed, &small);
    assert!(
        first.contains("Input/output error"),
        "the ERROR names EIO: {first}"
    );
    // A value that must come from the dead file system: an ERROR that says so, and the
    // server goes on.
    let reply = conn.get(b"big");
    let message = error_text(&reply);
    assert!(
        message.contains("reading the value failed") && message.contains("Input/output error"),
        "{message}"
    );
    conn.ping(b"alive");
    // /health says so, for a load balancer or an alert; /ready stays 200 (reads are served).
    let (status, body) = common::http::get(&metrics, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("writes refused") && body.contains("Input/output error"),
        "{body}"
    );
    assert_eq!(common::http::get(&metrics, "/ready").0, 200);
    let (_, page) = common::http::get(&metrics, "/metrics");
    assert_eq!(
        common::http::sample(&page, "kvs_writes_refused"),
        Some(1.0),
        "{page}"
    );
    println!(
        "EIO drill: {} writes acknowledged; the failed batch got: {first}; a read from the dead \
         file system got: {message}",
        acked.len()
    );
    server.kill9();

    // Replace the "disk": unmount, mount again (ext4 replays its journal), restart.
    mounts.unmount("mnt");
    let mnt = mounts.mount(&device, "mnt");
    let server = start(&mnt.join("data"), &flags);
    assert_acked_present(&server.addr, &acked, "after the restart");
    let next = Conn::connect(&server.addr).set(b"after-restart", b"works");
    assert!(next > big_seq);
    drop(server);
}
