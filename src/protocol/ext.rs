//! The operations added to version 1 of the protocol (ops `0x09`–`0x1f`): expiry, counters,
//! conditional writes, batches, transactions and watch. Their values and byte layouts; the
//! frame and the ops `0x01`–`0x08` are `request.rs`'s and do not change.
//!
//! | op   | name   | flags                                   | body                                                |
//! |------|--------|-----------------------------------------|-----------------------------------------------------|
//! | 0x09 | SETX   | 0x01 NX, 0x02 XX, 0x04 IF_SEQ, 0x08 KEEP_TTL, 0x10 ABSOLUTE | `expiry_ms` u64, `if_seq` u64, `klen` u32, key, value |
//! | 0x0a | EXPIRE | 0x01 PERSIST, 0x10 ABSOLUTE, 0x02 NX, 0x04 XX, 0x08 GT, 0x20 LT | `expiry_ms` u64, key |
//! | 0x0b | META   | none                                    | key                                                 |
//! | 0x0c | INCRBY | none                                    | `delta` i64, key                                    |
//! | 0x0d | MGET   | none                                    | `count` u32, then per key `klen` u32, key           |
//! | 0x0e | MSET   | none                                    | `count` u32, then per pair `klen` u32, key, `vlen` u32, value |
//! | 0x0f | TXN    | none                                    | compares, then the writes of each branch (below)    |
//! | 0x10 | WATCH  | 0x01 PREFIX                             | `from_seq` u64, key (or prefix)                     |
//!
//! TXN's body: `ncmp` u32, then per compare `target` u8 (1 seq, 2 value, 3 exists), `cmp` u8
//! (1 =, 2 !=, 3 <, 4 >), `klen` u32, key, `olen` u32, operand (seq: u64; value: bytes;
//! exists: one byte, 0 or 1); then `nsuccess` u32 and that many writes, `nfailure` u32 and that
//! many writes. A write: `op` u8 (1 set, 2 del, 4 expire), `flags` u8 (0x01 has expiry,
//! 0x02 absolute), `expiry_ms` u64, `klen` u32, `vlen` u32, key, value.

use bytes::{Bytes, BytesMut};

use super::bounds::{check_key, check_value, RequestError, RequestLimits};
use super::frame::{self, Header};

pub mod op {
    pub const SETX: u8 = 0x09;
    pub const EXPIRE: u8 = 0x0a;
    pub const META: u8 = 0x0b;
    pub const INCRBY: u8 = 0x0c;
    pub const MGET: u8 = 0x0d;
    pub const MSET: u8 = 0x0e;
    pub const TXN: u8 = 0x0f;
    pub const WATCH: u8 = 0x10;
}

pub mod flag {
    /// SETX: write only if the key does not exist.
    pub const NX: u8 = 0x01;
    /// SETX: write only if the key exists.
    pub const XX: u8 = 0x02;
    /// SETX: write only if the key's seq is `if_seq` (0: the key must not exist).
    pub const IF_SEQ: u8 = 0x04;
    /// SETX: keep the key's expiry (`expiry_ms` must be 0).
    pub const KEEP_TTL: u8 = 0x08;
    /// SETX, EXPIRE: `expiry_ms` is a unix time in ms, not a duration from now.
    pub const ABSOLUTE: u8 = 0x10;
    /// EXPIRE: remove the key's expiry (`expiry_ms` must be 0).
    pub const PERSIST: u8 = 0x01;
    /// EXPIRE: only if the key has no expiry (Redis 7's NX).
    pub const EXPIRE_NX: u8 = 0x02;
    /// EXPIRE: only if the key has an expiry (XX).
    pub const EXPIRE_XX: u8 = 0x04;
    /// EXPIRE: only if the new expiry is later than the key's (GT; none counts as never).
    pub const EXPIRE_GT: u8 = 0x08;
    /// EXPIRE: only if the new expiry is earlier than the key's (LT; none counts as never).
    pub const EXPIRE_LT: u8 = 0x20;
    /// WATCH: the key is a prefix.
    pub const PREFIX: u8 = 0x01;
}

/// Bounds on the parts of a batch or transaction, so a request's count never sizes an
/// allocation it has not paid for in bytes.
pub const BATCH_KEYS_MAX: usize = 4096;
pub const TXN_COMPARES_MAX: usize = 256;
pub const TXN_WRITES_MAX: usize = 1024;

const U32_BYTES: usize = 4;
const U64_BYTES: usize = 8;

/// When a key expires, as a client said it: a duration from the server's now, or a unix time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    InMs(u64),
    AtUnixMs(u64),
}

impl Expiry {
    /// The unix time in ms at which the key expires, seen from `now_ms`; never 0 (0 means
    /// "never" in the log), so a time of 0 is taken as 1 ms, long past.
    pub fn at(self, now_ms: u64) -> u64 {
        match self {
            Expiry::InMs(ms) => now_ms.saturating_add(ms).max(1),
            Expiry::AtUnixMs(at) => at.max(1),
        }
    }

    fn encode(expiry: Option<Expiry>) -> (u8, u64) {
        match expiry {
            None => (0, 0),
            Some(Expiry::InMs(ms)) => (0, ms),
            Some(Expiry::AtUnixMs(at)) => (flag::ABSOLUTE, at),
        }
    }
}

/// EXPIRE's conditions, Redis 7's NX, XX, GT and LT (none: always). NX goes with no other,
/// GT not with LT, and none with PERSIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireFlags {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
}

impl ExpireFlags {
    fn bits(self) -> u8 {
        [
            (self.nx, flag::EXPIRE_NX),
            (self.xx, flag::EXPIRE_XX),
            (self.gt, flag::EXPIRE_GT),
            (self.lt, flag::EXPIRE_LT),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |bits, (_, bit)| bits | bit)
    }

    fn from_bits(bits: u8) -> ExpireFlags {
        ExpireFlags {
            nx: bits & flag::EXPIRE_NX != 0,
            xx: bits & flag::EXPIRE_XX != 0,
            gt: bits & flag::EXPIRE_GT != 0,
            lt: bits & flag::EXPIRE_LT != 0,
        }
    }
}

/// What a SETX requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    Always,
    /// NX: the key must not exist.
    Absent,
    /// XX: the key must exist.
    Present,
    /// The key's seq must be this (0: the key must not exist).
    Seq(u64),
}

/// SET's options, shared by the native SETX and RESP's SET (EX/PX/EXAT/PXAT/NX/XX/KEEPTTL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// None: the key has no expiry afterwards (unless `keep_ttl`).
    pub expiry: Option<Expiry>,
    pub keep_ttl: bool,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareTarget {
    Seq,
    Value,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Gt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Seq(u64),
    Value(Bytes),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub operand: Operand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnWrite {
    Set {
        key: Bytes,
        value: Bytes,
        expiry: Option<Expiry>,
    },
    Del {
        key: Bytes,
    },
    /// `expiry` None: remove the key's expiry (PERSIST).
    Expire {
        key: Bytes,
        expiry: Option<Expiry>,
    },
}

impl TxnWrite {
    pub fn key(&self) -> &Bytes {
        match self {
            TxnWrite::Set { key, .. } | TxnWrite::Del { key } | TxnWrite::Expire { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnWrite>,
    pub failure: Vec<TxnWrite>,
}

/// The requests of this module, as `Request` carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtRequest {
    SetX {
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    },
    /// `expiry` None: PERSIST.
    Expire {
        key: Bytes,
        expiry: Option<Expiry>,
        condition: ExpireFlags,
    },
    Meta {
        key: Bytes,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
    },
    Txn(Txn),
    Watch {
        key: Bytes,
        prefix: bool,
        from_seq: u64,
    },
}

impl ExtRequest {
    pub fn name(&self) -> &'static str {
        match self {
            ExtRequest::SetX { .. } => "SETX",
            ExtRequest::Expire { .. } => "EXPIRE",
            ExtRequest::Meta { .. } => "META",
            ExtRequest::IncrBy { .. } => "INCRBY",
            ExtRequest::MGet { .. } => "MGET",
            ExtRequest::MSet { .. } => "MSET",
            ExtRequest::Txn(_) => "TXN",
            ExtRequest::Watch { .. } => "WATCH",
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self,
            ExtRequest::SetX { .. }
                | ExtRequest::Expire { .. }
                | ExtRequest::IncrBy { .. }
                | ExtRequest::MSet { .. }
                | ExtRequest::Txn(_)
        )
    }

    pub fn is_ext_op(kind: u8) -> bool {
        (op::SETX..=op::WATCH).contains(&kind)
    }

    pub fn decode(
        kind: u8,
        flags: u8,
        body: &Bytes,
        limits: RequestLimits,
    ) -> Result<ExtRequest, RequestError> {
        let mut at = Reader {
            body,
            at: 0,
            name: "",
        };
        let request = match kind {
            op::SETX => {
                at.name = "SETX";
                known_flags(
                    "SETX",
                    flags,
                    flag::NX | flag::XX | flag::IF_SEQ | flag::KEEP_TTL | flag::ABSOLUTE,
                )?;
                let conditions = [flag::NX, flag::XX, flag::IF_SEQ]
                    .iter()
                    .filter(|f| flags & **f != 0)
                    .count();
                if conditions > 1 {
                    return Err(invalid("SETX takes at most one of NX, XX and IF_SEQ"));
                }
                let expiry_ms = at.u64("expiry_ms needs 8 bytes")?;
                let if_seq = at.u64("if_seq needs 8 bytes")?;
                let key = at.sized("klen needs 4 bytes", "klen runs past the end")?;
                let value = at.rest();
                check_key(&key, limits)?;
                check_value(&value, limits)?;
                let keep_ttl = flags & flag::KEEP_TTL != 0;
                if keep_ttl && (expiry_ms != 0 || flags & flag::ABSOLUTE != 0) {
                    return Err(invalid("SETX with KEEP_TTL takes no expiry"));
                }
                let condition = if flags & flag::NX != 0 {
                    Condition::Absent
                } else if flags & flag::XX != 0 {
                    Condition::Present
                } else if flags & flag::IF_SEQ != 0 {
                    Condition::Seq(if_seq)
                } else {
                    Condition::Always
                };
                ExtRequest::SetX {
                    key,
                    value,
                    options: SetOptions {
                        expiry: expiry_of(flags & flag::ABSOLUTE != 0, expiry_ms),
                        keep_ttl,
                        condition,
                    },
                }
            }
            op::EXPIRE => {
                at.name = "EXPIRE";
                let conditions =
                    flag::EXPIRE_NX | flag::EXPIRE_XX | flag::EXPIRE_GT | flag::EXPIRE_LT;
                known_flags("EXPIRE", flags, flag::PERSIST | flag::ABSOLUTE | conditions)?;
                let expiry_ms = at.u64("expiry_ms needs 8 bytes")?;
                let key = at.rest();
                check_key(&key, limits)?;
                let condition = ExpireFlags::from_bits(flags);
                if condition.nx && (condition.xx || condition.gt || condition.lt) {
                    return Err(invalid("EXPIRE's NX goes with none of XX, GT and LT"));
                }
                if condition.gt && condition.lt {
                    return Err(invalid("EXPIRE takes GT or LT, not both"));
                }
                if flags & flag::PERSIST != 0 && flags & conditions != 0 {
                    return Err(invalid("EXPIRE with PERSIST takes no NX, XX, GT or LT"));
                }
                let expiry = if flags & flag::PERSIST != 0 {
                    if expiry_ms != 0 || flags & flag::ABSOLUTE != 0 {
                        return Err(invalid("EXPIRE with PERSIST takes no expiry"));
                    }
                    None
                } else if flags & flag::ABSOLUTE != 0 {
                    Some(Expiry::AtUnixMs(expiry_ms))
                } else {
                    Some(Expiry::InMs(expiry_ms))
                };
                ExtRequest::Expire {
                    key,
                    expiry,
                    condition,
                }
            }
            op::META => {
                known_flags("META", flags, 0)?;
                check_key(body, limits)?;
                ExtRequest::Meta { key: body.clone() }
            }
            op::INCRBY => {
                at.name = "INCRBY";
                known_flags("INCRBY", flags, 0)?;
                let delta = at.u64("delta needs 8 bytes")? as i64;
                let key = at.rest();
                check_key(&key, limits)?;
                ExtRequest::IncrBy { key, delta }
            }
            op::MGET => {
                at.name = "MGET";
                known_flags("MGET", flags, 0)?;
                let count = at.count(BATCH_KEYS_MAX, U32_BYTES + 1)?;
                let mut keys = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = at.sized("klen needs 4 bytes", "klen runs past the end")?;
                    check_key(&key, limits)?;
                    keys.push(key);
                }
                at.end()?;
                ExtRequest::MGet { keys }
            }
            op::MSET => {
                at.name = "MSET";
                known_flags("MSET", flags, 0)?;
                let count = at.count(BATCH_KEYS_MAX, 2 * U32_BYTES + 1)?;
                let mut pairs = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = at.sized("klen needs 4 bytes", "klen runs past the end")?;
                    let value = at.sized("vlen needs 4 bytes", "vlen runs past the end")?;
                    check_key(&key, limits)?;
                    check_value(&value, limits)?;
                    pairs.push((key, value));
                }
                at.end()?;
                ExtRequest::MSet { pairs }
            }
            op::TXN => {
                at.name = "TXN";
                known_flags("TXN", flags, 0)?;
                ExtRequest::Txn(decode_txn(&mut at, limits)?)
            }
            op::WATCH => {
                at.name = "WATCH";
                known_flags("WATCH", flags, flag::PREFIX)?;
                let from_seq = at.u64("from_seq needs 8 bytes")?;
                let key = at.rest();
                let prefix = flags & flag::PREFIX != 0;
                // A prefix may be empty (every key); a key may not.
                if !prefix || !key.is_empty() {
                    check_key(&key, limits)?;
                }
                ExtRequest::Watch {
                    key,
                    prefix,
                    from_seq,
                }
            }
            _ => return Err(RequestError::UnknownOp { op: kind }),
        };
        Ok(request)
    }

    /// Appends this request as one frame with `id`.
    pub fn encode(&self, id: u64, dst: &mut BytesMut) {
        let header = |kind, flags| Header { kind, flags, id };
        match self {
            ExtRequest::SetX {
                key,
                value,
                options,
            } => {
                let (mut flags, expiry_ms) = Expiry::encode(options.expiry);
                let mut if_seq = 0;
                match options.condition {
                    Condition::Always => {}
                    Condition::Absent => flags |= flag::NX,
                    Condition::Present => flags |= flag::XX,
                    Condition::Seq(seq) => {
                        flags |= flag::IF_SEQ;
                        if_seq = seq;
                    }
                }
                if options.keep_ttl {
                    flags |= flag::KEEP_TTL;
                }
                frame::encode(
                    dst,
                    header(op::SETX, flags),
                    &[
                        &expiry_ms.to_le_bytes(),
                        &if_seq.to_le_bytes(),
                        &len32(key),
                        key,
                        value,
                    ],
                )
            }
            ExtRequest::Expire {
                key,
                expiry,
                condition,
            } => {
                let (flags, expiry_ms) = match expiry {
                    None => (flag::PERSIST, 0),
                    Some(expiry) => Expiry::encode(Some(*expiry)),
                };
                let flags = flags | condition.bits();
                frame::encode(
                    dst,
                    header(op::EXPIRE, flags),
                    &[&expiry_ms.to_le_bytes(), key],
                )
            }
            ExtRequest::Meta { key } => frame::encode(dst, header(op::META, 0), &[key]),
            ExtRequest::IncrBy { key, delta } => {
                frame::encode(dst, header(op::INCRBY, 0), &[&delta.to_le_bytes(), key])
            }
            ExtRequest::MGet { keys } => {
                let mut body = Vec::new();
                body.extend_from_slice(&len32_of(keys.len()));
                for key in keys {
                    put_sized(&mut body, key);
                }
                frame::encode(dst, header(op::MGET, 0), &[&body])
            }
            ExtRequest::MSet { pairs } => {
                let mut body = Vec::new();
                body.extend_from_slice(&len32_of(pairs.len()));
                for (key, value) in pairs {
                    put_sized(&mut body, key);
                    put_sized(&mut body, value);
                }
                frame::encode(dst, header(op::MSET, 0), &[&body])
            }
            ExtRequest::Txn(txn) => {
                let mut body = Vec::new();
                encode_txn(&mut body, txn);
                frame::encode(dst, header(op::TXN, 0), &[&body])
            }
            ExtRequest::Watch {
                key,
                prefix,
                from_seq,
            } => {
                let flags = if *prefix { flag::PREFIX } else { 0 };
                frame::encode(
                    dst,
                    header(op::WATCH, flags),
                    &[&from_seq.to_le_bytes(), key],
                )
            }
        }
    }
}

fn expiry_of(absolute: bool, expiry_ms: u64) -> Option<Expiry> {
    match (absolute, expiry_ms) {
        (true, at) => Some(Expiry::AtUnixMs(at)),
        (false, 0) => None,
        (false, ms) => Some(Expiry::InMs(ms)),
    }
}

fn decode_txn(at: &mut Reader<'_>, limits: RequestLimits) -> Result<Txn, RequestError> {
    let count = at.count(TXN_COMPARES_MAX, 2 + 2 * U32_BYTES + 1)?;
    let mut compares = Vec::with_capacity(count);
    for _ in 0..count {
        let target = at.u8("a compare's target needs 1 byte")?;
        let op = match at.u8("a compare's cmp needs 1 byte")? {
            1 => CompareOp::Eq,
            2 => CompareOp::Ne,
            3 => CompareOp::Lt,
            4 => CompareOp::Gt,
            other => {
                return Err(invalid_owned(format!(
                    "TXN compare cmp {other} is unknown: 1 =, 2 !=, 3 <, 4 >"
                )))
            }
        };
        let key = at.sized("klen needs 4 bytes", "klen runs past the end")?;
        check_key(&key, limits)?;
        let operand = at.sized("olen needs 4 bytes", "olen runs past the end")?;
        let operand = match target {
            1 if operand.len() == U64_BYTES => {
                Operand::Seq(u64::from_le_bytes(operand[..].try_into().expect("8 bytes")))
            }
            2 => {
                check_value(&operand, limits)?;
                Operand::Value(operand)
            }
            3 if operand.len() == 1 && operand[0] <= 1 => Operand::Exists(operand[0] == 1),
            1 => return Err(invalid("TXN compare of a seq takes an 8-byte operand")),
            3 => {
                return Err(invalid(
                    "TXN compare of existence takes a 1-byte operand, 0 or 1",
                ))
            }
            other => {
                return Err(invalid_owned(format!(
                    "TXN compare target {other} is unknown: 1 seq, 2 value, 3 exists"
                )))
            }
        };
        if matches!(operand, Operand::Exists(_)) && !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(invalid("TXN compare of existence takes only = or !="));
        }
        compares.push(Compare { key, op, operand });
    }
    let success = decode_writes(at, limits)?;
    let failure = decode_writes(at, limits)?;
    at.end()?;
    Ok(Txn {
        compares,
        success,
        failure,
    })
}

fn decode_writes(
    at: &mut Reader<'_>,
    limits: RequestLimits,
) -> Result<Vec<TxnWrite>, RequestError> {
    let count = at.count(TXN_WRITES_MAX, 2 + U64_BYTES + 2 * U32_BYTES + 1)?;
    let mut writes = Vec::with_capacity(count);
    for _ in 0..count {
        let op = at.u8("a write's op needs 1 byte")?;
        let flags = at.u8("a write's flags need 1 byte")?;
        if flags & !0x03 != 0 {
            return Err(invalid(
                "TXN write flags: only 0x01 (has expiry) and 0x02 (absolute)",
            ));
        }
        let expiry_ms = at.u64("a write's expiry_ms needs 8 bytes")?;
        let key_len = at.u32("klen needs 4 bytes")? as usize;
        let value_len = at.u32("vlen needs 4 bytes")? as usize;
        let key = at.take(key_len, "klen runs past the end")?;
        let value = at.take(value_len, "vlen runs past the end")?;
        check_key(&key, limits)?;
        check_value(&value, limits)?;
        let expiry = match flags & 0x01 {
            0 => None,
            _ if flags & 0x02 != 0 => Some(Expiry::AtUnixMs(expiry_ms)),
            _ => Some(Expiry::InMs(expiry_ms)),
        };
        let write = match op {
            1 => TxnWrite::Set { key, value, expiry },
            2 if value.is_empty() && expiry.is_none() => TxnWrite::Del { key },
            4 if value.is_empty() => TxnWrite::Expire { key, expiry },
            2 | 4 => {
                return Err(invalid(
                    "TXN del and expire writes take no value (and del no expiry)",
                ))
            }
            other => {
                return Err(invalid_owned(format!(
                    "TXN write op {other} is unknown: 1 set, 2 del, 4 expire"
                )))
            }
        };
        writes.push(write);
    }
    Ok(writes)
}

fn encode_txn(body: &mut Vec<u8>, txn: &Txn) {
    body.extend_from_slice(&len32_of(txn.compares.len()));
    for compare in &txn.compares {
        let (target, operand): (u8, Vec<u8>) = match &compare.operand {
            Operand::Seq(seq) => (1, seq.to_le_bytes().to_vec()),
            Operand::Value(value) => (2, value.to_vec()),
            Operand::Exists(exists) => (3, vec![u8::from(*exists)]),
        };
        let op = match compare.op {
            CompareOp::Eq => 1,
            CompareOp::Ne => 2,
            CompareOp::Lt => 3,
            CompareOp::Gt => 4,
        };
        body.push(target);
        body.push(op);
        put_sized(body, &compare.key);
        put_sized(body, &operand);
    }
    for writes in [&txn.success, &txn.failure] {
        body.extend_from_slice(&len32_of(writes.len()));
        for write in writes {
            let (op, expiry, value): (u8, Option<Expiry>, &[u8]) = match write {
                TxnWrite::Set { value, expiry, .. } => (1, *expiry, value),
                TxnWrite::Del { .. } => (2, None, &[]),
                TxnWrite::Expire { expiry, .. } => (4, *expiry, &[]),
            };
            let (flags, expiry_ms) = match expiry {
                None => (0, 0),
                Some(Expiry::InMs(ms)) => (0x01, ms),
                Some(Expiry::AtUnixMs(at)) => (0x03, at),
            };
            body.push(op);
            body.push(flags);
            body.extend_from_slice(&expiry_ms.to_le_bytes());
            body.extend_from_slice(&len32(write.key()));
            body.extend_from_slice(&len32(value));
            body.extend_from_slice(write.key());
            body.extend_from_slice(value);
        }
    }
}

fn len32(bytes: &[u8]) -> [u8; 4] {
    len32_of(bytes.len())
}

fn len32_of(len: usize) -> [u8; 4] {
    u32::try_from(len).expect("fits u32").to_le_bytes()
}

fn put_sized(body: &mut Vec<u8>, bytes: &[u8]) {
    body.extend_from_slice(&len32(bytes));
    body.extend_from_slice(bytes);
}

/// A cursor over a request body that turns running out of bytes into `BodyTooShort`.
struct Reader<'a> {
    body: &'a Bytes,
    at: usize,
    name: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, len: usize, need: &'static str) -> Result<Bytes, RequestError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.body.len())
            .ok_or(RequestError::BodyTooShort {
                name: self.name,
                len: self.body.len(),
                need,
            })?;
        let bytes = self.body.slice(self.at..end);
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self, need: &'static str) -> Result<u8, RequestError> {
        Ok(self.take(1, need)?[0])
    }

    fn u32(&mut self, need: &'static str) -> Result<u32, RequestError> {
        let bytes = self.take(U32_BYTES, need)?;
        Ok(u32::from_le_bytes(bytes[..].try_into().expect("4 bytes")))
    }

    fn u64(&mut self, need: &'static str) -> Result<u64, RequestError> {
        let bytes = self.take(U64_BYTES, need)?;
        Ok(u64::from_le_bytes(bytes[..].try_into().expect("8 bytes")))
    }

    fn sized(&mut self, need_len: &'static str, need: &'static str) -> Result<Bytes, RequestError> {
        let len = self.u32(need_len)? as usize;
        self.take(len, need)
    }

    fn rest(&mut self) -> Bytes {
        let rest = self.body.slice(self.at..);
        self.at = self.body.len();
        rest
    }

    /// A count of items of at least `item_bytes_min` bytes each: at most `max`, and no more
    /// than the body could hold.
    fn count(&mut self, max: usize, item_bytes_min: usize) -> Result<usize, RequestError> {
        let count = self.u32("count needs 4 bytes")? as usize;
        if count > max {
            return Err(invalid_owned(format!(
                "{} carries {count} items, over the limit of {max}",
                self.name
            )));
        }
        if count.saturating_mul(item_bytes_min) > self.body.len() - self.at {
            return Err(RequestError::BodyTooShort {
                name: self.name,
                len: self.body.len(),
                need: "count runs past the end",
            });
        }
        Ok(count)
    }

    fn end(&self) -> Result<(), RequestError> {
        match self.body.len() - self.at {
            0 => Ok(()),
            extra => Err(invalid_owned(format!(
                "{} body has {extra} bytes after its last item",
                self.name
            ))),
        }
    }
}

fn known_flags(name: &'static str, flags: u8, known: u8) -> Result<(), RequestError> {
    match flags & !known {
        0 => Ok(()),
        unknown => Err(RequestError::UnknownFlags {
            name,
            flags: unknown,
        }),
    }
}

fn invalid(message: &'static str) -> RequestError {
    RequestError::Invalid(message.to_string())
}

fn invalid_owned(message: String) -> RequestError {
    RequestError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        key_bytes_max: 8,
        value_bytes_max: 16,
    };

    fn round_trip(request: &ExtRequest) -> Result<ExtRequest, RequestError> {
        let mut buf = BytesMut::new();
        request.encode(5, &mut buf);
        let frame = frame::decode(&mut buf, 4096).unwrap().unwrap();
        ExtRequest::decode(frame.header.kind, frame.header.flags, &frame.body, LIMITS)
    }

    #[test]
    fn every_ext_request_round_trips() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let requests = [
            ExtRequest::SetX {
                key: b("k"),
                value: b("v"),
                options: SetOptions::default(),
            },
            ExtRequest::SetX {
                key: b("k"),
                value: b(""),
                options: SetOptions {
                    expiry: Some(Expiry::InMs(1500)),
                    keep_ttl: false,
                    condition: Condition::Seq(0),
                },
            },
            ExtRequest::SetX {
                key: b("k"),
                value: b("v"),
                options: SetOptions {
                    expiry: None,
                    keep_ttl: true,
                    condition: Condition::Present,
                },
            },
            ExtRequest::SetX {
                key: b("k"),
                value: b("v"),
                options: SetOptions {
                    expiry: Some(Expiry::AtUnixMs(77)),
                    keep_ttl: false,
                    condition: Condition::Absent,
                },
            },
            ExtRequest::Expire {
                key: b("k"),
                expiry: None,
                condition: ExpireFlags::default(),
            },
            ExtRequest::Expire {
                key: b("k"),
                expiry: Some(Expiry::InMs(9)),
                condition: ExpireFlags::default(),
            },
            ExtRequest::Expire {
                key: b("k"),
                expiry: Some(Expiry::AtUnixMs(9)),
                condition: ExpireFlags {
                    xx: true,
                    lt: true,
                    ..ExpireFlags::default()
                },
            },
            ExtRequest::Meta { key: b("k") },
            ExtRequest::IncrBy {
                key: b("n"),
                delta: -3,
            },
            ExtRequest::MGet {
                keys: vec![b("a"), b("b")],
            },
            ExtRequest::MSet {
                pairs: vec![(b("a"), b("1")), (b("b"), b(""))],
            },
            ExtRequest::Txn(Txn {
                compares: vec![
                    Compare {
                        key: b("a"),
                        op: CompareOp::Eq,
                        operand: Operand::Seq(4),
                    },
                    Compare {
                        key: b("b"),
                        op: CompareOp::Gt,
                        operand: Operand::Value(b("x")),
                    },
                    Compare {
                        key: b("c"),
                        op: CompareOp::Ne,
                        operand: Operand::Exists(true),
                    },
                ],
                success: vec![
                    TxnWrite::Set {
                        key: b("a"),
                        value: b("1"),
                        expiry: Some(Expiry::InMs(10)),
                    },
                    TxnWrite::Del { key: b("b") },
                ],
                failure: vec![TxnWrite::Expire {
                    key: b("c"),
                    expiry: Some(Expiry::AtUnixMs(3)),
                }],
            }),
            ExtRequest::Txn(Txn::default()),
            ExtRequest::Watch {
                key: b(""),
                prefix: true,
                from_seq: 0,
            },
            ExtRequest::Watch {
                key: b("k"),
                prefix: false,
                from_seq: 12,
            },
        ];
        for request in requests {
            assert_eq!(round_trip(&request).as_ref(), Ok(&request));
        }
    }

    /// The TXN example of docs/protocol.md, byte for byte.
    #[test]
    fn the_documented_txn_example() {
        let txn = ExtRequest::Txn(Txn {
            compares: vec![Compare {
                key: Bytes::from_static(b"a"),
                op: CompareOp::Eq,
                operand: Operand::Seq(3),
            }],
            success: vec![TxnWrite::Set {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(b"x"),
                expiry: None,
            }],
            failure: vec![],
        });
        let mut buf = BytesMut::new();
        txn.encode(1, &mut buf);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "3d0000000f000100000000000000\
             0100000001010100000061080000000300000000000000\
             010000000100000000000000000001000000010000006178\
             00000000"
        );
    }

    #[test]
    fn bad_ext_requests_are_refused_without_allocating() {
        let raw = |kind, flags, body: &[u8]| {
            ExtRequest::decode(kind, flags, &Bytes::copy_from_slice(body), LIMITS).unwrap_err()
        };
        // A count of 4 billion in a short body.
        assert!(matches!(
            raw(op::MGET, 0, &[0xff, 0xff, 0xff, 0xff]),
            RequestError::Invalid(_)
        ));
        assert!(matches!(
            raw(op::MGET, 0, &[0x10, 0, 0, 0]),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::SETX, flag::NX | flag::XX, &[0; 20]),
            RequestError::Invalid(_)
        ));
        assert!(matches!(
            raw(op::SETX, 0, &[0; 10]),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::INCRBY, 0, &[0; 8]),
            RequestError::KeyEmpty { .. }
        ));
        assert!(matches!(
            raw(op::TXN, 0, &[0, 0, 0, 0, 0, 0, 0, 0]),
            RequestError::BodyTooShort { .. }
        ));
        assert!(matches!(
            raw(op::WATCH, 0x02, &[0; 9]),
            RequestError::UnknownFlags { .. }
        ));
    }
}
