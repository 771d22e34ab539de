//! Ops `0x09`–`0x1f` (`protocol::ext`) on the engine: each maps onto one engine call, and its
//! reply waits, as every reply does, for what it observed (or wrote) to be durable.

use bytes::{BufMut, Bytes, BytesMut};

use super::{error, Pending};
use crate::engine::write::{Cmp, IncrOutcome, Operand as EngineOperand};
use crate::engine::{
    Condition, Engine, ExpireCondition, ExpireOutcome, SetOptions, SetOutcome, TxnCompare, TxnOp,
    TxnOutcome, Values,
};
use crate::protocol::ext::{self, CompareOp, ExtRequest, Operand, Txn, TxnWrite};
use crate::protocol::Status;
use crate::wal::record::Op;

fn reply(status: Status, body: Bytes, after_seq: u64) -> Pending {
    Pending::Reply {
        status,
        flags: 0,
        body,
        after_seq,
    }
}

fn seq_body(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_le_bytes())
}

/// Takes an op of `0x09`–`0x1f` into the engine. `after_seq` is the newest write this
/// connection sent before it; `reply_body_max` bounds an MGET reply.
pub fn accept(
    engine: &mut Engine,
    request: ExtRequest,
    after_seq: u64,
    reply_body_max: usize,
    values: &mut Values<'_>,
) -> Pending {
    let now_ms = engine.now_ms();
    match request {
        ExtRequest::SetX {
            key,
            value,
            options,
        } => {
            let options = SetOptions {
                expires_at_ms: options.expiry.map_or(0, |expiry| expiry.at(now_ms)),
                keep_ttl: options.keep_ttl,
                condition: match options.condition {
                    ext::Condition::Always => Condition::Always,
                    ext::Condition::Absent => Condition::Absent,
                    ext::Condition::Present => Condition::Present,
                    ext::Condition::Seq(seq) => Condition::Seq(seq),
                },
            };
            match engine.set_with(&key, value, options) {
                Ok(SetOutcome::Written { seq }) => Pending::Write { seq, body: None },
                Ok(SetOutcome::ConditionFailed {
                    current_seq,
                    after_seq: observed,
                }) => reply(
                    Status::ConditionFailed,
                    seq_body(current_seq),
                    observed.max(after_seq),
                ),
                Err(failed) => error(failed.to_string()),
            }
        }
        ExtRequest::Expire {
            key,
            expiry,
            condition,
        } => {
            let expires_at_ms = expiry.map_or(0, |expiry| expiry.at(now_ms));
            // The decoder refused flags that exclude each other.
            let condition =
                ExpireCondition::from_flags(condition.nx, condition.xx, condition.gt, condition.lt)
                    .unwrap_or_default();
            match engine.expire_if(&key, expires_at_ms, condition) {
                Ok(ExpireOutcome::Written { seq }) => Pending::Write { seq, body: None },
                Ok(ExpireOutcome::NotFound { after_seq: observed }) => {
                    reply(Status::NotFound, Bytes::new(), observed.max(after_seq))
                }
                Ok(ExpireOutcome::Unchanged {
                    current_seq,
                    after_seq: observed,
                }) => reply(
                    Status::ConditionFailed,
                    seq_body(current_seq),
                    observed.max(after_seq),
                ),
                Err(failed) => error(failed.to_string()),
            }
        }
        ExtRequest::Meta { key } => {
            let current = engine.current(&key);
            let after_seq = current.after_seq().max(after_seq);
            if !current.exists() {
                return reply(Status::NotFound, Bytes::new(), after_seq);
            }
            let mut body = BytesMut::with_capacity(24);
            body.put_u64_le(current.seq());
            body.put_u64_le(current.expires_at_ms());
            body.put_u64_le(now_ms);
            reply(Status::Ok, body.freeze(), after_seq)
        }
        ExtRequest::IncrBy { key, delta } => match engine.incr_by(&key, delta, values) {
            Ok(IncrOutcome::Written { value, seq }) => {
                let mut body = BytesMut::with_capacity(16);
                body.put_i64_le(value);
                body.put_u64_le(seq);
                Pending::Write {
                    seq,
                    body: Some(body.freeze()),
                }
            }
            Ok(IncrOutcome::Refused {
                message,
                after_seq: observed,
            }) => reply(Status::Error, Bytes::from(message), observed.max(after_seq)),
            Err(failed) => error(failed.to_string()),
        },
        ExtRequest::MGet { keys } => match engine.mget(&keys, values) {
            Ok((found, observed)) => {
                let mut body = BytesMut::with_capacity(4 + 5 * found.len());
                body.put_u32_le(found.len() as u32);
                for value in &found {
                    match value {
                        None => body.put_u8(0),
                        Some(value) => {
                            body.put_u8(1);
                            body.put_u32_le(value.len() as u32);
                            body.put_slice(value);
                        }
                    }
                    if body.len() > reply_body_max {
                        return error(format!(
                            "the values of these {} keys do not fit one reply of {reply_body_max} bytes (--max-frame-bytes): ask for fewer keys",
                            keys.len()
                        ));
                    }
                }
                reply(Status::Ok, body.freeze(), observed.max(after_seq))
            }
            Err(message) => error(format!("reading a value failed: {message}")),
        },
        ExtRequest::MSet { pairs } => {
            let ops: Vec<TxnOp> = pairs
                .into_iter()
                .map(|(key, value)| TxnOp {
                    op: Op::Set,
                    key,
                    value,
                    expires_at_ms: 0,
                })
                .collect();
            match engine.txn(&[], &ops, &[], values) {
                Ok(TxnOutcome::Done { seq, .. }) => Pending::Write { seq, body: None },
                Ok(TxnOutcome::Refused { message, .. }) => error(message),
                Err(failed) => error(failed.to_string()),
            }
        }
        ExtRequest::Txn(txn) => accept_txn(engine, txn, after_seq, values),
        ExtRequest::Watch { .. } => error(
            "WATCH is served on a connection of its own and cannot be pipelined behind other requests".to_string(),
        ),
    }
}

fn accept_txn(engine: &mut Engine, txn: Txn, after_seq: u64, values: &mut Values<'_>) -> Pending {
    let now_ms = engine.now_ms();
    let compares: Vec<TxnCompare> = txn
        .compares
        .into_iter()
        .map(|compare| TxnCompare {
            key: compare.key,
            cmp: match compare.op {
                CompareOp::Eq => Cmp::Eq,
                CompareOp::Ne => Cmp::Ne,
                CompareOp::Lt => Cmp::Lt,
                CompareOp::Gt => Cmp::Gt,
            },
            operand: match compare.operand {
                Operand::Seq(seq) => EngineOperand::Seq(seq),
                Operand::Value(value) => EngineOperand::Value(value),
                Operand::Exists(exists) => EngineOperand::Exists(exists),
            },
        })
        .collect();
    let ops = |writes: Vec<TxnWrite>| -> Vec<TxnOp> {
        writes
            .into_iter()
            .map(|write| match write {
                TxnWrite::Set { key, value, expiry } => TxnOp {
                    op: Op::Set,
                    key,
                    value,
                    expires_at_ms: expiry.map_or(0, |expiry| expiry.at(now_ms)),
                },
                TxnWrite::Del { key } => TxnOp {
                    op: Op::Del,
                    key,
                    value: Bytes::new(),
                    expires_at_ms: 0,
                },
                TxnWrite::Expire { key, expiry } => TxnOp {
                    op: Op::ExpireAt,
                    key,
                    value: Bytes::new(),
                    expires_at_ms: expiry.map_or(0, |expiry| expiry.at(now_ms)),
                },
            })
            .collect()
    };
    let (success, failure) = (ops(txn.success), ops(txn.failure));
    match engine.txn(&compares, &success, &failure, values) {
        Ok(TxnOutcome::Done {
            succeeded,
            seq,
            after_seq: observed,
        }) => {
            let mut body = BytesMut::with_capacity(9);
            body.put_u8(u8::from(succeeded));
            body.put_u64_le(seq);
            match seq {
                0 => reply(Status::Ok, body.freeze(), observed.max(after_seq)),
                seq => Pending::Write {
                    seq,
                    body: Some(body.freeze()),
                },
            }
        }
        Ok(TxnOutcome::Refused {
            message,
            after_seq: observed,
        }) => reply(Status::Error, Bytes::from(message), observed.max(after_seq)),
        Err(failed) => error(failed.to_string()),
    }
}
