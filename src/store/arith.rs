//! incr / decr: memcached's counter parse and the arithmetic update, under
//! the writer lock.

use super::{absolute_expiry, ArithArgs, ArithExpiry, ArithOutcome, Store, StoreError};
use crate::log::record::Kind;

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
            let cas = Self::next_cas(&mut w);
            let digits = initial.to_string();
            let expiry = absolute_expiry(exptime, now);
            self.put_locked(&mut w, Kind::Set, a.key, &[digits.as_bytes()], 0, expiry, cas, now, 0)?;
            return Ok((
                ArithOutcome::Value { value: initial, cas },
                Some(ArithExpiry { before: 0, after: expiry, created: true }),
            ));
        };
        // memcached refuses an empty value before it looks at the CAS.
        if h.value_len == 0 {
            return Ok((ArithOutcome::NonNumeric, None));
        }
        if a.cas != 0 && a.cas != h.cas {
            return Ok((ArithOutcome::Exists, None));
        }
        let mut value = self.take_value(&mut w, pos, &h);
        let parsed = parse_counter(&value);
        let Some(current) = parsed else {
            w.scratch = value;
            return Ok((ArithOutcome::NonNumeric, None));
        };
        let new = if a.incr { current.wrapping_add(a.delta) } else { current.saturating_sub(a.delta) };
        let old_len = value.len();
        value.clear();
        value.extend_from_slice(new.to_string().as_bytes());
        // memcached rewrites a shrinking number in place, padded with spaces to
        // the old length; clients see those spaces, so we keep them too.
        if value.len() < old_len {
            value.resize(old_len, b' ');
        }
        let expiry = a.new_exptime.map(|t| absolute_expiry(t, now)).unwrap_or(h.expiry);
        let cas = Self::next_cas(&mut w);
        // memcached updates a number that still fits in place (keeping the
        // item's stale, fetched and token state) and copies a longer one
        // into a fresh item.
        let in_place = value.len() <= old_len;
        let (fetched, win_sent) = self.entry_state(a.key);
        let item_flags = if in_place { h.item_flags } else { 0 };
        let r = self.put_locked(&mut w, Kind::Set, a.key, &[&value], h.client_flags, expiry, cas, now, item_flags);
        w.scratch = value;
        r?;
        if in_place {
            self.set_entry_state(a.key, fetched, win_sent);
        }
        let end = w.log.head();
        drop(w);
        self.replicated(end)?;
        Ok((
            ArithOutcome::Value { value: new, cas },
            Some(ArithExpiry { before: h.expiry, after: expiry, created: false }),
        ))
    }
}

/// memcached's counter parse (its `safe_strtoull` over the stored value,
/// which is followed by "\r\n"): optional leading white space and sign,
/// decimal digits that fit a u64, then the end or white space (anything may
/// follow that, e.g. the spaces a shrinking in-place rewrite leaves). A minus
/// sign is refused unless the number is zero.
pub fn parse_counter(v: &[u8]) -> Option<u64> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
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
}
