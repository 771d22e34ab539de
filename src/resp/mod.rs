//! RESP, the Redis protocol (`docs/resp.md`): what `kvsd --resp-port` speaks, so redis-cli,
//! redis-benchmark and any Redis client library can use kvs.
//!
//! This module is the codec and the command table; it is pure. The connection state machine
//! (`server::connection::state`) takes commands parsed here and maps each onto the same
//! `command`/`engine` path as the native ops, so a key written through one protocol is read
//! through the other, with the same durability: a write's reply leaves once it is durable.
//!
//! - `parse`: bytes to commands (RESP arrays and inline lines), bounded, never panics.
//! - `reply`: replies to bytes, RESP2 and RESP3.
//! - `glob`: Redis's patterns for KEYS and SCAN MATCH.
//! - `options`: the options of SET, GETEX and EXPIRE, read as Redis reads them.
//! - `table`: the commands kvs knows, their arity and flags (what COMMAND answers).

pub mod glob;
pub mod multi;
pub mod options;
pub mod parse;
pub mod reply;
pub mod table;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

pub use reply::Version;

/// SCAN cursors a connection keeps (the newest ones): an older cursor is refused and the
/// client starts again from 0.
pub const SCAN_CURSORS_MAX: usize = 64;

/// The Redis version whose commands and replies kvs follows (HELLO's and INFO's
/// `redis_version`): clients that choose features by version see what they may use.
pub const REDIS_VERSION: &str = "7.0.0";

/// Client ids (CLIENT ID), unique in the process.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// What one RESP connection remembers between commands.
#[derive(Debug)]
pub struct Session {
    pub version: Version,
    pub client_id: u64,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub created: Instant,
    /// The last command's name, lower case (CLIENT INFO's `cmd`).
    pub last_command: &'static str,
    /// SCAN cursors handed out: cursor number and the last key its page returned.
    scan_cursors: VecDeque<(u64, Bytes)>,
    next_cursor: u64,
    /// After MULTI: the commands queued for EXEC.
    pub multi: Option<multi::Multi>,
    /// WATCHed keys (cleared by EXEC, DISCARD, UNWATCH).
    pub watched: multi::Watched,
    /// Channels and patterns subscribed to (the node's pub/sub registry holds them).
    pub subscriptions: usize,
}

impl Session {
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Session {
        let client_id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
        Session {
            version: Version::Resp2,
            client_id,
            name: None,
            lib_name: None,
            lib_ver: None,
            peer,
            local,
            created: Instant::now(),
            last_command: "",
            scan_cursors: VecDeque::new(),
            // Cursors look unrelated across connections, and never 0 (SCAN's "done").
            next_cursor: client_id << 20,
            multi: None,
            watched: multi::Watched::default(),
            subscriptions: 0,
        }
    }

    /// Remembers where a SCAN page ended; the cursor the client sends for the next page.
    pub fn new_cursor(&mut self, last_key: Bytes) -> u64 {
        self.next_cursor += 1;
        if self.scan_cursors.len() == SCAN_CURSORS_MAX {
            self.scan_cursors.pop_front();
        }
        self.scan_cursors.push_back((self.next_cursor, last_key));
        self.next_cursor
    }

    /// The last key of the page `cursor` continues after.
    pub fn cursor(&self, cursor: u64) -> Option<Bytes> {
        self.scan_cursors
            .iter()
            .find(|(number, _)| *number == cursor)
            .map(|(_, key)| key.clone())
    }

    /// CLIENT INFO / CLIENT LIST's line for this connection.
    pub fn info_line(&self, now: Instant) -> String {
        let text = |value: &Option<Bytes>| {
            value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} name={} age={} idle=0 flags={} db=0 sub=0 psub=0 multi={} watch={} cmd={} user=default resp={} lib-name={} lib-ver={}\n",
            self.client_id,
            self.peer,
            self.local,
            text(&self.name),
            now.saturating_duration_since(self.created).as_secs(),
            if self.multi.is_some() { "x" } else { "N" },
            self.multi
                .as_ref()
                .map_or(-1, |multi| multi.commands.len() as i64),
            self.watched.keys.len(),
            self.last_command,
            match self.version {
                Version::Resp2 => 2,
                Version::Resp3 => 3,
            },
            text(&self.lib_name),
            text(&self.lib_ver),
        )
    }
}

/// How a queued RESP reply is written once it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// The reply body holds RESP bytes already.
    Raw,
    /// A value (GET, GETDEL, SET GET, an MGET element): a bulk string, or a null if none.
    Value(Version),
    /// A write: these bytes once it is durable (`+OK`, `:2`).
    Written(Bytes),
}

/// What only the connection's task can answer, from the node: the reply waits in the queue
/// until what it reads is durable, then the task renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRead {
    /// INFO with these sections (lower case; empty: the default ones).
    Info {
        sections: Vec<String>,
        version: Version,
    },
    Role {
        version: Version,
    },
    /// WAIT: followers that have `seq` durable, waiting up to `deadline` for `replicas`.
    Wait {
        replicas: u64,
        seq: u64,
        deadline: Option<Instant>,
    },
}

/// A client name or library name: printable ASCII, no spaces (Redis's rule).
pub fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}
