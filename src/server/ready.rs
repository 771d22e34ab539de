//! `--ready-file PATH`: once kvsd listens and serves, it says so in a small JSON object, so the
//! programs that start it (tests, tools, supervisors) need not read its log:
//!
//! ```json
//! {"addr":"127.0.0.1:7379","pid":4242,"node_id":"node1","data_dir":"/srv/kvs/data","last_seq":17}
//! ```
//!
//! | field      | meaning                                                                 |
//! |------------|-------------------------------------------------------------------------|
//! | `addr`     | the client address it listens on (`--port 0`: the port it was given)    |
//! | `pid`      | its process id                                                          |
//! | `node_id`  | `--node-id`                                                             |
//! | `data_dir` | `--data-dir`, made absolute (lossy UTF-8 if the path is not UTF-8)      |
//! | `last_seq` | the newest seq in the log it recovered                                  |
//! | `metrics_addr` | with `--metrics-addr` only: where it serves `/metrics` (its port, if 0 was asked) |
//! | `resp_addr`| with `--resp-port`: the address the Redis protocol is served on         |
//!
//! The object is written to `PATH.tmp` and renamed over `PATH`, so a reader sees all of it or
//! none. kvsd writes it each time it gets ready (a follower that starts again on a snapshot
//! does so again, with the same pid and addr) and never removes it: whoever starts kvsd removes
//! a stale one first. A failure to write it stops kvsd: a starter would wait for it forever.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Config, ServerError};

/// Writes `config`'s ready file, if it asks for one: kvsd listens on `addrs` and recovered its
/// log up to `last_seq`.
pub fn announce(config: &Config, addrs: Addrs, last_seq: u64) -> Result<(), ServerError> {
    write(
        &config.ready_file,
        addrs,
        &config.node_id,
        &config.data_dir,
        last_seq,
    )
}

/// Where kvsd listens: the client port, and the metrics and RESP ports if any.
pub struct Addrs {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub resp_addr: Option<SocketAddr>,
}

impl From<SocketAddr> for Addrs {
    fn from(addr: SocketAddr) -> Addrs {
        Addrs {
            addr,
            metrics_addr: None,
            resp_addr: None,
        }
    }
}

/// Writes the ready file at `path`, if one was asked for.
pub fn write(
    path: &Option<PathBuf>,
    addrs: impl Into<Addrs>,
    node_id: &str,
    data_dir: &Path,
    last_seq: u64,
) -> Result<(), ServerError> {
    let Some(path) = path else { return Ok(()) };
    let Addrs {
        addr,
        metrics_addr,
        resp_addr,
    } = addrs.into();
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let metrics = metrics_addr.map_or(String::new(), |metrics| {
        format!(",\"metrics_addr\":{}", json_string(&metrics.to_string()))
    });
    let resp = resp_addr.map_or(String::new(), |resp| {
        format!(",\"resp_addr\":{}", json_string(&resp.to_string()))
    });
    let json = format!(
        "{{\"addr\":{},\"pid\":{},\"node_id\":{},\"data_dir\":{},\"last_seq\":{}{metrics}{resp}}}\n",
        json_string(&addr.to_string()),
        std::process::id(),
        json_string(node_id),
        json_string(&data_dir.to_string_lossy()),
        last_seq,
    );
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ServerError::Io {
            what: "writing the --ready-file",
            source,
        })
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_the_fields_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addr: SocketAddr = "127.0.0.1:7379".parse().unwrap();
        write(&Some(path.clone()), addr, "n1", Path::new("/srv/data"), 17).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                "{{\"addr\":\"127.0.0.1:7379\",\"pid\":{},\"node_id\":\"n1\",\"data_dir\":\"/srv/data\",\"last_seq\":17}}\n",
                std::process::id()
            )
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the ready file: {names:?}");
    }

    #[test]
    fn the_resp_address_is_named_when_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addr: SocketAddr = "127.0.0.1:7379".parse().unwrap();
        let resp: SocketAddr = "127.0.0.1:6380".parse().unwrap();
        let addrs = Addrs {
            resp_addr: Some(resp),
            ..Addrs::from(addr)
        };
        write(&Some(path.clone()), addrs, "n1", Path::new("/d"), 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(",\"resp_addr\":\"127.0.0.1:6380\"}\n"),
            "{text}"
        );
    }

    #[test]
    fn a_relative_data_dir_is_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        write(&Some(path.clone()), addr, "n1", Path::new("data"), 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let expected = json_string(&cwd.join("data").to_string_lossy());
        assert!(text.contains(&format!("\"data_dir\":{expected}")), "{text}");
    }

    #[test]
    fn the_metrics_address_is_named_when_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let addrs = Addrs {
            addr: "127.0.0.1:1".parse().unwrap(),
            metrics_addr: Some("127.0.0.1:9".parse().unwrap()),
            resp_addr: None,
        };
        write(&Some(path.clone()), addrs, "n1", Path::new("/x"), 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(",\"metrics_addr\":\"127.0.0.1:9\"}\n"),
            "{text}"
        );
    }

    #[test]
    fn no_path_writes_nothing() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        write(&None, addr, "n1", Path::new("/x"), 0).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_the_flag() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let path = Some(PathBuf::from("/nonexistent-dir/ready.json"));
        let error = write(&path, addr, "n1", Path::new("/x"), 0).unwrap_err();
        assert!(error.to_string().contains("--ready-file"), "{error}");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_string("t\tn\nu\u{1}"), "\"t\\tn\\nu\\u0001\"");
        assert_eq!(json_string("é"), "\"é\"");
    }
}
