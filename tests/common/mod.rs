//! Shared by the scenario tests: start the real `kvsd` on 127.0.0.1 with a port it picks, in a
//! temp dir, and always stop it.
#![allow(dead_code)]

pub mod proxy;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const KVSD: &str = env!("CARGO_BIN_EXE_kvsd");
pub const KVSCTL: &str = env!("CARGO_BIN_EXE_kvsctl");

/// A running kvsd. Dropping it kills the process (kill -9) and leaves the data dir to its owner.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The "kvsd ready" line itself (read its fields with `field`).
    pub ready: String,
    /// The lines kvsd wrote to stderr after the ready line, collected in the background.
    pub log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts kvsd on `data_dir` with `--port 0` and `extra` flags, and waits for its ready line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::try_start(data_dir, extra).unwrap_or_else(|log| panic!("kvsd did not start:\n{log}"))
    }

    /// As `start`, but returns everything kvsd printed if it exits before it is ready.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_on(0, data_dir, extra)
    }

    /// As `try_start`, on a given port (0: any free one).
    pub fn try_start_on(port: u16, data_dir: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut args: Vec<std::ffi::OsString> = vec!["--port".into(), port.to_string().into()];
        args.extend(["--data-dir".into(), data_dir.as_os_str().to_owned()]);
        args.extend(extra.iter().map(Into::into));
        let (mut child, lines_rx) = spawn_kvsd(&args);
        let mut seen = String::new();
        loop {
            match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("kvsd ready") {
                        let addr = field(&line, "addr").expect("ready line names addr");
                        return Ok(Server {
                            child,
                            addr,
                            data_dir: data_dir.to_path_buf(),
                            ready: line,
                            log: lines_rx,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().expect("wait");
                    return Err(format!("{seen}(exit: {status})"));
                }
            }
        }
    }

    /// SIGKILL, the way a crash ends a process.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        self.child.wait().expect("wait")
    }

    /// Lines kvsd logged since the last call (waits up to `wait` for the first one).
    pub fn drain_log(&self, wait: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(line) = self.log.recv_timeout(wait) {
            lines.push(line);
        }
        while let Ok(line) = self.log.try_recv() {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs kvsd with exactly `args` (no `--port 0` added) when it is expected to refuse to start:
/// returns its exit status and everything it wrote to stderr. Kills it and panics if it gets
/// ready instead.
pub fn start_expecting_exit(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, String) {
    let (mut child, lines_rx) = spawn_kvsd(args);
    let mut stderr = String::new();
    loop {
        match lines_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("kvsd ready") => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kvsd started but should have refused:\n{stderr}{line}");
            }
            Ok(line) => {
                stderr.push_str(&line);
                stderr.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kvsd neither started nor exited within 60 s:\n{stderr}");
            }
        }
    }
    (child.wait().expect("wait"), stderr)
}

/// Starts kvsd with `args`, its stderr lines arriving on the receiver as they are written.
pub fn spawn_kvsd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(KVSD)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvsd");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines_rx)
}

/// Sends a signal by name through the `kill` command, to keep libc out of the tests.
pub fn unsafe_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "kill -{signal} {pid}"
    );
}

/// The value of `name=value` in a log line.
pub fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    Some(
        rest.split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}
