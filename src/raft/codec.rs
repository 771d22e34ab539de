//! openraft's values as bytes. Pure: no I/O.
//!
//! Entries travel and rest as kvsd log records (`wal::record`): seq = index + 1, the term,
//! and the kind (`Set`, `Del`, `Blank`, `Membership`). A membership's value is:
//!
//! | size | field |
//! |---|---|
//! | 4 | `configs` u32 LE: voter sets (2 during a joint change) |
//! | per config: 4 + 8 each | `count` u32 LE, then the voters' ids u64 LE |
//! | 4 | `nodes` u32 LE |
//! | per node | `id` u64 LE, `name_len` u16 LE, name, `addr_len` u16 LE, addr (UTF-8) |
//!
//! The Raft RPC bodies (`docs/protocol.md`, ops 0x45–0x47) are built from these parts:
//! a vote is `term` u64, `voted_for` (1 byte 0/1 + u64), `committed` u8; an optional log id is
//! 1 byte 0/1 then `term` u64 and `index` u64.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, LeaderId, SnapshotMeta};

use super::{
    log_id, seq_of, Command, Entry, LogId, Member, Membership, NodeId, StoredMembership,
    TypeConfig, Vote,
};
use crate::wal::record::{self, Op, Record};

/// Bytes that are not what they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed raft message: {0}")]
pub struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// Reads fields off the front of a byte slice, refusing to read past its end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(bad(format!(
                "{what}: {} bytes left, {n} needed",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }

    pub fn bool(&mut self, what: &str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(bad(format!("{what}: {other} is not 0 or 1"))),
        }
    }

    pub fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn end(&self, what: &str) -> Result<(), DecodeError> {
        match self.buf.is_empty() {
            true => Ok(()),
            false => Err(bad(format!("{} bytes after the {what}", self.buf.len()))),
        }
    }
}

fn put_string(dst: &mut BytesMut, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    dst.put_u16_le(bytes.len() as u16);
    dst.put_slice(bytes);
}

pub fn put_vote(dst: &mut BytesMut, vote: &Vote) {
    dst.put_u64_le(vote.leader_id.term);
    match vote.leader_id.voted_for {
        Some(id) => {
            dst.put_u8(1);
            dst.put_u64_le(id);
        }
        None => dst.put_u8(0),
    }
    dst.put_u8(u8::from(vote.committed));
}

pub fn get_vote(reader: &mut Reader<'_>) -> Result<Vote, DecodeError> {
    let term = reader.u64("vote term")?;
    let voted_for = match reader.bool("vote voted_for flag")? {
        true => Some(reader.u64("vote voted_for")?),
        false => None,
    };
    let committed = reader.bool("vote committed")?;
    Ok(openraft::Vote {
        leader_id: LeaderId { term, voted_for },
        committed,
    })
}

pub fn put_log_id(dst: &mut BytesMut, id: Option<&LogId>) {
    match id {
        Some(id) => {
            dst.put_u8(1);
            dst.put_u64_le(id.leader_id.term);
            dst.put_u64_le(id.index);
        }
        None => dst.put_u8(0),
    }
}

pub fn get_log_id(reader: &mut Reader<'_>) -> Result<Option<LogId>, DecodeError> {
    if !reader.bool("log id flag")? {
        return Ok(None);
    }
    let term = reader.u64("log id term")?;
    let index = reader.u64("log id index")?;
    Ok(Some(log_id(term, index + 1)))
}

pub fn encode_membership(membership: &Membership) -> Vec<u8> {
    let mut dst = BytesMut::new();
    let configs = membership.get_joint_config();
    dst.put_u32_le(configs.len() as u32);
    for config in configs {
        dst.put_u32_le(config.len() as u32);
        for id in config {
            dst.put_u64_le(*id);
        }
    }
    let nodes: Vec<(&NodeId, &Member)> = membership.nodes().collect();
    dst.put_u32_le(nodes.len() as u32);
    for (id, member) in nodes {
        dst.put_u64_le(*id);
        put_string(&mut dst, &member.name);
        put_string(&mut dst, &member.addr);
    }
    dst.to_vec()
}

pub fn decode_membership(buf: &[u8]) -> Result<Membership, DecodeError> {
    let mut reader = Reader::new(buf);
    let membership = get_membership(&mut reader)?;
    reader.end("membership")?;
    Ok(membership)
}

fn get_membership(reader: &mut Reader<'_>) -> Result<Membership, DecodeError> {
    // Every count is checked against the bytes left before anything is allocated for it.
    let config_count = reader.u32("membership configs")?;
    if config_count > 2 {
        return Err(bad(format!("{config_count} voter configs (at most 2)")));
    }
    let mut configs = Vec::new();
    for _ in 0..config_count {
        let count = reader.u32("voter count")? as usize;
        let ids = reader.take(count.saturating_mul(8), "voter ids")?;
        configs.push(
            ids.chunks_exact(8)
                .map(|id| u64::from_le_bytes(id.try_into().expect("8")))
                .collect::<BTreeSet<_>>(),
        );
    }
    let node_count = reader.u32("membership nodes")?;
    let mut nodes = BTreeMap::new();
    for _ in 0..node_count {
        let id = reader.u64("node id")?;
        let name = reader.string("node name")?;
        let addr = reader.string("node addr")?;
        nodes.insert(id, Member { name, addr });
    }
    for config in &configs {
        if let Some(missing) = config.iter().find(|id| !nodes.contains_key(id)) {
            return Err(bad(format!("voter {missing} has no node entry")));
        }
    }
    Ok(Membership::new(configs, nodes))
}

pub fn put_stored_membership(dst: &mut BytesMut, stored: &StoredMembership) {
    put_log_id(dst, stored.log_id().as_ref());
    let membership = encode_membership(stored.membership());
    dst.put_u32_le(membership.len() as u32);
    dst.put_slice(&membership);
}

pub fn get_stored_membership(reader: &mut Reader<'_>) -> Result<StoredMembership, DecodeError> {
    let id = get_log_id(reader)?;
    let len = reader.u32("membership length")? as usize;
    let membership = decode_membership(reader.take(len, "membership")?)?;
    Ok(StoredMembership::new(id, membership))
}

/// Appends `entry` as one log record.
pub fn encode_entry(dst: &mut Vec<u8>, entry: &Entry) {
    let seq = seq_of(&entry.log_id);
    let term = entry.log_id.leader_id.term;
    let membership;
    let (op, key, value): (Op, &[u8], &[u8]) = match &entry.payload {
        EntryPayload::Normal(Command::Set { key, value }) => (Op::Set, key, value),
        EntryPayload::Normal(Command::Del { key }) => (Op::Del, key, &[]),
        EntryPayload::Normal(Command::Ops(ops)) => (Op::Txn, &[], ops),
        EntryPayload::Blank => (Op::Blank, &[], &[]),
        EntryPayload::Membership(m) => {
            membership = encode_membership(m);
            (Op::Membership, &[], &membership)
        }
    };
    record::encode(
        dst,
        &Record {
            seq,
            term,
            op,
            key,
            value,
            expires_at_ms: 0,
        },
    );
}

/// A `Txn` record's value as the ops of an entry; every op must read back.
fn decode_ops(value: &[u8]) -> Result<Command, DecodeError> {
    let mut count = 0;
    for op in record::txn_ops(value) {
        op.map_err(|why| bad(format!("an entry's op: {why}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("an entry with no ops"));
    }
    Ok(Command::Ops(Bytes::copy_from_slice(value)))
}

/// The entry a decoded log record holds.
pub fn entry_of(record: &Record<'_>) -> Result<Entry, DecodeError> {
    let payload = match record.op {
        Op::Set => EntryPayload::Normal(Command::Set {
            key: Bytes::copy_from_slice(record.key),
            value: Bytes::copy_from_slice(record.value),
        }),
        Op::Del => EntryPayload::Normal(Command::Del {
            key: Bytes::copy_from_slice(record.key),
        }),
        Op::Blank => EntryPayload::Blank,
        Op::Membership => EntryPayload::Membership(decode_membership(record.value)?),
        Op::Txn => EntryPayload::Normal(decode_ops(record.value)?),
        other => {
            return Err(bad(format!(
                "record kind {other:?} is not an entry this kvsd's Raft log holds"
            )))
        }
    };
    if record.seq == 0 {
        return Err(bad("record seq 0"));
    }
    Ok(Entry {
        log_id: log_id(record.term, record.seq),
        payload,
    })
}

/// Decodes records back to back.
pub fn decode_entries(mut buf: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut entries = Vec::new();
    while !buf.is_empty() {
        let (header, record) = record::decode(buf).map_err(|e| bad(e.to_string()))?;
        entries.push(entry_of(&record)?);
        buf = &buf[header.total_bytes..];
    }
    Ok(entries)
}

pub fn encode_append(dst: &mut BytesMut, rpc: &AppendEntriesRequest<TypeConfig>) {
    put_vote(dst, &rpc.vote);
    put_log_id(dst, rpc.prev_log_id.as_ref());
    put_log_id(dst, rpc.leader_commit.as_ref());
    let mut records = Vec::new();
    for entry in &rpc.entries {
        encode_entry(&mut records, entry);
    }
    dst.put_slice(&records);
}

pub fn decode_append(buf: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, DecodeError> {
    let mut reader = Reader::new(buf);
    let vote = get_vote(&mut reader)?;
    let prev_log_id = get_log_id(&mut reader)?;
    let leader_commit = get_log_id(&mut reader)?;
    let entries = decode_entries(reader.rest())?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit,
    })
}

pub fn encode_append_response(dst: &mut BytesMut, response: &AppendEntriesResponse<NodeId>) {
    match response {
        AppendEntriesResponse::Success => dst.put_u8(0),
        AppendEntriesResponse::PartialSuccess(id) => {
            dst.put_u8(1);
            put_log_id(dst, id.as_ref());
        }
        AppendEntriesResponse::Conflict => dst.put_u8(2),
        AppendEntriesResponse::HigherVote(vote) => {
            dst.put_u8(3);
            put_vote(dst, vote);
        }
    }
}

pub fn decode_append_response(buf: &[u8]) -> Result<AppendEntriesResponse<NodeId>, DecodeError> {
    let mut reader = Reader::new(buf);
    let response = match reader.u8("append response kind")? {
        0 => AppendEntriesResponse::Success,
        1 => AppendEntriesResponse::PartialSuccess(get_log_id(&mut reader)?),
        2 => AppendEntriesResponse::Conflict,
        3 => AppendEntriesResponse::HigherVote(get_vote(&mut reader)?),
        other => return Err(bad(format!("append response kind {other}"))),
    };
    reader.end("append response")?;
    Ok(response)
}

pub fn encode_vote_request(dst: &mut BytesMut, rpc: &VoteRequest<NodeId>) {
    put_vote(dst, &rpc.vote);
    put_log_id(dst, rpc.last_log_id.as_ref());
}

pub fn decode_vote_request(buf: &[u8]) -> Result<VoteRequest<NodeId>, DecodeError> {
    let mut reader = Reader::new(buf);
    let vote = get_vote(&mut reader)?;
    let last_log_id = get_log_id(&mut reader)?;
    reader.end("vote request")?;
    Ok(VoteRequest { vote, last_log_id })
}

pub fn encode_vote_response(dst: &mut BytesMut, response: &VoteResponse<NodeId>) {
    put_vote(dst, &response.vote);
    dst.put_u8(u8::from(response.vote_granted));
    put_log_id(dst, response.last_log_id.as_ref());
}

pub fn decode_vote_response(buf: &[u8]) -> Result<VoteResponse<NodeId>, DecodeError> {
    let mut reader = Reader::new(buf);
    let vote = get_vote(&mut reader)?;
    let vote_granted = reader.bool("vote granted")?;
    let last_log_id = get_log_id(&mut reader)?;
    reader.end("vote response")?;
    Ok(VoteResponse {
        vote,
        vote_granted,
        last_log_id,
    })
}

pub fn encode_snapshot_meta(dst: &mut BytesMut, meta: &SnapshotMeta<NodeId, Member>) {
    put_log_id(dst, meta.last_log_id.as_ref());
    put_stored_membership(dst, &meta.last_membership);
    put_string(dst, &meta.snapshot_id);
}

pub fn decode_snapshot_meta(
    reader: &mut Reader<'_>,
) -> Result<SnapshotMeta<NodeId, Member>, DecodeError> {
    Ok(SnapshotMeta {
        last_log_id: get_log_id(reader)?,
        last_membership: get_stored_membership(reader)?,
        snapshot_id: reader.string("snapshot id")?,
    })
}

pub fn encode_snapshot_request(dst: &mut BytesMut, rpc: &InstallSnapshotRequest<TypeConfig>) {
    put_vote(dst, &rpc.vote);
    encode_snapshot_meta(dst, &rpc.meta);
    dst.put_u64_le(rpc.offset);
    dst.put_u8(u8::from(rpc.done));
    dst.put_slice(&rpc.data);
}

pub fn decode_snapshot_request(
    buf: &[u8],
) -> Result<InstallSnapshotRequest<TypeConfig>, DecodeError> {
    let mut reader = Reader::new(buf);
    let vote = get_vote(&mut reader)?;
    let meta = decode_snapshot_meta(&mut reader)?;
    let offset = reader.u64("snapshot offset")?;
    let done = reader.bool("snapshot done")?;
    let data = reader.rest().to_vec();
    Ok(InstallSnapshotRequest {
        vote,
        meta,
        offset,
        data,
        done,
    })
}

pub fn encode_snapshot_response(dst: &mut BytesMut, response: &InstallSnapshotResponse<NodeId>) {
    put_vote(dst, &response.vote);
}

pub fn decode_snapshot_response(
    buf: &[u8],
) -> Result<InstallSnapshotResponse<NodeId>, DecodeError> {
    let mut reader = Reader::new(buf);
    let vote = get_vote(&mut reader)?;
    reader.end("snapshot response")?;
    Ok(InstallSnapshotResponse { vote })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        let nodes: BTreeMap<NodeId, Member> = [1u64, 2, 3]
            .into_iter()
            .map(|id| {
                (
                    id,
                    Member {
                        name: format!("n{id}"),
                        addr: format!("127.0.0.1:700{id}"),
                    },
                )
            })
            .collect();
        Membership::new(vec![BTreeSet::from([1, 2])], nodes)
    }

    #[test]
    fn membership_round_trips_and_refuses_damage() {
        let m = membership();
        let bytes = encode_membership(&m);
        assert_eq!(decode_membership(&bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(decode_membership(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut huge = bytes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_membership(&huge).is_err());
    }

    #[test]
    fn entries_round_trip_as_records() {
        let entries = vec![
            Entry {
                log_id: log_id(0, 1),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                log_id: log_id(2, 2),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 3),
                payload: EntryPayload::Normal(Command::Set {
                    key: Bytes::from("k"),
                    value: Bytes::from("v"),
                }),
            },
            Entry {
                log_id: log_id(3, 4),
                payload: EntryPayload::Normal(Command::Del {
                    key: Bytes::from("k"),
                }),
            },
            Entry {
                log_id: log_id(3, 5),
                payload: EntryPayload::Normal(Command::Ops({
                    let mut ops = Vec::new();
                    record::encode_txn_op(&mut ops, Op::Set, 9, b"a", b"1");
                    record::encode_txn_op(&mut ops, Op::Del, 0, b"b", b"");
                    record::encode_txn_op(&mut ops, Op::ExpireAt, 5, b"a", b"");
                    Bytes::from(ops)
                })),
            },
        ];
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 2),
            prev_log_id: None,
            entries: entries.clone(),
            leader_commit: Some(log_id(2, 2)),
        };
        let mut buf = BytesMut::new();
        encode_append(&mut buf, &rpc);
        let back = decode_append(&buf).unwrap();
        assert_eq!(back.entries, entries);
        assert_eq!(back.vote, rpc.vote);
        assert_eq!(back.leader_commit, rpc.leader_commit);
        for cut in 0..buf.len() - 1 {
            let _ = decode_append(&buf[..cut]); // never panics
        }
    }

    #[test]
    fn responses_round_trip() {
        for response in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(4, 9))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(7, 3)),
        ] {
            let mut buf = BytesMut::new();
            encode_append_response(&mut buf, &response);
            assert_eq!(decode_append_response(&buf).unwrap(), response);
        }
        let vote = VoteResponse {
            vote: Vote::new(5, 1),
            vote_granted: true,
            last_log_id: Some(log_id(4, 10)),
        };
        let mut buf = BytesMut::new();
        encode_vote_response(&mut buf, &vote);
        assert_eq!(decode_vote_response(&buf).unwrap(), vote);
    }
}
