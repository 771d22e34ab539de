//! kvsd with its Redis port (`--resp-port`), and the clients nobody here wrote that drive it:
//! redis-rs and `redis-cli`.

use std::path::Path;
use std::process::Command;

use super::Kvsd;

/// Starts kvsd on `data_dir` with `--resp-port 0` and `extra` flags.
pub fn start(data_dir: &Path, extra: &[&str]) -> Kvsd {
    let mut args = vec!["--resp-port", "0"];
    args.extend_from_slice(extra);
    super::start(data_dir, &args)
}

/// The Redis port's address, from kvsd's ready file.
pub fn addr(kvsd: &Kvsd) -> String {
    kvsd.resp_addr
        .clone()
        .expect("the ready file names resp_addr")
}

/// A redis-rs connection to the Redis port.
pub fn connect(kvsd: &Kvsd) -> redis::Connection {
    let url = format!("redis://{}/", addr(kvsd));
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// An error reply as the wire had it: redis-rs splits the code from the text.
pub fn error_text(error: &redis::RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => error.to_string(),
    }
}

/// redis-cli, as a person or a script would use it against kvsd; it must exit 0.
pub fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs (tools/install-peers installs it)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
