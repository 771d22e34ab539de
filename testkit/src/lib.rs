//! kvs-testkit: the one way the workspace's tests start the real `kvsd` (the root package's
//! `tests/` and `bench/tests/` alike).
//!
//! [`Kvsd::start`] runs the binary on 127.0.0.1 with the port it is given (0: kvsd picks one)
//! and `--ready-file` in a temp dir of its own, and waits for that file: kvsd writes it (to a
//! temp name, then renamed) once it listens and serves, with its address, pid, node id, data dir
//! and last seq. No log line is parsed to learn where kvsd listens. kvsd's stderr is captured
//! line by line: what it logged before it was ready is in [`Kvsd::startup_log`] (and returned
//! whole if it exits instead), what it logs after arrives on [`Kvsd::log`]. Dropping a `Kvsd`
//! kills it (kill -9) and reaps it; [`Kvsd::stop`] sends SIGTERM and waits. The data dir belongs
//! to the caller and is left in place.
//!
//! Which binary: the root package's tests pass `env!("CARGO_BIN_EXE_kvsd")`, which Cargo builds
//! for them. Other packages' tests (kvs-bench's) get no such variable for another package's
//! binary; they call [`workspace_kvsd`], which builds it with Cargo (a no-op when fresh) in the
//! profile the test itself was built in, or takes `KVSD` from the environment.
//!
//! Signals are sent with the `kill` command, so the tests need no libc.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// How long kvsd may take to get ready (recovery of a test's log, a port still held by a
/// killed kvsd: it retries for 5 s) before the start counts as failed.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// How often the ready file is looked for while kvsd starts.
const POLL: Duration = Duration::from_millis(10);

/// A running kvsd. Dropping it kills the process (kill -9) and leaves the data dir to its owner.
pub struct Kvsd {
    child: Child,
    /// The client address, `127.0.0.1:PORT` (from the ready file).
    pub addr: String,
    /// With `--resp-port`: the Redis protocol's address (from the ready file).
    pub resp_addr: Option<String>,
    pub pid: u32,
    pub node_id: String,
    /// The data dir, absolute.
    pub data_dir: PathBuf,
    /// The newest seq of the log kvsd recovered at start.
    pub last_seq: u64,
    /// With `--metrics-addr`: where it serves `/metrics`, `/health` and `/ready`.
    pub metrics_addr: Option<String>,
    /// The `kvsd ready` log line, for its recovery figures (`keys`, `records`,
    /// `truncated_bytes`, ...: read them with [`field`]).
    pub ready_line: String,
    /// The lines kvsd logged before its ready line.
    pub startup_log: Vec<String>,
    /// The lines kvsd logs after its ready line, as they come.
    pub log: mpsc::Receiver<String>,
    _ready_dir: tempfile::TempDir,
}

impl Kvsd {
    /// Starts `binary` on `data_dir` with `--port 0` and `extra` flags, and waits until it is
    /// ready; panics with everything it printed if it is not.
    pub fn start<S: AsRef<OsStr>>(binary: &Path, data_dir: &Path, extra: &[S]) -> Kvsd {
        Self::try_start(binary, data_dir, extra)
            .unwrap_or_else(|log| panic!("kvsd did not start:\n{log}"))
    }

    /// As [`Kvsd::start`], but returns what kvsd printed (and how it exited) if it does not get
    /// ready.
    pub fn try_start<S: AsRef<OsStr>>(
        binary: &Path,
        data_dir: &Path,
        extra: &[S],
    ) -> Result<Kvsd, String> {
        Self::try_start_on(binary, 0, data_dir, extra)
    }

    /// As [`Kvsd::try_start`], on `port` (0: any free one).
    pub fn try_start_on<S: AsRef<OsStr>>(
        binary: &Path,
        port: u16,
        data_dir: &Path,
        extra: &[S],
    ) -> Result<Kvsd, String> {
        let ready_dir = tempfile::tempdir().map_err(|error| format!("temp dir: {error}"))?;
        let ready_file = ready_dir.path().join("ready.json");
        let mut args: Vec<OsString> = vec!["--port".into(), port.to_string().into()];
        args.extend(["--data-dir".into(), data_dir.as_os_str().to_owned()]);
        args.extend(["--ready-file".into(), ready_file.as_os_str().to_owned()]);
        args.extend(extra.iter().map(|arg| arg.as_ref().to_owned()));
        let (mut child, lines) = spawn(binary, &args);

        // kvsd logs its ready line, then writes the file: take lines up to that one only, and
        // leave the ones after it on the channel for `log`.
        let mut startup_log = Vec::new();
        let mut ready_line = None;
        let deadline = Instant::now() + READY_WAIT;
        let ready = loop {
            while ready_line.is_none() {
                match lines.try_recv() {
                    Ok(line) if line.contains("kvsd ready") => ready_line = Some(line),
                    Ok(line) => startup_log.push(line),
                    Err(_) => break,
                }
            }
            if let Some(ready) = read_ready_file(&ready_file) {
                break ready;
            }
            let exited = child.try_wait().map_err(|error| format!("wait: {error}"))?;
            let status = match exited {
                Some(status) => status,
                None if Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                    continue;
                }
                None => {
                    let _ = child.kill();
                    let status = child.wait().map_err(|error| format!("wait: {error}"))?;
                    startup_log.push(format!("(not ready within {READY_WAIT:?}: killed)"));
                    status
                }
            };
            // Everything it wrote: the channel ends when the process has.
            startup_log.extend(ready_line);
            startup_log.extend(lines.iter());
            return Err(format!("{}\n(exit: {status})", startup_log.join("\n")));
        };
        let fail = |child: &mut Child, startup_log: &[String], why: String| {
            let _ = child.kill();
            let _ = child.wait();
            format!("{}\n({why})", startup_log.join("\n"))
        };
        let ready = match ready {
            Ok(ready) if ready.pid == child.id() => ready,
            Ok(ready) => {
                let why = format!("the ready file names pid {}, not {}", ready.pid, child.id());
                return Err(fail(&mut child, &startup_log, why));
            }
            Err(error) => {
                let why = format!("bad --ready-file: {error}");
                return Err(fail(&mut child, &startup_log, why));
            }
        };
        // The line was in the pipe before the file existed: it comes at once.
        while ready_line.is_none() {
            match lines.recv_timeout(READY_WAIT) {
                Ok(line) if line.contains("kvsd ready") => ready_line = Some(line),
                Ok(line) => startup_log.push(line),
                Err(_) => {
                    let why = "kvsd wrote its ready file but no \"kvsd ready\" log line".into();
                    return Err(fail(&mut child, &startup_log, why));
                }
            }
        }
        Ok(Kvsd {
            pid: child.id(),
            child,
            addr: ready.addr,
            resp_addr: ready.resp_addr,
            node_id: ready.node_id,
            data_dir: ready.data_dir,
            last_seq: ready.last_seq,
            metrics_addr: ready.metrics_addr,
            ready_line: ready_line.unwrap_or_default(),
            startup_log,
            log: lines,
            _ready_dir: ready_dir,
        })
    }

    /// SIGKILL, the way a crash ends a process; returns once it is reaped.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean stop), and waits for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Sends the signal `name` (`TERM`, `INT`, `KILL`, `STOP`, `CONT`, ...) to kvsd.
    pub fn signal(&self, name: &str) {
        signal(self.pid, name);
    }

    /// Waits for kvsd to exit (after a signal, or a crash it was told to have).
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for kvsd")
    }

    /// Lines kvsd logged since the last call (waits up to `wait` for the first one).
    pub fn drain_log(&self, wait: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(line) = self.log.recv_timeout(wait) {
            lines.push(line);
        }
        lines.extend(self.log.try_iter());
        lines
    }
}

impl Drop for Kvsd {
    fn drop(&mut self) {
        // Both are no-ops on a child already reaped (no signal goes to a reused pid).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `binary` with exactly `args` (and a `--ready-file`; no `--port` added) when it is
/// expected to refuse to start: returns its exit status and everything it wrote to stderr.
/// Kills it and panics if it gets ready instead, or neither exits nor gets ready in time.
pub fn run_expecting_exit<S: AsRef<OsStr>>(binary: &Path, args: &[S]) -> (ExitStatus, String) {
    let ready_dir = tempfile::tempdir().expect("temp dir");
    let ready_file = ready_dir.path().join("ready.json");
    let mut all: Vec<OsString> = args.iter().map(|arg| arg.as_ref().to_owned()).collect();
    all.extend(["--ready-file".into(), ready_file.as_os_str().to_owned()]);
    let (mut child, lines) = spawn(binary, &all);
    let deadline = Instant::now() + READY_WAIT;
    let mut stderr = Vec::new();
    loop {
        stderr.extend(lines.try_iter());
        if ready_file.exists() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kvsd started but should have refused:\n{}",
                stderr.join("\n")
            );
        }
        if let Some(status) = child.try_wait().expect("wait for kvsd") {
            stderr.extend(lines.iter());
            let mut text = stderr.join("\n");
            text.push('\n');
            return (status, text);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kvsd neither started nor exited within {READY_WAIT:?}:\n{}",
                stderr.join("\n")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Starts `binary` with exactly `args` (logging at info), its stderr lines arriving on the
/// receiver as they are written; the channel ends when the process does. For the rare test that
/// must watch a kvsd that never gets ready; others use [`Kvsd::start`].
pub fn spawn<S: AsRef<OsStr>>(binary: &Path, args: &[S]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(binary)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {}: {error}", binary.display()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens, so kvsd never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(strip_ansi(&line));
        }
    });
    (child, lines_rx)
}

/// Sends the signal `name` to `pid` through the `kill` command; panics if it fails.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "kill -{name} {pid}"
    );
}

/// The value of `name=value` in a log line (quotes around the value removed).
pub fn field(line: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=");
    // A whole field name: at the start or after a space, so `seq=` does not match `last_seq=`.
    let start = line
        .match_indices(&needle)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || line[..at].ends_with(' '))?
        + needle.len();
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// The kvsd binary of this workspace, for tests of packages other than kvs (which get no
/// `CARGO_BIN_EXE_kvsd`): `KVSD` from the environment if set; otherwise `cargo build -p kvs
/// --bin kvsd` in the profile this test was built in (a no-op when kvsd is fresh; `cargo test`
/// has released the build lock by the time tests run), and `target/<profile>/kvsd` next to
/// this test's own executable. Once per test process.
pub fn workspace_kvsd() -> PathBuf {
    static KVSD: OnceLock<PathBuf> = OnceLock::new();
    KVSD.get_or_init(build_workspace_kvsd).clone()
}

fn build_workspace_kvsd() -> PathBuf {
    if let Some(path) = std::env::var_os("KVSD") {
        return PathBuf::from(path);
    }
    // A test runs as target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
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

/// What kvsd's `--ready-file` holds.
struct Ready {
    addr: String,
    resp_addr: Option<String>,
    pid: u32,
    node_id: String,
    data_dir: PathBuf,
    last_seq: u64,
    metrics_addr: Option<String>,
}

/// None while the file is not there; kvsd renames it into place whole, so it is never partial.
fn read_ready_file(path: &Path) -> Option<Result<Ready, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => return Some(Err(error.to_string())),
    };
    Some(parse_ready(&text))
}

fn parse_ready(text: &str) -> Result<Ready, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("{error}: {text}"))?;
    let string = |name: &str| {
        json[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no string {name} in {text}"))
    };
    let number = |name: &str| {
        json[name]
            .as_u64()
            .ok_or_else(|| format!("no number {name} in {text}"))
    };
    Ok(Ready {
        addr: string("addr")?,
        resp_addr: json["resp_addr"].as_str().map(str::to_string),
        pid: u32::try_from(number("pid")?).map_err(|_| format!("pid out of range: {text}"))?,
        node_id: string("node_id")?,
        data_dir: PathBuf::from(string("data_dir")?),
        last_seq: number("last_seq")?,
        metrics_addr: json["metrics_addr"].as_str().map(str::to_string),
    })
}

/// `text` without ANSI colour codes (ESC [ ... letter), which kvsd emits on a terminal only.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_whole_name() {
        let line = "INFO kvs::server: kvsd ready addr=127.0.0.1:1 last_seq=7 seq=3 node_id=\"a b\"";
        assert_eq!(field(line, "addr").as_deref(), Some("127.0.0.1:1"));
        assert_eq!(field(line, "seq").as_deref(), Some("3"));
        assert_eq!(field(line, "last_seq").as_deref(), Some("7"));
        assert_eq!(field(line, "missing"), None);
    }

    #[test]
    fn the_ready_file_parses_and_a_broken_one_is_an_error() {
        let ready = parse_ready(
            r#"{"addr":"127.0.0.1:5","pid":9,"node_id":"n\"1","data_dir":"/d","last_seq":4}"#,
        )
        .unwrap();
        assert_eq!(
            (ready.addr.as_str(), ready.pid, ready.node_id.as_str()),
            ("127.0.0.1:5", 9, "n\"1")
        );
        assert_eq!((ready.data_dir, ready.last_seq), (PathBuf::from("/d"), 4));
        assert_eq!(ready.metrics_addr, None);
        let ready = parse_ready(
            r#"{"addr":"a","pid":9,"node_id":"n","data_dir":"/d","last_seq":4,"metrics_addr":"127.0.0.1:6"}"#,
        )
        .unwrap();
        assert_eq!(ready.metrics_addr.as_deref(), Some("127.0.0.1:6"));
        assert!(parse_ready(r#"{"addr":"x"}"#).is_err());
        assert!(parse_ready("{").is_err());
    }

    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2mkvsd\u{1b}[0m ready"), "kvsd ready");
    }
}
