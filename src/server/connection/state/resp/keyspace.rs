//! Issue 13's string and expiry commands on the RESP port: SET with its options, SETNX,
//! SETEX, PSETEX, GETSET, GETEX, MSETNX; EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (NX, XX, GT,
//! LT), TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST; INCR, INCRBY, DECR, DECRBY; APPEND,
//! GETRANGE, SETRANGE.
//!
//! Each is decided against the engine's newest state and, if it writes, becomes exactly one
//! record through the engine's own calls (`set_with`, `expire_at`, `incr_by`, `txn`, `del`),
//! in the open batch with every other write, so its reply goes only once it is durable, as a
//! plain SET's does. Options and their errors are read by `crate::resp::options`, as Redis
//! 7.0 reads them; this module only applies them.

use bytes::{Bytes, BytesMut};

use super::{arity_error, check_value, old_value, settled, ConnState, Rules};
use crate::command::Pending;
use crate::engine::write::{Cmp, IncrOutcome, Operand};
use crate::engine::{
    Condition, Current, Deleted, Engine, ExpireCondition, ExpireOutcome, SetOptions, SetOutcome,
    TxnCompare, TxnOp, TxnOutcome, Values,
};
use crate::protocol::Status;
use crate::resp::options::{self, ExpireKind, StringCommand, NOT_AN_INTEGER};
use crate::resp::table::Name;
use crate::resp::{reply, Shape, Version};
use crate::wal::record::Op;
use std::time::Instant;

/// What a command needs besides its arguments.
pub(super) struct Context<'c, 'v> {
    pub cost: usize,
    pub engine: &'c mut Engine,
    pub rules: &'c Rules<'c>,
    pub now: Instant,
    pub version: Version,
    pub values: &'c mut Values<'v>,
}

/// The value of a key's newest state: in memory, or read from the log through `values`.
/// `key value ...` as the SETs of one transaction (MSET, MSETNX).
pub(super) fn set_ops(pairs: &[Bytes]) -> Vec<TxnOp> {
    pairs
        .chunks(2)
        .map(|pair| TxnOp {
            op: Op::Set,
            key: pair[0].clone(),
            value: pair[1].clone(),
            expires_at_ms: 0,
        })
        .collect()
}

fn value_of(current: &Current, values: &mut Values<'_>) -> Result<Option<Bytes>, String> {
    match current {
        Current::Absent { .. } => Ok(None),
        Current::Value { value, .. } => Ok(Some(value.clone())),
        Current::Stored { location, .. } => values(*location).map(Some),
    }
}

fn integer_reply(n: i64) -> Bytes {
    let mut out = BytesMut::new();
    reply::integer(&mut out, n);
    out.freeze()
}

impl ConnState<'_> {
    /// One of this module's commands; true if a write joined the open batch.
    pub(super) fn resp_keyspace(&mut self, name: Name, args: &[Bytes], cx: Context) -> bool {
        match name {
            Name::Set => self.set(args, cx),
            Name::SetNx => self.set_nx(args, cx),
            Name::SetEx | Name::PSetEx => {
                let (kind, text) = match name {
                    Name::SetEx => (ExpireKind::Ex, "setex"),
                    _ => (ExpireKind::Px, "psetex"),
                };
                let now_ms = cx.engine.now_ms();
                match options::expire_at_ms(kind, &args[2], now_ms, text) {
                    Ok(at) => self.set_plain(&args[1], &args[3], at, cx),
                    Err(error) => self.refuse(cx.cost, &error),
                }
            }
            Name::GetSet => self.get_set(args, cx),
            Name::GetEx => self.get_ex(args, cx),
            Name::MSetNx => self.mset_nx(args, cx),
            Name::Expire | Name::PExpire | Name::ExpireAt | Name::PExpireAt => {
                self.expire(name, args, cx)
            }
            Name::Ttl | Name::PTtl | Name::ExpireTime | Name::PExpireTime => {
                self.ttl(name, &args[1], cx);
                false
            }
            Name::Persist => self.persist(&args[1], cx),
            Name::Incr | Name::Decr | Name::IncrBy | Name::DecrBy => self.incr(name, args, cx),
            Name::Append => self.append(args, cx),
            Name::GetRange => {
                self.get_range(args, cx);
                false
            }
            Name::SetRange => self.set_range(args, cx),
            other => unreachable!("{other:?} is not a keyspace command"),
        }
    }

    /// An integer or null reply decided now, once `after_seq` (and this connection's earlier
    /// writes) are durable.
    fn answer(&mut self, cx: &Context, out: Bytes, after_seq: u64) {
        let after_seq = settled(cx.engine, after_seq.max(self.last_write_seq));
        self.resp_raw(cx.cost, BytesMut::from(&out[..]), after_seq);
    }

    /// A value observed at `current` (or before a write at `seq`): a bulk string or a null.
    fn answer_value(&mut self, cx: &Context, current: Current, seq: u64) {
        let seq = settled(cx.engine, seq.max(self.last_write_seq));
        let pending = old_value(current, seq);
        self.push(0, pending, cx.cost, None, Some(Shape::Value(cx.version)));
    }

    fn written(&mut self, cx: &Context, seq: u64, reply: Bytes) -> bool {
        self.resp_write(cx.cost, seq, Shape::Written(reply), cx.rules, cx.now);
        true
    }

    fn set(&mut self, args: &[Bytes], cx: Context) -> bool {
        let options = match options::string_options(args, StringCommand::Set) {
            Ok(options) => options,
            Err(error) => return self.refuse(cx.cost, error),
        };
        let expires_at_ms = match &options.expire {
            None => 0,
            Some((kind, number)) => {
                match options::expire_at_ms(*kind, number, cx.engine.now_ms(), "set") {
                    Ok(at) => at,
                    Err(error) => return self.refuse(cx.cost, &error),
                }
            }
        };
        let (key, value) = (&args[1], &args[2]);
        if let Err(error) = check_value(key, value, cx.rules) {
            return self.refuse(cx.cost, &format!("ERR {error}"));
        }
        let condition = match (options.nx, options.xx) {
            (true, _) => Condition::Absent,
            (_, true) => Condition::Present,
            _ => Condition::Always,
        };
        let set_options = SetOptions {
            expires_at_ms,
            keep_ttl: options.keep_ttl,
            condition,
        };
        let old = options.get.then(|| cx.engine.current(key));
        let outcome = match cx.engine.set_with(key, value.clone(), set_options) {
            Ok(outcome) => outcome,
            Err(failed) => return self.refuse(cx.cost, &format!("ERR {failed}")),
        };
        match (outcome, old) {
            (SetOutcome::Written { seq }, None) => {
                self.written(&cx, seq, Bytes::from_static(b"+OK\r\n"))
            }
            (SetOutcome::Written { seq }, Some(old)) => {
                // Answered once durable, not waiting for --min-acks followers (as GETDEL).
                self.last_write_seq = seq;
                self.answer_value(&cx, old, seq);
                true
            }
            (SetOutcome::ConditionFailed { after_seq, .. }, Some(old)) => {
                self.answer_value(&cx, old, after_seq);
                false
            }
            (SetOutcome::ConditionFailed { after_seq, .. }, None) => {
                let mut out = BytesMut::new();
                reply::null(&mut out, cx.version);
                self.answer(&cx, out.freeze(), after_seq);
                false
            }
        }
    }

    /// SET without a condition, with an expiry (0: none); `+OK`.
    fn set_plain(&mut self, key: &Bytes, value: &Bytes, expires_at_ms: u64, cx: Context) -> bool {
        if let Err(error) = check_value(key, value, cx.rules) {
            return self.refuse(cx.cost, &format!("ERR {error}"));
        }
        let options = SetOptions {
            expires_at_ms,
            ..SetOptions::default()
        };
        match cx.engine.set_with(key, value.clone(), options) {
            Ok(SetOutcome::Written { seq }) => {
                self.written(&cx, seq, Bytes::from_static(b"+OK\r\n"))
            }
            Ok(SetOutcome::ConditionFailed { .. }) => unreachable!("an unconditional SET"),
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn set_nx(&mut self, args: &[Bytes], cx: Context) -> bool {
        let (key, value) = (&args[1], &args[2]);
        if let Err(error) = check_value(key, value, cx.rules) {
            return self.refuse(cx.cost, &format!("ERR {error}"));
        }
        let options = SetOptions {
            condition: Condition::Absent,
            ..SetOptions::default()
        };
        match cx.engine.set_with(key, value.clone(), options) {
            Ok(SetOutcome::Written { seq }) => self.written(&cx, seq, integer_reply(1)),
            Ok(SetOutcome::ConditionFailed { after_seq, .. }) => {
                self.answer(&cx, integer_reply(0), after_seq);
                false
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn get_set(&mut self, args: &[Bytes], cx: Context) -> bool {
        let (key, value) = (&args[1], &args[2]);
        if let Err(error) = check_value(key, value, cx.rules) {
            return self.refuse(cx.cost, &format!("ERR {error}"));
        }
        let old = cx.engine.current(key);
        // A plain SET: the key loses its expiry, as in Redis.
        match cx.engine.set(key, value.clone()) {
            Ok(seq) => {
                self.last_write_seq = seq;
                self.answer_value(&cx, old, seq);
                true
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn get_ex(&mut self, args: &[Bytes], cx: Context) -> bool {
        let options = match options::string_options(args, StringCommand::GetEx) {
            Ok(options) => options,
            Err(error) => return self.refuse(cx.cost, error),
        };
        let key = &args[1];
        let current = cx.engine.current(key);
        if !current.exists() {
            let after_seq = current.after_seq();
            self.answer_value(&cx, current, after_seq);
            return false;
        }
        let now_ms = cx.engine.now_ms();
        let at = match &options.expire {
            None => None,
            Some((kind, number)) => match options::expire_at_ms(*kind, number, now_ms, "getex") {
                Ok(at) => Some((*kind, at)),
                Err(error) => return self.refuse(cx.cost, &error),
            },
        };
        let written = match at {
            // An absolute time already past deletes the key, as in Redis.
            Some((ExpireKind::ExAt | ExpireKind::PxAt, at)) if at <= now_ms => {
                match cx.engine.del(key) {
                    Ok(Deleted::Written { seq }) => Ok(Some(seq)),
                    Ok(Deleted::NotFound { .. }) => Ok(None),
                    Err(failed) => Err(failed),
                }
            }
            Some((_, at)) => cx.engine.expire_at(key, at).map(expire_seq),
            None if options.persist => cx.engine.expire_at(key, 0).map(expire_seq),
            None => Ok(None),
        };
        match written {
            Ok(Some(seq)) => {
                self.last_write_seq = seq;
                self.answer_value(&cx, current, seq);
                true
            }
            Ok(None) => {
                let after_seq = current.after_seq();
                self.answer_value(&cx, current, after_seq);
                false
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn mset_nx(&mut self, args: &[Bytes], cx: Context) -> bool {
        if args.len().is_multiple_of(2) {
            return self.refuse(cx.cost, &arity_error("msetnx"));
        }
        for pair in args[1..].chunks(2) {
            if let Err(error) = check_value(&pair[0], &pair[1], cx.rules) {
                return self.refuse(cx.cost, &format!("ERR {error}"));
            }
        }
        // One transaction record: every key must be absent, then all are set, or (on a
        // crash) none.
        let compares: Vec<TxnCompare> = args[1..]
            .chunks(2)
            .map(|pair| TxnCompare {
                key: pair[0].clone(),
                cmp: Cmp::Eq,
                operand: Operand::Exists(false),
            })
            .collect();
        let sets = set_ops(&args[1..]);
        match cx.engine.txn(&compares, &sets, &[], cx.values) {
            Ok(TxnOutcome::Done {
                succeeded: true,
                seq,
                ..
            }) => self.written(&cx, seq, integer_reply(1)),
            Ok(TxnOutcome::Done { after_seq, .. }) => {
                self.answer(&cx, integer_reply(0), after_seq);
                false
            }
            Ok(TxnOutcome::Refused { message, .. }) => {
                self.refuse(cx.cost, &format!("ERR {message}"))
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn expire(&mut self, name: Name, args: &[Bytes], cx: Context) -> bool {
        let (seconds, absolute, text) = match name {
            Name::Expire => (true, false, "expire"),
            Name::PExpire => (false, false, "pexpire"),
            Name::ExpireAt => (true, true, "expireat"),
            _ => (false, true, "pexpireat"),
        };
        let condition = match options::expire_condition(args) {
            Ok(condition) => condition,
            Err(error) => return self.refuse(cx.cost, &error),
        };
        let now_ms = cx.engine.now_ms();
        let at = match options::expire_command_at_ms(&args[2], seconds, absolute, now_ms, text) {
            Ok(at) => at,
            Err(error) => return self.refuse(cx.cost, &error),
        };
        let key = &args[1];
        let current = cx.engine.current(key);
        if !current.exists() || !condition.holds(current.expires_at_ms(), at) {
            self.answer(&cx, integer_reply(0), current.after_seq());
            return false;
        }
        // A time not after now deletes the key, as in Redis.
        let written = match at <= now_ms as i64 {
            true => cx.engine.del(key).map(|deleted| match deleted {
                Deleted::Written { seq } => Some(seq),
                Deleted::NotFound { .. } => None,
            }),
            false => cx
                .engine
                .expire_if(key, at as u64, ExpireCondition::Always)
                .map(expire_seq),
        };
        match written {
            Ok(Some(seq)) => self.written(&cx, seq, integer_reply(1)),
            Ok(None) => {
                self.answer(&cx, integer_reply(0), current.after_seq());
                false
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn ttl(&mut self, name: Name, key: &[u8], cx: Context) {
        let current = cx.engine.current(key);
        let expires_at_ms = current.expires_at_ms();
        let answer = if !current.exists() {
            -2
        } else if expires_at_ms == 0 {
            -1
        } else {
            let now_ms = cx.engine.now_ms();
            let ms = i128::from(match name {
                Name::Ttl | Name::PTtl => expires_at_ms.saturating_sub(now_ms),
                _ => expires_at_ms,
            });
            // Seconds are rounded to the nearest, as Redis does.
            let n = match name {
                Name::Ttl | Name::ExpireTime => (ms + 500) / 1000,
                _ => ms,
            };
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        self.answer(&cx, integer_reply(answer), current.after_seq());
    }

    fn persist(&mut self, key: &[u8], cx: Context) -> bool {
        match cx.engine.expire_at(key, 0) {
            Ok(ExpireOutcome::Written { seq }) => self.written(&cx, seq, integer_reply(1)),
            Ok(ExpireOutcome::NotFound { after_seq })
            | Ok(ExpireOutcome::Unchanged { after_seq, .. }) => {
                self.answer(&cx, integer_reply(0), after_seq);
                false
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn incr(&mut self, name: Name, args: &[Bytes], cx: Context) -> bool {
        let delta = match name {
            Name::Incr => 1,
            Name::Decr => -1,
            _ => match crate::engine::counter::parse(&args[2]) {
                None => return self.refuse(cx.cost, NOT_AN_INTEGER),
                Some(i64::MIN) if name == Name::DecrBy => {
                    return self.refuse(cx.cost, "ERR decrement would overflow")
                }
                Some(n) if name == Name::DecrBy => -n,
                Some(n) => n,
            },
        };
        match cx.engine.incr_by(&args[1], delta, cx.values) {
            Ok(IncrOutcome::Written { value, seq }) => self.written(&cx, seq, integer_reply(value)),
            Ok(IncrOutcome::Refused { message, after_seq }) => {
                let mut out = BytesMut::new();
                reply::error(&mut out, &format!("ERR {message}"));
                self.answer(&cx, out.freeze(), after_seq);
                false
            }
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    /// APPEND and SETRANGE: the key's new value from its old one, keeping its expiry; the
    /// reply is the new length.
    fn rewrite(
        &mut self,
        key: &Bytes,
        cx: Context,
        edit: impl FnOnce(Option<Bytes>) -> Vec<u8>,
    ) -> bool {
        let current = cx.engine.current(key);
        let old = match value_of(&current, cx.values) {
            Ok(old) => old,
            Err(message) => return self.refuse(cx.cost, &format!("ERR {message}")),
        };
        let new = Bytes::from(edit(old));
        let len = new.len() as i64;
        if let Err(error) = check_value(key, &new, cx.rules) {
            return self.refuse(cx.cost, &format!("ERR {error}"));
        }
        let options = SetOptions {
            keep_ttl: true,
            ..SetOptions::default()
        };
        match cx.engine.set_with(key, new, options) {
            Ok(SetOutcome::Written { seq }) => {
                cx.engine.keep_cached(key, seq);
                self.written(&cx, seq, integer_reply(len))
            }
            Ok(SetOutcome::ConditionFailed { .. }) => unreachable!("an unconditional SET"),
            Err(failed) => self.refuse(cx.cost, &format!("ERR {failed}")),
        }
    }

    fn too_long(&mut self, cx: &Context) -> bool {
        let max = cx.rules.limits.value_bytes_max;
        let message = format!("ERR string exceeds maximum allowed size (--max-value-bytes, {max} bytes on this server)");
        self.refuse(cx.cost, &message)
    }

    fn append(&mut self, args: &[Bytes], cx: Context) -> bool {
        let (key, tail) = (&args[1], &args[2]);
        let old_len = match cx.engine.current(key) {
            Current::Absent { .. } => 0,
            Current::Value { value, .. } => value.len(),
            Current::Stored { location, .. } => location.value_len as usize,
        };
        if old_len + tail.len() > cx.rules.limits.value_bytes_max as usize {
            return self.too_long(&cx);
        }
        self.rewrite(key, cx, |old| {
            let mut new = old.map(|old| old.to_vec()).unwrap_or_default();
            new.extend_from_slice(tail);
            new
        })
    }

    fn set_range(&mut self, args: &[Bytes], cx: Context) -> bool {
        let (key, patch) = (&args[1], &args[3]);
        let Some(offset) = crate::engine::counter::parse(&args[2]) else {
            return self.refuse(cx.cost, NOT_AN_INTEGER);
        };
        if offset < 0 {
            return self.refuse(cx.cost, "ERR offset is out of range");
        }
        let current = cx.engine.current(key);
        let old_len = match &current {
            Current::Absent { .. } => 0,
            Current::Value { value, .. } => value.len(),
            Current::Stored { location, .. } => location.value_len as usize,
        };
        // Setting nothing changes nothing: the length as it is.
        if patch.is_empty() {
            self.answer(&cx, integer_reply(old_len as i64), current.after_seq());
            return false;
        }
        let end = (offset as u64).saturating_add(patch.len() as u64);
        if end > u64::from(cx.rules.limits.value_bytes_max) {
            return self.too_long(&cx);
        }
        let (offset, end) = (offset as usize, end as usize);
        self.rewrite(key, cx, |old| {
            let mut new = old.map(|old| old.to_vec()).unwrap_or_default();
            if new.len() < end {
                new.resize(end, 0);
            }
            new[offset..end].copy_from_slice(patch);
            new
        })
    }

    fn get_range(&mut self, args: &[Bytes], cx: Context) {
        let parse = crate::engine::counter::parse;
        let (Some(start), Some(end)) = (parse(&args[2]), parse(&args[3])) else {
            self.resp_error(cx.cost, NOT_AN_INTEGER);
            return;
        };
        let current = cx.engine.current(&args[1]);
        let after_seq = current.after_seq();
        let value = match value_of(&current, cx.values) {
            Ok(value) => value.unwrap_or_default(),
            Err(message) => {
                self.resp_error(cx.cost, &format!("ERR {message}"));
                return;
            }
        };
        let range = range(value.len() as i64, start, end);
        let pending = Pending::Reply {
            status: Status::Ok,
            flags: 0,
            body: range.map_or_else(Bytes::new, |(from, to)| value.slice(from..to)),
            after_seq: settled(cx.engine, after_seq.max(self.last_write_seq)),
        };
        let cost = cx.cost + pending.reply_body_bytes();
        self.push(0, pending, cost, None, Some(Shape::Value(cx.version)));
    }
}

/// GETRANGE's bytes `from..to` of a value `len` long, as Redis counts them (negative
/// indexes from the end, both ends included); None for an empty string.
fn range(len: i64, mut start: i64, mut end: i64) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return None;
    }
    Some((start as usize, end as usize + 1))
}

/// The seq an EXPIRE or PERSIST wrote, if it wrote.
fn expire_seq(outcome: ExpireOutcome) -> Option<u64> {
    match outcome {
        ExpireOutcome::Written { seq } => Some(seq),
        ExpireOutcome::NotFound { .. } | ExpireOutcome::Unchanged { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn getrange_counts_as_redis_does() {
        assert_eq!(range(3, -1, -2), None);
        assert_eq!(range(3, -5, -1), Some((0, 3)));
        assert_eq!(range(3, 0, 100), Some((0, 3)));
        assert_eq!(range(3, 2, 1), None);
        assert_eq!(range(3, 0, -100), Some((0, 1)));
        assert_eq!(range(0, 0, 1), None);
        assert_eq!(range(3, 1, 1), Some((1, 2)));
    }
}

#[cfg(test)]
mod state_tests {
    use super::super::tests::{commit, replies, resp_state, send};
    use crate::engine::Engine;

    #[test]
    fn expiring_and_counting_writes_answer_once_durable() {
        let mut engine = Engine::new(0);
        engine.tick(1_000_000);
        let mut state = resp_state(None);
        let intake = send(
            &mut state,
            &mut engine,
            &[
                &["SET", "k", "v", "EX", "10"],
                &["PTTL", "k"],
                &["INCR", "n"],
                &["SET", "k", "w", "NX"],
            ],
        );
        assert!(intake.wrote);
        // Nothing is durable: nothing may go, not even the reads behind the writes.
        assert_eq!(replies(&mut state, &engine, None).0, "");
        commit(&mut engine);
        let (sent, _) = replies(&mut state, &engine, None);
        assert_eq!(sent, "+OK\r\n:10000\r\n:1\r\n$-1\r\n");
        send(
            &mut state,
            &mut engine,
            &[
                &["EXPIRE", "k", "5", "GT"],
                &["EXPIRE", "k", "50", "GT"],
                &["TTL", "k"],
                &["PERSIST", "k"],
                &["TTL", "k"],
                &["TTL", "nokey"],
                &["EXPIRE", "k", "-1"],
                &["EXISTS", "k"],
            ],
        );
        commit(&mut engine);
        let (sent, _) = replies(&mut state, &engine, None);
        assert_eq!(sent, ":0\r\n:1\r\n:50\r\n:1\r\n:-1\r\n:-2\r\n:1\r\n:0\r\n");
    }
}
