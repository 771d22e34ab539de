//! Shared by the scenario tests: the real `kvsd` of this package, started through the
//! workspace's one harness (`kvs-testkit`: 127.0.0.1, a port it picks, `--ready-file`, killed on
//! drop), in a data dir the test owns.
// Each test binary uses some of these.
#![allow(dead_code, unused_imports)]

pub mod host;
pub mod http;
pub mod proxy;
pub mod raft;
pub mod raw;
pub mod resp;
pub mod rng;

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitStatus;

pub use kvs_testkit::{field, signal, Kvsd};

pub const KVSD: &str = env!("CARGO_BIN_EXE_kvsd");
pub const KVSCTL: &str = env!("CARGO_BIN_EXE_kvsctl");

/// Starts kvsd on `data_dir` with `--port 0` and `extra` flags, and waits until it is ready.
pub fn start(data_dir: &Path, extra: &[&str]) -> Kvsd {
    Kvsd::start(Path::new(KVSD), data_dir, extra)
}

/// As `start`, but returns everything kvsd printed if it exits before it is ready.
pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Kvsd, String> {
    Kvsd::try_start(Path::new(KVSD), data_dir, extra)
}

/// As `try_start`, on a given port (0: any free one).
pub fn try_start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Result<Kvsd, String> {
    Kvsd::try_start_on(Path::new(KVSD), port, data_dir, extra)
}

/// Runs kvsd with exactly `args` (no `--port 0` added) when it is expected to refuse to start:
/// returns its exit status and everything it wrote to stderr. Panics if it gets ready instead.
pub fn start_expecting_exit(args: &[&OsStr]) -> (ExitStatus, String) {
    kvs_testkit::run_expecting_exit(Path::new(KVSD), args)
}

/// Runs kvsctl against `addr` with `args`, feeding `stdin`.
pub fn kvsctl(addr: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(KVSCTL)
        .arg("--addr")
        .arg(addr)
        .args(args)
        .env_remove("KVS_ADDR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kvsctl");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    // Written from a thread so a kvsctl that does not read stdin cannot block the test.
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, &stdin);
    });
    let output = child.wait_with_output().expect("wait for kvsctl");
    writer.join().unwrap();
    output
}
