use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Records as a map from position to (key, length): what the log is to the
/// store's index.
#[derive(Default)]
struct Fake(Mutex<HashMap<u64, (Vec<u8>, u64)>>, Mutex<Vec<u64>>);

impl Fake {
    fn put(&self, pos: u64, key: &[u8], len: u64) {
        self.0.lock().unwrap().insert(pos, (key.to_vec(), len));
    }
}

impl Records for Fake {
    fn key_is(&self, pos: u64, key: &[u8]) -> bool {
        self.0.lock().unwrap().get(&pos).is_some_and(|(k, _)| k == key)
    }
    fn len_at(&self, pos: u64) -> u64 {
        self.0.lock().unwrap()[&pos].1
    }
    fn key_into(&self, pos: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.0.lock().unwrap()[&pos].0);
    }
    fn prefetch(&self, pos: u64) {
        self.1.lock().unwrap().push(pos);
    }
}

/// Write a "record" for `key` at `pos` and index it, as the store does.
fn put(ix: &Index<Fake>, key: &[u8], pos: u64, len: u32) -> Option<Entry> {
    ix.records().put(pos, key, len as u64);
    ix.insert(key, Entry::new(pos, len, 0, 1))
}

#[test]
fn insert_replace_remove() {
    let ix = Index::new(Fake::default());
    assert!(put(&ix, b"a", 8, 64).is_none());
    let old = put(&ix, b"a", 72, 48).unwrap();
    assert_eq!((old.pos, old.len), (8, 64));
    assert_eq!(ix.position(b"a"), Some(72));
    assert_eq!((ix.len(), ix.items(), ix.bytes()), (1, 1, 48));
    assert!(ix.memory_bytes() > 0);
    assert_eq!(ix.remove(b"a").map(|e| (e.pos, e.len)), Some((72, 48)));
    assert!(ix.position(b"a").is_none());
    assert_eq!((ix.items(), ix.bytes()), (0, 0));
}

#[test]
fn a_batch_of_lookups_prefetches_a_record_per_key_up_to_its_bound() {
    let ix = Index::new(Fake::default());
    let keys: Vec<Vec<u8>> = (0..40u64).map(|i| format!("key{i}").into_bytes()).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&ix, k, 8 * (i as u64 + 1), 64);
    }
    ix.prefetch_lookups(keys.iter().map(|k| &k[..]));
    let fetched = std::mem::take(&mut *ix.records().1.lock().unwrap());
    // Each key's own record is a candidate, so each of the first 32 gives
    // one (another key's, where tags collide); no lookup happened.
    assert_eq!(fetched.len(), 32);
    assert!(fetched.iter().all(|p| (8..=320).contains(p) && p % 8 == 0), "{fetched:?}");
    let empty = Index::new(Fake::default());
    empty.prefetch_lookups(keys.iter().map(|k| &k[..]));
    assert!(empty.records().1.lock().unwrap().is_empty(), "nothing indexed, nothing to fetch");
}

#[test]
fn cleaner_removal_spares_newer_records() {
    let ix = Index::new(Fake::default());
    put(&ix, b"k", 100 * 8, 64);
    assert!(ix.remove_if_at(b"k", 36 * 8).is_none());
    assert_eq!(ix.position(b"k"), Some(800));
    assert!(ix.remove_if_at(b"k", 800).is_some());
    assert!(ix.is_empty());
    assert_eq!((ix.items(), ix.bytes()), (0, 0));
}

#[test]
fn the_access_state_lives_in_the_entry_and_is_handed_back() {
    let ix = Index::new(Fake::default());
    ix.records().put(8, b"k", 56);
    ix.insert(b"k", Entry::new(8, 56, 900, 5).with_state(true, false));
    {
        let e = ix.get(b"k").unwrap();
        assert!(e.fetched() && !e.win_sent() && e.expiry() == 900 && e.last_access() == 5);
        assert!(e.take_win() && !e.take_win(), "one win token");
        e.set_expiry(1000);
        e.touch_access(9);
    }
    let mut seen = Vec::new();
    ix.for_each(|k, e| seen.push((k.to_vec(), *e)));
    let want = Entry { pos: 8, len: 56, expiry: 1000, last_access: 9, fetched: true, win_sent: true };
    assert_eq!(seen, vec![(b"k".to_vec(), want)]);
    assert_eq!(ix.remove(b"k"), Some(want));
}

#[test]
fn keys_are_told_apart_by_their_records_not_only_their_hash_bits() {
    // Keys whose 32 table bits collide are still separate entries: the
    // comparison against the record decides (forced here by one key's hash
    // reused for another).
    let ix = Index::new(Fake::default());
    let h = ix.hash(b"one");
    ix.records().put(8, b"one", 56);
    ix.records().put(16, b"two", 56);
    assert!(ix.insert_hashed(h, b"one", Entry::new(8, 56, 0, 1)).is_none());
    assert!(ix.insert_hashed(h, b"two", Entry::new(16, 56, 0, 1)).is_none(), "not a replace of `one`");
    assert_eq!(ix.len(), 2);
    let t = ix.read_shard(h.shard);
    assert_eq!(ix.find(&t, h, b"one").map(|i| t.slot(i).pos()), Some(8));
    assert_eq!(ix.find(&t, h, b"two").map(|i| t.slot(i).pos()), Some(16));
    assert!(ix.find(&t, h, b"three").is_none());
}

#[test]
fn many_keys_spread_and_clear() {
    let ix = Index::new(Fake::default());
    for i in 0..10_000u64 {
        put(&ix, format!("key:{i}").as_bytes(), i * 64, 64);
    }
    assert_eq!(ix.len(), 10_000);
    assert_eq!((ix.items(), ix.bytes()), (10_000, 640_000));
    for i in (0..10_000u64).step_by(7) {
        assert_eq!(ix.position(format!("key:{i}").as_bytes()), Some(i * 64));
    }
    let used = ix.shards.iter().filter(|s| !s.read().unwrap().is_empty()).count();
    assert!(used > SHARDS / 2, "keys landed in only {used} shards");
    // 20 bytes a slot at a load between 7/10 and 7/8.
    let per = ix.memory_bytes() as f64 / 10_000.0;
    assert!((22.8..28.6).contains(&per), "{per} bytes of index per item");
    assert_eq!(ix.clear(), 10_000);
    assert_eq!(ix.len(), 0);
    assert_eq!((ix.items(), ix.bytes(), ix.memory_bytes()), (0, 0, 0));
}

#[test]
fn reserve_takes_the_growth_out_of_a_rebuild() {
    let ix = Index::new(Fake::default());
    ix.reserve(20_000);
    let reserved = ix.memory_bytes();
    for i in 0..20_000u64 {
        put(&ix, format!("key:{i}").as_bytes(), i * 8, 8);
    }
    assert_eq!(ix.memory_bytes(), reserved, "no shard grew");
    assert_eq!(ix.len(), 20_000);
}

fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Keys built against the unseeded FNV-1a the index used to hash with:
/// all in one shard (its top bits) and with the same low 8 bits (one
/// bucket of that shard's table).
fn fnv_flood(n: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(n);
    let target = fnv1a(b"flood:0");
    let same = |h: u64| h >> 58 == target >> 58 && h & 0xff == target & 0xff;
    let mut i = 0u64;
    while keys.len() < n {
        let k = format!("flood:{i}").into_bytes();
        if same(fnv1a(&k)) {
            keys.push(k);
        }
        i += 1;
    }
    keys
}

#[test]
fn keys_built_to_collide_under_fnv_spread_over_shards_and_slots() {
    let keys = fnv_flood(256);
    let ix = Index::new(Fake::default());
    let hashes: Vec<KeyHash> = keys.iter().map(|k| ix.hash(k)).collect();
    let shards: std::collections::HashSet<usize> = hashes.iter().map(|h| h.shard).collect();
    assert!(shards.len() >= SHARDS / 2, "256 flood keys landed in only {} shards", shards.len());
    // Within a shard, the table bits spread them too: the home slot (their
    // top bits, by multiply-shift) and the whole 32 bits compared.
    let homes: std::collections::HashSet<u32> = hashes.iter().map(|h| h.table >> 24).collect();
    let low: std::collections::HashSet<u32> = hashes.iter().map(|h| h.table & 0xff).collect();
    assert!(homes.len() >= 128, "only {} distinct home bits", homes.len());
    assert!(low.len() >= 128, "only {} distinct low bits", low.len());
    // And the shard choice is independent of the table's bits.
    let both: std::collections::HashSet<(usize, u32)> =
        hashes.iter().map(|h| (h.shard, h.table % SHARDS as u32)).collect();
    assert!(both.len() > 200, "shard and table bits are correlated ({} pairs)", both.len());
    for (i, k) in keys.iter().enumerate() {
        put(&ix, k, i as u64 * 8, 8);
    }
    assert_eq!(ix.len(), keys.len());
}

#[test]
fn two_indexes_hash_differently() {
    let (a, b) = (Index::new(Fake::default()), Index::new(Fake::default()));
    let keys: Vec<String> = (0..64).map(|i| format!("key:{i}")).collect();
    let differ = keys.iter().filter(|k| a.hash(k.as_bytes()).table != b.hash(k.as_bytes()).table);
    assert_eq!(differ.count(), keys.len(), "seeded per index: no key hashes alike");
    let shards_differ = keys.iter().filter(|k| a.hash(k.as_bytes()).shard != b.hash(k.as_bytes()).shard).count();
    assert!(shards_differ > 32, "only {shards_differ} of 64 keys changed shard");
}

#[test]
fn trim_gives_back_an_overshot_reserve_and_keeps_every_entry() {
    let ix = Index::new(Fake::default());
    ix.reserve(100_000);
    let reserved = ix.memory_bytes();
    for i in 0..5_000u64 {
        put(&ix, format!("key:{i}").as_bytes(), i * 8, 8);
    }
    ix.trim();
    let trimmed = ix.memory_bytes();
    assert!(trimmed * 10 < reserved, "{trimmed} of {reserved} bytes kept");
    assert!(trimmed >= 5_000 * 20, "{trimmed} bytes for 5,000 entries");
    for i in 0..5_000u64 {
        assert_eq!(ix.position(format!("key:{i}").as_bytes()), Some(i * 8));
    }
    assert_eq!((ix.items(), ix.bytes()), (5_000, 40_000));
}
