//! Counters and the `stats` reports.
//!
//! Each worker thread owns a `WorkerStats` and is its only writer, so an
//! increment is a plain load and store (no locked instruction on the hot
//! path); `stats` sums every worker's copy with relaxed loads.

use std::sync::atomic::{AtomicU64, Ordering};

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
        }

        impl WorkerStats {
            /// (name, sum over workers) in a fixed order.
            pub fn sum(all: &[std::sync::Arc<WorkerStats>]) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), all.iter().map(|w| w.$name.get()).sum()),)*]
            }
        }
    };
}

worker_counters!(
    cmd_get, cmd_set, cmd_flush, cmd_touch, cmd_meta,
    get_hits, get_misses, get_expired, get_flushed,
    delete_misses, delete_hits,
    incr_misses, incr_hits, decr_misses, decr_hits,
    cas_misses, cas_hits, cas_badval,
    touch_hits, touch_misses,
    store_too_large, store_no_memory,
    auth_cmds, auth_errors,
    bytes_read, bytes_written,
    readonly_refused,
    conn_yields,
    protocol_errors,
);

/// Look up one summed counter by name (tests, `stats` assembly).
pub fn counter(all: &[std::sync::Arc<WorkerStats>], name: &str) -> u64 {
    WorkerStats::sum(all).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_across_workers() {
        let a = Arc::new(WorkerStats::default());
        let b = Arc::new(WorkerStats::default());
        a.cmd_get.incr();
        b.cmd_get.add(2);
        b.get_hits.incr();
        let all = [a, b];
        assert_eq!(counter(&all, "cmd_get"), 3);
        assert_eq!(counter(&all, "get_hits"), 1);
        assert_eq!(counter(&all, "get_misses"), 0);
    }
}

/// One `stats` line: name and value as memcached prints them.
pub type StatLine = (String, String);

/// The lines of `stats [group]` (text `stats`, binary `stat`), or `None` for
/// a group we do not know (the protocol then answers as memcached does).
pub fn report(group: &str, ctx: &crate::protocol::Ctx) -> Option<Vec<StatLine>> {
    match group {
        "" => Some(general(ctx)),
        "settings" => Some(settings(ctx)),
        "replication" => ctx.shared.replication.get().map(|r| r.stats()),
        _ => None,
    }
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

fn general(ctx: &crate::protocol::Ctx) -> Vec<StatLine> {
    let sh = ctx.shared;
    let snap = ctx.store.snapshot();
    let now = ctx.store.clock.now() as u64;
    let (ru_user, ru_sys) = rusage_self();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut v: Vec<StatLine> = vec![
        ("pid".into(), std::process::id().to_string()),
        ("uptime".into(), sh.started.elapsed().as_secs().to_string()),
        ("time".into(), now.to_string()),
        ("version".into(), crate::protocol::text::VERSION.into()),
        ("libevent".into(), "none (epoll busy-poll)".into()),
        ("pointer_size".into(), (8 * std::mem::size_of::<usize>()).to_string()),
        ("rusage_user".into(), ru_user),
        ("rusage_system".into(), ru_sys),
        ("max_connections".into(), sh.settings.conn_limit.to_string()),
        ("curr_connections".into(), ld(&sh.curr_connections)),
        ("total_connections".into(), ld(&sh.total_connections)),
        ("rejected_connections".into(), ld(&sh.rejected_connections)),
        ("connection_structures".into(), ld(&sh.curr_connections)),
    ];
    for (name, value) in WorkerStats::sum(&sh.workers) {
        v.push((name.into(), value.to_string()));
    }
    let more: [(&str, String); 20] = [
        ("limit_maxbytes", snap.limit_maxbytes.to_string()),
        ("accepting_conns", "1".into()),
        ("threads", sh.settings.threads.to_string()),
        ("bytes", snap.bytes.to_string()),
        ("curr_items", snap.curr_items.to_string()),
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
        ("log_epoch", snap.epoch.to_string()),
        ("hugepages", snap.backing.as_str().into()),
        ("read_only", (ctx.store.is_read_only() as u8).to_string()),
        ("item_size_max", snap.max_item_size.to_string()),
        ("poll_mode", sh.settings.poll.as_str().into()),
    ];
    v.extend(more.into_iter().map(|(k, val)| (k.to_string(), val)));
    v
}

fn settings(ctx: &crate::protocol::Ctx) -> Vec<StatLine> {
    let s = &ctx.shared.settings;
    let hp = match s.hugepages {
        crate::memory::region::HugePages::Auto => "auto",
        crate::memory::region::HugePages::Require => "require",
        crate::memory::region::HugePages::Off => "off",
    };
    [
        ("maxbytes", s.memory_bytes.to_string()),
        ("maxconns", s.conn_limit.to_string()),
        ("tcpport", s.port.to_string()),
        ("interface", s.listen.clone()),
        ("verbosity", ctx.shared.verbosity().to_string()),
        ("num_threads", s.threads.to_string()),
        ("item_size_max", s.max_item_size.to_string()),
        ("evictions", "on".into()),
        ("cas_enabled", "yes".into()),
        ("binding_protocol", "auto-negotiate".into()),
        ("hugepages", hp.into()),
        ("poll_mode", s.poll.as_str().into()),
        ("poll_idle_spins", s.idle_spins.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
