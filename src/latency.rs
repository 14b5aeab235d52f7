//! Service-time histograms per command kind, `stats latency`, and the
//! HdrHistogram interval log (`--latency-log`).
//!
//! A request's service time runs from the start of its parse to its reply
//! being in the connection's output buffer (network and queueing time are
//! not in it). Values are nanoseconds from the monotonic clock.
//!
//! Each worker records into its own histograms behind its own mutex: on the
//! hot path that lock is uncontended (only a `stats latency`, a `stats reset`
//! or the interval-log thread ever takes it from elsewhere, briefly). The
//! histograms auto-resize, so an idle kind costs a few hundred bytes, not the
//! full 1 ns..hours range.
//!
//! The kind is the command the protocol ran: its dispatchers report it with
//! each request they consume (the protocol step's `Consumed { len, kind }`),
//! so nothing here parses requests.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crossbeam_utils::CachePadded;

use crate::error::{Context, Result};
use crate::stats::{StatLine, WorkerStats};

/// Command kinds, in `stats latency` order; the names are the stat prefixes
/// and the interval log's tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Get = 0,
    Set,
    Delete,
    IncrDecr,
    Touch,
    Meta,
    Other,
}

pub const KINDS: [Kind; 7] = [Kind::Get, Kind::Set, Kind::Delete, Kind::IncrDecr, Kind::Touch, Kind::Meta, Kind::Other];
const N: usize = KINDS.len();

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Set => "set",
            Kind::Delete => "delete",
            Kind::IncrDecr => "incr_decr",
            Kind::Touch => "touch",
            Kind::Meta => "meta",
            Kind::Other => "other",
        }
    }
}

type Hists = [Histogram<u64>; N];

/// The largest service time recorded (longer ones count as this).
const MAX_NS: u64 = 3_600_000_000_000;

fn empty() -> Hists {
    // 3 significant digits, auto-resizing: cannot fail.
    std::array::from_fn(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the statistics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's histograms.
pub struct WorkerLatency {
    /// Since start; written only by the worker.
    live: Mutex<Hists>,
    /// `live` as it was at the last `stats reset` (reports subtract it).
    baseline: Mutex<Option<Hists>>,
}

impl Default for WorkerLatency {
    fn default() -> Self {
        WorkerLatency { live: Mutex::new(empty()), baseline: Mutex::new(None) }
    }
}

impl std::fmt::Debug for WorkerLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("WorkerLatency")
    }
}

impl WorkerLatency {
    #[inline]
    pub fn record(&self, kind: Kind, elapsed: Duration) {
        // 1 ns..1 h: a zero would vanish below the lowest bucket, and the
        // cap bounds how far an absurd value (a suspended process) grows it.
        let ns = (elapsed.as_nanos().min(MAX_NS as u128) as u64).max(1);
        // `record`, not `saturating_record`: only `record` auto-resizes.
        let _ = lock(&self.live)[kind as usize].record(ns);
    }

    /// `stats reset`: reports count from now.
    pub fn reset(&self) {
        let mut base = lock(&self.baseline);
        *base = Some(lock(&self.live).clone());
    }

    fn add_live_to(&self, sum: &mut Hists) {
        let live = lock(&self.live);
        for (s, h) in sum.iter_mut().zip(live.iter()) {
            // Auto-resizing histograms accept any value another one holds.
            let _ = s.add(h);
        }
    }
}

/// Every worker's histograms summed, since the last `stats reset`.
pub fn since_reset(workers: &[CachePadded<WorkerStats>]) -> Vec<(Kind, Histogram<u64>)> {
    let mut sum = empty();
    for w in workers {
        // Baseline first, then live (as `reset` locks them): live only grows,
        // so the baseline read is never ahead of the live one.
        let base = lock(&w.latency.baseline);
        w.latency.add_live_to(&mut sum);
        if let Some(b) = base.as_ref() {
            for (s, h) in sum.iter_mut().zip(b.iter()) {
                let _ = s.subtract(h);
            }
        }
    }
    KINDS.iter().copied().zip(sum).collect()
}

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// `stats latency`: per kind, the count and p50/p90/p99/p99.9/max in
/// microseconds (nanosecond resolution, three significant digits).
pub fn report(workers: &[CachePadded<WorkerStats>]) -> Vec<StatLine> {
    let mut v = Vec::with_capacity(N * 6);
    for (kind, h) in since_reset(workers) {
        let name = kind.name();
        v.push((format!("{name}_count"), h.len().to_string()));
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)] {
            let val = if h.is_empty() { 0 } else { h.value_at_quantile(q) };
            v.push((format!("{name}_{label}_us"), us(val)));
        }
        v.push((format!("{name}_max_us"), us(if h.is_empty() { 0 } else { h.max() })));
    }
    v
}

/// The `--latency-log` writer: a thread that appends one interval histogram
/// per command kind every `interval`, and a last one when stopped.
pub struct LatencyLog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The interval log's column legend, as the Java HistogramLogWriter writes it.
const LEGEND: &str = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

impl LatencyLog {
    /// Create (truncate) `path` and start the thread, which writes the
    /// header at once and an interval every `interval`. Call after the
    /// shutdown signals are blocked: the thread inherits the signal mask.
    pub fn start(
        path: &std::path::Path,
        interval: Duration,
        workers: Arc<[CachePadded<WorkerStats>]>,
    ) -> Result<LatencyLog> {
        let file = std::fs::File::create(path).with_context(|| format!("creating latency log {}", path.display()))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let shown = path.display().to_string();
        let handle = std::thread::Builder::new()
            .name("latency-log".into())
            .spawn(move || writer_loop(file, interval, workers, &stop2, &shown))
            .context("starting the latency log thread")?;
        Ok(LatencyLog { stop, handle: Some(handle) })
    }

    /// Write the last (partial) interval and close the file.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for LatencyLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the interval-log writer writes into: a buffer we can also append to
/// (the legend line, which the crate's writer does not produce) and drain to
/// the file after each interval, while that writer holds it for the whole run.
#[derive(Clone, Default)]
struct Buf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    fn drain_to(&self, file: &mut std::fs::File) -> std::io::Result<()> {
        let mut v = self.0.borrow_mut();
        let r = file.write_all(&v);
        // Written or not, do not grow without bound (a full disk loses intervals).
        v.clear();
        r
    }
}

fn writer_loop(
    mut file: std::fs::File,
    interval: Duration,
    workers: Arc<[CachePadded<WorkerStats>]>,
    stop: &(Mutex<bool>, Condvar),
    path: &str,
) {
    let mut buf = Buf::default();
    let sink = buf.clone();
    let mut ser = V2DeflateSerializer::new();
    let base = SystemTime::now();
    let base_instant = Instant::now();
    let mut writer = match IntervalLogWriterBuilder::new()
        .add_comment(&format!("[Logged with logmemcached {}]", env!("CARGO_PKG_VERSION")))
        .add_comment("[Histogram log format version 1.3]")
        .add_comment("[Values are service times in nanoseconds; tags are command kinds]")
        .with_start_time(base)
        .with_base_time(base)
        // Interval_Max in milliseconds, as the Java writer's default ratio gives.
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut buf, &mut ser)
    {
        Ok(w) => w,
        Err(e) => {
            crate::log_warn!("latency log {path}: {e}");
            return;
        }
    };
    sink.0.borrow_mut().extend_from_slice(LEGEND.as_bytes());
    let mut failed = sink.drain_to(&mut file).is_err();
    let mut prev = empty();
    let mut start = base_instant;
    loop {
        // A timed wait that shutdown cuts short, never a sleep.
        let deadline = start + interval;
        let mut stopped = lock(&stop.0);
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            stopped = stop.1.wait_timeout(stopped, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        let last = *stopped;
        drop(stopped);

        let end = Instant::now();
        let mut now = empty();
        for w in workers.iter() {
            w.latency.add_live_to(&mut now);
        }
        let mut result = Ok(());
        for (i, kind) in KINDS.iter().enumerate() {
            // The interval's histogram: what was recorded since the last one.
            let mut h = now[i].clone();
            if let Err(e) = h.subtract(&prev[i]) {
                result = Err(format!("{e:?}"));
                break;
            }
            if let Err(e) = writer.write_histogram(&h, start - base_instant, end - start, Tag::new(kind.name())) {
                result = Err(e.to_string());
                break;
            }
        }
        let result = result.and_then(|()| sink.drain_to(&mut file).map_err(|e| e.to_string()));
        match result {
            Ok(()) => failed = false,
            Err(e) if !failed => {
                // Once per run of failures (a full disk), not once per interval.
                crate::log_warn!("latency log {path}: {e}");
                failed = true;
            }
            Err(_) => {}
        }
        prev = now;
        start = end;
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_since_reset() {
        let all = [CachePadded::new(WorkerStats::default())];
        let w = &all[0];
        for i in 1..=100u64 {
            w.latency.record(Kind::Get, Duration::from_nanos(i * 1000));
        }
        w.latency.record(Kind::Set, Duration::from_micros(5));
        let r: std::collections::HashMap<_, _> = report(&all).into_iter().collect();
        assert_eq!(r["get_count"], "100");
        assert_eq!(r["set_count"], "1");
        assert_eq!(r["meta_count"], "0");
        assert_eq!(r["meta_p99_us"], "0.000");
        let p = |k: &str| r[k].parse::<f64>().unwrap();
        assert!((49.0..=51.0).contains(&p("get_p50_us")), "{}", r["get_p50_us"]);
        assert!(p("get_p50_us") <= p("get_p99_us") && p("get_p99_us") <= p("get_max_us"));
        assert!((99.9..=100.1).contains(&p("get_max_us")));
        w.latency.reset();
        w.latency.record(Kind::Get, Duration::from_micros(7));
        let r: std::collections::HashMap<_, _> = report(&all).into_iter().collect();
        assert_eq!(r["get_count"], "1");
        assert_eq!(r["set_count"], "0");
    }
}
