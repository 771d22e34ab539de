//! Protocol conformance: the real kvsd against a client packed by hand from `docs/protocol.md`
//! (`common::raw`, not `kvs::protocol`). Every op, every status, ids, seqs, min_seq, binary
//! data, KEYS paging, STATS, each error rule, frames split and batched, 10,000 pipelined
//! requests and 64 concurrent connections.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::thread;
use std::time::Duration;

use common::raw::{
    frame, keys_after_body, min_seq_body, parse_keys, proc_status_kib, read_reply, set_body,
    spread_id, Conn, Reply, DEL, ERROR, GET, GET_MIN_SEQ, KEYS, KEYS_MORE, KEYS_START_AFTER,
    NOT_FOUND, OK, PING, SET, STATS,
};
use common::Kvsd;

/// Small limits, so that KEYS paging and the size errors need few bytes. The frame holds the
/// largest SET: 14 + 64 + 1000 <= 2000.
const SMALL_LIMITS: &[&str] = &[
    "--max-frame-bytes",
    "2000",
    "--max-value-bytes",
    "1000",
    "--max-key-bytes",
    "64",
];
const SMALL_MAX_FRAME: u32 = 2000;
const SMALL_MAX_KEY: usize = 64;
const SMALL_MAX_VALUE: usize = 1000;
/// docs/protocol.md: the default `max_frame`.
const DEFAULT_MAX_FRAME: u32 = 1024 * 1024 + 64 * 1024;

fn start(extra: &[&str]) -> (tempfile::TempDir, Kvsd) {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), extra);
    (dir, server)
}

/// The newest seq: SETs a scratch key and returns the seq minus one, so a test can tell
/// whether anything it sent wrote to the log.
fn last_seq(conn: &mut Conn) -> u64 {
    conn.set(b"~probe", b"") - 1
}

// ---------------------------------------------------------------------------------------------
// Every op and status
// ---------------------------------------------------------------------------------------------

#[test]
fn ping_echoes_its_body_and_id() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);

    // The example of docs/protocol.md, byte for byte, and the reply it implies.
    conn.send(&[
        0x0c, 0, 0, 0, 0x05, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, b'h', b'i',
    ]);
    let mut reply = [0u8; 16];
    std::io::Read::read_exact(&mut conn.stream, &mut reply).unwrap();
    assert_eq!(
        reply,
        [0x0c, 0, 0, 0, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']
    );

    conn.ping(b"");
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    conn.ping(&every_byte);
}

#[test]
fn set_get_del_answer_ok_and_not_found() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);

    // SET name = alice, id 1: the example of docs/protocol.md, and its reply (the first write
    // of a new log has seq 1).
    let set = [
        0x17, 0, 0, 0, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0, b'n', b'a', b'm',
        b'e', b'a', b'l', b'i', b'c', b'e',
    ];
    assert_eq!(
        &set[..],
        &frame(SET, 0, 1, &set_body(b"name", b"alice"))[..]
    );
    conn.send(&set);
    let mut reply = [0u8; 22];
    std::io::Read::read_exact(&mut conn.stream, &mut reply).unwrap();
    assert_eq!(
        reply,
        [0x12, 0, 0, 0, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    );

    conn.call(GET, 0, 2, b"name").assert_ok(2, b"alice");
    conn.call(GET, 0, 3, b"nobody").assert_not_found(3);

    let overwrite = conn.call(SET, 0, 4, &set_body(b"name", b"bob")).seq();
    assert_eq!(overwrite, 2);
    conn.call(GET, 0, 5, b"name").assert_ok(5, b"bob");

    assert_eq!(conn.call(DEL, 0, 6, b"name").seq(), 3);
    conn.call(GET, 0, 7, b"name").assert_not_found(7);
    conn.call(DEL, 0, 8, b"name").assert_not_found(8);
}

#[test]
fn del_of_a_missing_key_writes_nothing() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);

    let first = conn.set(b"a", b"1");
    let missing = conn.del(b"never-written");
    assert_eq!(missing.status, NOT_FOUND, "{missing:?}");
    assert!(missing.body.is_empty());
    let second = conn.set(b"b", b"2");
    assert_eq!(
        second,
        first + 1,
        "a DEL that found nothing must not take a seq"
    );

    assert_eq!(conn.del(b"a").seq(), second + 1);
    let again = conn.del(b"a");
    assert_eq!(again.status, NOT_FOUND, "{again:?}");
    let third = conn.set(b"c", b"3");
    assert_eq!(
        third,
        second + 2,
        "a second DEL of the same key writes nothing"
    );

    let stats = conn.stats();
    assert_eq!(stats["last_seq"], third.to_string());
    assert_eq!(stats["keys"], "2");
}

#[test]
fn ids_are_echoed_unchanged() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let ids = [
        0,
        1,
        0xff,
        0x100,
        0x0102_0304_0506_0708,
        0x8000_0000_0000_0000,
        u64::MAX - 1,
        u64::MAX,
    ];
    for id in ids {
        let key = format!("id-{id:x}");
        let key = key.as_bytes();
        assert_eq!(conn.call(GET, 0, id, key).status, NOT_FOUND);
        conn.call(SET, 0, id, &set_body(key, b"v")).seq();
        conn.call(GET, 0, id, key).assert_ok(id, b"v");
        assert_eq!(conn.call(KEYS, 0, id, key).status, OK);
        conn.call(PING, 0, id, b"p").assert_ok(id, b"p");
        assert_eq!(conn.call(STATS, 0, id, b"").status, OK);
        conn.call(DEL, 0, id, key).seq();
        conn.call(DEL, 0, id, key).assert_not_found(id);
        conn.call(0x3f, 0, id, b"").assert_error(id);
    }
}

#[test]
fn seq_increases_by_one_per_write_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    let write_some = |server: &Kvsd, last: &mut u64| {
        let mut conn = Conn::connect(&server.addr);
        for i in 0..10u32 {
            let key = format!("seq-{}", i % 3);
            let seq = if i % 4 == 3 {
                conn.del(key.as_bytes()).seq()
            } else {
                conn.set(key.as_bytes(), &i.to_le_bytes())
            };
            if *last != 0 {
                assert_eq!(seq, *last + 1, "seq goes up by exactly one per write");
            }
            *last = seq;
        }
        let stats = conn.stats();
        assert_eq!(stats["last_seq"], last.to_string());
        assert_eq!(stats["durable_seq"], last.to_string());
    };

    let server = common::start(dir.path(), &[]);
    write_some(&server, &mut last);
    assert!(server.stop().success());

    // After a clean stop.
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    assert_eq!(conn.stats()["last_seq"], last.to_string());
    write_some(&server, &mut last);
    server.kill9();

    // After kill -9.
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    assert_eq!(conn.stats()["last_seq"], last.to_string());
    assert_eq!(conn.set(b"after-crash", b"x"), last + 1);
}

#[test]
fn get_with_min_seq_already_applied_answers_at_once() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let seq = conn.set(b"k", b"v");
    for min_seq in [0, 1, seq] {
        let id = conn.id();
        conn.call(GET, GET_MIN_SEQ, id, &min_seq_body(min_seq, b"k"))
            .assert_ok(id, b"v");
    }
    let id = conn.id();
    conn.call(GET, GET_MIN_SEQ, id, &min_seq_body(seq, b"missing"))
        .assert_not_found(id);
    // The key begins right after the 8 bytes of min_seq, whatever those bytes are.
    let key_like_a_seq = 0x0202_0202_0202_0202u64.to_le_bytes();
    conn.set(&key_like_a_seq, b"w");
    let id = conn.id();
    conn.call(GET, GET_MIN_SEQ, id, &min_seq_body(1, &key_like_a_seq))
        .assert_ok(id, b"w");
}

#[test]
fn get_with_min_seq_beyond_the_log_answers_error_after_the_wait() {
    let (_dir, server) = start(&["--min-seq-wait-ms", "200"]);
    let mut conn = Conn::connect(&server.addr);
    let seq = conn.set(b"k", b"v");
    for min_seq in [seq + 1_000_000, u64::MAX] {
        let id = conn.id();
        conn.call(GET, GET_MIN_SEQ, id, &min_seq_body(min_seq, b"k"))
            .assert_error(id);
        conn.ping(b"still open");
    }
    // A write after the refusal still gets the next seq.
    assert_eq!(conn.set(b"k", b"w"), seq + 1);
}

#[test]
fn binary_keys_and_values_with_every_byte_value() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);

    let every_byte: Vec<u8> = (0..=255u8).collect();
    let value: Vec<u8> = (0..=255u8).rev().cycle().take(4096 + 7).collect();
    conn.set(&every_byte, &value);
    assert_eq!(conn.value(&every_byte).as_deref(), Some(&value[..]));

    // Each byte value as a one-byte key, pipelined in one write, then read back the same way.
    let mut batch = Vec::new();
    for b in 0..=255u8 {
        batch.extend(frame(
            SET,
            0,
            1000 + b as u64,
            &set_body(&[b], &[b, 0, !b, b'\n']),
        ));
    }
    conn.send(&batch);
    for b in 0..=255u8 {
        let reply = conn.reply();
        assert_eq!(reply.id, 1000 + b as u64);
        reply.seq();
    }
    let mut batch = Vec::new();
    for b in 0..=255u8 {
        batch.extend(frame(GET, 0, 2000 + b as u64, &[b]));
    }
    conn.send(&batch);
    for b in 0..=255u8 {
        conn.reply().assert_ok(2000 + b as u64, &[b, 0, !b, b'\n']);
    }

    // KEYS lists them in ascending byte order: [0] < [0, 1, ..] < [1] < .. < [255].
    let mut expected: BTreeSet<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    expected.insert(every_byte.clone());
    let (keys, _) = conn.keys(b"", DEFAULT_MAX_FRAME);
    assert_eq!(keys, expected.into_iter().collect::<Vec<_>>());
    let (keys, _) = conn.keys(&[0], DEFAULT_MAX_FRAME);
    assert_eq!(keys, vec![vec![0], every_byte.clone()]);
}

#[test]
fn empty_value_is_stored_and_differs_from_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    conn.set(b"empty", b"");
    let reply = conn.get(b"empty");
    assert_eq!(reply.status, OK, "{reply:?}");
    assert!(reply.body.is_empty());
    assert_eq!(conn.get(b"missing").status, NOT_FOUND);
    assert!(server.stop().success());

    // It is recovered from the log as an empty value, not as a missing key.
    let server = common::start(dir.path(), &[]);
    let mut conn = Conn::connect(&server.addr);
    assert_eq!(conn.value(b"empty"), Some(Vec::new()));
    let (keys, _) = conn.keys(b"", DEFAULT_MAX_FRAME);
    assert_eq!(keys, vec![b"empty".to_vec()]);
}

#[test]
fn keys_lists_prefix_matches_in_byte_order() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let all: [&[u8]; 9] = [
        b"user:2",
        b"user:10",
        b"user:1",
        b"user:\xff",
        b"user:",
        b"users",
        b"use",
        b"admin",
        b"user:gone",
    ];
    for key in all {
        conn.set(key, b"x");
    }
    conn.del(b"user:gone").seq();

    let (keys, pages) = conn.keys(b"user:", DEFAULT_MAX_FRAME);
    assert_eq!(pages, 1);
    let expected: [&[u8]; 5] = [b"user:", b"user:1", b"user:10", b"user:2", b"user:\xff"];
    assert_eq!(keys, expected.map(|k| k.to_vec()));

    let (keys, _) = conn.keys(b"", DEFAULT_MAX_FRAME);
    let expected: [&[u8]; 8] = [
        b"admin",
        b"use",
        b"user:",
        b"user:1",
        b"user:10",
        b"user:2",
        b"user:\xff",
        b"users",
    ];
    assert_eq!(keys, expected.map(|k| k.to_vec()));

    // No match: OK with a count of 0 and no "more" flag.
    let id = conn.id();
    let reply = conn.call(KEYS, 0, id, b"zzz");
    reply.assert_ok(id, &0u32.to_le_bytes());
}

#[test]
fn keys_pages_with_the_more_flag_when_the_reply_would_exceed_max_frame() {
    let (_dir, server) = start(SMALL_LIMITS);
    let mut conn = Conn::connect(&server.addr);

    // 300 keys of 60 bytes: about 19 KB of KEYS body, ten times max_frame.
    let key = |i: usize| format!("page:{i:04}:{}", "p".repeat(50)).into_bytes();
    let mut batch = Vec::new();
    for i in (0..300).rev() {
        batch.extend(frame(SET, 0, i as u64, &set_body(&key(i), b"v")));
    }
    for i in 0..20 {
        batch.extend(frame(
            SET,
            0,
            1000 + i,
            &set_body(format!("other:{i}").as_bytes(), b""),
        ));
    }
    conn.send(&batch);
    for _ in 0..320 {
        conn.reply().seq();
    }

    let expected: Vec<Vec<u8>> = (0..300).map(key).collect();
    let (keys, pages) = conn.keys(b"page:", SMALL_MAX_FRAME);
    assert_eq!(keys, expected, "every key once, in order, across pages");
    assert!(pages >= 10, "{pages} pages for ~19 KB with max_frame 2000");

    let (keys, pages) = conn.keys(b"", SMALL_MAX_FRAME);
    assert_eq!(keys.len(), 320);
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(pages >= 10);

    // By hand: start_after an existing key, between keys, and past the last one.
    let id = conn.id();
    let reply = conn.call(
        KEYS,
        KEYS_START_AFTER,
        id,
        &keys_after_body(b"page:", &key(150)),
    );
    assert_eq!(reply.status, OK, "{reply:?}");
    assert_ne!(
        reply.flags & KEYS_MORE,
        0,
        "150 keys remain; they do not fit one reply"
    );
    let page = parse_keys(&reply.body);
    assert_eq!(page[0], key(151));
    assert_eq!(page, (151..151 + page.len()).map(key).collect::<Vec<_>>());

    let id = conn.id();
    let between = b"page:0150:~".to_vec(); // '~' sorts after 'p'
    let reply = conn.call(
        KEYS,
        KEYS_START_AFTER,
        id,
        &keys_after_body(b"page:", &between),
    );
    assert_eq!(parse_keys(&reply.body)[0], key(151));

    let id = conn.id();
    let reply = conn.call(
        KEYS,
        KEYS_START_AFTER,
        id,
        &keys_after_body(b"page:", b"page:~"),
    );
    reply.assert_ok(id, &0u32.to_le_bytes());

    // An empty prefix with start_after: plen 0.
    let id = conn.id();
    let reply = conn.call(
        KEYS,
        KEYS_START_AFTER,
        id,
        &keys_after_body(b"", b"other:9"),
    );
    assert_eq!(parse_keys(&reply.body)[0], key(0));
}

#[test]
fn stats_reports_the_documented_figures() {
    let (_dir, server) = start(&["--node-id", "conformance-node"]);
    let mut conn = Conn::connect(&server.addr);
    conn.set(b"a", b"1");
    conn.set(b"b", b"2");
    conn.set(b"c", b"3");
    conn.del(b"c").seq();
    let stats = conn.stats();

    let documented = [
        "version",
        "role",
        "node_id",
        "log_id",
        "fsync",
        "keys",
        "last_seq",
        "durable_seq",
        "log_bytes",
        "segments",
        "connections",
        "connections_total",
        "requests_total",
        "batches_total",
        "batch_records_avg",
        "batch_records_max",
        "fsync_us_avg",
        "fsync_us_max",
        "write_failed",
        "uptime_s",
    ];
    for name in documented {
        assert!(stats.contains_key(name), "STATS lacks {name}: {stats:?}");
    }
    let number = |name: &str| -> f64 {
        stats[name]
            .parse()
            .unwrap_or_else(|_| panic!("{name}:{} is not a number", stats[name]))
    };
    assert!(!stats["version"].is_empty());
    assert_eq!(stats["role"], "leader");
    assert_eq!(stats["node_id"], "conformance-node");
    let log_id = &stats["log_id"];
    assert!(
        log_id.len() == 32 && log_id.chars().all(|c| c.is_ascii_hexdigit()),
        "log_id is 32 hex digits: {log_id}"
    );
    assert_eq!(stats["fsync"], "always");
    assert_eq!(number("keys"), 2.0);
    assert_eq!(number("last_seq"), 4.0);
    assert_eq!(number("durable_seq"), 4.0);
    assert!(number("log_bytes") > 0.0);
    assert!(number("segments") >= 1.0);
    assert!(number("connections") >= 1.0);
    assert!(number("connections_total") >= 1.0);
    assert!(number("requests_total") >= 4.0);
    assert!(number("batches_total") >= 1.0);
    assert!(number("batch_records_max") >= 1.0);
    for name in [
        "batch_records_avg",
        "fsync_us_avg",
        "fsync_us_max",
        "uptime_s",
    ] {
        assert!(number(name) >= 0.0);
    }
    assert_eq!(stats["write_failed"], "0");
}

// ---------------------------------------------------------------------------------------------
// The error rules
// ---------------------------------------------------------------------------------------------

#[test]
fn frame_len_below_10_gets_one_error_with_id_0_then_close() {
    let (_dir, server) = start(&[]);
    for len in [0u32, 1, 9] {
        let mut conn = Conn::connect(&server.addr);
        // Only the length: a frame this short cannot be read, so nothing else is needed.
        conn.send(&len.to_le_bytes());
        conn.reply().assert_error(0);
        conn.expect_closed();
    }
    Conn::connect(&server.addr).ping(b"server still up");
}

#[test]
fn frame_len_above_max_frame_gets_one_error_with_id_0_then_close() {
    let (_dir, server) = start(SMALL_LIMITS);
    for len in [SMALL_MAX_FRAME + 1, 1 << 20, u32::MAX] {
        let mut conn = Conn::connect(&server.addr);
        conn.send(&len.to_le_bytes());
        conn.reply().assert_error(0);
        conn.expect_closed();
    }
    // The edges that are readable: len 10 and len == max_frame.
    let mut conn = Conn::connect(&server.addr);
    conn.ping(b"");
    conn.ping(&vec![0xa5; SMALL_MAX_FRAME as usize - 10]);
}

#[test]
fn four_gib_length_headers_cost_no_memory() {
    let (_dir, server) = start(&[]);
    let pid = server.pid;
    Conn::connect(&server.addr).ping(b"warm up");
    let rss_before = proc_status_kib(pid, "VmRSS");
    let peak_before = proc_status_kib(pid, "VmPeak");

    // All 50 headers are sent before any reply is read, so a server that allocates the
    // claimed length would hold 50 of them at once.
    let mut conns: Vec<Conn> = (0..50).map(|_| Conn::connect(&server.addr)).collect();
    for conn in &mut conns {
        conn.send(&u32::MAX.to_le_bytes());
    }
    for conn in &mut conns {
        conn.reply().assert_error(0);
        conn.expect_closed();
    }

    let rss_growth_kib = proc_status_kib(pid, "VmRSS").saturating_sub(rss_before);
    let peak_growth_kib = proc_status_kib(pid, "VmPeak").saturating_sub(peak_before);
    assert!(
        rss_growth_kib < 64 * 1024,
        "RSS grew by {rss_growth_kib} KiB after 50 headers claiming 4 GiB"
    );
    // Even a reservation that is never touched (and freed at once) shows in VmPeak.
    assert!(
        peak_growth_kib < 1024 * 1024,
        "peak virtual memory grew by {peak_growth_kib} KiB after 50 headers claiming 4 GiB"
    );
    Conn::connect(&server.addr).ping(b"server still up");
}

#[test]
fn unknown_op_gets_error_with_its_id_and_the_connection_stays_open() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    for op in [0x00u8, 0x09, 0x20, 0x3f, 0x80, 0xfe, 0xff] {
        let id = spread_id(op as u64 + 1);
        conn.call(op, 0, id, b"some body").assert_error(id);
        conn.ping(&[op]);
    }
    assert_eq!(last_seq(&mut conn), 0, "no unknown op wrote anything");
}

#[test]
fn unknown_flag_bits_get_error_and_do_nothing() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    conn.set(b"kept", b"v");
    let cases: &[(u8, u8, Vec<u8>)] = &[
        (GET, 0x02, b"kept".to_vec()),
        (GET, 0x80, b"kept".to_vec()),
        (GET, 0xff, min_seq_body(1, b"kept")),
        (SET, 0x01, set_body(b"flagged", b"v")),
        (SET, 0x80, set_body(b"flagged", b"v")),
        (DEL, 0x01, b"kept".to_vec()),
        (DEL, 0x40, b"kept".to_vec()),
        (KEYS, 0x02, b"".to_vec()),
        (KEYS, 0x80, b"k".to_vec()),
        (PING, 0x01, b"x".to_vec()),
        (PING, 0x80, b"".to_vec()),
        (STATS, 0x01, b"".to_vec()),
    ];
    for (op, flags, body) in cases {
        let id = conn.id();
        let reply = conn.call(*op, *flags, id, body);
        assert_eq!(
            reply.status, ERROR,
            "op {op:#04x} with flags {flags:#04x}: {reply:?}"
        );
        reply.assert_error(id);
        conn.ping(b"open");
    }
    assert_eq!(conn.value(b"flagged"), None, "a refused SET wrote nothing");
    assert_eq!(
        conn.value(b"kept").as_deref(),
        Some(&b"v"[..]),
        "a refused DEL wrote nothing"
    );
    assert_eq!(last_seq(&mut conn), 1, "only the first SET wrote");
}

#[test]
fn short_bodies_get_error_with_their_id() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let mut klen_past_end = 5u32.to_le_bytes().to_vec();
    klen_past_end.extend_from_slice(b"abc");
    let mut klen_huge = u32::MAX.to_le_bytes().to_vec();
    klen_huge.extend_from_slice(b"ab");
    let mut plen_past_end = 10u32.to_le_bytes().to_vec();
    plen_past_end.extend_from_slice(b"abc");
    let cases: Vec<(&str, u8, u8, Vec<u8>)> = vec![
        ("SET, empty body", SET, 0, vec![]),
        ("SET, 3 of klen's 4 bytes", SET, 0, vec![1, 0, 0]),
        ("SET, klen past the end", SET, 0, klen_past_end),
        ("SET, klen u32::MAX", SET, 0, klen_huge),
        ("GET min_seq, empty body", GET, GET_MIN_SEQ, vec![]),
        ("GET min_seq, 7 bytes", GET, GET_MIN_SEQ, vec![1; 7]),
        (
            "KEYS start_after, 2 of plen's bytes",
            KEYS,
            KEYS_START_AFTER,
            vec![1, 0],
        ),
        (
            "KEYS start_after, plen past the end",
            KEYS,
            KEYS_START_AFTER,
            plen_past_end,
        ),
    ];
    for (what, op, flags, body) in cases {
        let id = conn.id();
        let reply = conn.call(op, flags, id, &body);
        assert_eq!(reply.status, ERROR, "{what}: {reply:?}");
        reply.assert_error(id);
        conn.ping(what.as_bytes());
    }
    assert_eq!(last_seq(&mut conn), 0, "no short SET wrote anything");
}

#[test]
fn empty_key_gets_error_with_its_id() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let cases: Vec<(&str, u8, u8, Vec<u8>)> = vec![
        ("GET", GET, 0, vec![]),
        ("GET min_seq", GET, GET_MIN_SEQ, min_seq_body(0, b"")),
        ("DEL", DEL, 0, vec![]),
        ("SET with a value", SET, 0, set_body(b"", b"value")),
        ("SET without a value", SET, 0, set_body(b"", b"")),
    ];
    for (what, op, flags, body) in cases {
        let id = conn.id();
        let reply = conn.call(op, flags, id, &body);
        assert_eq!(reply.status, ERROR, "{what} of an empty key: {reply:?}");
        reply.assert_error(id);
        conn.ping(b"open");
    }
    // SET "" = "value" must not have been read as key "value" either.
    assert_eq!(conn.value(b"value"), None);
    assert_eq!(last_seq(&mut conn), 0);
}

#[test]
fn key_longer_than_max_key_gets_error() {
    let (_dir, server) = start(SMALL_LIMITS);
    let mut conn = Conn::connect(&server.addr);
    let longest = vec![b'k'; SMALL_MAX_KEY];
    let too_long = vec![b'k'; SMALL_MAX_KEY + 1];
    let cases: Vec<(&str, u8, u8, Vec<u8>)> = vec![
        ("SET", SET, 0, set_body(&too_long, b"v")),
        ("GET", GET, 0, too_long.clone()),
        ("GET min_seq", GET, GET_MIN_SEQ, min_seq_body(0, &too_long)),
        ("DEL", DEL, 0, too_long.clone()),
    ];
    for (what, op, flags, body) in cases {
        let id = conn.id();
        let reply = conn.call(op, flags, id, &body);
        assert_eq!(reply.status, ERROR, "{what} of a 65-byte key: {reply:?}");
        reply.assert_error(id);
        conn.ping(b"open");
    }
    conn.set(&longest, b"v");
    assert_eq!(conn.value(&longest).as_deref(), Some(&b"v"[..]));
    assert_eq!(conn.del(&longest).status, OK);
}

#[test]
fn value_longer_than_max_value_gets_error() {
    let (_dir, server) = start(SMALL_LIMITS);
    let mut conn = Conn::connect(&server.addr);
    let key = vec![b'k'; SMALL_MAX_KEY];
    let id = conn.id();
    let too_long = vec![7u8; SMALL_MAX_VALUE + 1];
    conn.call(SET, 0, id, &set_body(&key, &too_long))
        .assert_error(id);
    conn.ping(b"open");
    assert_eq!(conn.value(&key), None);

    let largest = vec![9u8; SMALL_MAX_VALUE];
    conn.set(&key, &largest);
    assert_eq!(conn.value(&key), Some(largest));
}

#[test]
fn stats_with_a_body_gets_error() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let id = conn.id();
    conn.call(STATS, 0, id, b"x").assert_error(id);
    conn.ping(b"open");
    conn.stats();
}

#[test]
fn frames_split_byte_by_byte_still_work() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let mut bytes = Vec::new();
    bytes.extend(frame(SET, 0, 1, &set_body(b"split", b"value")));
    bytes.extend(frame(GET, 0, 2, b"split"));
    bytes.extend(frame(PING, 0, 3, b"ping"));
    bytes.extend(frame(DEL, 0, 4, b"split"));
    bytes.extend(frame(GET, 0, 5, b"split"));
    for byte in &bytes {
        conn.stream.write_all(std::slice::from_ref(byte)).unwrap();
        // A pause between bytes so that they arrive in separate reads (not a timing check).
        thread::sleep(Duration::from_millis(1));
    }
    let seq = conn.reply().seq();
    conn.reply().assert_ok(2, b"value");
    conn.reply().assert_ok(3, b"ping");
    let reply = conn.reply();
    assert_eq!((reply.id, reply.seq()), (4, seq + 1));
    conn.reply().assert_not_found(5);
}

#[test]
fn many_frames_in_one_write_work() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let mut bytes = Vec::new();
    for i in 0..500u64 {
        bytes.extend(frame(
            SET,
            0,
            i,
            &set_body(format!("m{i}").as_bytes(), &i.to_le_bytes()),
        ));
    }
    for i in 0..500u64 {
        bytes.extend(frame(GET, 0, 500 + i, format!("m{i}").as_bytes()));
        bytes.extend(frame(PING, 0, 1000 + i, &i.to_le_bytes()));
    }
    conn.send(&bytes);
    let mut replies = HashMap::new();
    for _ in 0..1500 {
        let reply = conn.reply();
        assert!(
            replies.insert(reply.id, reply.clone()).is_none(),
            "{reply:?} twice"
        );
    }
    let mut seqs: Vec<u64> = (0..500).map(|i| replies[&i].seq()).collect();
    seqs.sort();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1));
    for i in 0..500u64 {
        replies[&(500 + i)].assert_ok(500 + i, &i.to_le_bytes());
        replies[&(1000 + i)].assert_ok(1000 + i, &i.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelining and concurrency
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// A write that must be OK; its seq is checked against the others.
    Write,
    NotFound,
    Value(Vec<u8>),
}

/// Fails while the server bug of `pipelined_get_does_not_see_later_writes_of_its_connection`
/// stands: most GETs here see values sent after them.
#[test]
fn pipelining_10000_mixed_requests_matches_by_id_and_keeps_connection_order() {
    let (_dir, server) = start(&[]);
    let conn = Conn::connect(&server.addr);

    // Requests and, from a model of the connection's order, the reply each must get: a GET
    // sees every earlier SET and DEL of this connection although none was answered yet.
    let mut random = XorShift(0x5eed_1234_abcd_0001);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut bytes = Vec::new();
    let mut expected: Vec<(u64, Expect)> = Vec::new();
    // What each request was, to explain a failure.
    let mut history: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut last_key = b"pipe-0".to_vec();
    for n in 0..10_000u64 {
        let id = spread_id(n + 1);
        let roll = random.next();
        // Half the time reuse the previous request's key, so many GETs follow the very SET or
        // DEL they must see.
        let key = if roll & 1 == 0 {
            last_key.clone()
        } else {
            format!("pipe-{}", (roll >> 8) % 40).into_bytes()
        };
        match (roll >> 1) % 20 {
            0..=8 => {
                let value = format!("value-{n}-{}", "v".repeat((roll >> 16) as usize % 50));
                bytes.extend(frame(SET, 0, id, &set_body(&key, value.as_bytes())));
                model.insert(key.clone(), value.into_bytes());
                expected.push((id, Expect::Write));
                history.push(("SET", key.clone()));
            }
            9..=11 => {
                bytes.extend(frame(DEL, 0, id, &key));
                let existed = model.remove(&key).is_some();
                expected.push((
                    id,
                    if existed {
                        Expect::Write
                    } else {
                        Expect::NotFound
                    },
                ));
                history.push(("DEL", key.clone()));
            }
            _ => {
                bytes.extend(frame(GET, 0, id, &key));
                let value = model.get(&key).cloned();
                expected.push((id, value.map_or(Expect::NotFound, Expect::Value)));
                history.push(("GET", key.clone()));
            }
        }
        last_key = key;
    }

    // Written from another thread without waiting; read here as the replies come.
    let mut writer = conn.stream.try_clone().unwrap();
    let writing = thread::spawn(move || writer.write_all(&bytes));
    let mut reader = conn.stream.try_clone().unwrap();
    let mut replies: HashMap<u64, Reply> = HashMap::new();
    for _ in 0..expected.len() {
        let reply = read_reply(&mut reader).expect("a reply for every request");
        let id = reply.id;
        assert!(
            replies.insert(id, reply).is_none(),
            "two replies for id {id:#x}"
        );
    }
    writing.join().unwrap().unwrap();

    // On a wrong reply, the requests on the same key up to it and what they got.
    let explain = |n: usize| -> String {
        let key = &history[n].1;
        let mut lines = format!("request #{n} on key {:?}:\n", String::from_utf8_lossy(key));
        for (m, (op, other)) in history[..=n].iter().enumerate().rev() {
            if other == key {
                let reply = &replies[&expected[m].0];
                lines.push_str(&format!(
                    "  #{m} {op}: expected {:?}, got {reply:?}\n",
                    expected[m].1
                ));
            }
            if lines.len() > 2000 {
                break;
            }
        }
        lines
    };
    let mut last_seq = None;
    for (n, (id, expect)) in expected.iter().enumerate() {
        let reply = replies
            .get(id)
            .unwrap_or_else(|| panic!("no reply for id {id:#x}"));
        let right = match expect {
            Expect::Write => {
                let seq = reply.seq();
                let in_order = last_seq.is_none_or(|last| seq == last + 1);
                last_seq = Some(seq);
                in_order
            }
            Expect::NotFound => reply.status == NOT_FOUND && reply.body.is_empty(),
            Expect::Value(value) => reply.status == OK && reply.body == *value,
        };
        assert!(right, "{}", explain(n));
    }

    let mut conn = Conn::connect(&server.addr);
    for (key, value) in &model {
        assert_eq!(conn.value(key).as_ref(), Some(value));
    }
    assert_eq!(conn.stats()["keys"], model.len().to_string());
}

/// SERVER BUG (kvsd at b163f24, found by this suite): this test fails. A pipelined GET that
/// follows a write of its own connection waits for that write to become durable, then reads
/// the state of that later moment, so it also sees writes the connection sent *after* the GET.
/// Sent in one write: SET k=first, GET k, SET k=second, DEL k; the GET must answer "first".
#[test]
fn pipelined_get_does_not_see_later_writes_of_its_connection() {
    let (_dir, server) = start(&[]);
    let mut conn = Conn::connect(&server.addr);
    let mut bytes = Vec::new();
    bytes.extend(frame(SET, 0, 1, &set_body(b"k", b"first")));
    bytes.extend(frame(GET, 0, 2, b"k"));
    bytes.extend(frame(SET, 0, 3, &set_body(b"k", b"second")));
    bytes.extend(frame(GET, 0, 4, b"k"));
    bytes.extend(frame(DEL, 0, 5, b"k"));
    bytes.extend(frame(GET, 0, 6, b"k"));
    conn.send(&bytes);
    let mut replies = HashMap::new();
    for _ in 0..6 {
        let reply = conn.reply();
        replies.insert(reply.id, reply);
    }
    let first = replies[&1].seq();
    assert_eq!(replies[&3].seq(), first + 1);
    assert_eq!(replies[&5].seq(), first + 2);
    replies[&2].assert_ok(2, b"first");
    replies[&4].assert_ok(4, b"second");
    replies[&6].assert_not_found(6);
}

#[test]
fn sixty_four_concurrent_connections_each_see_their_own_writes() {
    let (_dir, server) = start(&[]);
    const CONNECTIONS: usize = 64;
    const ROUNDS: usize = 150;
    const KEYS_EACH: usize = 16;

    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|client| {
            let addr = server.addr.clone();
            thread::spawn(move || {
                let mut conn = Conn::connect(&addr);
                let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                let mut seqs = Vec::new();
                for round in 0..ROUNDS {
                    let key = format!("c{client}-k{}", round % KEYS_EACH).into_bytes();
                    let value = format!("c{client}-r{round}").into_bytes();
                    seqs.push(conn.set(&key, &value));
                    model.insert(key.clone(), value.clone());
                    assert_eq!(conn.value(&key).as_ref(), Some(&value));
                    if round % 10 == 9 {
                        let victim = format!("c{client}-k{}", (round * 7) % KEYS_EACH).into_bytes();
                        let reply = conn.del(&victim);
                        if model.remove(&victim).is_some() {
                            seqs.push(reply.seq());
                        } else {
                            assert_eq!(reply.status, NOT_FOUND, "{reply:?}");
                        }
                        assert_eq!(conn.value(&victim), None);
                    }
                }
                conn.set(b"shared", format!("c{client}").as_bytes());
                (model, seqs)
            })
        })
        .collect();

    let mut model = BTreeMap::new();
    let mut seqs = BTreeSet::new();
    for client in clients {
        let (part, client_seqs) = client.join().expect("a client thread failed");
        for seq in client_seqs {
            assert!(seqs.insert(seq), "seq {seq} was given to two writes");
        }
        model.extend(part);
    }

    let mut conn = Conn::connect(&server.addr);
    for (key, value) in &model {
        assert_eq!(conn.value(key).as_ref(), Some(value), "{key:?}");
    }
    let shared = conn
        .value(b"shared")
        .expect("shared was set by every client");
    assert!(shared.starts_with(b"c"));
    let stats = conn.stats();
    assert_eq!(stats["keys"], (model.len() + 1).to_string());
    assert!(stats["connections_total"].parse::<u64>().unwrap() > CONNECTIONS as u64);
    let (keys, _) = conn.keys(b"c", DEFAULT_MAX_FRAME);
    assert_eq!(keys, model.keys().cloned().collect::<Vec<_>>());
}
