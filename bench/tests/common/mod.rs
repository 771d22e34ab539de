//! Shared by kvs-bench's tests: run the kvs-bench binary and read its JSON, find and start the
//! real kvsd, pick free loopback ports, and stop every process on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

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

/// The kvsd binary of this workspace, in the same profile as this test, built if needed.
///
/// kvsd is another package of the workspace, so Cargo gives this test no CARGO_BIN_EXE_kvsd.
/// `KVSD` in the environment names a binary to use; otherwise this runs `cargo build -p kvs
/// --bin kvsd` (a no-op when it is fresh; cargo test has released the build lock by the time
/// tests run) and uses `target/<profile>/kvsd` next to this test's own executable.
pub fn kvsd_binary() -> PathBuf {
    // Once per test process, however many tests start a kvsd.
    static KVSD: OnceLock<PathBuf> = OnceLock::new();
    KVSD.get_or_init(find_or_build_kvsd).clone()
}

fn find_or_build_kvsd() -> PathBuf {
    if let Some(path) = std::env::var_os("KVSD") {
        return PathBuf::from(path);
    }
    // This test runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "kvs", "--bin", "kvsd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => {}
    }
    let status = build.status().expect("run cargo build for kvsd");
    assert!(status.success(), "cargo build -p kvs --bin kvsd failed");
    let kvsd = profile_dir.join("kvsd");
    assert!(kvsd.exists(), "no kvsd at {}", kvsd.display());
    kvsd
}

/// A running kvsd on 127.0.0.1 with a port it picked; killed on drop.
pub struct Kvsd {
    pub process: Process,
    pub addr: String,
    _data_dir: tempfile::TempDir,
}

impl Kvsd {
    /// Starts kvsd on a fresh data dir and waits (up to a minute) for its ready line.
    pub fn start(extra: &[&str]) -> Kvsd {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(kvsd_binary())
            .args(["--port", "0", "--data-dir"])
            .arg(data_dir.path())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kvsd");
        let stderr = child.stderr.take().expect("stderr");
        let process = Process(child);
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading to the end so kvsd never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let mut seen = String::new();
        loop {
            match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("kvsd ready") {
                        let addr = field(&line, "addr").expect("the ready line names addr=");
                        return Kvsd {
                            process,
                            addr,
                            _data_dir: data_dir,
                        };
                    }
                }
                Err(_) => panic!("kvsd did not get ready:\n{seen}"),
            }
        }
    }

    pub fn url(&self) -> String {
        format!("kvs://{}", self.addr)
    }
}

/// The value of `name=value` in a log line (ANSI colour codes, if any, ignored).
pub fn field(line: &str, name: &str) -> Option<String> {
    let line = strip_ansi(line);
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    Some(
        rest.split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
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

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
