//! What can go wrong between a client and a server, each variant saying what happened.

use std::io;
use std::time::Duration;

use crate::protocol::frame::{FrameError, LEN_MIN};
use crate::protocol::Status;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made (resolving, refused, timed out).
    #[error("cannot connect to {addr}: {}{}", io_text(.source), connect_hint(.source))]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("connection to the server failed: {}", io_text(.0))]
    Io(#[source] io::Error),
    /// A read or write timeout ran out.
    #[error("timed out after {} ms {doing}", .after.as_millis())]
    Timeout {
        doing: &'static str,
        after: Duration,
    },
    /// The server closed the connection; `partial_bytes` of an unfinished reply had arrived.
    #[error("the server closed the connection{}", closed_detail(*.partial_bytes))]
    Closed { partial_bytes: usize },
    /// A reply frame that cannot be read: its length is out of bounds.
    #[error("{}", frame_text(.0))]
    Frame(FrameError),
    /// The server answered ERROR: its message, for a person.
    #[error("{0}")]
    Server(String),
    /// The server is a follower; the leader's client address, empty if it does not know it.
    #[error("{}", not_leader_text(.0))]
    NotLeader(String),
    /// A status this client does not know.
    #[error("the server answered with unknown status 0x{status:02x}")]
    UnknownStatus { status: u8 },
    /// A known status that makes no sense for the request (e.g. NOT_FOUND to a PING).
    #[error("the server answered {} to {request}", status_name(*.status))]
    UnexpectedStatus {
        request: &'static str,
        status: Status,
    },
    /// The reply carries another id than the request it answers.
    #[error("the reply's id {received} does not match the request's id {sent}")]
    IdMismatch { sent: u64, received: u64 },
    /// The reply's body does not have the layout its request calls for.
    #[error("malformed {request} reply: {detail}")]
    Malformed {
        request: &'static str,
        detail: String,
    },
    /// `call` while replies to earlier `send`s are still unread.
    #[error("{pending} replies to earlier requests are still unread: recv() them before call()")]
    Pipelined { pending: usize },
    /// An earlier error left the connection out of step with the server.
    #[error("this connection was abandoned after an earlier error: connect again")]
    Broken,
}

/// The protocol's name of a status, as `docs/protocol.md` writes it.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "OK",
        Status::NotFound => "NOT_FOUND",
        Status::NotLeader => "NOT_LEADER",
        Status::Error => "ERROR",
        Status::ConditionFailed => "CONDITION_FAILED",
        Status::Event => "EVENT",
    }
}

/// An I/O error's text without the "(os error N)" that means nothing to a person.
fn io_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => " (is kvsd running?)",
        io::ErrorKind::InvalidInput => " (expected host:port)",
        _ => "",
    }
}

fn closed_detail(partial_bytes: usize) -> String {
    if partial_bytes == 0 {
        String::new()
    } else {
        format!(" in the middle of a reply ({partial_bytes} bytes of it received)")
    }
}

fn frame_text(error: &FrameError) -> String {
    match error {
        FrameError::TooShort { len } => {
            format!("unreadable reply: frame length {len} is below the minimum of {LEN_MIN}")
        }
        FrameError::TooLong { len, max } => format!(
            "unreadable reply: frame length {len} is over this client's limit of {max} bytes"
        ),
    }
}

fn not_leader_text(leader: &str) -> String {
    if leader.is_empty() {
        "this node is a follower and does not know the leader".to_string()
    } else {
        format!("this node is a follower; the leader is at {leader}")
    }
}
