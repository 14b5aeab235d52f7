//! `lru_crawler`: memcached's crawler commands. A log has no LRU to crawl:
//! the cleaner reclaims expired records as it reaches them and readers
//! unlink expired items they find, so `crawl`, `sleep`, `tocrawl`, `enable`
//! and `disable` are accepted with memcached's answers and change nothing.
//! `metadump` (what memcached-tool's `dump` and `keys` read) walks the
//! index and prints memcached's line per live item.

use super::parse::{safe_strtoul, Tokens};
use super::{reply, reply_error, Ctx, BAD_FORMAT, ERROR};
use crate::protocol::meta::mn_me::{item_size, slab_class};
use crate::store::ItemMeta;

/// memcached's class ids run from 1 below `MAX_NUMBER_OF_SLAB_CLASSES` (64).
const MAX_CLASS: u32 = 63;
/// memcached's limit for `lru_crawler sleep` (microseconds).
const MAX_SLEEP_US: u32 = 1_000_000;
const BADCLASS: &[u8] = b"BADCLASS invalid class id";

/// The classes a `metadump`/`crawl` argument names (`all`, or ids separated
/// by commas), or `None` for an invalid id (memcached's BADCLASS).
fn classes(arg: &[u8], allow_hash: bool) -> Option<Option<Vec<u32>>> {
    if arg == b"all" || (allow_hash && arg == b"hash") {
        return Some(None);
    }
    let mut ids = Vec::new();
    for part in arg.split(|&b| b == b',') {
        let id = safe_strtoul(part).filter(|id| (1..=MAX_CLASS).contains(id))?;
        ids.push(id);
    }
    Some(Some(ids))
}

pub fn step(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    // "lru_crawler <sub> <arg>" (the count includes memcached's empty last token).
    let (sub, arg) = (t.get(1), t.get(2));
    match (sub, t.count()) {
        (b"metadump", 4) => metadump(arg, out, ctx),
        (b"crawl", 4) => match classes(arg, false) {
            Some(_) => reply(out, false, b"OK"),
            None => reply(out, false, BADCLASS),
        },
        (b"sleep", 4) => match safe_strtoul(arg) {
            Some(us) if us > MAX_SLEEP_US => reply(out, false, b"CLIENT_ERROR sleep must be one second or less"),
            Some(_) => reply(out, false, b"OK"),
            None => reply(out, false, BAD_FORMAT),
        },
        (b"tocrawl", 4) => match safe_strtoul(arg) {
            Some(_) => reply(out, false, b"OK"),
            None => reply(out, false, BAD_FORMAT),
        },
        (b"enable" | b"disable", 3) => reply(out, false, b"OK"),
        _ => reply_error(out, false, ERROR, ctx),
    }
}

/// `lru_crawler metadump all|hash|<ids>`: one line per live item, then END.
/// An id selects the items memcached would keep in that slab class (by
/// memcached's item size, as `me` reports it). The whole dump is built at
/// once (a log's index has no cursor to resume from); `-X` refuses it.
fn metadump(arg: &[u8], out: &mut Vec<u8>, ctx: &Ctx) {
    if ctx.rt.settings.disable_dumping {
        return reply(out, false, b"ERROR metadump not allowed");
    }
    let Some(ids) = classes(arg, true) else {
        return reply(out, false, BADCLASS);
    };
    ctx.store.for_each_item(|key, m| {
        let cls = slab_class(item_size(key.len(), m));
        if ids.as_ref().is_none_or(|ids| ids.contains(&(cls as u32))) {
            line(out, key, m, cls);
        }
    });
    reply(out, false, b"END");
}

/// memcached's bound on one `stats cachedump` reply.
const CACHEDUMP_LIMIT: usize = 2 << 20;

/// `stats cachedump <class> <limit>`: `ITEM <key> [<bytes> b; <exptime> s]`
/// per live item of the class (memcached's class by item size), at most
/// `limit` (0: all) and 2 MiB of lines, then END; memcached's replies for bad
/// arguments and under `-X`. memcached walks one LRU from its newest item;
/// the index has no such order, so the order here is the index's.
pub fn cachedump(t: &Tokens, out: &mut Vec<u8>, ctx: &Ctx) {
    if ctx.rt.settings.disable_dumping {
        return reply(out, false, b"CLIENT_ERROR stats cachedump not allowed");
    }
    if t.count() < 5 {
        return reply(out, false, b"CLIENT_ERROR bad command line");
    }
    let (Some(id), Some(limit)) = (safe_strtoul(t.get(2)), safe_strtoul(t.get(3))) else {
        return reply(out, false, BAD_FORMAT);
    };
    if id > MAX_CLASS {
        return reply(out, false, b"CLIENT_ERROR Illegal slab id");
    }
    let (start, mut shown) = (out.len(), 0u32);
    ctx.store.for_each_item(|key, m| {
        if (limit != 0 && shown >= limit) || out.len() - start >= CACHEDUMP_LIMIT {
            return;
        }
        if slab_class(item_size(key.len(), m)) as u32 == id {
            out.extend_from_slice(b"ITEM ");
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" [{} b; {} s]\r\n", m.value_len, m.expiry).as_bytes());
            shown += 1;
        }
    });
    reply(out, false, b"END");
}

/// memcached's metadump line: the key URI-encoded, times absolute.
fn line(out: &mut Vec<u8>, key: &[u8], m: &ItemMeta, cls: usize) {
    out.extend_from_slice(b"key=");
    crate::stats::uriencode(key, out);
    let exp = if m.expiry == 0 { -1 } else { m.expiry as i64 };
    let fetch = if m.fetched { "yes" } else { "no" };
    let size = item_size(key.len(), m);
    out.extend_from_slice(
        format!(" exp={exp} la={} cas={} fetch={fetch} cls={cls} size={size}\n", m.last_access, m.cas).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use crate::memory::region::HugePages;
    use crate::protocol::{step, Ctx, Session};
    use crate::runtime::{Runtime, Settings};
    use crate::store::{SetArgs, SetMode, Store, StoreConfig};

    fn run(settings: Settings, request: &[u8]) -> String {
        let cfg = StoreConfig { memory_bytes: 4 << 20, max_item_size: 64 << 10, hugepages: HugePages::Off };
        let store = Store::new(&cfg).unwrap();
        store.set(&SetArgs::new(SetMode::Set, b"a b", b"v", 3, 0)).unwrap();
        store.set(&SetArgs::new(SetMode::Set, b"c", b"hello", 0, 0)).unwrap();
        let rt = Runtime::new(Settings { threads: 1, ..settings }, 0);
        let ctx = Ctx { store: &store, stats: &rt.workers[0], rt: &rt };
        let mut out = Vec::new();
        step(&mut Session::default(), request, &mut out, &ctx);
        String::from_utf8(out).unwrap()
    }

    fn dump(settings: Settings) -> String {
        run(settings, b"lru_crawler metadump all\r\n")
    }

    #[test]
    fn cachedump_answers_as_memcached_1_6_18() {
        // Replies taken from Debian's memcached 1.6.18 with the same items.
        let d = run(Settings::default(), b"stats cachedump 1 0\r\n");
        let mut lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.pop(), Some("END"), "{d}");
        lines.sort();
        assert_eq!(lines, ["ITEM a b [1 b; 0 s]", "ITEM c [5 b; 0 s]"]);
        assert_eq!(run(Settings::default(), b"stats cachedump 1 1\r\n").lines().count(), 2, "limit 1");
        assert_eq!(run(Settings::default(), b"stats cachedump 2 0\r\n"), "END\r\n");
        assert_eq!(run(Settings::default(), b"stats cachedump 63 0\r\n"), "END\r\n");
        assert_eq!(run(Settings::default(), b"stats cachedump 64 0\r\n"), "CLIENT_ERROR Illegal slab id\r\n");
        assert_eq!(run(Settings::default(), b"stats cachedump 1\r\n"), "CLIENT_ERROR bad command line\r\n");
        assert_eq!(run(Settings::default(), b"stats cachedump x 0\r\n"), "CLIENT_ERROR bad command line format\r\n");
        let refused = run(Settings { disable_dumping: true, ..Settings::default() }, b"stats cachedump 1 0\r\n");
        assert_eq!(refused, "CLIENT_ERROR stats cachedump not allowed\r\n", "-X");
    }

    #[test]
    fn metadump_lists_items_unless_dumping_is_disabled() {
        let d = dump(Settings::default());
        assert!(d.contains("key=a%20b exp=-1 la=") && d.contains(" fetch=no cls=1 size=67\n"), "{d}");
        assert!(d.contains("key=c exp=-1 la=") && d.ends_with("END\r\n"), "{d}");
        let refused = dump(Settings { disable_dumping: true, ..Settings::default() });
        assert_eq!(refused, "ERROR metadump not allowed\r\n", "-X");
    }

    #[test]
    fn keys_are_uri_encoded_as_memcached_does() {
        let mut out = Vec::new();
        crate::stats::uriencode(b"b%c d\x01~A-z.9_", &mut out);
        assert_eq!(out, b"b%25c%20d%01~A-z.9_");
    }

    #[test]
    fn class_arguments() {
        assert_eq!(super::classes(b"all", false), Some(None));
        assert_eq!(super::classes(b"hash", true), Some(None));
        assert_eq!(super::classes(b"hash", false), None);
        assert_eq!(super::classes(b"1,5,63", false), Some(Some(vec![1, 5, 63])));
        for bad in [&b"0"[..], b"64", b"99", b"a", b"1,a", b""] {
            assert_eq!(super::classes(bad, true), None, "{bad:?}");
        }
    }
}
