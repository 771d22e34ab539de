//! The commands kvs serves over RESP, with what Redis's command table says of them (arity,
//! flags, key positions, ACL categories): the connection checks arity from it, and COMMAND
//! (COUNT, INFO, DOCS) answers from it.

use std::sync::LazyLock;

use bytes::BytesMut;

use super::reply::{self, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Ping,
    Echo,
    Quit,
    Hello,
    Auth,
    Select,
    Client,
    Command,
    Info,
    DbSize,
    Get,
    Set,
    // issue 13's, in `keyspace.rs`
    SetNx,
    SetEx,
    PSetEx,
    GetSet,
    GetEx,
    MSetNx,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Ttl,
    PTtl,
    ExpireTime,
    PExpireTime,
    Persist,
    Incr,
    IncrBy,
    Decr,
    DecrBy,
    Append,
    GetRange,
    SetRange,
    GetDel,
    Del,
    Unlink,
    Exists,
    MGet,
    MSet,
    Keys,
    Scan,
    Type,
    StrLen,
    Wait,
    Role,
    Config,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
    Publish,
    PubSub,
    Reset,
}

pub struct Spec {
    pub name: Name,
    /// Lower case, as Redis names it in errors and COMMAND.
    pub text: &'static str,
    /// Redis's arity: n means exactly n arguments counting the name, -n at least n.
    pub arity: i32,
    pub write: bool,
    /// Flags and ACL categories, as COMMAND INFO lists them.
    pub flags: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// First key, last key (-1: the last argument), step; 0 0 0 for none.
    pub keys: (i64, i64, i64),
    pub summary: &'static str,
    pub subcommands: &'static [(&'static str, i32)],
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);

pub const COMMANDS: &[Spec] = &[
    // GET and SET first: the lookup is a scan, and they are most of the traffic.
    Spec {
        name: Name::Get,
        text: "get",
        arity: 2,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@read", "@string", "@fast"],
        keys: (1, 1, 1),
        summary: "Returns the string value of a key.",
        subcommands: &[],
    },
    Spec {
        name: Name::Set,
        text: "set",
        arity: -3,
        write: true,
        flags: &["write", "denyoom"],
        categories: &["@write", "@string", "@slow"],
        keys: (1, 1, 1),
        summary: "Sets the string value of a key (GET returns the old one).",
        subcommands: &[],
    },
    Spec {
        name: Name::Ping,
        text: "ping",
        arity: -1,
        write: false,
        flags: &["fast"],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Returns the server's liveliness response.",
        subcommands: &[],
    },
    Spec {
        name: Name::Echo,
        text: "echo",
        arity: 2,
        write: false,
        flags: &["fast"],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Returns the given string.",
        subcommands: &[],
    },
    Spec {
        name: Name::Quit,
        text: "quit",
        arity: -1,
        write: false,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Closes the connection.",
        subcommands: &[],
    },
    Spec {
        name: Name::Hello,
        text: "hello",
        arity: -1,
        write: false,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Handshakes with the server (RESP2 or RESP3, AUTH, SETNAME).",
        subcommands: &[],
    },
    Spec {
        name: Name::Auth,
        text: "auth",
        arity: -2,
        write: false,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Authenticates the connection with the --auth-file secret.",
        subcommands: &[],
    },
    Spec {
        name: Name::Select,
        text: "select",
        arity: 2,
        write: false,
        flags: &["loading", "stale", "fast"],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Selects database 0, the only one kvs has.",
        subcommands: &[],
    },
    Spec {
        name: Name::Client,
        text: "client",
        arity: -2,
        write: false,
        flags: &[],
        categories: &["@slow"],
        keys: NO_KEYS,
        summary: "A container for client connection commands.",
        subcommands: &[
            ("setname", 3),
            ("getname", 2),
            ("id", 2),
            ("info", 2),
            ("list", -2),
            ("setinfo", 4),
        ],
    },
    Spec {
        name: Name::Command,
        text: "command",
        arity: -1,
        write: false,
        flags: &["loading", "stale"],
        categories: &["@slow", "@connection"],
        keys: NO_KEYS,
        summary: "Returns detailed information about all commands.",
        subcommands: &[("count", 2), ("docs", -2), ("info", -2)],
    },
    Spec {
        name: Name::Info,
        text: "info",
        arity: -1,
        write: false,
        flags: &["loading", "stale"],
        categories: &["@slow", "@dangerous"],
        keys: NO_KEYS,
        summary: "Returns information and statistics about the server.",
        subcommands: &[],
    },
    Spec {
        name: Name::DbSize,
        text: "dbsize",
        arity: 1,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@keyspace", "@read", "@fast"],
        keys: NO_KEYS,
        summary: "Returns the number of keys.",
        subcommands: &[],
    },
    Spec {
        name: Name::GetDel,
        text: "getdel",
        arity: 2,
        write: true,
        flags: &["write", "fast"],
        categories: &["@write", "@string", "@fast"],
        keys: (1, 1, 1),
        summary: "Returns the string value of a key after deleting the key.",
        subcommands: &[],
    },
    Spec {
        name: Name::Del,
        text: "del",
        arity: -2,
        write: true,
        flags: &["write"],
        categories: &["@keyspace", "@write", "@slow"],
        keys: (1, -1, 1),
        summary: "Deletes one or more keys.",
        subcommands: &[],
    },
    Spec {
        name: Name::Unlink,
        text: "unlink",
        arity: -2,
        write: true,
        flags: &["write", "fast"],
        categories: &["@keyspace", "@write", "@fast"],
        keys: (1, -1, 1),
        summary: "Deletes one or more keys (as DEL).",
        subcommands: &[],
    },
    Spec {
        name: Name::Exists,
        text: "exists",
        arity: -2,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@keyspace", "@read", "@fast"],
        keys: (1, -1, 1),
        summary: "Determines whether one or more keys exist.",
        subcommands: &[],
    },
    Spec {
        name: Name::MGet,
        text: "mget",
        arity: -2,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@read", "@string", "@fast"],
        keys: (1, -1, 1),
        summary: "Atomically returns the string values of one or more keys.",
        subcommands: &[],
    },
    Spec {
        name: Name::MSet,
        text: "mset",
        arity: -3,
        write: true,
        flags: &["write", "denyoom"],
        categories: &["@write", "@string", "@slow"],
        keys: (1, -1, 2),
        summary: "Sets the string values of one or more keys.",
        subcommands: &[],
    },
    Spec {
        name: Name::Keys,
        text: "keys",
        arity: 2,
        write: false,
        flags: &["readonly"],
        categories: &["@keyspace", "@read", "@slow", "@dangerous"],
        keys: NO_KEYS,
        summary: "Returns all key names that match a pattern.",
        subcommands: &[],
    },
    Spec {
        name: Name::Scan,
        text: "scan",
        arity: -2,
        write: false,
        flags: &["readonly"],
        categories: &["@keyspace", "@read", "@slow"],
        keys: NO_KEYS,
        summary: "Iterates over the key names in the database.",
        subcommands: &[],
    },
    Spec {
        name: Name::Type,
        text: "type",
        arity: 2,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@keyspace", "@read", "@fast"],
        keys: (1, 1, 1),
        summary: "Determines the type of value stored at a key.",
        subcommands: &[],
    },
    Spec {
        name: Name::StrLen,
        text: "strlen",
        arity: 2,
        write: false,
        flags: &["readonly", "fast"],
        categories: &["@read", "@string", "@fast"],
        keys: (1, 1, 1),
        summary: "Returns the length of a string value.",
        subcommands: &[],
    },
    Spec {
        name: Name::Wait,
        text: "wait",
        arity: 3,
        write: false,
        flags: &[],
        categories: &["@slow", "@connection"],
        keys: NO_KEYS,
        summary: "Blocks until the connection's writes are durable on N followers, or the timeout.",
        subcommands: &[],
    },
    Spec {
        name: Name::Role,
        text: "role",
        arity: 1,
        write: false,
        flags: &["noscript", "loading", "stale", "fast"],
        categories: &["@admin", "@fast", "@dangerous"],
        keys: NO_KEYS,
        summary: "Returns the replication role.",
        subcommands: &[],
    },
    Spec {
        name: Name::Config,
        text: "config",
        arity: -2,
        write: false,
        flags: &[],
        categories: &["@slow"],
        keys: NO_KEYS,
        summary: "CONFIG GET answers an empty map: kvs is configured by its flags.",
        subcommands: &[("get", -3)],
    },
    Spec {
        name: Name::Multi,
        text: "multi",
        arity: 1,
        write: false,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        categories: &["@fast", "@transaction"],
        keys: NO_KEYS,
        summary: "Starts a transaction.",
        subcommands: &[],
    },
    Spec {
        name: Name::Exec,
        text: "exec",
        arity: 1,
        write: false,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        categories: &["@slow", "@transaction"],
        keys: NO_KEYS,
        summary: "Executes all commands in a transaction: one log record, all or none.",
        subcommands: &[],
    },
    Spec {
        name: Name::Discard,
        text: "discard",
        arity: 1,
        write: false,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        categories: &["@fast", "@transaction"],
        keys: NO_KEYS,
        summary: "Discards a transaction.",
        subcommands: &[],
    },
    Spec {
        name: Name::Watch,
        text: "watch",
        arity: -2,
        write: false,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        categories: &["@fast", "@transaction"],
        keys: (1, -1, 1),
        summary: "Monitors changes to keys to determine the execution of a transaction.",
        subcommands: &[],
    },
    Spec {
        name: Name::Unwatch,
        text: "unwatch",
        arity: 1,
        write: false,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        categories: &["@fast", "@transaction"],
        keys: NO_KEYS,
        summary: "Forgets about watched keys of a transaction.",
        subcommands: &[],
    },
    Spec {
        name: Name::Subscribe,
        text: "subscribe",
        arity: -2,
        write: false,
        flags: &["pubsub", "noscript", "loading", "stale"],
        categories: &["@pubsub", "@slow"],
        keys: NO_KEYS,
        summary: "Listens for messages published to channels (in memory, not logged).",
        subcommands: &[],
    },
    Spec {
        name: Name::Unsubscribe,
        text: "unsubscribe",
        arity: -1,
        write: false,
        flags: &["pubsub", "noscript", "loading", "stale"],
        categories: &["@pubsub", "@slow"],
        keys: NO_KEYS,
        summary: "Stops listening to messages posted to channels.",
        subcommands: &[],
    },
    Spec {
        name: Name::PSubscribe,
        text: "psubscribe",
        arity: -2,
        write: false,
        flags: &["pubsub", "noscript", "loading", "stale"],
        categories: &["@pubsub", "@slow"],
        keys: NO_KEYS,
        summary: "Listens for messages published to channels that match one or more patterns.",
        subcommands: &[],
    },
    Spec {
        name: Name::PUnsubscribe,
        text: "punsubscribe",
        arity: -1,
        write: false,
        flags: &["pubsub", "noscript", "loading", "stale"],
        categories: &["@pubsub", "@slow"],
        keys: NO_KEYS,
        summary: "Stops listening to messages published to channels that match patterns.",
        subcommands: &[],
    },
    Spec {
        name: Name::Publish,
        text: "publish",
        arity: 3,
        write: false,
        flags: &["pubsub", "loading", "stale", "fast"],
        categories: &["@pubsub", "@fast"],
        keys: NO_KEYS,
        summary: "Posts a message to a channel (in memory, not logged or replicated).",
        subcommands: &[],
    },
    Spec {
        name: Name::PubSub,
        text: "pubsub",
        arity: -2,
        write: false,
        flags: &[],
        categories: &["@slow"],
        keys: NO_KEYS,
        summary: "A container for Pub/Sub commands.",
        subcommands: &[("channels", -2), ("numsub", -2), ("numpat", 2)],
    },
    Spec {
        name: Name::Reset,
        text: "reset",
        arity: 1,
        write: false,
        flags: &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        categories: &["@fast", "@connection"],
        keys: NO_KEYS,
        summary: "Resets the connection: discards MULTI, unwatches, unsubscribes, RESP2.",
        subcommands: &[],
    },
];

mod keyspace;

/// Every command kvs serves: this file's, then the string and expiry commands of `keyspace`.
pub fn all() -> impl Iterator<Item = &'static Spec> {
    COMMANDS.iter().chain(keyspace::COMMANDS)
}

/// How many commands kvs serves (COMMAND COUNT).
pub fn count() -> usize {
    COMMANDS.len() + keyspace::COMMANDS.len()
}

/// The longest command name kvs serves, in bytes: a longer name is unknown without a search.
const NAME_BYTES_MAX: usize = 24;

/// The spec of a command name, any case.
///
/// Every request takes this path, so the names are kept apart from the (large) specs, sorted,
/// and searched by halves: scanning the specs in order walked some forty of them, a cache line
/// each, before reaching SET.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    static BY_NAME: LazyLock<Vec<(&'static [u8], &'static Spec)>> = LazyLock::new(|| {
        let mut names: Vec<_> = all().map(|spec| (spec.text.as_bytes(), spec)).collect();
        names.sort_unstable_by_key(|(name, _)| *name);
        names
    });
    if name.len() > NAME_BYTES_MAX {
        return None;
    }
    let mut lower = [0u8; NAME_BYTES_MAX];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let index = BY_NAME
        .binary_search_by(|(text, _)| (*text).cmp(&*lower))
        .ok()?;
    Some(BY_NAME[index].1)
}

/// Whether `args` (the name included) has an arity `arity` allows.
pub fn arity_ok(arity: i32, args: usize) -> bool {
    match arity >= 0 {
        true => args == arity as usize,
        false => args >= arity.unsigned_abs() as usize,
    }
}

/// One COMMAND INFO entry: name, arity, flags, first key, last key, step, ACL categories,
/// tips, key specs, subcommands.
pub fn encode_info(out: &mut BytesMut, spec: &Spec, version: Version) {
    encode_entry(out, spec.text, spec.arity, spec, version);
    reply::array(out, spec.subcommands.len());
    for (sub, arity) in spec.subcommands {
        encode_entry(out, &format!("{}|{sub}", spec.text), *arity, spec, version);
        reply::array(out, 0);
    }
}

fn encode_entry(out: &mut BytesMut, name: &str, arity: i32, spec: &Spec, version: Version) {
    reply::array(out, 10);
    reply::bulk(out, name.as_bytes());
    reply::integer(out, i64::from(arity));
    reply::set(out, spec.flags.len(), version);
    for flag in spec.flags {
        reply::simple(out, flag);
    }
    let (first, last, step) = spec.keys;
    reply::integer(out, first);
    reply::integer(out, last);
    reply::integer(out, step);
    reply::set(out, spec.categories.len(), version);
    for category in spec.categories {
        reply::simple(out, category);
    }
    reply::array(out, 0);
    reply::array(out, 0);
}

/// One COMMAND DOCS entry: the name, then a map of summary, since and group.
pub fn encode_docs(out: &mut BytesMut, spec: &Spec, version: Version) {
    reply::bulk(out, spec.text.as_bytes());
    reply::map(out, 3, version);
    reply::bulk(out, b"summary");
    reply::bulk(out, spec.summary.as_bytes());
    reply::bulk(out, b"since");
    reply::bulk(out, b"1.0.0");
    reply::bulk(out, b"group");
    reply::bulk(
        out,
        if spec.categories.contains(&"@string") {
            b"string".as_slice()
        } else {
            b"generic"
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_any_case_and_arity_reads_as_redis_does() {
        assert_eq!(lookup(b"gEt").map(|s| s.name), Some(Name::Get));
        assert!(lookup(b"flushall").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(&[b'g'; 300]).is_none());
        assert!(arity_ok(2, 2) && !arity_ok(2, 3));
        assert!(arity_ok(-2, 2) && arity_ok(-2, 9) && !arity_ok(-2, 1));
        for spec in all() {
            assert_eq!(spec.text, spec.text.to_lowercase());
            assert!(spec.text.len() <= NAME_BYTES_MAX, "{}", spec.text);
            let upper = spec.text.to_uppercase();
            assert_eq!(lookup(upper.as_bytes()).map(|s| s.name), Some(spec.name));
            assert_eq!(
                lookup(spec.text.as_bytes()).map(|s| s.name),
                Some(spec.name)
            );
        }
        assert_eq!(all().count(), count());
    }
}
