//! The engine against a model: two BTreeMaps, the newest state (what writes decide against)
//! and the durable state (what reads see).

use std::collections::BTreeMap;

use proptest::prelude::*;

use bytes::Bytes;

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
                let seen = match engine.observe(&key(k)) {
                    Observed::Pending { value, .. } => value.map(|v| v.to_vec()),
                    Observed::Durable(location) => location.map(|l| disk.value(l)),
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
    engine.recover(Op::Set, b"a", at(1, 100)).unwrap();
    engine.recover(Op::Set, b"b", at(1, 200)).unwrap();
    engine.recover(Op::Set, b"b", at(2, 50)).unwrap(); // b overwritten later
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
    let entries: Vec<(Vec<u8>, Location)> = engine
        .index_entries()
        .map(|(k, l)| (k.to_vec(), l))
        .collect();
    let mut loaded = Engine::new(0);
    loaded.load_index(entries.iter().map(|(k, l)| (&k[..], *l)));
    assert_eq!(loaded.get(b"a"), Some(at(3, 10)));
    assert_eq!((loaded.live_bytes(2), loaded.live_bytes(3)), (one, one));
    // A key longer than the inline 16 bytes is found as well.
    let long = [b'x'; 40];
    loaded.recover(Op::Set, &long, at(4, 1)).unwrap();
    assert_eq!(loaded.keys(b"x", None).next(), Some(&long[..]));
}

/// A record kind a newer kvsd writes and this one cannot apply stops recovery with its name,
/// rather than being skipped; Raft's entries that hold no key data are no-ops.
#[test]
fn recovery_refuses_kinds_it_cannot_apply() {
    let at = |file, value_offset| Location {
        file,
        value_offset,
        value_len: 1,
    };
    let mut engine = Engine::new(0);
    engine.recover(Op::Blank, b"", at(1, 10)).unwrap();
    engine.recover(Op::Membership, b"", at(1, 20)).unwrap();
    let refused = engine.recover(Op::Txn, b"", at(1, 30)).unwrap_err();
    assert!(refused.contains("Txn"), "{refused}");
    assert!(engine.recover(Op::ExpireAt, b"k", at(1, 40)).is_err());
    engine.recover(Op::Set, b"k", at(1, 50)).unwrap();
    engine.recover(Op::Expired, b"k", at(1, 60)).unwrap();
    assert_eq!(engine.key_count(), 0);
}
