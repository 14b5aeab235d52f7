//! Counters and the `stats` reports.
//!
//! Each worker thread owns a `WorkerStats` and is its only writer, so an
//! increment is a plain load and store (no locked instruction on the hot
//! path); `stats` sums every worker's copy with relaxed loads. Each copy is
//! `CachePadded` (see `crate::runtime::Runtime::workers`), so two workers'
//! counters never share a cache line. The reports read the runtime and the
//! store, never a connection.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::runtime::Runtime;

pub mod conns;
pub mod detail;
pub mod watch;
use crate::store::Store;

/// memcached's `uriencode`, for keys in its reports (`lru_crawler
/// metadump`, `watch`): unreserved characters as they are, every other byte
/// as `%XX`.
pub fn uriencode(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// A counter with one writing thread.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn incr(&self) {
        self.add(1)
    }

    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load + store is enough and avoids `lock xadd`.
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! worker_counters {
    ($($name:ident),* $(,)?) => {
        /// Per-worker command counters, named as memcached's `stats` names them.
        #[derive(Default, Debug)]
        pub struct WorkerStats {
            $(pub $name: Counter,)*
            /// Service-time histograms per command kind (`stats latency`).
            pub latency: crate::latency::WorkerLatency,
            /// Each counter's value at the last `stats reset`. The worker
            /// stays the counters' only writer; a reset only moves this
            /// baseline, which reports subtract.
            baseline: Baseline,
        }

        #[derive(Default, Debug)]
        struct Baseline {
            $($name: AtomicU64,)*
        }

        impl WorkerStats {
            /// (name, sum over workers since the last reset) in a fixed order.
            pub fn sum(all: &[CachePadded<WorkerStats>]) -> Vec<(&'static str, u64)> {
                vec![$((
                    stringify!($name),
                    all.iter()
                        .map(|w| w.$name.get().wrapping_sub(w.baseline.$name.load(Ordering::Relaxed)))
                        .fold(0u64, |a, b| a.wrapping_add(b)),
                ),)*]
            }

            /// `stats reset`: from now on, report counts from zero.
            pub fn reset(&self) {
                $(self.baseline.$name.store(self.$name.get(), Ordering::Relaxed);)*
            }
        }
    };
}

worker_counters!(
    cmd_get,
    cmd_set,
    cmd_flush,
    cmd_touch,
    cmd_meta,
    get_hits,
    get_misses,
    get_expired,
    get_flushed,
    delete_misses,
    delete_hits,
    incr_misses,
    incr_hits,
    decr_misses,
    decr_hits,
    cas_misses,
    cas_hits,
    cas_badval,
    touch_hits,
    touch_misses,
    store_too_large,
    store_no_memory,
    auth_cmds,
    auth_errors,
    bytes_read,
    bytes_written,
    readonly_refused,
    // memcached's: a connection gave way to the others after its share of
    // one readiness event (src/server/conn.rs, EVENT_QUANTUM).
    conn_yields,
    protocol_errors,
    // RDMA client access (src/server/rdma/): datagrams and RC messages taken
    // in, replies sent, malformed or unanswerable ones dropped, and retried
    // writes answered from the per-client reply cache instead of re-applied;
    // clients forgotten to stay within the per-worker client-state budget;
    // reply datagrams that waited for a send slot.
    rdma_requests,
    rdma_replies,
    rdma_drops,
    rdma_retries,
    rdma_peer_evictions,
    rdma_send_queued,
    // Admin commands (`replica ...`) refused on the data port.
    admin_refused,
    // Output bounds (src/server/conn.rs): times a connection stopped taking
    // requests, or a multi-get stopped between hits, because the connection
    // held its cap of reply bytes, or because all connections together held
    // the output budget; times a worker stopped accepting for a moment
    // because accept ran out of file descriptors (memcached's name).
    output_cap_waits,
    output_budget_waits,
    listen_disabled_num,
);

/// Look up one summed counter by name (tests, `stats` assembly).
pub fn counter(all: &[CachePadded<WorkerStats>], name: &str) -> u64 {
    WorkerStats::sum(all).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v).unwrap_or(0)
}

/// One `stats` line: name and value as memcached prints them.
pub type StatLine = (String, String);

/// The lines of `stats [group]` (text `stats`, binary `stat`), or `None` for
/// a group we do not know (the protocol then answers as memcached does).
pub fn report(group: &str, rt: &Runtime, store: &Store) -> Option<Vec<StatLine>> {
    match group {
        "" => Some(general(rt, store)),
        "settings" => Some(settings(rt)),
        "items" => Some(items(rt, store)),
        "slabs" => Some(slabs(rt, store)),
        "sizes" => Some(sizes(rt, store)),
        "replication" => rt.replication.get().map(|r| r.stats()),
        "latency" => Some(crate::latency::report(&rt.workers)),
        // memcached without external storage configured: no lines.
        "extstore" => Some(Vec::new()),
        "conns" => Some(rt.conn_table.report()),
        _ => None,
    }
}

/// `stats sizes`: memcached's histogram of item sizes in 32-byte buckets
/// (`STAT <bucket top> <items>`), computed from the index's live items
/// (memcached keeps it as items come and go; the same counts when enabled
/// before the items were stored, as with `-o track_sizes`). Disabled until
/// `stats sizes_enable`, as in memcached.
fn sizes(rt: &Runtime, store: &Store) -> Vec<StatLine> {
    if !rt.sizes_enabled.load(Ordering::Relaxed) {
        return vec![("sizes_status".into(), "disabled".into())];
    }
    let mut hist = std::collections::BTreeMap::<usize, u64>::new();
    store.for_each_item(|key, m| {
        *hist.entry(crate::store::memcached_item_size(key.len(), m).div_ceil(32) * 32).or_default() += 1;
    });
    hist.into_iter().map(|(b, n)| (b.to_string(), n.to_string())).collect()
}

/// `stats reset`: the per-worker command counters start again from zero.
/// (Store figures such as total_items and evictions describe the log and
/// are not reset.)
pub fn reset(rt: &Runtime) {
    for w in rt.workers.iter() {
        w.reset();
        w.latency.reset();
    }
}

/// A log has one "slab class": every record, whatever its size, lives in
/// the same circular log. Class 1 stands for it.
const LOG_CLASS: &str = "1";

/// Seconds since the oldest record still in the log was written (memcached's
/// age of the LRU tail). Best effort: the cleaner may be moving the tail.
fn oldest_age(store: &Store) -> u64 {
    let now = store.clock.now() as u64;
    match store.oldest_record_time() {
        Some(t) if (t as u64) <= now => now - t as u64,
        _ => 0,
    }
}

/// `stats items`: memcached 1.6's per-class item figures, in its order, for
/// the log's one class. Always 0 here, and why: the hot/warm/temp segments
/// and their moves, hits and ages (the log is one FIFO: every item counts
/// as cold); `tailrepairs`
/// and `lrutail_reflocked` (no reference counts: a reader copies the value
/// under the index lock); `evicted_active` (no LRU bumps); the crawler's
/// figures (no crawler: expired records are reclaimed by the writer's
/// cleaner, or unlinked by the reader that finds them). `direct_reclaims`
/// is every eviction: the writer evicts inline, as memcached's direct
/// reclaim does. `outofmemory` counts item writes `-M` refused. `log_records` is ours (records appended).
fn items(rt: &Runtime, store: &Store) -> Vec<StatLine> {
    let snap = store.snapshot();
    if snap.curr_items == 0 {
        // memcached lists only classes that hold items.
        return Vec::new();
    }
    let hits = WorkerStats::sum(&rt.workers).iter().find(|(n, _)| *n == "get_hits").map_or(0, |(_, v)| *v);
    let fields: [(&str, u64); 29] = [
        ("number", snap.curr_items),
        ("number_hot", 0),
        ("number_warm", 0),
        ("number_cold", snap.curr_items),
        ("age_hot", 0),
        ("age_warm", 0),
        ("age", oldest_age(store)),
        ("mem_requested", snap.bytes),
        ("evicted", snap.evictions),
        ("evicted_nonzero", snap.evicted_nonzero),
        ("evicted_time", snap.evicted_time),
        ("outofmemory", snap.outofmemory),
        ("tailrepairs", 0),
        ("reclaimed", snap.reclaimed),
        ("expired_unfetched", snap.expired_unfetched),
        ("evicted_unfetched", snap.evicted_unfetched),
        ("evicted_active", 0),
        ("crawler_reclaimed", 0),
        ("crawler_items_checked", 0),
        ("lrutail_reflocked", 0),
        ("moves_to_cold", 0),
        ("moves_to_warm", 0),
        ("moves_within_lru", 0),
        ("direct_reclaims", snap.evictions),
        ("hits_to_hot", 0),
        ("hits_to_warm", 0),
        ("hits_to_cold", hits),
        ("hits_to_temp", 0),
        ("log_records", snap.records_appended),
    ];
    fields.iter().map(|(k, v)| (format!("items:{LOG_CLASS}:{k}"), v.to_string())).collect()
}

/// `stats slabs`: a log has no slabs. Its one class reports memcached's
/// fields in memcached's order, a "chunk" being the largest item (-I): the
/// pages are the log's 2 MiB pages, `free_chunks` how many more of the
/// largest items the free space holds (so memcached-tool's "Full?" says
/// whether one more would evict), `used_chunks` the items; then the
/// per-class command counters, the log's own figures, memcached's totals.
fn slabs(rt: &Runtime, store: &Store) -> Vec<StatLine> {
    let snap = store.snapshot();
    let sums = WorkerStats::sum(&rt.workers);
    let c = |name: &str| sums.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or(0);
    let used = snap.log_head - snap.log_tail;
    let free = snap.log_capacity.saturating_sub(used);
    let page = 2u64 << 20;
    let chunk = snap.max_item_size.max(1);
    let free_chunks = free / chunk;
    let fields: [(&str, u64); 22] = [
        ("chunk_size", chunk),
        ("chunks_per_page", (page / chunk).max(1)),
        ("total_pages", snap.log_capacity.div_ceil(page)),
        ("total_chunks", snap.curr_items + free_chunks),
        ("used_chunks", snap.curr_items),
        ("free_chunks", free_chunks),
        ("free_chunks_end", 0),
        ("get_hits", c("get_hits")),
        ("cmd_set", c("cmd_set")),
        ("delete_hits", c("delete_hits")),
        ("incr_hits", c("incr_hits")),
        ("decr_hits", c("decr_hits")),
        ("cas_hits", c("cas_hits")),
        ("cas_badval", c("cas_badval")),
        ("touch_hits", c("touch_hits")),
        ("log_capacity", snap.log_capacity),
        ("log_used", used),
        ("log_free", free),
        ("live_bytes", snap.bytes),
        ("log_head", snap.log_head),
        ("log_tail", snap.log_tail),
        ("page_size", page),
    ];
    let mut v: Vec<StatLine> = fields.iter().map(|(k, v)| (format!("{LOG_CLASS}:{k}"), v.to_string())).collect();
    v.push(("active_slabs".into(), "1".into()));
    v.push(("total_malloced".into(), snap.log_capacity.to_string()));
    v
}

fn rusage_self() -> (String, String) {
    let tv = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let (us, sy) = (u.user_time(), u.system_time());
            (
                tv(libc::timeval { tv_sec: us.tv_sec(), tv_usec: us.tv_usec() }),
                tv(libc::timeval { tv_sec: sy.tv_sec(), tv_usec: sy.tv_usec() }),
            )
        }
        Err(_) => ("0.000000".into(), "0.000000".into()),
    }
}

fn general(rt: &Runtime, store: &Store) -> Vec<StatLine> {
    let snap = store.snapshot();
    let now = store.clock.now() as u64;
    let (ru_user, ru_sys) = rusage_self();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut v: Vec<StatLine> = vec![
        ("pid".into(), std::process::id().to_string()),
        ("uptime".into(), rt.started.elapsed().as_secs().to_string()),
        ("time".into(), now.to_string()),
        ("version".into(), crate::runtime::VERSION.into()),
        ("libevent".into(), format!("none ({} busy-poll)", rt.settings.io.as_str())),
        ("pointer_size".into(), (8 * std::mem::size_of::<usize>()).to_string()),
        ("rusage_user".into(), ru_user),
        ("rusage_system".into(), ru_sys),
        ("max_connections".into(), rt.settings.conn_limit.to_string()),
        ("curr_connections".into(), ld(&rt.connections.curr)),
        ("total_connections".into(), ld(&rt.connections.total)),
        ("rejected_connections".into(), ld(&rt.connections.rejected)),
        ("idle_kicks".into(), ld(&rt.connections.idle_kicks)),
        ("connection_structures".into(), ld(&rt.connections.curr)),
    ];
    for (name, value) in WorkerStats::sum(&rt.workers) {
        v.push((name.into(), value.to_string()));
    }
    for (name, a) in [
        ("rdma_rc_open", &rt.rdma.rc_open),
        ("rdma_rc_pinned_bytes", &rt.rdma.rc_pinned_bytes),
        ("rdma_rc_refused", &rt.rdma.rc_refused),
    ] {
        v.push((name.into(), ld(a)));
    }
    let bufs = &rt.buffers;
    let more: [(&str, String); 25] = [
        ("conn_output_bytes", ld(&bufs.output)),
        ("conn_input_bytes", ld(&bufs.input)),
        ("limit_maxbytes", snap.limit_maxbytes.to_string()),
        ("accepting_conns", "1".into()),
        ("threads", rt.settings.threads.to_string()),
        ("bytes", snap.bytes.to_string()),
        ("curr_items", snap.curr_items.to_string()),
        // memcached's name for its hash table's size: here the index's tables.
        ("hash_bytes", snap.index_bytes.to_string()),
        ("total_items", snap.total_items.to_string()),
        ("evictions", snap.evictions.to_string()),
        ("evicted_unfetched", snap.evicted_unfetched.to_string()),
        ("expired_unfetched", snap.expired_unfetched.to_string()),
        ("reclaimed", snap.reclaimed.to_string()),
        ("log_capacity", snap.log_capacity.to_string()),
        ("log_head", snap.log_head.to_string()),
        ("log_tail", snap.log_tail.to_string()),
        ("log_used", (snap.log_head - snap.log_tail).to_string()),
        ("log_records", snap.records_appended.to_string()),
        ("sync_timeouts", snap.sync_timeouts.to_string()),
        ("log_epoch", snap.epoch.to_string()),
        ("hugepages", snap.backing.as_str().into()),
        ("read_only", (store.is_read_only() as u8).to_string()),
        ("item_size_max", snap.max_item_size.to_string()),
        ("poll_mode", rt.settings.poll.as_str().into()),
        ("io_mode", rt.settings.io.as_str().into()),
    ];
    v.extend(more.into_iter().map(|(k, val)| (k.to_string(), val)));
    if let Some(r) = store.recovery() {
        // `-e`: what the start found in the memory file (src/store/recover.rs).
        let restart: [(&str, String); 9] = [
            ("restart_from_file", (r.from_file as u8).to_string()),
            ("restart_records", r.records.to_string()),
            ("restart_bytes", r.bytes.to_string()),
            ("restart_items", r.items.to_string()),
            ("restart_dropped_bytes", r.dropped_bytes.to_string()),
            ("restart_cut", r.cut.as_deref().unwrap_or("none").replace(' ', "_")),
            ("restart_scan_us", r.scan_us.to_string()),
            ("restart_scan_cpu_us", r.scan_cpu_us.to_string()),
            ("restart_us", r.total_us.to_string()),
        ];
        v.extend(restart.into_iter().map(|(k, val)| (k.to_string(), val)));
    }
    v
}

fn settings(rt: &Runtime) -> Vec<StatLine> {
    let s = &rt.settings;
    let hp = match s.hugepages {
        crate::memory::region::HugePages::Auto => "auto",
        crate::memory::region::HugePages::Require => "require",
        crate::memory::region::HugePages::Off => "off",
    };
    [
        ("maxbytes", s.memory_bytes.to_string()),
        ("maxconns", s.conn_limit.to_string()),
        ("tcpport", s.port.to_string()),
        ("udpport", "0".into()),
        // memcached's name for the listen address.
        ("inter", s.listen.clone()),
        ("verbosity", rt.verbosity().to_string()),
        ("evictions", if s.evictions { "on" } else { "off" }.into()),
        ("idle_timeout", s.idle_timeout.to_string()),
        ("shutdown_command", if s.enable_shutdown { "yes" } else { "no" }.into()),
        ("num_threads", s.threads.to_string()),
        ("detail_enabled", if rt.detail.enabled() { "yes" } else { "no" }.into()),
        ("cas_enabled", if s.cas_enabled { "yes" } else { "no" }.into()),
        ("binding_protocol", s.protocol.as_str().into()),
        ("auth_enabled_sasl", "no".into()),
        ("auth_enabled_ascii", if s.ascii_auth.is_some() { "yes" } else { "no" }.into()),
        // memcached's names for -s, -a, -b and -R.
        ("domain_socket", s.unix_socket.as_ref().map_or_else(|| "NULL".into(), |p| p.display().to_string())),
        ("umask", format!("{:o}", s.unix_mask)),
        ("tcp_backlog", s.backlog.to_string()),
        ("reqs_per_event", s.reqs_per_event.to_string()),
        ("item_size_max", s.max_item_size.to_string()),
        // Over the connection limit a client gets an error and is closed at once.
        ("maxconns_fast", "yes".into()),
        ("flush_enabled", if s.flush_enabled { "yes" } else { "no" }.into()),
        ("dump_enabled", "no".into()),
        ("hugepages", hp.into()),
        ("poll_mode", s.poll.as_str().into()),
        ("io_mode", s.io.as_str().into()),
        ("poll_idle_spins", s.idle_spins.to_string()),
        // As memcached prints an unset domain_socket.
        ("admin_socket", s.admin_socket.as_ref().map_or_else(|| "NULL".into(), |p| p.display().to_string())),
        ("admin_socket_mode", format!("{:04o}", s.admin_socket_mode)),
        ("memory_file", s.memory_file.as_ref().map_or_else(|| "NULL".into(), |p| p.display().to_string())),
        // The RDMA endpoint's budgets (src/server/rdma/mod.rs): RC buffer
        // memory for the whole server; client state and queued replies per worker.
        ("rdma_rc_memory", s.rdma.rc_memory.to_string()),
        ("rdma_rc_connection_bytes", s.rdma.rc_connection_bytes.to_string()),
        ("rdma_peers_per_worker", s.rdma.peers_per_worker.to_string()),
        ("rdma_peer_bytes_per_worker", s.rdma.peer_bytes_per_worker.to_string()),
        ("rdma_pending_sends_per_worker", s.rdma.pending_sends_per_worker.to_string()),
        ("output_budget", s.output_budget.to_string()),
        ("conn_output_cap", crate::runtime::CONN_OUTPUT_CAP.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_workers() {
        let a = CachePadded::new(WorkerStats::default());
        let b = CachePadded::new(WorkerStats::default());
        a.cmd_get.incr();
        b.cmd_get.add(2);
        b.get_hits.incr();
        let all = [a, b];
        assert_eq!(counter(&all, "cmd_get"), 3);
        assert_eq!(counter(&all, "get_hits"), 1);
        assert_eq!(counter(&all, "get_misses"), 0);
        for w in &all {
            w.reset();
        }
        assert_eq!(counter(&all, "cmd_get"), 0);
        all[0].cmd_get.incr();
        assert_eq!(counter(&all, "cmd_get"), 1, "counts resume from the reset");
    }
}
