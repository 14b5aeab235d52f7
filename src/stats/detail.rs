//! `stats detail on|off|dump`: memcached's per-prefix counters. A key's
//! prefix is what comes before the first delimiter (`-D`, default `:`);
//! keys without one are not counted, as in memcached. Counted as memcached
//! 1.6.18 counts: text get/gets/gat/gats and binary get/gat per key (with
//! hits), text and binary stores (set, add, replace, cas; text append and
//! prepend too) whatever their outcome, deletes whatever their outcome;
//! meta commands, incr/decr and touch are not counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Prefixes kept at most: a client inventing prefixes must not grow us
/// without bound (memcached has no cap). Past it, new prefixes go uncounted.
pub const MAX_PREFIXES: usize = 10_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    get: u64,
    hit: u64,
    set: u64,
    del: u64,
}

#[derive(Default)]
pub struct PrefixStats {
    enabled: AtomicBool,
    map: Mutex<HashMap<Box<[u8]>, Counts>>,
}

impl PrefixStats {
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A get of `key` (hit or miss).
    pub fn get(&self, key: &[u8], delimiter: u8, hit: bool) {
        self.record(key, delimiter, |c| {
            c.get += 1;
            c.hit += u64::from(hit);
        });
    }

    /// A store of `key`, whatever its outcome.
    pub fn set(&self, key: &[u8], delimiter: u8) {
        self.record(key, delimiter, |c| c.set += 1);
    }

    /// A delete of `key`, whatever its outcome.
    pub fn delete(&self, key: &[u8], delimiter: u8) {
        self.record(key, delimiter, |c| c.del += 1);
    }

    fn record(&self, key: &[u8], delimiter: u8, f: impl FnOnce(&mut Counts)) {
        // The one check on the hot path while detail is off.
        if !self.enabled() {
            return;
        }
        let Some(end) = key.iter().position(|&b| b == delimiter) else { return };
        let prefix = &key[..end];
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(prefix) {
            return f(c);
        }
        if map.len() < MAX_PREFIXES {
            f(map.entry(prefix.into()).or_default());
        }
    }

    /// memcached's dump: `PREFIX <p> get N hit N set N del N` lines, then
    /// `END` (sorted by prefix: memcached's order is its hash table's).
    pub fn dump(&self) -> Vec<u8> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&[u8], &Counts)> = map.iter().map(|(k, c)| (&k[..], c)).collect();
        rows.sort_by_key(|(p, _)| *p);
        let mut out = Vec::new();
        for (p, c) in rows {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(p);
            out.extend_from_slice(format!(" get {} hit {} set {} del {}\r\n", c.get, c.hit, c.set, c.del).as_bytes());
        }
        out.extend_from_slice(b"END\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_prefix_only_while_on_and_bounded() {
        let p = PrefixStats::default();
        p.get(b"a:1", b':', true);
        assert_eq!(p.dump(), b"END\r\n", "off: nothing counted");
        p.set_enabled(true);
        p.get(b"a:1", b':', true);
        p.get(b"a:2", b':', false);
        p.set(b"b:x:y", b':');
        p.delete(b"a:", b':');
        p.set(b"nodelimiter", b':');
        p.set(b"c/1", b'/');
        assert_eq!(
            String::from_utf8(p.dump()).unwrap(),
            "PREFIX a get 2 hit 1 set 0 del 1\r\nPREFIX b get 0 hit 0 set 1 del 0\r\n\
             PREFIX c get 0 hit 0 set 1 del 0\r\nEND\r\n"
        );
        p.set_enabled(false);
        p.set(b"a:1", b':');
        assert!(p.dump().starts_with(b"PREFIX a get 2 hit 1 set 0 del 1\r\n"), "off again: kept, not counted");
        p.set_enabled(true);
        for i in 0..MAX_PREFIXES + 10 {
            p.set(format!("p{i}:k").as_bytes(), b':');
        }
        assert_eq!(p.map.lock().unwrap().len(), MAX_PREFIXES);
    }
}
