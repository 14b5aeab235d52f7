//! `logmemcached bench`: a closed-loop load generator for `tcp://` and
//! `rdma://` targets, through the crate's client (`crate::client`), so both
//! targets run exactly the same request code and framing (binary protocol).
//!
//! Each thread owns `--connections` client endpoints and issues one operation
//! at a time, taking its endpoints in turn: concurrency is the thread count;
//! more endpoints per thread spread a thread's requests over the server's
//! workers (each endpoint starts at a different server QP). Latency is
//! measured per operation around the client call, in nanoseconds, into an
//! HdrHistogram per operation type; `--histogram-log` writes the
//! per-interval (1 s, per thread, tagged `get`/`set`) histograms as an
//! HdrHistogram interval log (V2 deflate, max column in milliseconds), which
//! HistogramLogProcessor and friends read.

/// The fuzz targets' invariant checks (`logmemcached::fuzzing`).
#[doc(hidden)]
pub mod fuzzing;
mod zipf;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argh::FromArgs;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::auth::AuthToken;
use crate::bail;
use crate::client::{Client, ClientOptions};
use crate::error::{Context as _, Error, Result};

/// Drive a server with gets and sets and report throughput and latency
/// percentiles per operation type.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// target: tcp://HOST:PORT (binary protocol) or rdma://HOST:PORT (the
    /// server's --rdma-listen side channel)
    #[argh(positional)]
    pub target: String,

    /// worker threads, each one operation at a time (default 1)
    #[argh(option, short = 't', default = "1")]
    pub threads: usize,

    /// client endpoints (connections) per thread, used in turn (default 1)
    #[argh(option, short = 'c', default = "1")]
    pub connections: usize,

    /// fraction of operations that are gets, the rest sets (default 0.9)
    #[argh(option, default = "0.9")]
    pub get_ratio: f64,

    /// number of distinct keys (default 10000)
    #[argh(option, default = "10000")]
    pub keys: u64,

    /// key distribution: uniform or zipf (default uniform)
    #[argh(option, default = "String::from(\"uniform\")")]
    pub distribution: String,

    /// zipf exponent (default 0.99)
    #[argh(option, default = "0.99")]
    pub zipf_s: f64,

    /// value size in bytes (default 32)
    #[argh(option, default = "32")]
    pub value_size: usize,

    /// run this many seconds (default 10; ignored with --ops)
    #[argh(option, default = "10.0")]
    pub duration: f64,

    /// run this many operations in all instead of for a duration
    #[argh(option)]
    pub ops: Option<u64>,

    /// do not store every key before measuring (gets then miss)
    #[argh(switch)]
    pub no_prefill: bool,

    /// RDMA: per-attempt reply timeout in milliseconds before a retry (default 200)
    #[argh(option, default = "200")]
    pub timeout_ms: u64,

    /// RDMA: spin on the completion queue this many microseconds before
    /// blocking on its channel (default 200)
    #[argh(option, default = "200")]
    pub spin_us: u64,

    /// write an HdrHistogram interval log here
    #[argh(option)]
    pub histogram_log: Option<String>,

    /// seed of the key and operation choices (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,

    /// RDMA: the server's --auth-token-file (mode 0600), proved on its side
    /// channel
    #[argh(option)]
    pub auth_token_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Get,
    Set,
}

const OPS: [(Op, &str); 2] = [(Op::Get, "get"), (Op::Set, "set")];

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// xorshift64*: cheap, good enough for choosing keys and operations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Keys {
    Uniform(u64),
    Zipf(zipf::Zipf),
}

impl Keys {
    fn pick(&self, rng: &mut Rng) -> u64 {
        match self {
            Keys::Uniform(n) => rng.next() % n,
            Keys::Zipf(z) => z.sample(rng.unit()),
        }
    }
}

fn key_name(i: u64) -> String {
    format!("bench:{i:010}")
}

/// Per thread results.
struct ThreadResult {
    hists: [Histogram<u64>; 2],
    misses: u64,
    errors: u64,
    first_error: Option<String>,
    retries: u64,
}

/// Interval histograms: (thread, op index, start offset, duration, histogram).
type Intervals = Arc<Mutex<Vec<(usize, usize, Duration, Duration, Histogram<u64>)>>>;

pub fn run(a: BenchArgs) -> Result<()> {
    if a.threads == 0 || a.connections == 0 || a.keys == 0 {
        bail!("--threads, --connections and --keys must be at least 1");
    }
    if !(0.0..=1.0).contains(&a.get_ratio) {
        bail!("--get-ratio must be within 0..1");
    }
    let keys = Arc::new(match a.distribution.as_str() {
        "uniform" => Keys::Uniform(a.keys),
        "zipf" => Keys::Zipf(zipf::Zipf::new(a.keys, a.zipf_s)?),
        d => bail!("--distribution takes uniform or zipf, not {d:?}"),
    });
    let auth_token = a.auth_token_file.as_deref().map(AuthToken::load).transpose().context("--auth-token-file")?;
    let opts = ClientOptions {
        timeout: Duration::from_millis(a.timeout_ms),
        spin: Duration::from_micros(a.spin_us),
        auth_token,
        ..Default::default()
    };
    let value = vec![b'v'; a.value_size];

    // Connect every endpoint before the clock starts.
    let mut clients: Vec<Vec<Client>> = Vec::new();
    for _ in 0..a.threads {
        let v = (0..a.connections)
            .map(|_| Client::with_options(&[&a.target], opts.clone()))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("connecting to {}", a.target))?;
        clients.push(v);
    }
    if !a.no_prefill {
        let t0 = Instant::now();
        let c = &mut clients[0][0];
        for i in 0..a.keys {
            c.set(key_name(i).as_bytes(), &value, 0, 0).context("prefill")?;
        }
        eprintln!("prefilled {} keys of {} bytes in {:.1} s", a.keys, a.value_size, t0.elapsed().as_secs_f64());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let done_ops = Arc::new(AtomicU64::new(0));
    let budget = a.ops.map(|n| Arc::new(AtomicU64::new(n)));
    let intervals: Intervals = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let mut handles = Vec::new();
    for (t, mut conns) in clients.into_iter().enumerate() {
        let (stop, done_ops, budget, intervals, keys, value) =
            (stop.clone(), done_ops.clone(), budget.clone(), intervals.clone(), keys.clone(), value.clone());
        let (ratio, seed) = (a.get_ratio, a.seed);
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(t as u64 + 1) | 1);
                let mut res = ThreadResult {
                    hists: [new_hist(), new_hist()],
                    misses: 0,
                    errors: 0,
                    first_error: None,
                    retries: 0,
                };
                let mut interval = [new_hist(), new_hist()];
                let mut interval_start = start.elapsed();
                let mut next_conn = 0;
                let mut local_ops = 0u64;
                loop {
                    if let Some(b) = &budget {
                        // Claim one operation of the shared budget.
                        if b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                            break;
                        }
                    } else if local_ops.is_multiple_of(16) && stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n_conns = conns.len();
                    let c = &mut conns[next_conn];
                    next_conn = (next_conn + 1) % n_conns;
                    let key = key_name(keys.pick(&mut rng));
                    let op = if rng.unit() < ratio { Op::Get } else { Op::Set };
                    let t0 = Instant::now();
                    let r = match op {
                        Op::Get => c.get(key.as_bytes()).map(|v| v.is_some()),
                        Op::Set => c.set(key.as_bytes(), &value, 0, 0).map(|_| true),
                    };
                    let ns = t0.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                    let oi = op as usize;
                    match r {
                        Ok(hit) => {
                            let _ = res.hists[oi].record(ns.max(1));
                            let _ = interval[oi].record(ns.max(1));
                            if !hit {
                                res.misses += 1;
                            }
                        }
                        Err(e) => {
                            res.errors += 1;
                            res.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    local_ops += 1;
                    if local_ops.is_multiple_of(64) {
                        done_ops.fetch_add(64, Ordering::Relaxed);
                        let now = start.elapsed();
                        if now - interval_start >= Duration::from_secs(1) {
                            flush_interval(&intervals, t, &mut interval, interval_start, now);
                            interval_start = now;
                        }
                    }
                }
                done_ops.fetch_add(local_ops % 64, Ordering::Relaxed);
                flush_interval(&intervals, t, &mut interval, interval_start, start.elapsed());
                res.retries = conns.iter().map(|c| c.stats().retries).sum();
                res
            })
            .context("starting a bench thread")?;
        handles.push(h);
    }

    // Progress (on a terminal) and the duration limit; this thread only watches.
    let tty = std::io::stderr().is_terminal();
    let deadline = a.ops.is_none().then(|| start + Duration::from_secs_f64(a.duration.max(0.0)));
    let mut last = (Instant::now(), 0u64);
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200)); // reporting cadence, not the data path
        if deadline.is_some_and(|d| Instant::now() >= d) {
            stop.store(true, Ordering::Relaxed);
        }
        if tty && last.0.elapsed() >= Duration::from_secs(1) {
            let n = done_ops.load(Ordering::Relaxed);
            let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprint!("\r[{:5.1} s] {n} ops, {rate:.0} ops/s   ", start.elapsed().as_secs_f64());
            last = (Instant::now(), n);
        }
    }
    if tty {
        eprintln!();
    }
    let elapsed = start.elapsed();
    let mut totals = [new_hist(), new_hist()];
    let (mut misses, mut errors, mut retries, mut first_error) = (0, 0, 0, None);
    for h in handles {
        let r = h.join().map_err(|_| Error::new("a bench thread panicked"))?;
        for (total, h) in totals.iter_mut().zip(&r.hists) {
            total.add(h).map_err(|e| Error::new(format!("merging histograms: {e:?}")))?;
        }
        misses += r.misses;
        errors += r.errors;
        retries += r.retries;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    report(&a, &totals, elapsed, misses, errors, retries);
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
    if let Some(path) = &a.histogram_log {
        write_log(path, &intervals, start_wall, &a).with_context(|| format!("--histogram-log {path}"))?;
    }
    if errors > 0 {
        bail!("{errors} operations failed");
    }
    Ok(())
}

fn flush_interval(intervals: &Intervals, t: usize, h: &mut [Histogram<u64>; 2], from: Duration, to: Duration) {
    let mut g = intervals.lock().unwrap_or_else(|p| p.into_inner());
    for (i, hist) in h.iter_mut().enumerate() {
        if !hist.is_empty() {
            g.push((t, i, from, to.saturating_sub(from), hist.clone()));
            hist.reset();
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn report(a: &BenchArgs, h: &[Histogram<u64>; 2], elapsed: Duration, misses: u64, errors: u64, retries: u64) {
    let total: u64 = h.iter().map(|x| x.len()).sum();
    let secs = elapsed.as_secs_f64();
    println!(
        "target {}  threads {}  connections/thread {}  keys {} ({})  value {} B  get ratio {}",
        a.target, a.threads, a.connections, a.keys, a.distribution, a.value_size, a.get_ratio
    );
    println!(
        "{total} ops in {secs:.2} s: {:.0} ops/s; get misses {misses}; errors {errors}; client retries {retries}",
        total as f64 / secs
    );
    println!(
        "{:<4} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  (latency in us)",
        "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "max"
    );
    for (op, name) in OPS {
        let x = &h[op as usize];
        if x.is_empty() {
            continue;
        }
        // p50, p90, p99, p99.9, max in microseconds, for both lines below.
        let [p50, p90, p99, p999] = [0.5, 0.9, 0.99, 0.999].map(|q| us(x.value_at_quantile(q)));
        let max = us(x.max());
        println!(
            "{name:<4} {:>10} {:>10.0} {p50:>9.1} {p90:>9.1} {p99:>9.1} {p999:>9.1} {max:>9.1}",
            x.len(),
            x.len() as f64 / secs,
        );
        // One machine-readable line per operation for scripts (perf/).
        println!(
            "RESULT target={} op={name} count={} ops_s={:.0} p50_us={p50:.1} p90_us={p90:.1} p99_us={p99:.1} p999_us={p999:.1} max_us={max:.1} misses={} errors={errors} retries={retries}",
            a.target,
            x.len(),
            x.len() as f64 / secs,
            if op == Op::Get { misses } else { 0 },
        );
    }
}

fn write_log(path: &str, intervals: &Intervals, start: SystemTime, a: &BenchArgs) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "logmemcached bench {} (latency in ns; tags get/set; one histogram per thread and interval)",
            a.target
        ))
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1_000_000.0)
        .begin_log_with(&mut f, &mut ser)?;
    let mut v = intervals.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect::<Vec<_>>();
    v.sort_by_key(|x| (x.2, x.0, x.1));
    for (_, op, from, dur, h) in &v {
        w.write_histogram(h, *from, *dur, Tag::new(OPS[*op].1))
            .map_err(|e| Error::new(format!("writing a histogram: {e:?}")))?;
    }
    drop(w);
    std::io::Write::flush(&mut f)?;
    Ok(())
}
