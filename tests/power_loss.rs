//! Power loss after a crash: kvsd must not serve a record that a power cut can still take back.
//!
//! After `kill -9`, recovery finds records that were written to the log but never fdatasynced
//! (all of them under `--fsync never`; the last batch under `always`). They sit in the page
//! cache only. If kvsd served them as they are (and a leader streamed them to followers), a
//! power cut before the kernel's writeback would take them back. So recovery fdatasyncs what it
//! keeps before kvsd serves anything.
//!
//! The disk: ext4 on a loop device, with the kernel's periodic writeback off
//! (`vm.dirty_writeback_centisecs=0`), so that dirty pages stay in the page cache and what the
//! loop device received is exactly what a power cut would leave. The cut: kvsd is frozen
//! (SIGSTOP) and the loop device's backing file copied; the copy is checked with e2fsck,
//! mounted, and served by a new kvsd. `tools/power-loss-drill` runs this many times, with a
//! `--fsync always` load killed at a random moment too.
//!
//! Needs root (loop devices, mounts, the sysctl) and losetup, mkfs.ext4, e2fsck, cp
//! (`tools/install-peers`). Without them the test prints `SKIPPED` and why, and passes;
//! `KVS_REQUIRE_DISK_FAULTS=1` makes a skip fail instead. Whatever happens, it restores the
//! sysctl, unmounts and detaches what it made (`Disks`' Drop). One test only: the sysctl is the
//! whole machine's, so the test also holds a lock that `tools/power-loss-drill` takes.

mod common;

use common::host::{must, run};

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::signal;

const TEST: &str = "power_loss::records_served_after_a_crash_survive_a_power_cut";
const WRITEBACK_SYSCTL: &str = "/proc/sys/vm/dirty_writeback_centisecs";
/// Held by this test and `tools/power-loss-drill`, so that two never turn writeback off at once
/// (the second would save "0" as the value to restore).
const LOCK_PATH: &str = "/tmp/kvs-power-loss.lock";
const KEYS: u64 = 20;
const FLAGS: [&str; 2] = ["--segment-bytes", "8388608"];

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    match run("id", &["-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        _ => return Some("needs root (loop devices, mounts, vm.dirty_writeback_centisecs)".into()),
    }
    let absent: Vec<&str> = ["losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "cp"]
        .into_iter()
        .filter(|tool| run("sh", &["-c", &format!("command -v {tool}")]).is_err())
        .collect();
    if !absent.is_empty() {
        return Some(format!(
            "{} not installed (tools/install-peers installs them)",
            absent.join(", ")
        ));
    }
    if fs::OpenOptions::new()
        .write(true)
        .open(WRITEBACK_SYSCTL)
        .is_err()
    {
        return Some(format!("{WRITEBACK_SYSCTL} is not writable here"));
    }
    None
}

fn skip(why: &str) {
    common::host::skip(TEST, why);
}

/// Writeback turned off, and the loop devices and mounts made while it is: all undone on drop,
/// in reverse order, whether the test passed or panicked. Drop every `Kvsd` first.
struct Disks {
    root: tempfile::TempDir,
    writeback_before: String,
    undo: Vec<(&'static str, Vec<String>)>,
    _lock: fs::File,
}

impl Disks {
    /// Takes the lock, then turns periodic writeback off.
    fn new() -> Result<Disks, String> {
        let lock = fs::File::create(LOCK_PATH).map_err(|e| format!("{LOCK_PATH}: {e}"))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {LOCK_PATH}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let writeback_before = fs::read_to_string(WRITEBACK_SYSCTL)
            .map_err(|e| format!("{WRITEBACK_SYSCTL}: {e}"))?
            .trim()
            .to_string();
        let disks = Disks {
            root: tempfile::tempdir().map_err(|e| e.to_string())?,
            writeback_before,
            undo: Vec::new(),
            _lock: lock,
        };
        fs::write(WRITEBACK_SYSCTL, "0").map_err(|e| format!("{WRITEBACK_SYSCTL}: {e}"))?;
        Ok(disks)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Mounts the ext4 image `image` through a loop device at `<root>/<name>`.
    fn mount(&mut self, image: &Path, name: &str) -> Result<PathBuf, String> {
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()])?
            .trim()
            .to_string();
        self.undo
            .push(("losetup", vec!["-d".into(), device.clone()]));
        let at = self.path(name);
        fs::create_dir_all(&at).unwrap();
        let at_text = at.to_str().unwrap().to_string();
        must("mount", &[&device, &at_text]);
        self.undo.push(("umount", vec![at_text]));
        Ok(at)
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for (program, args) in self.undo.drain(..).rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if run(program, &args).is_err() && program == "umount" {
                // A killed kvsd's files stay open until the kernel tears down its io_uring.
                std::thread::sleep(std::time::Duration::from_millis(500));
                if run(program, &args).is_err() {
                    let _ = run("umount", &["-l", args[0]]);
                }
            }
        }
        if let Err(error) = fs::write(WRITEBACK_SYSCTL, &self.writeback_before) {
            let _ = writeln!(
                std::io::stderr(),
                "{TEST}: could not restore {WRITEBACK_SYSCTL} to {}: {error}",
                self.writeback_before
            );
        }
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat(100)).into_bytes()
}

#[test]
fn records_served_after_a_crash_survive_a_power_cut() {
    if let Some(why) = missing() {
        return skip(&why);
    }
    let mut disks = match Disks::new() {
        Ok(disks) => disks,
        Err(why) => return skip(&why),
    };
    let image = disks.path("disk.img");
    fs::File::create(&image)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    must(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            image.to_str().unwrap(),
        ],
    );
    let mnt = match disks.mount(&image, "mnt") {
        Ok(mnt) => mnt,
        Err(why) => return skip(&format!("no loop device: {why}")),
    };
    let data_dir = mnt.join("data");

    // Written to the OS and never synced, then a crash.
    write_unsynced_then_crash(&data_dir);

    // The restart serves them: the precondition of the bug.
    let server = common::start(&data_dir, &[&FLAGS[..], &["--fsync", "always"]].concat());
    let mut conn = common::raw::Conn::connect(&server.addr);
    for i in 0..KEYS {
        assert_eq!(
            conn.value(&key(i)),
            Some(value(i)),
            "kvsd restarted after kill -9 serves key {i}"
        );
    }

    // The power cut: kvsd frozen as it serves, the device copied as it stands.
    signal(server.pid, "STOP");
    let copy = disks.path("after-power-cut.img");
    must(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    server.kill9();

    // e2fsck: 0 clean, 1 or 2 repaired (the journal replayed); more is a broken file system.
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0..=2)),
        "e2fsck of the copy: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let copy_mnt = disks
        .mount(&copy, "copy")
        .unwrap_or_else(|why| panic!("mounting the copy: {why}"));
    let server = common::start(
        &copy_mnt.join("data"),
        &[&FLAGS[..], &["--fsync", "always"]].concat(),
    );
    let mut conn = common::raw::Conn::connect(&server.addr);
    let lost: Vec<u64> = (0..KEYS)
        .filter(|&i| conn.value(&key(i)).as_ref() != Some(&value(i)))
        .collect();
    drop(conn);
    drop(server);
    assert!(
        lost.is_empty(),
        "{} of {KEYS} keys that kvsd served after the crash are gone after the power cut \
         (keys {lost:?}): recovery served records that were only in the page cache",
        lost.len()
    );
    drop(disks);
}

/// Writes the test's keys under `--fsync never` (in the page cache, never synced), then kill -9.
fn write_unsynced_then_crash(data_dir: &Path) {
    let server = common::start(data_dir, &[&FLAGS[..], &["--fsync", "never"]].concat());
    let mut conn = common::raw::Conn::connect(&server.addr);
    for i in 0..KEYS {
        conn.set(&key(i), &value(i));
    }
    drop(conn);
    server.kill9();
}

/// The fdatasync recovery makes of what it found fails (EIO injected by strace into kvsd's
/// plain start-up syscalls): kvsd must stop, naming the file, serve nothing, and not retry.
#[test]
fn a_failed_sync_of_the_recovered_log_stops_kvsd_naming_the_file() {
    const TEST: &str = "power_loss::a_failed_sync_of_the_recovered_log_stops_kvsd_naming_the_file";
    if run("sh", &["-c", "command -v strace"]).is_err() {
        return common::host::skip(TEST, "strace not installed (tools/install-peers)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    write_unsynced_then_crash(&data_dir);

    // Nothing else in a start without a torn tail or a new segment calls fdatasync: the first
    // one is recovery's sync of the first segment.
    let output = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"])
        .args(["-e", "inject=fdatasync:error=EIO:when=1"])
        .arg(common::KVSD)
        .args(["--port", "0", "--data-dir"])
        .arg(&data_dir)
        .args(FLAGS)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("spawn strace");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && !log.contains("kvsd ready"),
        "kvsd started although syncing what it recovered failed ({}):\n{log}",
        output.status
    );
    let segment = data_dir.join("0000000001.wal");
    assert!(
        log.contains(&format!("making {} durable failed", segment.display()))
            && log.contains("Input/output error")
            && log.contains("does not retry"),
        "the error names the file, the cause, and that it is not retried:\n{log}"
    );
    assert!(!log.contains("panicked"), "no panic:\n{log}");

    // Once the disk answers again, the next start serves every record.
    let server = common::start(&data_dir, &[&FLAGS[..], &["--fsync", "always"]].concat());
    let mut conn = common::raw::Conn::connect(&server.addr);
    for i in 0..KEYS {
        assert_eq!(
            conn.value(&key(i)),
            Some(value(i)),
            "key {i} after the restart"
        );
    }
}
