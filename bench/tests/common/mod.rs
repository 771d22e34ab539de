//! Shared by kvs-bench's tests: run the kvs-bench binary and read its JSON, start the real kvsd
//! (through `kvs-testkit`, as the root package's tests do), pick free loopback ports, and stop
//! every process on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

pub const KVS_BENCH: &str = env!("CARGO_BIN_EXE_kvs-bench");

/// What one kvs-bench run left: its exit code, its stdout (the table) and its JSON file.
pub struct BenchRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

impl BenchRun {
    pub fn u64(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("{pointer} in {}", self.json))
    }

    pub fn f64(&self, pointer: &str) -> f64 {
        self.json
            .pointer(pointer)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("{pointer} in {}", self.json))
    }

    /// The checks every clean run passes: each request sent got exactly one reply matched to
    /// it, nothing was lost or unmatched, no error, and the last line says so.
    pub fn assert_clean(&self) {
        let context = format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.code, Some(0), "{context}");
        assert_eq!(self.u64("/errors"), 0, "{context}");
        assert_eq!(
            self.u64("/requests_sent"),
            self.u64("/responses_matched"),
            "{context}"
        );
        assert_eq!(self.u64("/requests_lost"), 0, "{context}");
        assert_eq!(self.u64("/responses_unmatched"), 0, "{context}");
        assert_eq!(self.u64("/connections_failed"), 0, "{context}");
        assert_eq!(self.stdout.lines().last(), Some("no errors"), "{context}");
    }
}

/// Runs kvs-bench with `args` (and `--json`, `--quiet`) to the end.
pub fn bench(args: &[&str]) -> BenchRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("result.json");
    let output = Command::new(KVS_BENCH)
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .arg("--quiet")
        .stdin(Stdio::null())
        .output()
        .expect("run kvs-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|error| {
        panic!("no JSON from kvs-bench ({error}):\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    BenchRun {
        code: output.status.code(),
        stdout,
        stderr,
        json: serde_json::from_str(&text).expect("valid JSON"),
    }
}

/// Runs kvs-bench with `args` and `KVS_AUTH` set to `kvs_auth` (or unset); a run that fails
/// before writing its JSON gets `json: null`.
pub fn bench_env(args: &[&str], kvs_auth: Option<&str>) -> BenchRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("result.json");
    let mut command = Command::new(KVS_BENCH);
    command
        .args(args)
        .arg("--json")
        .arg(&json_path)
        .arg("--quiet")
        .env_remove("KVS_AUTH")
        .stdin(Stdio::null());
    if let Some(secret) = kvs_auth {
        command.env("KVS_AUTH", secret);
    }
    let output = command.output().expect("run kvs-bench");
    let json = std::fs::read_to_string(&json_path)
        .map(|text| serde_json::from_str(&text).expect("valid JSON"))
        .unwrap_or(serde_json::Value::Null);
    BenchRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        json,
    }
}

/// A port that was free a moment ago on 127.0.0.1 (for servers that cannot take port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A child process killed (and reaped) on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running kvsd (the workspace's, through `kvs-testkit`) on 127.0.0.1 with a port it picked,
/// in a temp data dir of its own; killed on drop. The binary is `kvs_testkit::workspace_kvsd`:
/// built by Cargo in this test's profile if needed, or `KVSD` from the environment.
pub struct Kvsd {
    pub server: kvs_testkit::Kvsd,
    // Dropped after the server, which is killed first.
    _data_dir: tempfile::TempDir,
}

impl Kvsd {
    /// Starts kvsd on a fresh data dir and waits until it is ready.
    pub fn start(extra: &[&str]) -> Kvsd {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let server =
            kvs_testkit::Kvsd::start(&kvs_testkit::workspace_kvsd(), data_dir.path(), extra);
        Kvsd {
            server,
            _data_dir: data_dir,
        }
    }

    pub fn url(&self) -> String {
        format!("kvs://{}", self.server.addr)
    }
}

/// True when `program` is on PATH (the peers are optional for the tests).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}
