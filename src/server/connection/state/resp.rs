//! RESP on the connection state machine (`docs/resp.md`): the same queue, the same rules of
//! durability and order as the native protocol, with commands parsed by `crate::resp::parse`
//! and replies written in RESP. Each command becomes one or more queued replies; the ones that
//! touch keys go through `command::accept` or the engine's own write and read calls, exactly as
//! native ops do, so the two protocols share one store.
//!
//! A command that answers with several values (MGET) queues its array header and then one
//! reply per key: each waits, and is read from the log, as a GET would be, and since replies
//! leave in order they make one well-formed array.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::*;
use crate::auth::Verdict;
use crate::engine::{Current, Deleted, TxnOutcome, Values};
use crate::limits::{RESP_ARRAY_LEN_MAX, RESP_COMMAND_OVERHEAD_BYTES, RESP_KEYS_REPLY_BYTES_MAX};
use crate::protocol::bounds::check_key;
use crate::protocol::request::op;
use crate::protocol::RequestError;
use crate::resp::parse::{self, integer, ParseLimits};
use crate::resp::table::{self, Name};
use crate::resp::{glob, reply, valid_name, NodeRead, Session, Shape, Version};

/// Which protocol a connection speaks.
#[derive(Debug)]
pub enum Protocol {
    Native,
    Resp(Box<Session>),
}

const READONLY: &str = "READONLY You can't write against a read only replica.";
const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
/// What a queued element of a multi-value reply costs besides its key.
const ELEMENT_COST_BYTES: usize = 64;

impl<'a> ConnState<'a> {
    /// A connection speaking RESP (`--resp-port`).
    pub fn resp(gate: Gate<'a>, session: Session) -> ConnState<'a> {
        let mut state = ConnState::new(gate);
        state.protocol = Protocol::Resp(Box::new(session));
        state
    }

    /// Whether the connection is subscribed to a channel or pattern: it then waits for
    /// messages, and silence is its normal state (Redis's `timeout` spares such clients too).
    pub fn is_subscribed(&self) -> bool {
        matches!(&self.protocol, Protocol::Resp(session) if session.subscriptions > 0)
    }

    pub(super) fn parse_limits(&self, rules: &Rules) -> ParseLimits {
        let command_bytes_max = self.frame_bytes_max(rules) as usize + RESP_COMMAND_OVERHEAD_BYTES;
        ParseLimits {
            array_len_max: RESP_ARRAY_LEN_MAX,
            bulk_bytes_max: command_bytes_max,
            command_bytes_max,
        }
    }

    /// Whether `buf` holds a whole command (or a protocol error) to take now.
    pub(super) fn resp_has_command(&self, buf: &[u8], rules: &Rules) -> bool {
        !matches!(parse::parse(buf, self.parse_limits(rules)), Ok(None))
    }

    /// `take_requests` for RESP.
    pub(super) fn take_resp_requests(
        &mut self,
        buf: &mut BytesMut,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> Intake {
        let mut intake = Intake::default();
        while self.open() && !self.full() {
            if engine.open_batch_full() || rules.holding() {
                intake.batch_full = self.resp_has_command(buf, rules);
                break;
            }
            let parsed = match parse::parse(buf, self.parse_limits(rules)) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(error) => {
                    // As Redis: the error, then the connection closes.
                    self.resp_error(0, &format!("ERR {error}"));
                    self.closing = true;
                    break;
                }
            };
            let bytes = buf.split_to(parsed.consumed).freeze();
            self.awaiting_client = false;
            if parsed.args.is_empty() {
                continue;
            }
            let args: SmallVec<[Bytes; 4]> =
                parsed.args.into_iter().map(|r| bytes.slice(r)).collect();
            let Protocol::Resp(mut session) =
                std::mem::replace(&mut self.protocol, Protocol::Native)
            else {
                unreachable!("take_resp_requests runs on RESP connections only");
            };
            let wrote =
                self.resp_command(&mut session, &args, bytes.len(), engine, rules, now, values);
            self.protocol = Protocol::Resp(session);
            intake.wrote |= wrote;
        }
        intake
    }

    /// Queues RESP bytes decided now, to go once `after_seq` is durable.
    fn resp_raw(&mut self, cost: usize, body: BytesMut, after_seq: u64) {
        let body = body.freeze();
        let cost = cost + body.len();
        let pending = Pending::Reply {
            status: Status::Ok,
            flags: 0,
            body,
            after_seq,
        };
        self.push(0, pending, cost, None, Some(Shape::Raw));
    }

    /// Queues an error reply (`text` starts with its code: `ERR`, `WRONGPASS`, ...).
    fn resp_error(&mut self, cost: usize, text: &str) {
        let mut out = BytesMut::new();
        reply::error(&mut out, text);
        self.resp_raw(cost, out, 0);
    }

    fn resp_now(&mut self, cost: usize, encode: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        encode(&mut out);
        self.resp_raw(cost, out, 0);
    }

    /// A refusal of the auth gate: its error, counted, closing after too many.
    fn resp_refused(&mut self, cost: usize, verdict: Verdict, text: &str) {
        let close = matches!(verdict, Verdict::Refused { close: true, .. });
        self.resp_error(cost, text);
        self.closing |= close;
        let failures = self.gate.failures();
        if failures > self.auth_failures_seen {
            self.auth_failures_seen = failures;
            self.auth_failures.push(close);
        }
    }

    /// One command; true if a write joined the open batch.
    #[allow(clippy::too_many_arguments)]
    fn resp_command(
        &mut self,
        session: &mut Session,
        args: &[Bytes],
        cost: usize,
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> bool {
        let Some(spec) = table::lookup(&args[0]) else {
            Self::fail_multi(session);
            self.resp_error(cost, &unknown_command(args));
            return false;
        };
        session.last_command = spec.text;
        if !table::arity_ok(spec.arity, args.len()) {
            Self::fail_multi(session);
            if spec.name == Name::Exec {
                return self.exec_rejected(session, cost, &arity_error(spec.text));
            }
            self.resp_error(cost, &arity_error(spec.text));
            return false;
        }
        if !self.gate.is_open() && !matches!(spec.name, Name::Auth | Name::Hello | Name::Quit) {
            // Counted as a failure, as on the native port.
            Self::fail_multi(session);
            let verdict = self.gate.admit(op::GET, 0, &[]);
            self.resp_refused(cost, verdict, NOAUTH);
            return false;
        }
        if spec.write {
            if let Some(leader) = rules.write_refusal(engine) {
                Self::fail_multi(session);
                // A Raft member names the leader after Redis's text, as its clients read it.
                match rules.raft {
                    None => self.resp_error(cost, READONLY),
                    Some(_) if leader.is_empty() => {
                        self.resp_error(cost, &format!("{READONLY} No leader is known yet: retry"))
                    }
                    Some(_) => {
                        self.resp_error(cost, &format!("{READONLY} The leader is at {leader}"))
                    }
                }
                return false;
            }
        }
        let subscribed = session.subscriptions > 0 && session.version == Version::Resp2;
        if subscribed && !pubsub::allowed_when_subscribed(spec.name) {
            Self::fail_multi(session);
            if spec.name == Name::Exec {
                let text = "ERR Can't execute 'exec': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";
                return self.exec_rejected(session, cost, text);
            }
            self.refuse_when_subscribed(cost, spec.text);
            return false;
        }
        if subscribed && spec.name == Name::Ping {
            self.subscribed_ping(cost, args);
            return false;
        }
        // After MULTI, commands queue (transaction control, QUIT and RESET run at once).
        let control = matches!(
            spec.name,
            Name::Multi | Name::Exec | Name::Discard | Name::Watch | Name::Quit | Name::Reset
        );
        if session.multi.is_some() && !control {
            self.resp_queue(session, args, cost);
            return false;
        }
        let version = session.version;
        let key = || args[1].clone();
        match spec.name {
            Name::Ping => match args.len() {
                1 => self.resp_now(cost, |out| reply::simple(out, "PONG")),
                2 => self.resp_now(cost, |out| reply::bulk(out, &args[1])),
                _ => self.resp_error(cost, &arity_error("ping")),
            },
            Name::Echo => self.resp_now(cost, |out| reply::bulk(out, &args[1])),
            Name::Quit => {
                self.resp_now(cost, reply::ok);
                self.closing = true;
            }
            Name::Select => match integer(&args[1]) {
                Some(0) => self.resp_now(cost, reply::ok),
                Some(_) => self.resp_error(cost, "ERR DB index is out of range"),
                None => self.resp_error(cost, NOT_AN_INTEGER),
            },
            Name::Auth => self.resp_auth(cost, args),
            Name::Hello => {
                self.resp_hello(session, cost, args, rules);
                // Messages already subscribed to follow the connection's new version.
                self.follow_version(session);
            }
            Name::Client => self.resp_client(session, cost, args, now),
            Name::Command => self.resp_command_info(cost, args, version),
            Name::Info => {
                let sections = args[1..]
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).to_lowercase())
                    .collect();
                self.resp_node(cost, NodeRead::Info { sections, version }, 0, None);
            }
            Name::Role => self.resp_node(cost, NodeRead::Role { version }, 0, None),
            Name::Config => {
                // What redis-benchmark and some clients ask at start; kvs is configured by its
                // flags (`kvsd --help`), so only the two parameters tools look for are reported.
                if !args[1].eq_ignore_ascii_case(b"get") {
                    let sub = String::from_utf8_lossy(&args[1]);
                    let message = format!("ERR unknown subcommand '{sub}'. Try CONFIG HELP.");
                    self.resp_error(cost, &message);
                } else if args.len() < 3 {
                    self.resp_error(cost, &arity_error("config|get"));
                } else {
                    // What tools ask of a Redis before they start: kvs's log is Redis's
                    // append-only file, and there are no snapshots.
                    const KNOWN: [(&str, &str); 2] = [("appendonly", "yes"), ("save", "")];
                    let found: Vec<_> = KNOWN
                        .iter()
                        .filter(|(name, _)| {
                            args[2..].iter().any(|p| glob::matches(p, name.as_bytes()))
                        })
                        .collect();
                    self.resp_now(cost, |out| {
                        reply::map(out, found.len(), version);
                        for (name, value) in found {
                            reply::bulk(out, name.as_bytes());
                            reply::bulk(out, value.as_bytes());
                        }
                    });
                }
            }
            Name::DbSize => {
                // Counted now, as of this command's place in the pipeline, pending writes
                // included; inside EXEC (staged writes) by a walk over the newest keys.
                let keys = match engine.staging() {
                    false => engine.key_count_newest(),
                    true => {
                        let mut keys = 0;
                        engine.keys_newest(b"", None, |_| {
                            keys += 1;
                            true
                        });
                        keys
                    }
                };
                let mut out = BytesMut::new();
                reply::integer(&mut out, keys as i64);
                self.resp_raw(cost, out, settled(engine, engine.last_seq()));
            }
            Name::Wait => self.resp_wait(cost, args, rules, now),
            Name::Multi | Name::Exec | Name::Discard | Name::Watch | Name::Unwatch => {
                return self
                    .resp_transaction(session, spec.name, args, cost, engine, rules, now, values)
            }
            Name::Subscribe
            | Name::Unsubscribe
            | Name::PSubscribe
            | Name::PUnsubscribe
            | Name::Publish
            | Name::PubSub
            | Name::Reset => self.resp_pubsub(session, spec.name, args, cost, now),
            Name::Get => {
                let request = Request::Get {
                    key: key(),
                    min_seq: None,
                };
                let pending = command::accept(engine, request, self.last_write_seq, 0, values);
                self.push(0, pending, cost, None, Some(Shape::Value(version)));
            }
            Name::MGet => {
                let mut header = BytesMut::new();
                reply::array(&mut header, args.len() - 1);
                self.resp_raw(cost, header, 0);
                for key in &args[1..] {
                    let request = Request::Get {
                        key: key.clone(),
                        min_seq: None,
                    };
                    let pending = command::accept(engine, request, self.last_write_seq, 0, values);
                    let cost = ELEMENT_COST_BYTES + key.len() + pending.reply_body_bytes();
                    self.push(0, pending, cost, None, Some(Shape::Value(version)));
                }
            }
            Name::Exists => {
                let mut count = 0;
                let mut after_seq = self.last_write_seq;
                for key in &args[1..] {
                    let current = engine.current(key);
                    after_seq = after_seq.max(current.after_seq());
                    count += i64::from(current.exists());
                }
                let mut out = BytesMut::new();
                reply::integer(&mut out, count);
                self.resp_raw(cost, out, settled(engine, after_seq));
            }
            Name::Type | Name::StrLen => {
                let after_seq = self.last_write_seq;
                let current = engine.current(&args[1]);
                let len = match &current {
                    Current::Absent { .. } => None,
                    Current::Value { value, .. } => Some(value.len() as u64),
                    Current::Stored { location, .. } => Some(u64::from(location.value_len)),
                };
                let after_seq = after_seq.max(current.after_seq());
                let mut out = BytesMut::new();
                match (spec.name, len) {
                    (Name::Type, Some(_)) => reply::simple(&mut out, "string"),
                    (Name::Type, None) => reply::simple(&mut out, "none"),
                    (_, len) => reply::integer(&mut out, len.unwrap_or(0) as i64),
                }
                self.resp_raw(cost, out, settled(engine, after_seq));
            }
            Name::Keys => self.resp_keys(cost, &args[1], engine),
            Name::Scan => self.resp_scan(session, cost, args, engine),
            Name::Set
            | Name::SetNx
            | Name::SetEx
            | Name::PSetEx
            | Name::GetSet
            | Name::GetEx
            | Name::MSetNx
            | Name::Expire
            | Name::PExpire
            | Name::ExpireAt
            | Name::PExpireAt
            | Name::Ttl
            | Name::PTtl
            | Name::ExpireTime
            | Name::PExpireTime
            | Name::Persist
            | Name::Incr
            | Name::IncrBy
            | Name::Decr
            | Name::DecrBy
            | Name::Append
            | Name::GetRange
            | Name::SetRange => {
                let context = keyspace::Context {
                    cost,
                    engine,
                    rules,
                    now,
                    version,
                    values,
                };
                return self.resp_keyspace(spec.name, args, context);
            }
            Name::MSet => return self.resp_mset(cost, args, engine, rules, now, values),
            Name::GetDel => {
                let old = engine.current(&args[1]);
                let (seq, wrote) = match engine.del(&args[1]) {
                    Ok(Deleted::Written { seq }) => (seq, true),
                    Ok(Deleted::NotFound { after_seq }) => {
                        (after_seq.max(self.last_write_seq), false)
                    }
                    Err(failed) => return self.refuse(cost, &format!("ERR {failed}")),
                };
                if wrote {
                    self.last_write_seq = seq;
                }
                let pending = old_value(old, settled(engine, seq));
                self.push(0, pending, cost, None, Some(Shape::Value(version)));
                return wrote;
            }
            Name::Del | Name::Unlink => {
                let mut deleted = 0;
                let mut last = 0;
                let mut after_seq = self.last_write_seq;
                for key in &args[1..] {
                    match engine.del(key) {
                        Ok(Deleted::Written { seq }) => {
                            deleted += 1;
                            last = seq;
                        }
                        Ok(Deleted::NotFound { after_seq: seq }) => after_seq = after_seq.max(seq),
                        Err(failed) => {
                            self.resp_error(cost, &format!("ERR {failed}"));
                            return deleted > 0;
                        }
                    }
                }
                if deleted == 0 {
                    let mut out = BytesMut::new();
                    reply::integer(&mut out, 0);
                    self.resp_raw(cost, out, settled(engine, after_seq));
                    return false;
                }
                let mut out = BytesMut::new();
                reply::integer(&mut out, deleted);
                self.resp_write(cost, last, Shape::Written(out.freeze()), rules, now);
                return true;
            }
        }
        false
    }

    /// Queues a write's reply: it goes once `seq` is durable (and on `--min-acks` followers).
    fn resp_write(&mut self, cost: usize, seq: u64, shape: Shape, rules: &Rules, now: Instant) {
        self.last_write_seq = seq;
        let deadline = rules.write_deadline(now);
        self.push(
            0,
            Pending::Write { seq, body: None },
            cost,
            deadline,
            Some(shape),
        );
    }

    fn resp_node(
        &mut self,
        cost: usize,
        read: NodeRead,
        after_seq: u64,
        deadline: Option<Instant>,
    ) {
        let pending = Pending::Later {
            read: Later::Node(read),
            after_seq,
        };
        self.push(0, pending, cost, deadline, Some(Shape::Raw));
    }

    fn refuse(&mut self, cost: usize, text: &str) -> bool {
        self.resp_error(cost, text);
        false
    }

    fn resp_mset(
        &mut self,
        cost: usize,
        args: &[Bytes],
        engine: &mut Engine,
        rules: &Rules,
        now: Instant,
        values: &mut Values<'_>,
    ) -> bool {
        if args.len().is_multiple_of(2) {
            return self.refuse(cost, &arity_error("mset"));
        }
        for pair in args[1..].chunks(2) {
            if let Err(error) = check_value(&pair[0], &pair[1], rules) {
                return self.refuse(cost, &format!("ERR {error}"));
            }
        }
        // One transaction record, as Redis applies MSET at once: a crash keeps all or none of
        // the pairs, and a follower applies them together.
        match engine.txn(&[], &keyspace::set_ops(&args[1..]), &[], values) {
            Ok(TxnOutcome::Done { seq, .. }) => {
                let ok = Bytes::from_static(b"+OK\r\n");
                self.resp_write(cost, seq, Shape::Written(ok), rules, now);
                true
            }
            Ok(TxnOutcome::Refused { message, .. }) => self.refuse(cost, &format!("ERR {message}")),
            Err(failed) => self.refuse(cost, &format!("ERR {failed}")),
        }
    }

    fn resp_keys(&mut self, cost: usize, pattern: &[u8], engine: &Engine) {
        let mut keys = Vec::new();
        let mut bytes = 0;
        let mut too_many = false;
        engine.keys_newest(glob::literal_prefix(pattern), None, |key| {
            if glob::matches(pattern, key) {
                bytes += key.len() + 16;
                if bytes > RESP_KEYS_REPLY_BYTES_MAX {
                    too_many = true;
                    return false;
                }
                keys.push(Bytes::copy_from_slice(key));
            }
            true
        });
        if too_many {
            let message = format!("ERR KEYS would answer more than {RESP_KEYS_REPLY_BYTES_MAX} bytes: use SCAN with MATCH to page through the keys");
            self.resp_error(cost, &message);
            return;
        }
        let mut out = BytesMut::with_capacity(bytes + 16);
        reply::array(&mut out, keys.len());
        for key in &keys {
            reply::bulk(&mut out, key);
        }
        // It may list pending writes of any connection: it waits until all of them are durable.
        self.resp_raw(cost, out, settled(engine, engine.last_seq()));
    }

    fn resp_scan(&mut self, session: &mut Session, cost: usize, args: &[Bytes], engine: &Engine) {
        let cursor = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|text| text.parse::<u64>().ok());
        let Some(cursor) = cursor else {
            return self.resp_error(cost, "ERR invalid cursor");
        };
        let mut pattern: Option<&[u8]> = None;
        let mut count: usize = 10;
        let mut strings = true;
        let mut i = 2;
        while i < args.len() {
            let option = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            let Some(value) = args.get(i + 1) else {
                return self.resp_error(cost, SYNTAX);
            };
            match option.as_str() {
                "MATCH" => pattern = Some(value),
                "COUNT" => match integer(value) {
                    None => return self.resp_error(cost, NOT_AN_INTEGER),
                    Some(n) if n < 1 => return self.resp_error(cost, SYNTAX),
                    Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
                },
                "TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
                _ => return self.resp_error(cost, SYNTAX),
            }
            i += 2;
        }
        let start_after = match cursor {
            0 => None,
            cursor => match session.cursor(cursor) {
                Some(key) => Some(key),
                None => {
                    let message = format!("ERR invalid cursor: kvs keeps the {} newest SCAN cursors of a connection, and a cursor is good only on the connection that got it; start again from 0", crate::resp::SCAN_CURSORS_MAX);
                    return self.resp_error(cost, &message);
                }
            },
        };
        let prefix = pattern.map_or(&b""[..], glob::literal_prefix);
        let (mut examined, mut more) = (0, false);
        let mut last: Option<Bytes> = None;
        let mut page = Vec::new();
        engine.keys_newest(prefix, start_after.as_deref(), |key| {
            if examined == count {
                more = true;
                return false;
            }
            examined += 1;
            let key = Bytes::copy_from_slice(key);
            if strings && pattern.is_none_or(|p| glob::matches(p, &key)) {
                page.push(key.clone());
            }
            last = Some(key);
            true
        });
        let next = match (more, last) {
            (true, Some(last)) => session.new_cursor(last),
            _ => 0,
        };
        let mut out = BytesMut::new();
        reply::array(&mut out, 2);
        reply::bulk(&mut out, next.to_string().as_bytes());
        reply::array(&mut out, page.len());
        for key in &page {
            reply::bulk(&mut out, key);
        }
        self.resp_raw(cost, out, settled(engine, engine.last_seq()));
    }

    fn resp_wait(&mut self, cost: usize, args: &[Bytes], rules: &Rules, now: Instant) {
        if rules.raft.is_some() {
            return self.resp_error(cost, "ERR WAIT is not served by a Raft member: every write it acknowledges is already on a majority of voters");
        }
        if rules.leader_addr.is_some() {
            return self.resp_error(cost, "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.");
        }
        let (Some(replicas), Some(timeout_ms)) = (integer(&args[1]), integer(&args[2])) else {
            return self.resp_error(cost, NOT_AN_INTEGER);
        };
        if timeout_ms < 0 {
            return self.resp_error(cost, "ERR timeout is negative");
        }
        let deadline = (timeout_ms > 0).then(|| now + Duration::from_millis(timeout_ms as u64));
        let read = NodeRead::Wait {
            replicas: replicas.max(0) as u64,
            seq: self.last_write_seq,
            deadline,
        };
        self.resp_node(cost, read, self.last_write_seq, None);
    }

    fn resp_auth(&mut self, cost: usize, args: &[Bytes]) {
        let (user, password) = match args.len() {
            2 => (None, &args[1]),
            3 => (Some(&args[1]), &args[2]),
            _ => return self.resp_error(cost, SYNTAX),
        };
        if !self.gate.has_secret() {
            match user {
                None => self.resp_error(cost, "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
                Some(user) if &user[..] == b"default" => self.resp_now(cost, reply::ok),
                Some(_) => self.resp_error(cost, WRONGPASS),
            }
            return;
        }
        if self.authenticate(cost, user, password) {
            self.resp_now(cost, reply::ok);
        }
    }

    /// Checks `user` (only `default` exists) and `password` against the secret; queues the
    /// refusal if it fails. True if the connection is now authenticated.
    fn authenticate(&mut self, cost: usize, user: Option<&Bytes>, password: &[u8]) -> bool {
        // A user other than `default` fails as a wrong secret does (an empty one never matches).
        let password = match user {
            Some(user) if &user[..] != b"default" => &b""[..],
            _ => password,
        };
        match self.gate.admit(op::AUTH, 0, password) {
            Verdict::Accepted | Verdict::Pass => {
                if !self.gate.has_secret() || self.gate.is_open() {
                    return true;
                }
                self.resp_error(cost, WRONGPASS);
                false
            }
            refused => {
                self.resp_refused(cost, refused, WRONGPASS);
                false
            }
        }
    }

    fn resp_hello(&mut self, session: &mut Session, cost: usize, args: &[Bytes], rules: &Rules) {
        let mut version = session.version;
        if let Some(text) = args.get(1) {
            version = match integer(text) {
                None => {
                    return self.resp_error(
                        cost,
                        "ERR Protocol version is not an integer or out of range",
                    )
                }
                Some(2) => Version::Resp2,
                Some(3) => Version::Resp3,
                Some(_) => return self.resp_error(cost, "NOPROTO unsupported protocol version"),
            };
        }
        let (mut auth, mut name) = (None, None);
        let mut i = 2;
        while i < args.len() {
            let left = args.len() - i - 1;
            if args[i].eq_ignore_ascii_case(b"AUTH") && left >= 2 {
                auth = Some((&args[i + 1], &args[i + 2]));
                i += 3;
            } else if args[i].eq_ignore_ascii_case(b"SETNAME") && left >= 1 {
                name = Some(&args[i + 1]);
                i += 2;
            } else {
                let option = String::from_utf8_lossy(&args[i]);
                return self.resp_error(
                    cost,
                    &format!("ERR Syntax error in HELLO option '{option}'"),
                );
            }
        }
        if let Some((user, password)) = auth {
            if self.gate.has_secret() && !self.authenticate(cost, Some(user), password) {
                return;
            }
            if !self.gate.has_secret() && &user[..] != b"default" {
                return self.resp_error(cost, WRONGPASS);
            }
        }
        if !self.gate.is_open() {
            let verdict = self.gate.admit(op::GET, 0, &[]);
            return self.resp_refused(cost, verdict, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(name) = name {
            if !valid_name(name) {
                return self.resp_error(
                    cost,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = (!name.is_empty()).then(|| name.clone());
        }
        session.version = version;
        let mut out = BytesMut::new();
        reply::map(&mut out, 8, version);
        let pairs: [(&str, &str); 3] = [
            ("server", "kvs"),
            ("version", crate::resp::REDIS_VERSION),
            ("kvs_version", env!("CARGO_PKG_VERSION")),
        ];
        for (field, value) in pairs {
            reply::bulk(&mut out, field.as_bytes());
            reply::bulk(&mut out, value.as_bytes());
        }
        reply::bulk(&mut out, b"proto");
        reply::integer(&mut out, if version == Version::Resp3 { 3 } else { 2 });
        reply::bulk(&mut out, b"id");
        reply::integer(&mut out, session.client_id as i64);
        reply::bulk(&mut out, b"mode");
        reply::bulk(&mut out, b"standalone");
        reply::bulk(&mut out, b"role");
        let role = if rules.leader_addr.is_some() {
            "replica"
        } else {
            "master"
        };
        reply::bulk(&mut out, role.as_bytes());
        reply::bulk(&mut out, b"modules");
        reply::array(&mut out, 0);
        self.resp_raw(cost, out, 0);
    }

    fn resp_client(&mut self, session: &mut Session, cost: usize, args: &[Bytes], now: Instant) {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        let arity = table::lookup(b"client")
            .and_then(|spec| spec.subcommands.iter().find(|(name, _)| *name == sub))
            .map(|(_, arity)| *arity);
        let Some(arity) = arity else {
            let sub = String::from_utf8_lossy(&args[1]);
            return self.resp_error(
                cost,
                &format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP."),
            );
        };
        if !table::arity_ok(arity, args.len()) {
            return self.resp_error(cost, &arity_error(&format!("client|{sub}")));
        }
        let version = session.version;
        match sub.as_str() {
            "setname" => {
                if !valid_name(&args[2]) {
                    return self.resp_error(
                        cost,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                session.name = (!args[2].is_empty()).then(|| args[2].clone());
                self.resp_now(cost, reply::ok);
            }
            "getname" => match &session.name {
                Some(name) => self.resp_now(cost, |out| reply::bulk(out, name)),
                None => self.resp_now(cost, |out| reply::null(out, version)),
            },
            "id" => self.resp_now(cost, |out| reply::integer(out, session.client_id as i64)),
            "info" => {
                let line = session.info_line(now);
                self.resp_now(cost, |out| reply::verbatim(out, &line, version));
            }
            "list" => {
                let line = session.info_line(now);
                self.resp_now(cost, |out| reply::verbatim(out, &line, version));
            }
            _ => {
                let attribute = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
                let value = &args[3];
                let slot = match attribute.as_str() {
                    "lib-name" => &mut session.lib_name,
                    "lib-ver" => &mut session.lib_ver,
                    _ => {
                        let attribute = String::from_utf8_lossy(&args[2]);
                        return self
                            .resp_error(cost, &format!("ERR Unrecognized option '{attribute}'"));
                    }
                };
                if !valid_name(value) {
                    return self.resp_error(cost, &format!("ERR {attribute} cannot contain spaces, newlines or special characters."));
                }
                *slot = (!value.is_empty()).then(|| value.clone());
                self.resp_now(cost, reply::ok);
            }
        }
    }

    fn resp_command_info(&mut self, cost: usize, args: &[Bytes], version: Version) {
        let mut out = BytesMut::new();
        let sub = args
            .get(1)
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        let names = args.get(2..).unwrap_or_default();
        match sub.as_deref() {
            None => {
                reply::array(&mut out, table::count());
                for spec in table::all() {
                    table::encode_info(&mut out, spec, version);
                }
            }
            Some("count") if args.len() == 2 => reply::integer(&mut out, table::count() as i64),
            Some("count") => return self.resp_error(cost, &arity_error("command|count")),
            Some("info") if names.is_empty() => {
                reply::array(&mut out, table::count());
                for spec in table::all() {
                    table::encode_info(&mut out, spec, version);
                }
            }
            Some("info") => {
                reply::array(&mut out, names.len());
                for name in names {
                    match table::lookup(name) {
                        Some(spec) => table::encode_info(&mut out, spec, version),
                        None => reply::null(&mut out, version),
                    }
                }
            }
            Some("docs") => {
                let specs: Vec<_> = match names.is_empty() {
                    true => table::all().collect(),
                    false => names
                        .iter()
                        .filter_map(|name| table::lookup(name))
                        .collect(),
                };
                reply::map(&mut out, specs.len(), version);
                for spec in specs {
                    table::encode_docs(&mut out, spec, version);
                }
            }
            Some(_) => {
                let sub = String::from_utf8_lossy(&args[1]);
                return self.resp_error(
                    cost,
                    &format!("ERR unknown subcommand '{sub}'. Try COMMAND HELP."),
                );
            }
        }
        self.resp_raw(cost, out, 0);
    }
}

/// A reply with a value observed before a write at `seq` (SET GET, GETDEL): it goes once the
/// write is durable.
fn old_value(old: Current, seq: u64) -> Pending {
    let reply = |status, body, after_seq| Pending::Reply {
        status,
        flags: 0,
        body,
        after_seq,
    };
    match old {
        Current::Value {
            value, after_seq, ..
        } => reply(Status::Ok, value, seq.max(after_seq)),
        Current::Absent { after_seq } => reply(Status::NotFound, Bytes::new(), seq.max(after_seq)),
        // The old record stays readable: compaction keeps a replaced file open for reads
        // decided before it (`COMPACTION_RETIRE_MS`).
        Current::Stored { location, .. } => Pending::Value {
            location,
            after_seq: seq,
        },
    }
}

/// Once a log write failed nothing pending will become durable: a read waits only for what is.
fn settled(engine: &Engine, seq: u64) -> u64 {
    match engine.write_failed() {
        Some(_) => seq.min(engine.durable_seq()),
        None => seq,
    }
}

fn check_value(key: &[u8], value: &[u8], rules: &Rules) -> Result<(), RequestError> {
    check_key(key, rules.limits)?;
    if value.len() > rules.limits.value_bytes_max as usize {
        return Err(RequestError::ValueTooLong {
            len: value.len(),
            max: rules.limits.value_bytes_max,
        });
    }
    Ok(())
}

fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// Redis's text for an unknown command (`server.c`, processCommand): the name and the first
/// arguments, each cut so the list stays near 128 bytes.
fn unknown_command(args: &[Bytes]) -> String {
    let cut = |bytes: &[u8], max: usize| {
        String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
    };
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&cut(arg, room));
        listed.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        cut(&args[0], 128)
    )
}

/// Encodes a reply decided at accept time.
pub(super) fn encode_reply(out: &mut BytesMut, shape: &Shape, status: Status, body: &[u8]) {
    match (status, shape) {
        (Status::Error | Status::NotLeader, _) => encode_failure(out, "ERR", body),
        (_, Shape::Raw) | (_, Shape::Written(_)) => out.put_slice(body),
        (Status::Ok, Shape::Value(_)) => reply::bulk(out, body),
        // No RESP command makes these (native CAS and WATCH only): a null, not a value.
        (Status::NotFound | Status::ConditionFailed | Status::Event, Shape::Value(version)) => {
            reply::null(out, *version)
        }
    }
}

/// Encodes a value read from the log.
pub(super) fn encode_value(out: &mut BytesMut, value: &[u8]) {
    reply::bulk(out, value);
}

/// Encodes a durable write's reply.
pub(super) fn encode_written(out: &mut BytesMut, shape: &Shape) {
    match shape {
        Shape::Written(bytes) => out.put_slice(bytes),
        _ => reply::ok(out),
    }
}

pub(super) fn encode_failure(out: &mut BytesMut, code: &str, message: &[u8]) {
    let text = format!("{code} {}", String::from_utf8_lossy(message));
    reply::error(out, &text);
}

mod keyspace;
mod multi;
mod pubsub;

#[cfg(test)]
mod tests;
