//! A leader's cursor over its log for one follower: where the next record to send lives, and
//! which records of a chunk read from there may be sent.

use crate::wal::record::{self, DecodeError};

/// The records at the front of `chunk` that may go to a follower whose next seq is `next_seq`:
/// whole, valid, in seq order, and durable (`<= durable_seq`). Returns their byte length and
/// count, and why it stopped.
pub fn sendable(chunk: &[u8], next_seq: u64, durable_seq: u64) -> (usize, u64, Stop) {
    let mut at = 0;
    let mut seq = next_seq;
    loop {
        if seq > durable_seq {
            return (at, seq - next_seq, Stop::NotDurable);
        }
        if at == chunk.len() {
            return (at, seq - next_seq, Stop::EndOfChunk);
        }
        match record::decode_header(&chunk[at..]) {
            Ok(header) if header.seq == seq => {
                at += header.total_bytes;
                seq += 1;
            }
            Ok(header) => {
                return (
                    at,
                    seq - next_seq,
                    Stop::Damaged(format!("seq {} where {seq} was due", header.seq)),
                )
            }
            Err(DecodeError::Incomplete { need, .. }) => {
                return (at, seq - next_seq, Stop::Incomplete { need })
            }
            Err(error) => return (at, seq - next_seq, Stop::Damaged(error.to_string())),
        }
    }
}

/// A snapshot's records at the front of `chunk`: whole, valid, seqs increasing after
/// `after_seq` (they may skip where the log was compacted) and at most `last_seq`. Returns
/// their byte length, count, the last seq among them, and why it stopped (`NotDurable`: the
/// next record is past `last_seq`).
pub fn snapshot_sendable(chunk: &[u8], after_seq: u64, last_seq: u64) -> (usize, u64, u64, Stop) {
    let (mut at, mut count, mut seq) = (0, 0, after_seq);
    loop {
        if at == chunk.len() {
            return (at, count, seq, Stop::EndOfChunk);
        }
        match record::decode_header(&chunk[at..]) {
            Ok(header) if header.seq > last_seq => return (at, count, seq, Stop::NotDurable),
            Ok(header) if header.seq > seq => {
                at += header.total_bytes;
                count += 1;
                seq = header.seq;
            }
            Ok(header) => {
                let reason = format!("seq {} after seq {seq}", header.seq);
                return (at, count, seq, Stop::Damaged(reason));
            }
            Err(DecodeError::Incomplete { need, .. }) => {
                return (at, count, seq, Stop::Incomplete { need })
            }
            Err(error) => return (at, count, seq, Stop::Damaged(error.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The next record is not durable yet: wait.
    NotDurable,
    /// The chunk ended on a record boundary.
    EndOfChunk,
    /// The next record continues past the chunk; it takes `need` bytes from where it starts.
    Incomplete { need: usize },
    /// Bytes that should be a durable record are not.
    Damaged(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{Op, Record};

    fn log(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in seqs {
            record::encode(
                &mut buf,
                &Record {
                    seq,
                    term: 0,
                    op: Op::Set,
                    expires_at_ms: 0,
                    key: b"k",
                    value: b"vv",
                },
            );
        }
        buf
    }

    #[test]
    fn only_durable_whole_records_in_order_are_sent() {
        let buf = log(5..=9);
        let one = buf.len() / 5;
        assert_eq!(sendable(&buf, 5, 100), (buf.len(), 5, Stop::EndOfChunk));
        assert_eq!(sendable(&buf, 5, 7), (3 * one, 3, Stop::NotDurable));
        assert_eq!(sendable(&buf, 5, 4), (0, 0, Stop::NotDurable));
        assert_eq!(
            sendable(&buf[..2 * one + 10], 5, 100),
            (2 * one, 2, Stop::Incomplete { need: one })
        );
        assert!(matches!(sendable(&buf, 6, 100), (0, 0, Stop::Damaged(_))));
        let mut bad = buf.clone();
        bad[one + 10] ^= 1;
        assert!(matches!(sendable(&bad, 5, 100), (n, 1, Stop::Damaged(_)) if n == one));
    }

    #[test]
    fn a_snapshot_takes_increasing_seqs_with_gaps_up_to_its_last() {
        let mut chunk = Vec::new();
        for seq in [3, 8, 9, 15] {
            record::encode(
                &mut chunk,
                &Record {
                    seq,
                    term: 0,
                    op: Op::Set,
                    expires_at_ms: 0,
                    key: b"k",
                    value: b"v",
                },
            );
        }
        let (bytes, count, last, stop) = snapshot_sendable(&chunk, 0, 9);
        assert_eq!((count, last, stop), (3, 9, Stop::NotDurable));
        assert!(bytes < chunk.len());
        let (bytes, count, last, stop) = snapshot_sendable(&chunk, 0, 20);
        assert_eq!(
            (bytes, count, last, stop),
            (chunk.len(), 4, 15, Stop::EndOfChunk)
        );
        let (_, count, _, stop) = snapshot_sendable(&chunk, 5, 20);
        assert_eq!(count, 0);
        assert!(
            matches!(stop, Stop::Damaged(_)),
            "seq 3 after 5 is out of order"
        );
    }
}
