//! The write-ahead log: CRC-checked records in numbered segment files.
//!
//! - `record`: one record's byte layout, encode and decode. Pure.
//! - `segment`: a segment file's header and name. Pure.
//! - `recovery`: scans a data dir at start, truncates a torn tail, refuses corruption.
//! - `file`: the open log on the io_uring: append a batch, fdatasync, rotate, read a value.
//! - `prepare`: the pace at which the next segment is zero-filled ahead of use. Pure.
//!
//! The log knows nothing of the index, the network or replication: it stores bytes in order
//! and says where they went.

pub mod cache;
pub mod checkpoint;
pub mod file;
pub mod prepare;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod upgrade;

pub use record::{Op, Record, RecordHeader};

/// Where a record's value lives: what the index keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The segment file's number in this run of kvsd (not its id: a compaction replaces a
    /// segment under the same id with a new file, and both are readable while the index moves).
    pub file: u32,
    pub value_offset: u32,
    pub value_len: u32,
}

/// A random id made when a data dir is created, stored in every segment header, so that logs
/// of different origin are never mixed (replication checks it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogId(pub [u8; 16]);

impl LogId {
    pub fn random() -> std::io::Result<LogId> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(LogId(bytes))
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::fmt::Debug for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogId({self})")
    }
}
