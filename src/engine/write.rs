//! Writes that decide on the key's current state: SET with a condition and an expiry, EXPIRE
//! and PERSIST, INCRBY, MGET (a read of many keys at one moment) and transactions. Each is
//! decided against the newest state (pending writes included, expired keys absent) and, if it
//! writes, becomes exactly one record, so it is all or nothing in the log.
//!
//! The RESP port's commands map onto these: SET EX/PX/EXAT/PXAT/NX/XX/KEEPTTL onto
//! `set_with`, EXPIRE/PEXPIRE/EXPIREAT/PERSIST onto `expire_at`, TTL/PTTL onto `current`,
//! INCR/INCRBY/DECR/DECRBY onto `incr_by`, MULTI/EXEC with WATCH onto `txn` (seq compares).

use bytes::Bytes;

use super::{counter, txn, Current, Engine, Values, WriteFailed};
use crate::limits::RECORD_LEN_MAX;
use crate::wal::record::{self, Op};

/// What a conditional SET requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    Always,
    /// NX
    Absent,
    /// XX
    Present,
    /// The key's seq is this (0: the key does not exist).
    Seq(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// Unix ms; 0: no expiry.
    pub expires_at_ms: u64,
    /// Keep the key's current expiry (`expires_at_ms` is ignored).
    pub keep_ttl: bool,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    Written {
        seq: u64,
    },
    /// Nothing written; the key's seq (0: absent), and the pending write it observed.
    ConditionFailed {
        current_seq: u64,
        after_seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireOutcome {
    Written {
        seq: u64,
    },
    NotFound {
        after_seq: u64,
    },
    /// PERSIST of a key that has no expiry: nothing to write.
    Unchanged {
        current_seq: u64,
        after_seq: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncrOutcome {
    Written {
        value: i64,
        seq: u64,
    },
    /// Redis's error text; answered once `after_seq` is durable.
    Refused {
        message: String,
        after_seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
}

impl Cmp {
    fn holds<T: Ord + ?Sized>(self, actual: &T, operand: &T) -> bool {
        match self {
            Cmp::Eq => actual == operand,
            Cmp::Ne => actual != operand,
            Cmp::Lt => actual < operand,
            Cmp::Gt => actual > operand,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// The key's seq (0: absent).
    Seq(u64),
    /// The key's value (an absent key has none: every compare of its value fails).
    Value(Bytes),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCompare {
    pub key: Bytes,
    pub cmp: Cmp,
    pub operand: Operand,
}

/// One write of a transaction: `Op::Set` (value, expiry), `Op::Del`, or `Op::ExpireAt`
/// (`expires_at_ms` 0: remove the expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOp {
    pub op: Op,
    pub key: Bytes,
    pub value: Bytes,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// `succeeded`: every compare held. `seq`: the record written, 0 if the branch wrote
    /// nothing. `after_seq`: the newest pending write the compares observed.
    Done {
        succeeded: bool,
        seq: u64,
        after_seq: u64,
    },
    Refused {
        message: String,
        after_seq: u64,
    },
}

/// The value of the newest state of a key, read through `values` if it is in the log.
fn value_of(current: &Current, values: &mut Values<'_>) -> Result<Option<Bytes>, String> {
    match current {
        Current::Absent { .. } => Ok(None),
        Current::Value { value, .. } => Ok(Some(value.clone())),
        Current::Stored { location, .. } => values(*location).map(Some),
    }
}

impl Engine {
    /// SET with options: the condition is judged against the newest state.
    pub fn set_with(
        &mut self,
        key: &[u8],
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, WriteFailed> {
        self.check_writable()?;
        if options.condition == Condition::Always && !options.keep_ttl {
            // A plain SET: nothing to judge, so no lookup (RESP's SET comes this way).
            let seq = self.write(Op::Set, key, value, options.expires_at_ms)?;
            return Ok(SetOutcome::Written { seq });
        }
        let current = self.current(key);
        let holds = match options.condition {
            Condition::Always => true,
            Condition::Absent => !current.exists(),
            Condition::Present => current.exists(),
            Condition::Seq(seq) => current.seq() == seq,
        };
        if !holds {
            return Ok(SetOutcome::ConditionFailed {
                current_seq: current.seq(),
                after_seq: current.after_seq(),
            });
        }
        let expires_at_ms = match options.keep_ttl {
            true => current.expires_at_ms(),
            false => options.expires_at_ms,
        };
        let seq = self.write(Op::Set, key, value, expires_at_ms)?;
        Ok(SetOutcome::Written { seq })
    }

    /// Sets the key's expiry to `expires_at_ms`, or with 0 removes it (PERSIST). A time
    /// already past makes the key invisible at once (active expiry then removes it).
    pub fn expire_at(
        &mut self,
        key: &[u8],
        expires_at_ms: u64,
    ) -> Result<ExpireOutcome, WriteFailed> {
        self.check_writable()?;
        let current = self.current(key);
        if !current.exists() {
            return Ok(ExpireOutcome::NotFound {
                after_seq: current.after_seq(),
            });
        }
        if expires_at_ms == 0 && current.expires_at_ms() == 0 {
            return Ok(ExpireOutcome::Unchanged {
                current_seq: current.seq(),
                after_seq: current.after_seq(),
            });
        }
        let seq = self.write(Op::ExpireAt, key, Bytes::new(), expires_at_ms)?;
        Ok(ExpireOutcome::Written { seq })
    }

    /// Adds `delta` to the integer at `key` (absent: 0), keeping the key's expiry.
    pub fn incr_by(
        &mut self,
        key: &[u8],
        delta: i64,
        values: &mut Values<'_>,
    ) -> Result<IncrOutcome, WriteFailed> {
        self.check_writable()?;
        let current = self.current(key);
        let after_seq = current.after_seq();
        let refused = |message: String| Ok(IncrOutcome::Refused { message, after_seq });
        // A value longer than any integer is not read at all.
        let too_long =
            matches!(&current, Current::Stored { location, .. } if location.value_len > 20);
        if too_long {
            return refused(counter::NOT_AN_INTEGER.to_string());
        }
        let old = match value_of(&current, values) {
            Ok(old) => old,
            Err(message) => return refused(message),
        };
        let new = match counter::add(old.as_deref(), delta) {
            Ok(new) => new,
            Err(message) => return refused(message.to_string()),
        };
        let seq = self.write(
            Op::Set,
            key,
            Bytes::from(new.to_string()),
            current.expires_at_ms(),
        )?;
        self.keep_cached(key, seq);
        Ok(IncrOutcome::Written { value: new, seq })
    }

    /// The values of `keys` at this moment (None: absent), and the newest pending write they
    /// observed.
    pub fn mget(
        &self,
        keys: &[Bytes],
        values: &mut Values<'_>,
    ) -> Result<(Vec<Option<Bytes>>, u64), String> {
        let mut found = Vec::with_capacity(keys.len());
        let mut after_seq = 0;
        for key in keys {
            let current = self.current(key);
            after_seq = after_seq.max(current.after_seq());
            found.push(value_of(&current, values)?);
        }
        Ok((found, after_seq))
    }

    /// A transaction: if every compare holds, `success`'s writes, else `failure`'s, as one
    /// `Txn` record. Writes apply in order on top of each other; a del or expire of a key that
    /// does not exist at that point is left out.
    pub fn txn(
        &mut self,
        compares: &[TxnCompare],
        success: &[TxnOp],
        failure: &[TxnOp],
        values: &mut Values<'_>,
    ) -> Result<TxnOutcome, WriteFailed> {
        self.check_writable()?;
        let mut after_seq = 0;
        let mut succeeded = true;
        for compare in compares {
            let current = self.current(&compare.key);
            after_seq = after_seq.max(current.after_seq());
            let holds = match &compare.operand {
                Operand::Seq(seq) => compare.cmp.holds(&current.seq(), seq),
                Operand::Exists(exists) => compare.cmp.holds(&current.exists(), exists),
                Operand::Value(operand) => match value_of(&current, values) {
                    Ok(Some(value)) => compare.cmp.holds(&value[..], &operand[..]),
                    Ok(None) => false,
                    Err(message) => return Ok(TxnOutcome::Refused { message, after_seq }),
                },
            };
            succeeded &= holds;
        }
        let ops = if succeeded { success } else { failure };
        // The keys' existence as the writes before each one leave it.
        let mut exists: std::collections::HashMap<&[u8], bool> = Default::default();
        let mut body = Vec::new();
        for op in ops {
            let key = &op.key[..];
            let present = match exists.get(key) {
                Some(present) => *present,
                None => {
                    let current = self.current(key);
                    after_seq = after_seq.max(current.after_seq());
                    current.exists()
                }
            };
            match op.op {
                Op::Set => {
                    exists.insert(key, true);
                }
                Op::Del if present => {
                    exists.insert(key, false);
                }
                Op::ExpireAt if present => {
                    if is_past(op.expires_at_ms, self.now_ms) {
                        exists.insert(key, false);
                    }
                }
                Op::Del | Op::ExpireAt => continue,
                other => unreachable!("a transaction writes sets, dels and expires, not {other:?}"),
            }
            txn::put_op(&mut body, op.op, op.expires_at_ms, key, &op.value);
        }
        if body.is_empty() {
            return Ok(TxnOutcome::Done {
                succeeded,
                seq: 0,
                after_seq,
            });
        }
        if record::encoded_bytes(0, body.len()) > RECORD_LEN_MAX as usize {
            return Ok(TxnOutcome::Refused {
                message: format!(
                    "the transaction's writes take {} bytes, over the {RECORD_LEN_MAX} bytes one log record can hold",
                    body.len()
                ),
                after_seq,
            });
        }
        let seq = self.write(Op::Txn, &[], Bytes::from(body), 0)?;
        Ok(TxnOutcome::Done {
            succeeded,
            seq,
            after_seq,
        })
    }
}

fn is_past(expires_at_ms: u64, now_ms: u64) -> bool {
    super::is_expired(expires_at_ms, now_ms)
}
