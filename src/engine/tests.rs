//! The engine against a model: two BTreeMaps, the newest state (what writes decide against)
//! and the durable state (what reads see).

use std::collections::BTreeMap;

use proptest::prelude::*;

use bytes::Bytes;

use super::write::IncrOutcome;
use super::*;

#[derive(Debug, Clone)]
enum Step {
    Set(u8, u8),
    Del(u8),
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..8, any::<u8>()).prop_map(|(k, v)| Step::Set(k, v)),
        3 => (0u8..8).prop_map(Step::Del),
        2 => Just(Step::Commit),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

/// The log on "disk": batches appended, as the committer would write them.
struct Disk {
    bytes: Vec<u8>,
}

impl Disk {
    fn commit(&mut self, engine: &mut Engine) {
        let Ok(mut batch) = engine.take_batch(Batch::default()) else {
            return;
        };
        let offset = self.bytes.len() as u64;
        let buf = batch.take_buf();
        self.bytes.extend_from_slice(&buf);
        batch.restore_buf(buf);
        engine.apply_durable(&batch, 1, offset);
    }

    fn value(&self, location: Location) -> Vec<u8> {
        let start = location.value_offset as usize;
        self.bytes[start..start + location.value_len as usize].to_vec()
    }
}

proptest! {
    #[test]
    fn engine_matches_the_model(steps in proptest::collection::vec(step(), 1..200)) {
        let mut engine = Engine::new(0);
        let mut disk = Disk { bytes: Vec::new() };
        let mut newest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut durable = newest.clone();
        let mut seq = 0;
        for step in steps {
            match step {
                Step::Set(k, v) => {
                    seq += 1;
                    prop_assert_eq!(engine.set(&key(k), Bytes::from(vec![v])), Ok(seq));
                    newest.insert(key(k), vec![v]);
                }
                Step::Del(k) => {
                    let result = engine.del(&key(k)).unwrap();
                    if newest.remove(&key(k)).is_some() {
                        seq += 1;
                        prop_assert_eq!(result, Deleted::Written { seq });
                    } else {
                        let not_found = matches!(result, Deleted::NotFound { .. });
                        prop_assert!(not_found);
                    }
                }
                Step::Commit => {
                    disk.commit(&mut engine);
                    durable = newest.clone();
                    prop_assert_eq!(engine.durable_seq(), seq);
                }
            }
            prop_assert_eq!(engine.last_seq(), seq);
            for k in 0..8 {
                let got = engine.get(&key(k)).map(|location| disk.value(location));
                prop_assert_eq!(got.as_ref(), durable.get(&key(k)));
            }
            for k in 0..8 {
                let seen = match engine.current(&key(k)) {
                    Current::Value { value, .. } => Some(value.to_vec()),
                    Current::Stored { location, .. } => Some(disk.value(location)),
                    Current::Absent { .. } => None,
                };
                prop_assert_eq!(seen.as_ref(), newest.get(&key(k)));
            }
            let mut newest_keys = Vec::new();
            engine.keys_newest(b"k", None, |k| { newest_keys.push(k.to_vec()); true });
            prop_assert_eq!(newest_keys, newest.keys().cloned().collect::<Vec<_>>());
            let keys: Vec<&[u8]> = engine.keys(b"k", None).collect();
            let model: Vec<&[u8]> = durable.keys().map(|k| &k[..]).collect();
            prop_assert_eq!(keys, model);
            prop_assert_eq!(engine.key_count(), durable.len());
            // Live bytes: exactly the SET records of the durable keys (values are one byte).
            let live: u64 = durable.keys().map(|k| (record::HEADER_BYTES + k.len() + 1) as u64).sum();
            prop_assert_eq!(engine.live_bytes(1), live);
        }
    }
}

#[test]
fn a_del_that_finds_a_pending_del_waits_for_it() {
    let mut engine = Engine::new(0);
    engine.set(b"a", Bytes::from_static(b"1")).unwrap();
    let mut disk = Disk { bytes: Vec::new() };
    disk.commit(&mut engine);
    assert_eq!(engine.del(b"a"), Ok(Deleted::Written { seq: 2 }));
    assert_eq!(engine.del(b"a"), Ok(Deleted::NotFound { after_seq: 2 }));
    assert_eq!(engine.del(b"zz"), Ok(Deleted::NotFound { after_seq: 0 }));
    // Until the tombstone is durable, readers still see the value.
    assert!(engine.get(b"a").is_some());
    disk.commit(&mut engine);
    assert!(engine.get(b"a").is_none());
}

#[test]
fn keys_page_after_a_start_key() {
    let mut engine = Engine::new(0);
    for k in ["a", "b1", "b2", "b3", "c"] {
        engine.set(k.as_bytes(), Bytes::new()).unwrap();
    }
    Disk { bytes: Vec::new() }.commit(&mut engine);
    let page: Vec<&[u8]> = engine.keys(b"b", Some(b"b1")).collect();
    assert_eq!(page, vec![&b"b2"[..], b"b3"]);
    let all: Vec<&[u8]> = engine.keys(b"", Some(b"a")).collect();
    assert_eq!(all.len(), 4);
    let before_prefix: Vec<&[u8]> = engine.keys(b"b", Some(b"a")).collect();
    assert_eq!(before_prefix.len(), 3);
}

#[test]
fn after_a_failure_writes_are_refused_and_reads_go_on() {
    let mut engine = Engine::new(0);
    engine.set(b"a", Bytes::from_static(b"1")).unwrap();
    Disk { bytes: Vec::new() }.commit(&mut engine);
    engine.set(b"b", Bytes::from_static(b"2")).unwrap();
    engine.fail("fdatasync: Input/output error".into());
    assert!(engine.set(b"c", Bytes::from_static(b"3")).is_err());
    assert!(engine.del(b"a").is_err());
    assert!(engine.get(b"a").is_some());
    assert!(
        engine.take_batch(Batch::default()).is_err(),
        "the failed batch is dropped"
    );
}

#[test]
fn relocation_follows_compaction_unless_a_newer_write_moved_the_key() {
    let mut engine = Engine::new(0);
    let at = |file, value_offset| Location {
        file,
        value_offset,
        value_len: 1,
    };
    engine.recover(&set(1, b"a"), at(1, 100)).unwrap();
    engine.recover(&set(2, b"b"), at(1, 200)).unwrap();
    engine.recover(&set(3, b"b"), at(2, 50)).unwrap(); // b overwritten later
    let one = (record::HEADER_BYTES + 2) as u64;
    assert_eq!((engine.live_bytes(1), engine.live_bytes(2)), (one, one));
    assert!(engine.is_live(b"a", at(1, 100)));
    assert!(
        !engine.is_live(b"b", at(1, 200)),
        "the overwritten copy is garbage"
    );
    // Compaction copied a (live) and b's old record (it was live when read) into file 3.
    assert!(engine.relocate(b"a", at(1, 100), at(3, 10)));
    assert!(!engine.relocate(b"b", at(1, 200), at(3, 20)));
    assert_eq!(engine.get(b"b"), Some(at(2, 50)));
    assert_eq!(
        (
            engine.live_bytes(1),
            engine.live_bytes(2),
            engine.live_bytes(3)
        ),
        (0, one, one)
    );
    // A checkpoint of the index loads back with the same accounting.
    let entries: Vec<(Vec<u8>, Slot)> = engine
        .index_entries()
        .map(|(k, l)| (k.to_vec(), l))
        .collect();
    let mut loaded = Engine::new(0);
    loaded.load_index(entries.iter().map(|(k, l)| (&k[..], *l)));
    assert_eq!(loaded.get(b"a"), Some(at(3, 10)));
    assert_eq!((loaded.live_bytes(2), loaded.live_bytes(3)), (one, one));
    // A key longer than the inline 16 bytes is found as well.
    let long = [b'x'; 40];
    loaded.recover(&set(4, &long), at(4, 1)).unwrap();
    assert_eq!(loaded.keys(b"x", None).next(), Some(&long[..]));
}

fn set(seq: u64, key: &[u8]) -> Record<'_> {
    Record::set(seq, 0, key, b"v")
}

fn record<'a>(seq: u64, op: Op, key: &'a [u8], value: &'a [u8], expires_at_ms: u64) -> Record<'a> {
    Record {
        seq,
        term: 0,
        op,
        expires_at_ms,
        key,
        value,
    }
}

/// Every kind of record format 2 applies: Raft's entries that hold no key data are no-ops.
#[test]
fn recovery_applies_every_kind() {
    let at = |value_offset| Location {
        file: 1,
        value_offset,
        value_len: 1,
    };
    let mut engine = Engine::new(0);
    engine.tick(1_000);
    engine
        .recover(&record(1, Op::Blank, b"", b"", 0), at(10))
        .unwrap();
    engine
        .recover(&record(2, Op::Membership, b"", b"cfg", 0), at(20))
        .unwrap();
    engine
        .recover(&record(3, Op::Set, b"k", b"v", 5_000), at(30))
        .unwrap();
    assert_eq!(
        engine.slot(b"k").map(|s| (s.seq, s.expires_at_ms)),
        Some((3, 5_000))
    );
    engine
        .recover(&record(4, Op::ExpireAt, b"k", b"", 0), at(40))
        .unwrap();
    assert_eq!(
        engine.slot(b"k").map(|s| (s.seq, s.expires_at_ms)),
        Some((4, 0))
    );
    assert_eq!(engine.expiring_key_count(), 0);
    engine
        .recover(&record(5, Op::Expired, b"k", b"", 0), at(50))
        .unwrap();
    assert_eq!(engine.key_count(), 0);
    let mut txn = Vec::new();
    super::txn::put_op(&mut txn, Op::Set, 0, b"a", b"1");
    super::txn::put_op(&mut txn, Op::Set, 9_000, b"b", b"22");
    super::txn::put_op(&mut txn, Op::Del, 0, b"a", b"");
    engine
        .recover(&record(6, Op::Txn, b"", &txn, 0), at(60))
        .unwrap();
    assert!(engine.slot(b"a").is_none());
    let b = engine.slot(b"b").unwrap();
    assert_eq!(
        (b.seq, b.expires_at_ms, b.location.value_len),
        (6, 9_000, 2)
    );
}

/// Replays `disk` as recovery would: every record, in order.
fn replay(disk: &Disk) -> Engine {
    let mut engine = Engine::new(0);
    let mut at = 0;
    while at < disk.bytes.len() {
        let (header, record) = record::decode(&disk.bytes[at..]).unwrap();
        let location = Location {
            file: 1,
            value_offset: (at + header.value_offset()) as u32,
            value_len: header.value_len,
        };
        engine.recover(&record, location).unwrap();
        at += header.total_bytes;
    }
    engine
}

fn reader(disk: &Disk) -> impl FnMut(Location) -> Result<Bytes, String> + '_ {
    move |location| Ok(Bytes::from(disk.value(location)))
}

#[test]
fn conditions_decide_against_the_newest_state() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    let nx = SetOptions {
        condition: Condition::Absent,
        ..Default::default()
    };
    assert_eq!(
        engine.set_with(b"k", Bytes::from("1"), nx),
        Ok(SetOutcome::Written { seq: 1 })
    );
    // The pending SET counts: a second NX fails, naming the pending seq to wait for.
    assert_eq!(
        engine.set_with(b"k", Bytes::from("2"), nx),
        Ok(SetOutcome::ConditionFailed {
            current_seq: 1,
            after_seq: 1
        })
    );
    disk.commit(&mut engine);
    let if_seq = |seq| SetOptions {
        condition: Condition::Seq(seq),
        ..Default::default()
    };
    assert_eq!(
        engine.set_with(b"k", Bytes::from("3"), if_seq(7)),
        Ok(SetOutcome::ConditionFailed {
            current_seq: 1,
            after_seq: 0
        })
    );
    assert_eq!(
        engine.set_with(b"k", Bytes::from("3"), if_seq(1)),
        Ok(SetOutcome::Written { seq: 2 })
    );
    assert_eq!(
        engine.set_with(b"new", Bytes::from("x"), if_seq(0)),
        Ok(SetOutcome::Written { seq: 3 })
    );
    let xx = SetOptions {
        condition: Condition::Present,
        ..Default::default()
    };
    assert!(matches!(
        engine.set_with(b"nobody", Bytes::new(), xx),
        Ok(SetOutcome::ConditionFailed { current_seq: 0, .. })
    ));
}

#[test]
fn expired_keys_vanish_at_once_and_active_expiry_removes_them() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    engine.tick(1_000);
    let ttl = |at| SetOptions {
        expires_at_ms: at,
        ..Default::default()
    };
    engine.set_with(b"a", Bytes::from("1"), ttl(2_000)).unwrap();
    engine.set_with(b"b", Bytes::from("2"), ttl(3_000)).unwrap();
    engine.set(b"c", Bytes::from("3")).unwrap();
    disk.commit(&mut engine);
    assert_eq!(engine.keys(b"", None).count(), 3);
    assert_eq!(engine.next_deadline_ms(), Some(2_000));
    assert_eq!(engine.expire_due(10), Ok(0), "nothing is due yet");
    engine.tick(2_000);
    assert!(
        engine.get(b"a").is_none(),
        "invisible the moment it expires"
    );
    assert!(!engine.current(b"a").exists());
    assert_eq!(
        engine.keys(b"", None).collect::<Vec<_>>(),
        vec![&b"b"[..], b"c"]
    );
    // SET KEEPTTL keeps b's expiry; a re-set without one saves it.
    let keep = SetOptions {
        keep_ttl: true,
        ..Default::default()
    };
    engine.set_with(b"b", Bytes::from("2b"), keep).unwrap();
    assert_eq!(engine.current(b"b").expires_at_ms(), 3_000);
    engine.tick(3_500);
    engine.set(b"b", Bytes::from("fresh")).unwrap();
    assert_eq!(
        engine.expire_due(10),
        Ok(1),
        "a only: b was set again, pending"
    );
    disk.commit(&mut engine);
    assert_eq!(engine.expire_due(10), Ok(0));
    assert_eq!(engine.key_count(), 2);
    assert_eq!(engine.expiring_key_count(), 0);
    // PERSIST and EXPIRE.
    assert_eq!(
        engine.expire_at(b"c", 0),
        Ok(ExpireOutcome::Unchanged {
            current_seq: 3,
            after_seq: 0
        })
    );
    assert!(matches!(
        engine.expire_at(b"c", 9_000),
        Ok(ExpireOutcome::Written { .. })
    ));
    assert!(matches!(
        engine.expire_at(b"zz", 9_000),
        Ok(ExpireOutcome::NotFound { .. })
    ));
    // The EXPIRE over a durable value keeps it readable.
    assert!(matches!(
        engine.current(b"c"),
        Current::Stored {
            expires_at_ms: 9_000,
            ..
        }
    ));
    disk.commit(&mut engine);
    assert_eq!(engine.slot(b"c").unwrap().expires_at_ms, 9_000);
    // Recovery from the log agrees with the live engine.
    let mut replayed = replay(&disk);
    replayed.tick(3_500);
    let live: Vec<(Vec<u8>, Slot)> = engine
        .index_entries()
        .map(|(k, s)| (k.to_vec(), s))
        .collect();
    let back: Vec<(Vec<u8>, Slot)> = replayed
        .index_entries()
        .map(|(k, s)| (k.to_vec(), s))
        .collect();
    assert_eq!(live, back);
}

#[test]
fn counters_follow_redis() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    let nothing = &mut |_| -> Result<Bytes, String> { unreachable!("no stored value is read") };
    assert_eq!(
        engine.incr_by(b"n", 5, nothing),
        Ok(IncrOutcome::Written { value: 5, seq: 1 })
    );
    assert_eq!(
        engine.incr_by(b"n", -7, nothing),
        Ok(IncrOutcome::Written { value: -2, seq: 2 })
    );
    disk.commit(&mut engine);
    let snapshot = Disk {
        bytes: disk.bytes.clone(),
    };
    assert_eq!(
        engine.incr_by(b"n", 1, &mut reader(&snapshot)),
        Ok(IncrOutcome::Written { value: -1, seq: 3 })
    );
    engine.set(b"s", Bytes::from("abc")).unwrap();
    assert!(matches!(
        engine.incr_by(b"s", 1, nothing),
        Ok(IncrOutcome::Refused { message, after_seq: 4 }) if message == counter::NOT_AN_INTEGER
    ));
    engine
        .set(b"max", Bytes::from(i64::MAX.to_string()))
        .unwrap();
    assert!(matches!(
        engine.incr_by(b"max", 1, nothing),
        Ok(IncrOutcome::Refused { message, .. }) if message == counter::OVERFLOW
    ));
    // INCR keeps the key's expiry.
    engine.tick(10);
    let ttl = SetOptions {
        expires_at_ms: 500,
        ..Default::default()
    };
    engine.set_with(b"t", Bytes::from("1"), ttl).unwrap();
    engine.incr_by(b"t", 1, nothing).unwrap();
    assert_eq!(engine.current(b"t").expires_at_ms(), 500);
}

#[test]
fn a_transaction_is_one_record_applied_all_or_none() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    engine.set(b"a", Bytes::from("1")).unwrap();
    disk.commit(&mut engine);
    let snapshot = Disk {
        bytes: disk.bytes.clone(),
    };
    let op = |op, key: &'static str, value: &'static str| TxnOp {
        op,
        key: Bytes::from(key),
        value: Bytes::from(value),
        expires_at_ms: 0,
    };
    let compares = [
        TxnCompare {
            key: Bytes::from("a"),
            cmp: write::Cmp::Eq,
            operand: write::Operand::Value(Bytes::from("1")),
        },
        TxnCompare {
            key: Bytes::from("b"),
            cmp: write::Cmp::Eq,
            operand: write::Operand::Seq(0),
        },
    ];
    let success = [
        op(Op::Set, "b", "2"),
        op(Op::Del, "a", ""),
        op(Op::Del, "nobody", ""),
    ];
    let failure = [op(Op::Set, "failed", "1")];
    let outcome = engine
        .txn(&compares, &success, &failure, &mut reader(&snapshot))
        .unwrap();
    assert_eq!(
        outcome,
        TxnOutcome::Done {
            succeeded: true,
            seq: 2,
            after_seq: 0
        }
    );
    assert!(!engine.current(b"a").exists());
    assert_eq!(engine.current(b"b").seq(), 2);
    // Run again: b exists now, so the failure branch runs.
    let outcome = engine
        .txn(&compares, &success, &failure, &mut reader(&snapshot))
        .unwrap();
    assert!(matches!(
        outcome,
        TxnOutcome::Done {
            succeeded: false,
            seq: 3,
            after_seq: 2
        }
    ));
    disk.commit(&mut engine);
    assert_eq!(engine.last_seq(), 3, "one seq per transaction");
    let replayed = replay(&disk);
    let keys: Vec<&[u8]> = replayed.keys(b"", None).collect();
    assert_eq!(keys, vec![&b"b"[..], b"failed"]);
    assert_eq!(
        replayed.slot(b"b").map(|s| disk.value(s.location)),
        Some(b"2".to_vec())
    );
    // A cut anywhere inside the transaction's record leaves none of it.
    let txn_start = disk.bytes.len() - {
        let mut at = 0;
        let mut last = 0;
        while at < disk.bytes.len() {
            let (header, _) = record::decode(&disk.bytes[at..]).unwrap();
            last = header.total_bytes;
            at += last;
        }
        last
    };
    for cut in txn_start + 1..disk.bytes.len() {
        assert!(record::decode(&disk.bytes[txn_start..cut]).is_err());
    }
}

#[test]
fn mget_reads_one_moment() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    engine.set(b"a", Bytes::from("1")).unwrap();
    disk.commit(&mut engine);
    let snapshot = Disk {
        bytes: disk.bytes.clone(),
    };
    engine.set(b"b", Bytes::from("2")).unwrap();
    let keys = [Bytes::from("a"), Bytes::from("b"), Bytes::from("c")];
    let (values, after_seq) = engine.mget(&keys, &mut reader(&snapshot)).unwrap();
    assert_eq!(
        values,
        vec![Some(Bytes::from("1")), Some(Bytes::from("2")), None]
    );
    assert_eq!(after_seq, 2);
}

#[test]
fn staged_writes_become_one_txn_record_and_reads_see_them_first() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    engine.set(b"a", Bytes::from_static(b"1")).unwrap();
    engine.set(b"gone", Bytes::from_static(b"x")).unwrap();
    disk.commit(&mut engine);
    engine.begin_staging();
    assert_eq!(engine.set(b"b", Bytes::from_static(b"2")), Ok(3));
    assert_eq!(engine.del(b"gone"), Ok(Deleted::Written { seq: 3 }));
    assert_eq!(engine.del(b"gone"), Ok(Deleted::NotFound { after_seq: 3 }));
    let mut values = |location: Location| Ok(Bytes::from(disk.value(location)));
    match engine.incr_by(b"a", 4, &mut values).unwrap() {
        IncrOutcome::Written { value, seq } => assert_eq!((value, seq), (5, 3)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(engine.current(b"a"), Current::Value { ref value, .. } if &value[..] == b"5"));
    // Nothing joined the open batch yet, and the other keys read as before.
    assert_eq!(engine.open_batch_bytes(), 0);
    assert_eq!(engine.last_seq(), 2);
    assert_eq!(engine.commit_staged(), Ok(3));
    assert!(!engine.staging());
    let batch = engine.take_batch(Batch::default()).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.entries().len(), 3);
    let offset = disk.bytes.len() as u64;
    let mut batch = batch;
    let buf = batch.take_buf();
    disk.bytes.extend_from_slice(&buf);
    batch.restore_buf(buf);
    engine.apply_durable(&batch, 1, offset);
    assert_eq!(engine.get(b"gone"), None);
    assert_eq!(disk.value(engine.get(b"a").unwrap()), b"5");
    assert_eq!(disk.value(engine.get(b"b").unwrap()), b"2");
    // Staging nothing writes nothing.
    engine.begin_staging();
    assert_eq!(engine.commit_staged(), Ok(0));
    assert_eq!(engine.last_seq(), 3);
}

#[test]
fn a_counter_made_durable_is_handed_to_the_value_cache_and_a_plain_set_is_not() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    let nothing: &mut Values<'_> = &mut |_| panic!("nothing is read from the log");
    engine.set(b"plain", Bytes::from_static(b"v")).unwrap();
    engine.incr_by(b"n", 41, nothing).unwrap();
    engine.incr_by(b"n", 1, nothing).unwrap();
    disk.commit(&mut engine);
    // The newest counter only (the first INCR was overwritten while pending), with where it is.
    let cached = engine.take_to_cache();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let (location, value) = &cached[0];
    assert_eq!(&value[..], b"42");
    assert_eq!(disk.value(*location), b"42");
    assert!(engine.take_to_cache().is_empty());
}

#[test]
fn the_newest_key_count_follows_pending_creations_and_deletions() {
    let mut engine = Engine::new(0);
    let mut disk = Disk { bytes: Vec::new() };
    let walk = |engine: &Engine| {
        let mut keys = 0;
        engine.keys_newest(b"", None, |_| {
            keys += 1;
            true
        });
        keys
    };
    engine.set(b"a", Bytes::from_static(b"1")).unwrap();
    engine.set(b"b", Bytes::from_static(b"1")).unwrap();
    assert_eq!(engine.key_count_newest(), 2);
    disk.commit(&mut engine);
    engine.del(b"a").unwrap();
    engine.set(b"b", Bytes::from_static(b"2")).unwrap();
    engine.set(b"c", Bytes::from_static(b"1")).unwrap();
    engine.set(b"d", Bytes::from_static(b"1")).unwrap();
    engine.del(b"d").unwrap();
    assert_eq!(engine.key_count_newest(), 2);
    assert_eq!(engine.key_count_newest(), walk(&engine));
    disk.commit(&mut engine);
    assert_eq!(engine.key_count_newest(), engine.key_count());
    assert_eq!(engine.key_count(), 2);
}
