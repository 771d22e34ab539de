//! Replication frames: the same envelope as client frames, ops 0x40–0x7f (`docs/protocol.md`).
//!
//! | op   | name    | direction         | id                    | body                                      |
//! |------|---------|-------------------|-----------------------|-------------------------------------------|
//! | 0x40 | HELLO   | follower → leader | 0                     | `log_id` 16, `last_seq` u64, `last_crc` u32, node id UTF-8 |
//! | 0x41 | WELCOME | leader → follower | 0                     | `log_id` 16, `durable_seq` u64            |
//! | 0x42 | RECORDS | leader → follower | leader's durable seq  | whole log records, back to back (may be empty: a heartbeat) |
//! | 0x43 | ACK     | follower → leader | 0                     | `durable_seq` u64: the follower's own     |
//! | 0x44 | SNAPSHOT_DONE | leader → follower | `snapshot_seq`  | empty: the snapshot is complete           |
//!
//! HELLO flag 0x01 (`--resync`): rather than be refused for holding another history, the
//! follower asks for a snapshot that replaces its data. WELCOME flag 0x01: a snapshot follows;
//! the body then ends with `snapshot_seq` u64. The RECORDS after it carry every record of the
//! leader's retained log up to `snapshot_seq` in log order (seqs increase but may skip where
//! the leader compacted), then SNAPSHOT_DONE, and the leader closes the link. The follower
//! installs the snapshot and dials again from `snapshot_seq`.
//!
//! A leader that refuses a follower answers HELLO with an ordinary ERROR frame (status 0x03)
//! saying why and what to do, and closes.

use bytes::{Bytes, BytesMut};

use crate::protocol::frame::{self, Header};
use crate::wal::LogId;

pub mod op {
    pub const HELLO: u8 = 0x40;
    pub const WELCOME: u8 = 0x41;
    pub const RECORDS: u8 = 0x42;
    pub const ACK: u8 = 0x43;
    pub const SNAPSHOT_DONE: u8 = 0x44;
}

pub mod flag {
    /// HELLO: replace this follower's data with a snapshot rather than be refused.
    pub const RESYNC: u8 = 0x01;
    /// WELCOME: a snapshot follows.
    pub const SNAPSHOT: u8 = 0x01;
    /// HELLO and WELCOME: the sender's log is in record format 2 (RECORDS carry its records
    /// byte for byte, so both ends must write the same format). Always set; required.
    pub const RECORD_FORMAT_2: u8 = 0x02;
}

/// Refuses a peer whose records this kvsd cannot take or give byte for byte.
fn record_format_2(
    name: &'static str,
    flags: u8,
    detail: &'static str,
) -> Result<(), MessageError> {
    if flags & flag::RECORD_FORMAT_2 != 0 {
        Ok(())
    } else {
        Err(MessageError { name, detail })
    }
}

const LOG_ID_BYTES: usize = 16;
const SEQ_BYTES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub log_id: LogId,
    /// The newest seq in the follower's own log, and that record's CRC: the leader checks that
    /// its own record at that seq is the same one, so diverged histories are never spliced.
    pub last_seq: u64,
    pub last_crc: u32,
    pub node_id: String,
    /// `--resync`: discard this follower's data for a snapshot if it cannot follow as it is.
    pub resync: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub log_id: LogId,
    pub durable_seq: u64,
    /// A snapshot of the leader's log up to this seq follows.
    pub snapshot_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {name} frame: {detail}")]
pub struct MessageError {
    pub name: &'static str,
    pub detail: &'static str,
}

fn header(kind: u8, id: u64) -> Header {
    Header { kind, flags: 0, id }
}

fn known_flags(name: &'static str, flags: u8, known: u8) -> Result<(), MessageError> {
    if flags & !known == 0 {
        Ok(())
    } else {
        Err(MessageError {
            name,
            detail: "unknown flags",
        })
    }
}

fn log_id_and_seq(body: &[u8], name: &'static str) -> Result<(LogId, u64), MessageError> {
    let short = MessageError {
        name,
        detail: "body shorter than log id and seq",
    };
    let log_id = body.get(..LOG_ID_BYTES).ok_or(short.clone())?;
    let seq = body
        .get(LOG_ID_BYTES..LOG_ID_BYTES + SEQ_BYTES)
        .ok_or(short)?;
    Ok((
        LogId(log_id.try_into().expect("16 bytes")),
        u64::from_le_bytes(seq.try_into().expect("8 bytes")),
    ))
}

impl Hello {
    pub fn encode(&self, dst: &mut BytesMut) {
        let flags = flag::RECORD_FORMAT_2 | if self.resync { flag::RESYNC } else { 0 };
        frame::encode(
            dst,
            Header {
                flags,
                ..header(op::HELLO, 0)
            },
            &[
                &self.log_id.0,
                &self.last_seq.to_le_bytes(),
                &self.last_crc.to_le_bytes(),
                self.node_id.as_bytes(),
            ],
        );
    }

    pub fn decode(flags: u8, body: &[u8]) -> Result<Hello, MessageError> {
        known_flags("HELLO", flags, flag::RESYNC | flag::RECORD_FORMAT_2)?;
        record_format_2(
            "HELLO",
            flags,
            "the follower's kvsd writes record format 1; upgrade it to this leader's version",
        )?;
        let (log_id, last_seq) = log_id_and_seq(body, "HELLO")?;
        let crc_at = LOG_ID_BYTES + SEQ_BYTES;
        let last_crc = body.get(crc_at..crc_at + 4).ok_or(MessageError {
            name: "HELLO",
            detail: "body has no last_crc",
        })?;
        let last_crc = u32::from_le_bytes(last_crc.try_into().expect("4 bytes"));
        let node_id = std::str::from_utf8(&body[crc_at + 4..]).map_err(|_| MessageError {
            name: "HELLO",
            detail: "node id is not UTF-8",
        })?;
        Ok(Hello {
            log_id,
            last_seq,
            last_crc,
            node_id: node_id.to_string(),
            resync: flags & flag::RESYNC != 0,
        })
    }
}

impl Welcome {
    pub fn encode(&self, dst: &mut BytesMut) {
        let (flags, snapshot) = match self.snapshot_seq {
            Some(seq) => (flag::SNAPSHOT, seq.to_le_bytes().to_vec()),
            None => (0, Vec::new()),
        };
        let flags = flags | flag::RECORD_FORMAT_2;
        frame::encode(
            dst,
            Header {
                flags,
                ..header(op::WELCOME, 0)
            },
            &[&self.log_id.0, &self.durable_seq.to_le_bytes(), &snapshot],
        );
    }

    pub fn decode(flags: u8, body: &[u8]) -> Result<Welcome, MessageError> {
        known_flags("WELCOME", flags, flag::SNAPSHOT | flag::RECORD_FORMAT_2)?;
        record_format_2(
            "WELCOME",
            flags,
            "the leader's kvsd writes record format 1; upgrade the leader to this follower's version first",
        )?;
        let (log_id, durable_seq) = log_id_and_seq(body, "WELCOME")?;
        let rest = &body[LOG_ID_BYTES + SEQ_BYTES..];
        let snapshot_seq = match (flags & flag::SNAPSHOT != 0, rest.len()) {
            (false, 0) => None,
            (true, SEQ_BYTES) => Some(u64::from_le_bytes(rest.try_into().expect("8 bytes"))),
            _ => {
                return Err(MessageError {
                    name: "WELCOME",
                    detail: "body length does not match its flags",
                })
            }
        };
        Ok(Welcome {
            log_id,
            durable_seq,
            snapshot_seq,
        })
    }
}

/// A RECORDS frame around `records` (already encoded log records).
pub fn encode_records(dst: &mut BytesMut, leader_durable_seq: u64, records: &[u8]) {
    frame::encode(dst, header(op::RECORDS, leader_durable_seq), &[records]);
}

pub fn encode_snapshot_done(dst: &mut BytesMut, snapshot_seq: u64) {
    frame::encode(dst, header(op::SNAPSHOT_DONE, snapshot_seq), &[]);
}

pub fn encode_ack(dst: &mut BytesMut, durable_seq: u64) {
    frame::encode(dst, header(op::ACK, 0), &[&durable_seq.to_le_bytes()]);
}

pub fn decode_ack(body: &Bytes) -> Result<u64, MessageError> {
    let seq = body.get(..SEQ_BYTES).filter(|_| body.len() == SEQ_BYTES);
    let seq = seq.ok_or(MessageError {
        name: "ACK",
        detail: "body is not one u64",
    })?;
    Ok(u64::from_le_bytes(seq.try_into().expect("8 bytes")))
}

/// Whether a leader with `ours` (log id) and `durable_seq` takes a follower that says `hello`,
/// before comparing records (see `same_history`).
pub fn admit(ours: LogId, durable_seq: u64, hello: &Hello) -> Result<(), String> {
    if hello.last_seq == 0 {
        return Ok(()); // An empty follower adopts the leader's log.
    }
    if hello.log_id != ours {
        return Err(format!(
            "follower '{}' holds log {} but this leader's log is {ours}: they are different \
             histories and will not be merged. If the follower's data is to be discarded, stop it, \
             or start it with --resync to replace its data with a snapshot of this leader's.",
            hello.node_id, hello.log_id
        ));
    }
    if hello.last_seq > durable_seq {
        return Err(format!(
            "follower '{}' is ahead of this leader: it holds seq {} but the leader's log ends at \
             {durable_seq}. The leader may have lost data or been restored from an old copy; \
             nothing was overwritten. Decide which copy is right: restart that node as the leader, \
             or start the follower with --resync to replace its data with this leader's.",
            hello.node_id, hello.last_seq
        ));
    }
    Ok(())
}

/// Whether the follower's last record is the leader's record at the same seq (`leader_crc`).
pub fn same_history(hello: &Hello, leader_crc: Option<u32>) -> Result<(), String> {
    match leader_crc {
        Some(crc) if hello.last_seq > 0 && crc != hello.last_crc => Err(format!(
            "follower '{}' diverged from this leader: its record at seq {} differs from the \
             leader's (another node took writes as leader while they were apart). Nothing was \
             merged or overwritten. Keep the history you want: start this follower with --resync \
             to replace its data with a snapshot of the leader's, or make it the leader.",
            hello.node_id, hello.last_seq
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_welcome_round_trip() {
        let hello = Hello {
            log_id: LogId([3; 16]),
            last_seq: 42,
            last_crc: 0xdead_beef,
            node_id: "f1".into(),
            resync: true,
        };
        let mut buf = BytesMut::new();
        hello.encode(&mut buf);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.header.kind, op::HELLO);
        assert_eq!(Hello::decode(frame.header.flags, &frame.body), Ok(hello));
        // A kvsd of record format 1 sends no format flag: it is refused, saying why.
        let old = Hello::decode(frame.header.flags & !flag::RECORD_FORMAT_2, &frame.body);
        assert!(old.unwrap_err().detail.contains("record format 1"));

        for snapshot_seq in [None, Some(99)] {
            let welcome = Welcome {
                log_id: LogId([4; 16]),
                durable_seq: 7,
                snapshot_seq,
            };
            welcome.encode(&mut buf);
            let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
            assert_eq!(
                Welcome::decode(frame.header.flags, &frame.body),
                Ok(welcome)
            );
            let other_flags = frame.header.flags ^ flag::SNAPSHOT;
            assert!(Welcome::decode(other_flags, &frame.body).is_err());
            let old = frame.header.flags & !flag::RECORD_FORMAT_2;
            assert!(Welcome::decode(old, &frame.body).is_err());
        }
        let welcome = Welcome {
            log_id: LogId([4; 16]),
            durable_seq: 7,
            snapshot_seq: None,
        };
        welcome.encode(&mut buf);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        let format = flag::RECORD_FORMAT_2;
        assert!(Welcome::decode(format, &[&frame.body[..], b"x"].concat()).is_err());

        encode_ack(&mut buf, 9);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode_ack(&frame.body), Ok(9));
        assert!(decode_ack(&Bytes::from_static(b"1234567")).is_err());
        assert!(Hello::decode(format, b"short").is_err());
        assert!(Hello::decode(format, &[[0u8; 28].as_slice(), b"\xff"].concat()).is_err());
        assert!(Hello::decode(format, &[0u8; 26]).is_err());
        assert!(Hello::decode(format, &[0u8; 28]).is_ok());
        assert!(
            Hello::decode(format | 0x04, &[0u8; 28]).is_err(),
            "unknown flag"
        );
    }

    #[test]
    fn admission_rules() {
        let ours = LogId([1; 16]);
        let hello = |log_id, last_seq| Hello {
            log_id,
            last_seq,
            last_crc: 5,
            node_id: "f".into(),
            resync: false,
        };
        assert!(
            admit(ours, 10, &hello(LogId([2; 16]), 0)).is_ok(),
            "empty follower adopts"
        );
        assert!(admit(ours, 10, &hello(ours, 10)).is_ok());
        assert!(admit(ours, 10, &hello(ours, 3)).is_ok());
        assert!(admit(ours, 10, &hello(ours, 11))
            .unwrap_err()
            .contains("ahead"));
        assert!(admit(ours, 10, &hello(LogId([2; 16]), 5))
            .unwrap_err()
            .contains("different"));
        assert!(same_history(&hello(ours, 3), Some(5)).is_ok());
        assert!(same_history(&hello(ours, 3), Some(6))
            .unwrap_err()
            .contains("diverged"));
        assert!(same_history(&hello(ours, 0), None).is_ok());
    }
}
