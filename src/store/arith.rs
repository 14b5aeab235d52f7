//! incr / decr: memcached's counter parse and the arithmetic update, under
//! the writer lock.
//!
//! memcached refuses (as non-numeric) an empty value and one it stores in
//! chunks, too large to be a number, before it parses; so do we, before
//! copying anything. A value is parsed from its first bytes, and read whole
//! only if its number runs past them (a long run of leading white space or
//! zeros). The result is written padded with spaces to the old length, as
//! memcached's in-place update does, only for values of up to
//! `SHORT_COUNTER` bytes; a longer one gets the digits alone, as memcached
//! writes them when it copies the item: an incr never rewrites a long value.

use super::write::ItemState;
use super::{absolute_expiry, ArithArgs, ArithExpiry, ArithOutcome, Store, StoreError, Writer};
use crate::log::record::Header;

/// Values up to this long are parsed from one small read and updated "in
/// place" (padded to their length, keeping the item's state).
const SHORT_COUNTER: usize = 64;

/// Whether memcached 1.6 would store this item in chunks (it then refuses
/// incr/decr on it): its item header (48 bytes, 8 more for the CAS, 4 more
/// for non-zero client flags), the key and a NUL, the value and "\r\n",
/// over the default `slab_chunk_max` of 512 KiB (half a 1 MiB slab page).
/// Measured against Debian's memcached 1.6.18: with a 2-byte key and flags
/// 0, a 524227-byte number counts and a 524228-byte one does not.
fn memcached_chunks(key_len: usize, value_len: usize, client_flags: u32) -> bool {
    const ITEM_HEADER: usize = 48 + 8;
    let flags = if client_flags != 0 { 4 } else { 0 };
    ITEM_HEADER + flags + key_len + 1 + value_len + 2 > 512 << 10
}

impl Store {
    /// incr / decr on a decimal u64: incr wraps at 2^64, decr stops at 0.
    pub fn arith(&self, a: &ArithArgs) -> std::result::Result<ArithOutcome, StoreError> {
        self.arith_ex(a).map(|(o, _)| o)
    }

    /// `arith`, also telling the item's absolute expiry before and after
    /// (meta `ma t` reports either, depending on where `T`/`N` stand). A
    /// created item's "before" is 0, as memcached allocates it without one.
    pub fn arith_ex(&self, a: &ArithArgs) -> std::result::Result<(ArithOutcome, Option<ArithExpiry>), StoreError> {
        self.writable(a.key)?;
        let mut w = self.lock();
        let now = self.clock.now();
        let Some((pos, h)) = self.live_locked(a.key, now) else {
            let Some((initial, exptime)) = a.initial else { return Ok((ArithOutcome::NotFound, None)) };
            let cas = self.next_cas(&mut w);
            let digits = initial.to_string();
            let expiry = absolute_expiry(exptime, now);
            self.put_locked(&mut w, a.key, &[digits.as_bytes()], 0, expiry, cas, now, 0, ItemState::default())?;
            let end = w.log.head();
            drop(w);
            self.replicated(end)?;
            return Ok((
                ArithOutcome::Value { value: initial, cas },
                Some(ArithExpiry { before: 0, after: expiry, created: true }),
            ));
        };
        // memcached refuses an empty value, or one too large to be a number,
        // before it looks at the CAS.
        let old_len = h.value_len as usize;
        if old_len == 0 || memcached_chunks(a.key.len(), old_len, h.client_flags) {
            return Ok((ArithOutcome::NonNumeric, None));
        }
        if a.cas != 0 && a.cas != h.cas {
            return Ok((ArithOutcome::Exists, None));
        }
        let mut value = self.counter_value(&mut w, pos, &h);
        let Some(current) = parse_counter(&value) else {
            w.scratch = value;
            return Ok((ArithOutcome::NonNumeric, None));
        };
        let new = if a.incr { current.wrapping_add(a.delta) } else { current.saturating_sub(a.delta) };
        value.clear();
        value.extend_from_slice(new.to_string().as_bytes());
        // memcached updates a number that still fits in place (keeping the
        // item's stale, fetched and token state), padded with spaces to the
        // old length (clients see them, so we keep them too), and copies a
        // longer one into a fresh item. A long value is copied here too.
        let in_place = value.len() <= old_len && old_len <= SHORT_COUNTER;
        if in_place {
            value.resize(old_len, b' ');
        }
        let expiry = a.new_exptime.map(|t| absolute_expiry(t, now)).unwrap_or(h.expiry);
        let cas = self.next_cas(&mut w);
        let (item_flags, state) =
            if in_place { (h.item_flags, self.entry_state(a.key)) } else { (0, ItemState::default()) };
        let r = self.put_locked(&mut w, a.key, &[&value], h.client_flags, expiry, cas, now, item_flags, state);
        w.scratch = value;
        r?;
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok((
            ArithOutcome::Value { value: new, cas },
            Some(ArithExpiry { before: h.expiry, after: expiry, created: false }),
        ))
    }

    /// The bytes of the value at `pos` that decide its counter, in the
    /// writer's scratch buffer (give it back): the first `SHORT_COUNTER`
    /// bytes, or the whole value when its number runs on past them.
    fn counter_value(&self, w: &mut Writer, pos: u64, h: &Header) -> Vec<u8> {
        let mut v = std::mem::take(&mut w.scratch);
        v.clear();
        // A header claiming a shorter value reads the value's first bytes.
        let first = Header { value_len: h.value_len.min(SHORT_COUNTER as u32), ..*h };
        self.log.append_value(pos, &first, &mut v);
        if first.value_len < h.value_len && counter_run(&v) == v.len() {
            v.clear();
            self.log.append_value(pos, h, &mut v);
        }
        v
    }
}

/// How far the part of a value that `parse_counter` reads runs: white
/// space, a sign, digits. Whatever follows decides (it must be white space).
fn counter_run(v: &[u8]) -> usize {
    let mut i = v.iter().take_while(|&&b| is_c_space(b)).count();
    if matches!(v.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    i + v[i..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// memcached's counter parse (its `safe_strtoull` over the stored value,
/// which is followed by "\r\n"): optional leading white space and sign,
/// decimal digits that fit a u64, then the end or white space (anything may
/// follow that, e.g. the spaces a shrinking in-place rewrite leaves). A minus
/// sign is refused unless the number is zero.
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let is_space = is_c_space;
    let mut i = v.iter().take_while(|&&b| is_space(b)).count();
    let neg = v.get(i) == Some(&b'-');
    if matches!(v.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let start = i;
    let mut n: u64 = 0;
    while let Some(d) = v.get(i).filter(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
        i += 1;
    }
    if i == start || (neg && n != 0) {
        return None;
    }
    // The stored value is followed by "\r\n", so its end counts as white space.
    match v.get(i) {
        None => Some(n),
        Some(&b) if is_space(b) => Some(n),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::region::HugePages;
    use crate::store::tests::{get, set, store};
    use crate::store::*;

    #[test]
    fn incr_decr_wrap_floor_and_space_padding() {
        let s = store(4);
        set(&s, SetMode::Set, b"n", b"10");
        let dec = |d| ArithArgs { key: b"n", incr: false, delta: d, cas: 0, initial: None, new_exptime: None };
        assert!(matches!(s.arith(&dec(1)).unwrap(), ArithOutcome::Value { value: 9, .. }));
        assert_eq!(get(&s, b"n").unwrap().0, b"9 ");
        assert!(matches!(s.arith(&dec(100)).unwrap(), ArithOutcome::Value { value: 0, .. }));
        set(&s, SetMode::Set, b"n", u64::MAX.to_string().as_bytes());
        let inc = ArithArgs { incr: true, delta: 2, ..dec(0) };
        assert!(matches!(s.arith(&inc).unwrap(), ArithOutcome::Value { value: 1, .. }));
        set(&s, SetMode::Set, b"n", b"abc");
        assert_eq!(s.arith(&inc).unwrap(), ArithOutcome::NonNumeric);
        for (v, want) in [
            (&b" 12"[..], Some(12)),
            (b"0 21", Some(0)),
            (b"+7", Some(7)),
            (b"-0", Some(0)),
            (b"-3", None),
            (b"12abc", None),
            (b"", None),
            (b"99999999999999999999", None),
        ] {
            assert_eq!(parse_counter(v), want, "{:?}", String::from_utf8_lossy(v));
        }
        let miss = ArithArgs { key: b"nokey", ..inc };
        assert_eq!(s.arith(&miss).unwrap(), ArithOutcome::NotFound);
    }

    fn big_store() -> Store {
        Store::new(&StoreConfig { memory_bytes: 4 << 20, max_item_size: 1 << 20, hugepages: HugePages::Off }).unwrap()
    }

    fn incr(key: &[u8]) -> ArithArgs<'_> {
        ArithArgs { key, incr: true, delta: 1, cas: 0, initial: None, new_exptime: None }
    }

    #[test]
    fn a_value_too_large_to_be_a_number_is_refused_before_it_is_read() {
        let s = big_store();
        // memcached 1.6.18 with a 2-byte key and flags 0: 524227 zeros are
        // a number, 524228 are an item it stores in chunks and refuses.
        s.set(&SetArgs::new(SetMode::Set, b"ok", &vec![b'0'; 524_227], 0, 0)).unwrap();
        s.set(&SetArgs::new(SetMode::Set, b"no", &vec![b'0'; 524_228], 0, 0)).unwrap();
        s.set(&SetArgs::new(SetMode::Set, b"fl", &vec![b'0'; 524_224], 1, 0)).unwrap();
        s.set(&SetArgs::new(SetMode::Set, b"mb", &vec![b'0'; 1 << 20], 0, 0)).unwrap();
        let before = s.snapshot();
        assert_eq!(s.arith(&incr(b"no")).unwrap(), ArithOutcome::NonNumeric);
        assert_eq!(s.arith(&incr(b"fl")).unwrap(), ArithOutcome::NonNumeric, "flags take 4 bytes more");
        assert_eq!(s.arith(&incr(b"mb")).unwrap(), ArithOutcome::NonNumeric);
        assert_eq!(s.snapshot().records_appended, before.records_appended);
        assert_eq!(get(&s, b"mb").unwrap().0.len(), 1 << 20, "left as it was");
        assert!(matches!(s.arith(&incr(b"ok")).unwrap(), ArithOutcome::Value { value: 1, .. }));
        // A long number is rewritten as its digits: a small record.
        assert_eq!(get(&s, b"ok").unwrap().0, b"1");
        assert_eq!(s.log().head() - before.log_head, crate::log::record::record_len(2, 1));
    }

    #[test]
    fn long_values_parse_as_memcached_and_short_ones_keep_their_padding() {
        let s = big_store();
        let mut v = vec![b' '; 100];
        v.extend_from_slice(b"41 trailing");
        for (val, want) in [
            (v.clone(), Some(42)),
            ([vec![b'0'; 100], b"7".to_vec()].concat(), Some(8)),
            ([b"5".to_vec(), vec![b' '; 1000]].concat(), Some(6)),
            ([vec![b'0'; 100], b"x".to_vec()].concat(), None),
            ([b"12".to_vec(), vec![b'x'; 1000]].concat(), None),
            ([vec![b'9'; 30], vec![b' '; 100]].concat(), None),
        ] {
            s.set(&SetArgs::new(SetMode::Set, b"n", &val, 0, 0)).unwrap();
            match s.arith(&incr(b"n")).unwrap() {
                ArithOutcome::Value { value, .. } => {
                    assert_eq!(Some(value), want);
                    assert_eq!(get(&s, b"n").unwrap().0, value.to_string().as_bytes());
                }
                other => assert_eq!((other, want), (ArithOutcome::NonNumeric, None)),
            }
        }
        s.set(&SetArgs::new(SetMode::Set, b"n", &[b"100".to_vec(), vec![b' '; 61]].concat(), 0, 0)).unwrap();
        let dec = ArithArgs { incr: false, delta: 1, ..incr(b"n") };
        assert!(matches!(s.arith(&dec).unwrap(), ArithOutcome::Value { value: 99, .. }));
        assert_eq!(get(&s, b"n").unwrap().0, [b"99".to_vec(), vec![b' '; 62]].concat(), "padded to 64 bytes");
    }
}
