//! mn (no-op, "MN") and me (debug: one item's metadata).

use super::{base64, flags, line};
use crate::protocol::Ctx;
use crate::store::ReadOpts;

pub(super) fn mn(out: &mut Vec<u8>) {
    line(out, "MN");
}

/// memcached's slab class for an item of `ntotal` bytes with the default
/// settings (-n 48, -f 1.25): `me` reports it.
fn slab_class(ntotal: usize) -> usize {
    let (mut size, mut cls) = (96usize, 1);
    while size < ntotal {
        size = (size as f64 * 1.25) as usize;
        size = (size + 7) & !7;
        cls += 1;
    }
    cls
}

pub(super) fn me(tokens: &[&[u8]], out: &mut Vec<u8>, ctx: &Ctx) {
    if tokens.len() < 2 || tokens[1].len() > flags::MAX_KEY_LEN {
        return line(out, "CLIENT_ERROR bad command line format");
    }
    // Only an exact "b" as the first option decodes the key, as memcached.
    let binary = tokens.get(2).is_some_and(|t| *t == b"b");
    let key = if binary {
        match base64::decode(tokens[1]) {
            Some(k) => k,
            None => return line(out, "CLIENT_ERROR bad command line format"),
        }
    } else {
        tokens[1].to_vec()
    };
    let Some(m) = ctx.store.get(&key, ReadOpts { value: false, note_access: false }, &mut Vec::new(), |_, _| {}) else {
        return line(out, "EN");
    };
    let now = ctx.store.clock.now();
    // memcached prints the key base64-encoded (without " b") if the item
    // was stored so (`ms ... b`), whatever this request said.
    out.extend_from_slice(b"ME ");
    if m.key_binary {
        base64::encode(&key, out);
    } else {
        out.extend_from_slice(&key);
    }
    // memcached prints an unsigned difference through %d: mimic the wrap.
    let exp = if m.expiry == 0 { -1 } else { now.wrapping_sub(m.expiry) as i32 };
    // memcached's item size: header, CAS, key + NUL, value + CRLF, flags if any.
    let size = 48 + 8 + key.len() + 1 + m.value_len as usize + 2 + if m.flags != 0 { 4 } else { 0 };
    line(
        out,
        &format!(
            " exp={} la={} cas={} fetch={} cls={} size={}",
            exp,
            now.saturating_sub(m.last_access),
            m.cas,
            if m.fetched { "yes" } else { "no" },
            slab_class(size),
            size
        ),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn slab_classes_match_memcached_defaults() {
        assert_eq!(super::slab_class(64), 1);
        assert_eq!(super::slab_class(96), 1);
        assert_eq!(super::slab_class(111), 2);
        assert_eq!(super::slab_class(561), 9);
        assert_eq!(super::slab_class(5061), 19);
    }
}
