//! Replication frames: the same envelope as client frames, ops 0x40–0x7f (`docs/protocol.md`).
//!
//! | op   | name    | direction         | id                    | body                                      |
//! |------|---------|-------------------|-----------------------|-------------------------------------------|
//! | 0x40 | HELLO   | follower → leader | 0                     | `log_id` 16, `last_seq` u64, `last_crc` u32, node id UTF-8 |
//! | 0x41 | WELCOME | leader → follower | 0                     | `log_id` 16, `durable_seq` u64            |
//! | 0x42 | RECORDS | leader → follower | leader's durable seq  | whole log records, back to back (may be empty: a heartbeat) |
//! | 0x43 | ACK     | follower → leader | 0                     | `durable_seq` u64: the follower's own     |
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    pub log_id: LogId,
    pub durable_seq: u64,
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
        frame::encode(
            dst,
            header(op::HELLO, 0),
            &[
                &self.log_id.0,
                &self.last_seq.to_le_bytes(),
                &self.last_crc.to_le_bytes(),
                self.node_id.as_bytes(),
            ],
        );
    }

    pub fn decode(body: &[u8]) -> Result<Hello, MessageError> {
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
        })
    }
}

impl Welcome {
    pub fn encode(&self, dst: &mut BytesMut) {
        frame::encode(
            dst,
            header(op::WELCOME, 0),
            &[&self.log_id.0, &self.durable_seq.to_le_bytes()],
        );
    }

    pub fn decode(body: &[u8]) -> Result<Welcome, MessageError> {
        // Exactly the two fields: bytes this follower does not understand are refused, not
        // skipped (found by the fuzzer: a longer body was taken as if it were this one).
        if body.len() != LOG_ID_BYTES + SEQ_BYTES {
            return Err(MessageError {
                name: "WELCOME",
                detail: "body is not a log id and a seq (24 bytes)",
            });
        }
        let (log_id, durable_seq) = log_id_and_seq(body, "WELCOME")?;
        Ok(Welcome {
            log_id,
            durable_seq,
        })
    }
}

/// A RECORDS frame around `records` (already encoded log records).
pub fn encode_records(dst: &mut BytesMut, leader_durable_seq: u64, records: &[u8]) {
    frame::encode(dst, header(op::RECORDS, leader_durable_seq), &[records]);
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
             move its data dir away and start it again empty (it then copies the leader's log); \
             a snapshot transfer (--resync) is not implemented yet.",
            hello.node_id, hello.log_id
        ));
    }
    if hello.last_seq > durable_seq {
        return Err(format!(
            "follower '{}' is ahead of this leader: it holds seq {} but the leader's log ends at \
             {durable_seq}. The leader may have lost data or been restored from an old copy; \
             nothing was overwritten. Decide which copy is right: restart that node as the leader, \
             or move the follower's data dir away to let it copy this leader's log.",
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
             merged or overwritten. Keep the history you want: move this follower's data dir \
             away to let it copy the leader's log, or make it the leader.",
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
        };
        let mut buf = BytesMut::new();
        hello.encode(&mut buf);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.header.kind, op::HELLO);
        assert_eq!(Hello::decode(&frame.body), Ok(hello));

        let welcome = Welcome {
            log_id: LogId([4; 16]),
            durable_seq: 7,
        };
        welcome.encode(&mut buf);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(Welcome::decode(&frame.body), Ok(welcome));
        assert!(Welcome::decode(&[&frame.body[..], b"x"].concat()).is_err());

        encode_ack(&mut buf, 9);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(decode_ack(&frame.body), Ok(9));
        assert!(decode_ack(&Bytes::from_static(b"1234567")).is_err());
        assert!(Hello::decode(b"short").is_err());
        assert!(Hello::decode(&[[0u8; 28].as_slice(), b"\xff"].concat()).is_err());
        assert!(Hello::decode(&[0u8; 26]).is_err());
    }

    #[test]
    fn admission_rules() {
        let ours = LogId([1; 16]);
        let hello = |log_id, last_seq| Hello {
            log_id,
            last_seq,
            last_crc: 5,
            node_id: "f".into(),
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
