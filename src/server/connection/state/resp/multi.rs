//! MULTI, EXEC, DISCARD, WATCH and UNWATCH, as Redis has them (`multi.c`), on top of the
//! engine's staging (`engine/staging.rs`).
//!
//! After MULTI a command is checked (unknown name, arity, authentication, a write on a
//! follower) and queued; a refusal discards the transaction at EXEC (EXECABORT). EXEC first
//! compares each WATCHed key's seq with the one it had when watched: any change (a write by
//! anyone, through either protocol, a replicated write, an expiry) answers a null array.
//! Otherwise it runs the queued commands through the same per-command code as outside a
//! transaction (`resp_command`), with the engine staging their writes, so they become ONE
//! `Txn` record: one seq, all or none after a crash, replicated and recovered as a unit. The
//! replies those commands queued are taken back off the connection's queue and joined into
//! EXEC's array, which leaves once that record is durable.

use super::*;
use crate::limits::RESP_EXEC_REPLY_BYTES_MAX;
use crate::resp::multi::Multi;

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

impl<'a> ConnState<'a> {
    /// A command refused while a transaction is being queued discards it at EXEC.
    pub(super) fn fail_multi(session: &mut Session) {
        if let Some(multi) = session.multi.as_mut() {
            multi.failed = true;
        }
    }

    /// EXEC refused before it runs (arity, subscribed mode): as Redis, the transaction is
    /// discarded and the refusal says so.
    pub(super) fn exec_rejected(
        &mut self,
        session: &mut Session,
        cost: usize,
        error: &str,
    ) -> bool {
        session.multi = None;
        session.watched.clear();
        let error = error.strip_prefix("ERR ").unwrap_or(error);
        self.refuse(
            cost,
            &format!("EXECABORT Transaction discarded because of: {error}"),
        )
    }

    /// Queues `args` after MULTI and answers +QUEUED.
    pub(super) fn resp_queue(&mut self, session: &mut Session, args: &[Bytes], cost: usize) {
        let Some(multi) = session.multi.as_mut() else {
            return;
        };
        if !multi.queue(args) {
            let message = format!(
                "ERR the transaction's queued commands would pass {} bytes: it is discarded at EXEC",
                crate::limits::RESP_MULTI_BYTES_MAX
            );
            return self.resp_error(cost, &message);
        }
        self.resp_now(cost, |out| reply::simple(out, "QUEUED"));
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH; true if EXEC wrote.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resp_transaction(
        &mut self,
        session: &mut Session,
        name: Name,
        args: &[Bytes],
        cost: usize,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> bool {
        match name {
            Name::Multi => match session.multi {
                Some(_) => self.resp_error(cost, "ERR MULTI calls can not be nested"),
                None => {
                    session.multi = Some(Multi::default());
                    self.resp_now(cost, reply::ok);
                }
            },
            Name::Discard => match session.multi.take() {
                None => self.resp_error(cost, "ERR DISCARD without MULTI"),
                Some(_) => {
                    session.watched.clear();
                    self.resp_now(cost, reply::ok);
                }
            },
            Name::Watch => {
                if session.multi.is_some() {
                    return self.refuse(cost, "ERR WATCH inside MULTI is not allowed");
                }
                let mut after_seq = self.last_write_seq;
                for key in &args[1..] {
                    let current = engine.current(key);
                    after_seq = after_seq.max(current.after_seq());
                    if !session.watched.watch(key, current.seq()) {
                        let message = format!(
                            "ERR a connection may WATCH at most {} keys",
                            crate::limits::RESP_WATCHED_KEYS_MAX
                        );
                        return self.refuse(cost, &message);
                    }
                }
                let mut out = BytesMut::new();
                reply::ok(&mut out);
                self.resp_raw(cost, out, settled(engine, after_seq));
            }
            Name::Unwatch => {
                session.watched.clear();
                self.resp_now(cost, reply::ok);
            }
            Name::Exec => return self.resp_exec(session, cost, engine, rules, now, values),
            _ => {}
        }
        false
    }

    fn resp_exec(
        &mut self,
        session: &mut Session,
        cost: usize,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> bool {
        let Some(multi) = session.multi.take() else {
            return self.refuse(cost, "ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut session.watched);
        if multi.failed {
            return self.refuse(cost, EXECABORT);
        }
        let version = session.version;
        if watched.any_changed(|key| engine.current(key).seq()) {
            let mut out = BytesMut::new();
            reply::null_array(&mut out, version);
            self.resp_raw(cost, out, settled(engine, self.last_write_seq));
            return false;
        }
        let mark = self.queue.len();
        let last_write_seq = self.last_write_seq;
        engine.begin_staging();
        for args in &multi.commands {
            self.resp_command(session, args, 0, engine, rules, now, values);
        }
        session.last_command = "exec";
        let replies: Vec<Queued> = self.queue.drain(mark..).collect();
        for queued in &replies {
            self.bytes_in_flight -= queued.cost;
            if matches!(queued.pending, Pending::Write { .. }) {
                self.writes_queued -= 1;
            }
        }
        self.last_write_seq = last_write_seq;
        // What the array would take, counted before anything is written.
        let reply_bytes: usize = replies
            .iter()
            .map(|queued| match &queued.pending {
                Pending::Value { location, .. } => location.value_len as usize + 16,
                pending => pending.reply_body_bytes() + 16,
            })
            .sum();
        if reply_bytes > RESP_EXEC_REPLY_BYTES_MAX {
            engine.abort_staged();
            let message = format!("ERR the transaction's replies would take more than {RESP_EXEC_REPLY_BYTES_MAX} bytes: nothing was written; read fewer values in one transaction");
            return self.refuse(cost, &message);
        }
        let seq = match engine.commit_staged() {
            Ok(seq) => seq,
            Err(error) => return self.refuse(cost, &format!("EXECABORT {error}")),
        };
        let mut out = BytesMut::with_capacity(reply_bytes + 16);
        reply::array(&mut out, multi.commands.len());
        let mut after_seq = last_write_seq;
        for queued in replies {
            after_seq = after_seq.max(queued.pending.after_seq());
            encode_queued(&mut out, queued, values);
        }
        if seq == 0 {
            self.resp_raw(cost, out, settled(engine, after_seq));
            return false;
        }
        self.resp_write(cost, seq, Shape::Written(out.freeze()), rules, now);
        true
    }
}

/// Encodes a reply a queued command left, now: EXEC answers them all at once.
fn encode_queued(out: &mut BytesMut, queued: Queued, values: &mut Values<'_>) {
    let shape = queued.shape.unwrap_or(Shape::Raw);
    match queued.pending {
        Pending::Reply { status, body, .. } => encode_reply(out, &shape, status, &body),
        Pending::Write { .. } => encode_written(out, &shape),
        Pending::Value { location, .. } => match values(location) {
            Ok(value) => encode_value(out, &value),
            Err(error) => encode_failure(out, "ERR", error.as_bytes()),
        },
        Pending::Later { .. } => reply::error(
            out,
            "ERR kvs cannot answer INFO, ROLE or WAIT inside MULTI: send it outside the transaction",
        ),
    }
}
