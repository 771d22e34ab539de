//! kvsctl's commands: the one table (`Command`) that both the one-shot form and the shell parse
//! with, and what each command does (`execute`). To add a command, add a variant here and its
//! arm in `execute`: the command line, the shell and `help` all pick it up.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use clap::Subcommand;
use kvs::client::{EventKind, Written};
use kvs::protocol::ext::{Condition, ExpireFlags, Expiry, SetOptions};

use crate::output::{self, Json};
use crate::txn_spec;
use crate::{not_found, Failure, Mode, Outcome, Session, STDIN_VALUE_BYTES_MAX};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the value of a key
    ///
    /// Prints the value and a newline; a binary value is written byte for byte. Exit status 1,
    /// and "(not found)" on stderr, if the key does not exist (in the shell: "(nil)").
    #[command(verbatim_doc_comment)]
    Get {
        /// The key (any bytes, 1 to 4096 by default)
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        /// Answer only once the server has applied every write up to SEQ (read-your-writes
        /// on a follower)
        #[arg(long, value_name = "SEQ")]
        min_seq: Option<u64>,
    },
    /// Store a value under a key
    ///
    /// Prints "OK (seq N)", N being the write's sequence number. A VALUE of "-" reads the
    /// value from stdin, byte for byte, so binary values can be stored:
    ///     kvsctl set photo - < photo.jpg
    /// (to store a lone "-", pipe it in: printf - | kvsctl set KEY -; in the shell "-" is a
    /// plain value). With --nx, --xx or --if-seq a write whose condition fails changes
    /// nothing, prints "NOT SET (key seq N)" and exits 3.
    #[command(verbatim_doc_comment)]
    Set {
        /// The key (any bytes, 1 to 4096 by default)
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        /// The value (0 to 1 MiB by default), or "-" to read it from stdin
        #[arg(allow_hyphen_values = true)]
        value: OsString,
        /// Expire the key after DURATION (500ms, 30s, 10m, 2h, 1d; a bare number is seconds).
        /// Without it (or --keep-ttl) the key has no expiry, whatever it had
        #[arg(long, value_name = "DURATION", value_parser = output::parse_duration_ms)]
        ttl: Option<u64>,
        /// Keep the key's current expiry
        #[arg(long, conflicts_with = "ttl")]
        keep_ttl: bool,
        /// Only if the key does not exist
        #[arg(long, conflicts_with_all = ["xx", "if_seq"])]
        nx: bool,
        /// Only if the key exists
        #[arg(long, conflicts_with = "if_seq")]
        xx: bool,
        /// Only if the key's seq (the last write that changed it, see `ttl`) is N; 0: only
        /// if the key does not exist (compare-and-set)
        #[arg(long, value_name = "N")]
        if_seq: Option<u64>,
    },
    /// Delete a key
    ///
    /// Prints "OK (seq N)". Exit status 1, and "(not found)" on stderr, if the key does not
    /// exist.
    #[command(verbatim_doc_comment)]
    Del {
        /// The key
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// List keys, one per line
    ///
    /// Prints every key that starts with PREFIX (every key without one), one per line, in
    /// ascending byte order, however many replies the server splits them into.
    #[command(verbatim_doc_comment)]
    Keys {
        /// Only keys that start with these bytes
        #[arg(allow_hyphen_values = true)]
        prefix: Option<OsString>,
    },
    /// Print how long a key has to live, and its seq
    ///
    /// Prints "1500 ms (seq N)", or "no expiry (seq N)". N is the seq of the last write that
    /// changed the key: the number `set --if-seq` compares with. Exit status 1 if the key does
    /// not exist.
    #[command(verbatim_doc_comment)]
    Ttl {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// Make a key expire after DURATION
    ///
    /// Prints "OK (seq N)"; exit status 1 if the key does not exist. With --nx, --xx, --gt or
    /// --lt (Redis 7's EXPIRE options; a key without an expiry counts as expiring never) an
    /// expiry whose condition fails changes nothing, prints "NOT SET (key seq N)" and exits 3.
    #[command(verbatim_doc_comment)]
    Expire {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        /// 500ms, 30s, 10m, 2h, 1d; a bare number is seconds
        #[arg(value_parser = output::parse_duration_ms)]
        duration: u64,
        /// Only if the key has no expiry
        #[arg(long, conflicts_with_all = ["xx", "gt", "lt"])]
        nx: bool,
        /// Only if the key has an expiry
        #[arg(long)]
        xx: bool,
        /// Only if the new expiry is later than the key's (never true without one)
        #[arg(long, conflicts_with = "lt")]
        gt: bool,
        /// Only if the new expiry is earlier than the key's (always true without one)
        #[arg(long)]
        lt: bool,
    },
    /// Remove a key's expiry
    ///
    /// Prints "OK (seq N)"; "NOT SET (key seq N)" and exit status 3 if the key had no expiry;
    /// exit status 1 if it does not exist.
    #[command(verbatim_doc_comment)]
    Persist {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// Add BY (default 1, may be negative) to the integer stored at a key
    ///
    /// A missing key counts as 0. The value must be a decimal 64-bit signed integer, and the
    /// result must fit one (as Redis's INCRBY). Prints the new value; the key keeps its expiry.
    #[command(verbatim_doc_comment)]
    Incr {
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        #[arg(allow_hyphen_values = true, default_value_t = 1)]
        by: i64,
    },
    /// Print the values of several keys, one per line
    ///
    /// "(nil)" for a key that does not exist. All values are read at one moment.
    #[command(verbatim_doc_comment)]
    Mget {
        #[arg(required = true, allow_hyphen_values = true)]
        keys: Vec<OsString>,
    },
    /// Store several values in one write: all of them, or (on a crash) none
    ///
    /// Prints "OK (seq N)".
    #[command(verbatim_doc_comment)]
    Mset {
        /// KEY VALUE KEY VALUE ...
        #[arg(required = true, allow_hyphen_values = true, value_name = "KEY VALUE")]
        pairs: Vec<OsString>,
    },
    /// Run a transaction read from stdin (or --file): conditions, then writes
    ///
    /// Three sections separated by an empty line, as etcdctl txn reads them: the compares
    /// (all must hold), the writes if they do, the writes if not. One per line, words split
    /// as a shell splits them:
    ///     seq KEY OP N          OP: = != < >   (seq 0: the key does not exist)
    ///     value KEY OP VALUE
    ///     exists KEY  |  missing KEY
    ///
    ///     set KEY VALUE [--ttl DURATION]
    ///     del KEY
    ///     expire KEY DURATION  |  persist KEY
    /// Prints "SUCCESS (seq N)" or "FAILURE (seq N)" (seq 0: nothing written); exit status 3
    /// on FAILURE. The chosen writes are one record in the log: after a crash, all or none.
    #[command(verbatim_doc_comment)]
    Txn {
        /// Read the transaction from this file instead of stdin
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print every change to a key or prefix, as it happens, until interrupted
    ///
    /// One line per change: "SEQ set KEY VALUE", "SEQ del KEY", "SEQ expired KEY",
    /// "SEQ expire KEY UNIX_MS" (an expiry changed; 0: removed); bytes that are not printable
    /// are escaped (\n, \xff). With --from-seq N, the changes from seq N on come first, from
    /// the log (after a disconnect, pass the last seq seen + 1 to miss nothing).
    #[command(verbatim_doc_comment)]
    Watch {
        /// Only keys starting with PREFIX (all keys without it)
        #[arg(allow_hyphen_values = true)]
        prefix: Option<OsString>,
        /// Start at this seq (0, the default: only changes from now on)
        #[arg(long, value_name = "N", default_value_t = 0)]
        from_seq: u64,
        /// Watch the one key PREFIX, not every key starting with it
        #[arg(long, requires = "prefix")]
        exact: bool,
    },
    /// Print the server's figures
    ///
    /// One "name  value" per line: role, keys, last_seq, durable_seq, connections, fsync
    /// timings and more (see docs/protocol.md).
    #[command(verbatim_doc_comment)]
    Stats,
    /// Compact the server's log now
    ///
    /// Rewrites every sealed log segment that holds overwritten or deleted data, and prints
    /// what it reclaimed. kvsd also compacts by itself (--compact-garbage-ratio).
    #[command(verbatim_doc_comment)]
    Compact,
    /// A Raft cluster: members, roles, term, commit seq, lag; or a change to it
    Cluster(kvs::client::cluster::ClusterArgs),
    /// Check that the server answers
    ///
    /// Prints TEXT as the server echoes it back, or PONG without TEXT.
    #[command(verbatim_doc_comment)]
    Ping {
        /// Bytes for the server to echo
        #[arg(allow_hyphen_values = true)]
        text: Option<OsString>,
    },
}

/// How a command prints: as text for a person, or (`--json`) one JSON object per line.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub mode: Mode,
    pub json: bool,
}

fn bytes(arg: &OsString) -> Vec<u8> {
    arg.clone().into_vec()
}

fn read_stdin_value() -> Result<Vec<u8>, Failure> {
    let mut value = Vec::new();
    std::io::stdin()
        .lock()
        .take(STDIN_VALUE_BYTES_MAX + 1)
        .read_to_end(&mut value)
        .map_err(|error| Failure::Input(format!("cannot read the value from stdin: {error}")))?;
    if value.len() as u64 > STDIN_VALUE_BYTES_MAX {
        return Err(Failure::Input(format!(
            "the value on stdin is over {STDIN_VALUE_BYTES_MAX} bytes, more than any kvsd accepts"
        )));
    }
    Ok(value)
}

fn written(out: &mut dyn Write, style: Style, written: Written) -> Result<Outcome, Failure> {
    match written {
        Written::Ok(seq) => {
            output::ok_seq(out, style.json, seq)?;
            Ok(Outcome::Done)
        }
        Written::ConditionFailed(seq) => {
            if style.json {
                writeln!(out, "{}", Json::new().bool("ok", false).u64("key_seq", seq))?;
            } else {
                writeln!(out, "NOT SET (key seq {seq})")?;
            }
            Ok(Outcome::ConditionFailed)
        }
    }
}

/// Makes the request and prints its result on `out`, notes on stderr.
pub fn execute(
    session: &mut Session,
    command: &Command,
    style: Style,
    out: &mut dyn Write,
) -> Result<Outcome, Failure> {
    let json = style.json;
    match command {
        Command::Get { key, min_seq } => {
            let key = bytes(key);
            let value = session.run(|client| match min_seq {
                Some(min_seq) => client.get_min_seq(&key, *min_seq),
                None => client.get(&key),
            })?;
            match value {
                Some(value) if json => {
                    writeln!(out, "{}", Json::new().bytes("value", &value))?;
                    Ok(Outcome::Done)
                }
                Some(value) => {
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                    Ok(Outcome::Done)
                }
                None => missing(out, style),
            }
        }
        Command::Set {
            key,
            value,
            ttl,
            keep_ttl,
            nx,
            xx,
            if_seq,
        } => {
            let value = if value == "-" && style.mode == Mode::OneShot {
                read_stdin_value()?
            } else {
                bytes(value)
            };
            let condition = match (nx, xx, if_seq) {
                (true, _, _) => Condition::Absent,
                (_, true, _) => Condition::Present,
                (_, _, Some(seq)) => Condition::Seq(*seq),
                _ => Condition::Always,
            };
            let options = SetOptions {
                expiry: ttl.map(Expiry::InMs),
                keep_ttl: *keep_ttl,
                condition,
            };
            let key = bytes(key);
            if options == SetOptions::default() {
                let seq = session.run(|client| client.set(&key, &value))?;
                return written(out, style, Written::Ok(seq));
            }
            let result = session.run(|client| client.set_with(&key, &value, options))?;
            written(out, style, result)
        }
        Command::Del { key } => {
            let key = bytes(key);
            match session.run(|client| client.del(&key))? {
                Some(seq) => {
                    output::ok_seq(out, json, seq)?;
                    Ok(Outcome::Done)
                }
                None => {
                    out.flush()?;
                    not_found();
                    if json {
                        writeln!(
                            out,
                            "{}",
                            Json::new().bool("ok", false).bool("found", false)
                        )?;
                    }
                    Ok(Outcome::NotFound)
                }
            }
        }
        Command::Keys { prefix } => {
            let prefix = prefix.as_ref().map(bytes).unwrap_or_default();
            for key in session.run(|client| client.keys(&prefix))? {
                if json {
                    writeln!(out, "{}", Json::new().bytes("key", &key))?;
                } else {
                    out.write_all(&key)?;
                    out.write_all(b"\n")?;
                }
            }
            Ok(Outcome::Done)
        }
        Command::Ttl { key } => {
            let key = bytes(key);
            match session.run(|client| client.meta(&key))? {
                None => missing(out, style),
                Some(meta) => {
                    if json {
                        let mut object = Json::new().u64("seq", meta.seq);
                        object = match meta.ttl_ms() {
                            Some(ttl) => object
                                .u64("ttl_ms", ttl)
                                .u64("expires_at_ms", meta.expires_at_ms),
                            None => object.null("ttl_ms").null("expires_at_ms"),
                        };
                        writeln!(out, "{object}")?;
                    } else {
                        match meta.ttl_ms() {
                            Some(ttl) => writeln!(out, "{ttl} ms (seq {})", meta.seq)?,
                            None => writeln!(out, "no expiry (seq {})", meta.seq)?,
                        }
                    }
                    Ok(Outcome::Done)
                }
            }
        }
        Command::Expire {
            key,
            duration,
            nx,
            xx,
            gt,
            lt,
        } => {
            let key = bytes(key);
            let condition = ExpireFlags {
                nx: *nx,
                xx: *xx,
                gt: *gt,
                lt: *lt,
            };
            let expiry = Some(Expiry::InMs(*duration));
            match session.run(|client| client.expire_if(&key, expiry, condition))? {
                Some(result) => written(out, style, result),
                None => missing(out, style),
            }
        }
        Command::Persist { key } => {
            let key = bytes(key);
            match session.run(|client| client.expire(&key, None))? {
                Some(result) => written(out, style, result),
                None => missing(out, style),
            }
        }
        Command::Incr { key, by } => {
            let key = bytes(key);
            let (value, seq) = session.run(|client| client.incr_by(&key, *by))?;
            if json {
                writeln!(out, "{}", Json::new().i64("value", value).u64("seq", seq))?;
            } else {
                writeln!(out, "{value}")?;
            }
            Ok(Outcome::Done)
        }
        Command::Mget { keys } => {
            let keys: Vec<Vec<u8>> = keys.iter().map(bytes).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let values = session.run(|client| client.mget(&refs))?;
            for (key, value) in keys.iter().zip(values) {
                match (value, json) {
                    (Some(value), true) => writeln!(
                        out,
                        "{}",
                        Json::new().bytes("key", key).bytes("value", &value)
                    )?,
                    (None, true) => {
                        writeln!(out, "{}", Json::new().bytes("key", key).null("value"))?
                    }
                    (Some(value), false) => {
                        out.write_all(&value)?;
                        out.write_all(b"\n")?;
                    }
                    (None, false) => writeln!(out, "(nil)")?,
                }
            }
            Ok(Outcome::Done)
        }
        Command::Mset { pairs } => {
            if pairs.len() % 2 != 0 {
                return Err(Failure::Input(
                    "mset takes KEY VALUE pairs: the last key has no value".to_string(),
                ));
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
                .chunks(2)
                .map(|pair| (bytes(&pair[0]), bytes(&pair[1])))
                .collect();
            let refs: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(key, value)| (key.as_slice(), value.as_slice()))
                .collect();
            let seq = session.run(|client| client.mset(&refs))?;
            output::ok_seq(out, json, seq)?;
            Ok(Outcome::Done)
        }
        Command::Txn { file } => {
            let text = match (file, style.mode) {
                (Some(path), _) => std::fs::read(path).map_err(|error| {
                    Failure::Input(format!("cannot read {}: {error}", path.display()))
                })?,
                (None, Mode::OneShot) => read_stdin_value()?,
                (None, Mode::Shell) => {
                    return Err(Failure::Input(
                        "in the shell, txn reads its transaction from a file: txn --file PATH"
                            .to_string(),
                    ))
                }
            };
            let txn = txn_spec::parse(&text).map_err(Failure::Input)?;
            let outcome = session.run(|client| client.txn(txn.clone()))?;
            if json {
                writeln!(
                    out,
                    "{}",
                    Json::new()
                        .bool("succeeded", outcome.succeeded)
                        .u64("seq", outcome.seq)
                )?;
            } else {
                let branch = if outcome.succeeded {
                    "SUCCESS"
                } else {
                    "FAILURE"
                };
                writeln!(out, "{branch} (seq {})", outcome.seq)?;
            }
            Ok(if outcome.succeeded {
                Outcome::Done
            } else {
                Outcome::ConditionFailed
            })
        }
        Command::Watch {
            prefix,
            from_seq,
            exact,
        } => {
            let key = prefix.as_ref().map(bytes).unwrap_or_default();
            let client = session.take_client()?;
            let mut watch = client.watch(&key, !exact, *from_seq)?;
            let out = &mut std::io::BufWriter::with_capacity(64 * 1024, out);
            loop {
                let event = watch.next_event()?;
                if json {
                    let mut object = Json::new()
                        .u64("seq", event.seq)
                        .str("event", event.kind.name())
                        .bytes("key", &event.key);
                    object = match event.kind {
                        EventKind::Set => object.bytes("value", &event.value),
                        EventKind::Expire => object.u64("expires_at_ms", event.expires_at_ms),
                        _ => object,
                    };
                    if event.kind == EventKind::Set && event.expires_at_ms != 0 {
                        object = object.u64("expires_at_ms", event.expires_at_ms);
                    }
                    writeln!(out, "{object}")?;
                } else {
                    write!(out, "{} {} ", event.seq, event.kind.name())?;
                    out.write_all(&output::escaped(&event.key))?;
                    match event.kind {
                        EventKind::Set => {
                            out.write_all(b" ")?;
                            out.write_all(&output::escaped(&event.value))?;
                        }
                        EventKind::Expire => write!(out, " {}", event.expires_at_ms)?,
                        _ => {}
                    }
                    out.write_all(b"\n")?;
                }
                // One write per burst of events, not per event; never holding one back.
                if !watch.has_buffered_event() {
                    out.flush()?;
                }
            }
        }
        Command::Stats => {
            let stats = session.run(|client| client.stats())?;
            output::stats(out, json, &stats)?;
            Ok(Outcome::Done)
        }
        Command::Compact => {
            let summary = session.run(|client| client.compact())?;
            output::stats(out, json, &summary)?;
            Ok(Outcome::Done)
        }
        // Follows NOT_LEADER itself, on its own connection: `main` runs it one-shot.
        Command::Cluster(_) => Err(Failure::Input(
            "cluster is a one-shot command: run `kvsctl cluster ...` outside the shell".into(),
        )),
        Command::Ping { text } => {
            let payload = text.as_ref().map(bytes).unwrap_or_default();
            let echo = session.run(|client| client.ping(&payload))?;
            if json {
                writeln!(out, "{}", Json::new().bytes("echo", &echo))?;
            } else if echo.is_empty() {
                writeln!(out, "PONG")?;
            } else {
                out.write_all(&echo)?;
                out.write_all(b"\n")?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// A key that does not exist: "(not found)" on stderr (one-shot) or "(nil)" (shell).
fn missing(out: &mut dyn Write, style: Style) -> Result<Outcome, Failure> {
    if style.json {
        writeln!(out, "{}", Json::new().bool("found", false))?;
    } else if style.mode == Mode::Shell {
        writeln!(out, "(nil)")?;
    } else {
        out.flush()?;
        not_found();
    }
    Ok(Outcome::NotFound)
}
