//! `watch`: connections that stream log lines of events from every worker,
//! in memcached 1.6's format (`ts=... gid=... type=item_get key=...`).
//!
//! A worker never waits for a watcher: an event is formatted only when some
//! watcher wants its class (one relaxed load otherwise), and goes into each
//! such watcher's bounded queue with a `try_lock` and a length check; when
//! the queue is full (the watcher reads slowly) or busy, the event is
//! dropped and counted, and the watcher is told with memcached's
//! `skipped=N` line before its next lines. The watcher's own worker moves
//! queued lines into that connection's output from its poll loop.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Event classes, as `watch` names them.
pub const FETCHERS: u8 = 1;
pub const MUTATIONS: u8 = 2;
pub const EVICTIONS: u8 = 4;
pub const CONNEVENTS: u8 = 8;

/// The most bytes of lines a watcher's queue may hold (`-o
/// watcher_logbuf_size`, 256 KiB unless told, as memcached's); past it,
/// events are skipped. At most a connection's output cap, so a full queue
/// always fits a drained output.
pub fn queue_bytes(watcher_logbuf_size: usize) -> usize {
    watcher_logbuf_size.clamp(4 << 10, crate::runtime::CONN_OUTPUT_CAP)
}

/// `watch [class...]`'s classes: memcached's default (no argument) is the
/// fetchers; an unknown word refuses the command (`None`).
pub fn parse_classes<'a>(words: impl Iterator<Item = &'a [u8]>) -> Option<u8> {
    let mut mask = 0;
    for w in words {
        mask |= match w {
            b"fetchers" => FETCHERS,
            b"mutations" => MUTATIONS,
            b"evictions" => EVICTIONS,
            b"connevents" => CONNEVENTS,
            _ => return None,
        };
    }
    Some(if mask == 0 { FETCHERS } else { mask })
}

/// One watching connection's queue.
#[derive(Debug)]
pub struct Watcher {
    classes: u8,
    /// Bytes `queue` may hold.
    cap: usize,
    queue: Mutex<Vec<u8>>,
    skipped: AtomicU64,
}

impl Watcher {
    fn offer(&self, line: &[u8]) {
        match self.queue.try_lock() {
            Ok(mut q) if q.len() + line.len() <= self.cap => q.extend_from_slice(line),
            _ => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines (or a skipped count) wait to be moved; a busy queue counts
    /// as waiting.
    pub fn has_lines(&self) -> bool {
        self.skipped.load(Ordering::Relaxed) > 0 || self.queue.try_lock().map_or(true, |q| !q.is_empty())
    }

    /// Move whole queued lines into `out` while it stays under `limit`
    /// bytes, the skipped count first. Returns whether anything moved.
    pub fn drain_into(&self, out: &mut Vec<u8>, limit: usize) -> bool {
        let skipped = self.skipped.load(Ordering::Relaxed);
        let mut moved = false;
        if skipped > 0 && out.len() + 32 <= limit {
            self.skipped.fetch_sub(skipped, Ordering::Relaxed);
            let _ = writeln!(Line(out), "skipped={skipped}");
            moved = true;
        }
        let Ok(mut q) = self.queue.lock() else { return moved };
        if q.is_empty() {
            return moved;
        }
        let room = limit.saturating_sub(out.len());
        let take = if q.len() <= room {
            q.len()
        } else {
            // Whole lines only.
            match q[..room].iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                None => return moved,
            }
        };
        out.extend_from_slice(&q[..take]);
        q.drain(..take);
        true
    }
}

/// memcached's `rip`/`rport`: a UNIX socket's peer (none) is `unix`, 0.
fn rip_rport(peer: Option<std::net::SocketAddr>) -> (String, u16) {
    peer.map_or_else(|| ("unix".to_string(), 0), |a| (a.ip().to_string(), a.port()))
}

/// A key as memcached's lines show it: URI-encoded (so always ASCII).
fn encoded(key: &[u8]) -> String {
    let mut out = Vec::with_capacity(key.len());
    super::uriencode(key, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

struct Line<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Every watcher of the process.
#[derive(Debug, Default)]
pub struct Watchers {
    /// The union of the watchers' classes: the one load an event costs
    /// when nobody watches it.
    mask: AtomicU8,
    list: RwLock<Vec<Arc<Watcher>>>,
    /// memcached's `gid`: a global sequence over the lines emitted.
    gid: AtomicU64,
}

impl Watchers {
    /// A watcher of `classes` whose queue holds `queue_bytes` (see [`queue_bytes`]).
    pub fn add(&self, classes: u8, queue_bytes: usize) -> Arc<Watcher> {
        let w =
            Arc::new(Watcher { classes, cap: queue_bytes, queue: Mutex::new(Vec::new()), skipped: AtomicU64::new(0) });
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.push(w.clone());
        self.mask.store(list.iter().fold(0, |m, w| m | w.classes), Ordering::Relaxed);
        w
    }

    pub fn remove(&self, w: &Arc<Watcher>) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|x| !Arc::ptr_eq(x, w));
        self.mask.store(list.iter().fold(0, |m, w| m | w.classes), Ordering::Relaxed);
    }

    #[inline]
    pub fn wants(&self, class: u8) -> bool {
        self.mask.load(Ordering::Relaxed) & class != 0
    }

    /// Format an event (its fields after `type=`) and offer it to every
    /// watcher of `class`. Call only when `wants(class)`.
    fn emit(&self, class: u8, fields: std::fmt::Arguments) {
        // Write-locked only while a watcher comes or goes: the event is
        // dropped then rather than wait (uncounted: whose would it be?).
        let Ok(list) = self.list.try_read() else { return };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let gid = self.gid.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = Vec::with_capacity(160);
        // memcached prints the microseconds unpadded ("%d.%d").
        let _ = writeln!(Line(&mut line), "ts={}.{} gid={gid} type={fields}", now.as_secs(), now.subsec_micros());
        for w in list.iter().filter(|w| w.classes & class != 0) {
            w.offer(&line);
        }
    }

    /// A key looked up (`get` and its kin): memcached's `item_get`.
    pub fn item_get(&self, key: &[u8], found: bool, size: usize, cfd: i32) {
        if !self.wants(FETCHERS) {
            return;
        }
        let (status, clsid, size) = if found { ("found", 1, size) } else { ("not_found", 0, 0) };
        let key = encoded(key);
        self.emit(FETCHERS, format_args!("item_get key={key} status={status} clsid={clsid} cfd={cfd} size={size}"));
    }

    /// A storage command's outcome: memcached's `item_store`. `status` is
    /// memcached's word (stored, not_stored, exists, not_found, too_large).
    pub fn item_store(&self, key: &[u8], status: &str, cmd: &str, ttl: i64, size: usize, cfd: i32) {
        if !self.wants(MUTATIONS) {
            return;
        }
        let key = encoded(key);
        self.emit(
            MUTATIONS,
            format_args!("item_store key={key} status={status} cmd={cmd} ttl={ttl} clsid=1 cfd={cfd} size={size}"),
        );
    }

    /// An item the log's writer evicted: memcached's `eviction` (no `cfd`:
    /// no connection asked for it).
    pub fn eviction(&self, key: &[u8], e: &crate::store::Evicted) {
        if !self.wants(EVICTIONS) {
            return;
        }
        let (key, fetch) = (encoded(key), if e.fetched { "yes" } else { "no" });
        let (ttl, la, size) = (e.ttl, e.idle, e.value_len);
        self.emit(EVICTIONS, format_args!("eviction key={key} fetch={fetch} ttl={ttl} la={la} clsid=1 size={size}"));
    }

    /// The store's hook for [`Watchers::eviction`] (install with
    /// `Store::set_eviction_hook`): it holds the watchers, not the runtime.
    pub fn eviction_hook(self: &Arc<Self>) -> crate::store::EvictionHook {
        let watch = self.clone();
        Box::new(move |key, e| watch.eviction(key, e))
    }

    /// A connection accepted: memcached's `conn_new`.
    pub fn conn_new(&self, peer: Option<std::net::SocketAddr>, transport: &str, cfd: i32) {
        if !self.wants(CONNEVENTS) {
            return;
        }
        let (rip, rport) = rip_rport(peer);
        self.emit(CONNEVENTS, format_args!("conn_new rip={rip} rport={rport} transport={transport} cfd={cfd}"));
    }

    /// A connection closed: memcached's `conn_close`.
    pub fn conn_close(&self, peer: Option<std::net::SocketAddr>, transport: &str, reason: &str, cfd: i32) {
        if !self.wants(CONNEVENTS) {
            return;
        }
        let (rip, rport) = rip_rport(peer);
        self.emit(
            CONNEVENTS,
            format_args!("conn_close rip={rip} rport={rport} transport={transport} reason={reason} cfd={cfd}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lines_name_a_unix_peer_as_memcached() {
        let ws = Watchers::default();
        let w = ws.add(CONNEVENTS, queue_bytes(0));
        ws.conn_new(None, "local", 25);
        ws.conn_close("127.0.0.1:4242".parse().ok(), "tcp", "normal", 26);
        let mut out = Vec::new();
        w.drain_into(&mut out, usize::MAX);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| l.split_once(" type=").map_or("", |(_, rest)| rest)).collect();
        assert_eq!(
            lines,
            [
                "conn_new rip=unix rport=0 transport=local cfd=25",
                "conn_close rip=127.0.0.1 rport=4242 transport=tcp reason=normal cfd=26"
            ]
        );
    }

    #[test]
    fn classes_default_to_fetchers_and_refuse_unknown_words() {
        assert_eq!(parse_classes(std::iter::empty()), Some(FETCHERS));
        let words: [&[u8]; 2] = [b"mutations", b"connevents"];
        assert_eq!(parse_classes(words.into_iter()), Some(MUTATIONS | CONNEVENTS));
        let bad: [&[u8]; 1] = [b"bogus"];
        assert_eq!(parse_classes(bad.into_iter()), None);
    }

    #[test]
    fn no_watcher_no_line_and_a_full_queue_counts_what_it_skips() {
        let ws = Watchers::default();
        assert!(!ws.wants(FETCHERS));
        let w = ws.add(FETCHERS, queue_bytes(8 << 10));
        assert!(ws.wants(FETCHERS) && !ws.wants(MUTATIONS));
        ws.item_store(b"k", "stored", "set", 0, 1, 5);
        ws.item_get(b"foo", true, 3, 12);
        let mut out = Vec::new();
        assert!(w.drain_into(&mut out, usize::MAX));
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with("ts=") && line.ends_with(" type=item_get key=foo status=found clsid=1 cfd=12 size=3\n")
        );
        assert!(line.contains(" gid=1 "), "{line}");
        let key = vec![b'x'; 200];
        let mut n = 0;
        while w.skipped.load(Ordering::Relaxed) == 0 {
            ws.item_get(&key, false, 0, 1);
            n += 1;
        }
        let mut out = Vec::new();
        assert!(w.drain_into(&mut out, 100));
        assert_eq!(out, b"skipped=1\n", "the count first, then no partial line");
        out.clear();
        w.drain_into(&mut out, usize::MAX);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), n - 1);
        ws.remove(&w);
        assert!(!ws.wants(FETCHERS));
    }
}
