//! Replication: the leader pushes its log to followers over the client framing.
//!
//! - `messages`: the handshake and stream frames (ops 0x40–0x43) as values. Pure.
//! - `cursor`: cutting the records a follower is due out of bytes read from the log. Pure.
//!
//! The I/O (the leader's per-follower stream, the follower's link) lives in `server`, which
//! owns the sockets; this module decides what is sent and what is accepted. Replication sits on
//! top of the log: only records durable on the leader are ever sent, in seq order, byte for
//! byte as they are on disk (each with its CRC), and a follower appends them to its own log with
//! the same seq. A follower's position is its own log's last seq: there is no side file to lose.

pub mod cursor;
pub mod messages;
