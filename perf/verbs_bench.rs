//! The perftest `ib_read_bw` / `ib_read_lat` measurements, done through
//! LogMemcached's verbs wrapper (`logmemcached::rdma`), for perf/verbs_bench.sh.
//!
//!   verbs_bench server [--port 18600] [--conns N]
//!   verbs_bench client --mode read-bw|read-lat --size BYTES --iters N [--server 10.0.2.15:18600]
//!
//! Like perftest: the server registers a buffer of --size bytes and does nothing
//! on the data path; the client READs it --iters times into its own buffer.
//! read-bw keeps up to --depth READs outstanding (perftest's tx_depth, 128) and
//! signals one in --cq-mod (perftest's default 100); time runs from the first
//! post to the last completion; BW is in MiB/s like perftest's "MB/sec".
//! read-lat posts one signaled READ at a time and busy-polls the CQ; it reports
//! the median ("typical"), average and 99th percentile in microseconds.
//! Output: one `RESULT key=value ...` line on stdout.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use argh::FromArgs;
use logmemcached::bail;
use logmemcached::error::{Context as _, Result};
use logmemcached::rdma::connect::handshake_rc;
use logmemcached::rdma::{cycles, Access, Context, QpCaps, RcOptions, Wc};

#[derive(FromArgs)]
/// RDMA READ bandwidth/latency through logmemcached::rdma.
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Server(ServerArgs),
    Client(ClientArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "server")]
/// serve registered buffers to READ from.
struct ServerArgs {
    /// TCP side-channel port (default 18600)
    #[argh(option, default = "18600")]
    port: u16,
    /// exit after this many client connections (default: serve forever)
    #[argh(option)]
    conns: Option<u32>,
    /// RDMA device (default: the first one)
    #[argh(option)]
    dev: Option<String>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "client")]
/// READ from a server and report.
struct ClientArgs {
    /// read-bw or read-lat
    #[argh(option)]
    mode: String,
    /// message size in bytes
    #[argh(option)]
    size: usize,
    /// number of READs
    #[argh(option, default = "1000")]
    iters: u64,
    /// outstanding READs for read-bw (default 128, like perftest's tx_depth)
    #[argh(option, default = "128")]
    depth: u64,
    /// signal one READ in this many for read-bw (default 100, like perftest)
    #[argh(option, default = "100")]
    cq_mod: u64,
    /// server address (default 10.0.2.15:18600)
    #[argh(option, default = "String::from(\"10.0.2.15:18600\")")]
    server: String,
    /// RDMA device (default: the first one)
    #[argh(option)]
    dev: Option<String>,
}

fn bench_opts() -> RcOptions {
    // As many outstanding READs as the device allows (perftest's default -o).
    RcOptions { max_rd_atomic: Some(u8::MAX), ..RcOptions::default() }
}

fn serve(a: ServerArgs) -> Result<()> {
    let ctx = Context::open(a.dev.as_deref())?;
    let pd = ctx.alloc_pd()?;
    let cq = ctx.create_cq(16, false)?;
    let l = TcpListener::bind(("0.0.0.0", a.port)).with_context(|| format!("listening on port {}", a.port))?;
    let mut served = 0;
    while a.conns.is_none_or(|n| served < n) {
        let (mut s, _) = l.accept().context("accepting a client")?;
        let mut b = [0u8; 8];
        s.read_exact(&mut b).context("reading the size")?;
        let size = u64::from_be_bytes(b) as usize;
        if size == 0 || size > 1 << 30 {
            bail!("client asked for {size} bytes");
        }
        let mr = pd.register_buffer(size, Access::LOCAL_WRITE | Access::REMOTE_READ)?;
        let p = pd.create_rc_qp(&cq, &cq, &QpCaps::default(), &bench_opts())?;
        let _qp = handshake_rc(&mut s, p, Some(mr.remote()), Duration::from_secs(60))?;
        // Nothing to do on the data path: wait for the client to hang up.
        s.set_read_timeout(None)?;
        let mut sink = [0u8; 1];
        match s.read(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => return Err(e.into()),
        }
        served += 1;
    }
    Ok(())
}

fn dial(addr: &str) -> Result<TcpStream> {
    let t0 = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if t0.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50)); // readiness of the server, not the data path
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
        }
    }
}

fn client(a: ClientArgs) -> Result<()> {
    let ctx = Context::open(a.dev.as_deref())?;
    let pd = ctx.alloc_pd()?;
    let depth = a.depth.clamp(1, 1024);
    let cq = ctx.create_cq(depth as u32 + 16, false)?;
    let local = pd.register_buffer(a.size, Access::LOCAL_WRITE)?;
    let mut s = dial(&a.server)?;
    s.write_all(&(a.size as u64).to_be_bytes())?;
    let caps = QpCaps { max_send_wr: depth as u32, ..QpCaps::default() };
    let p = pd.create_rc_qp(&cq, &cq, &caps, &bench_opts())?;
    let qp = handshake_rc(&mut s, p, None, Duration::from_secs(60))?;
    let remote = qp.remote().mem.slice(0, a.size)?;
    let src = local.all()?;
    let mut wcs = Wc::batch(16);
    match a.mode.as_str() {
        "read-bw" => {
            let iters = a.iters.max(1);
            let cq_mod = a.cq_mod.clamp(1, depth);
            let (mut posted, mut done) = (0u64, 0u64);
            let t0 = Instant::now();
            while done < iters {
                while posted < iters && posted - done < depth {
                    let sig = (posted + 1) % cq_mod == 0 || posted + 1 == iters;
                    qp.post_read(posted, src, remote, sig)?;
                    posted += 1;
                }
                let n = cq.poll(&mut wcs)?;
                for wc in &wcs[..n] {
                    wc.ok()?;
                    // RC completes in order: a signaled completion covers every
                    // earlier unsignaled READ.
                    done = done.max(wc.wr_id() + 1);
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let bytes = (iters * a.size as u64) as f64;
            println!(
                "RESULT tool=wrapper mode=read_bw size={} iters={iters} depth={depth} outs={} bw_mib_s={:.2} msg_rate_mpps={:.6} secs={:.3}",
                a.size,
                qp.max_rd_atomic(),
                bytes / secs / (1 << 20) as f64,
                iters as f64 / secs / 1e6,
                secs
            );
        }
        "read-lat" => {
            let iters = a.iters.max(1) as usize;
            // Timed with the cycle counter, as perftest times: in the VM the
            // clock is HPET and `Instant::now()` a system call.
            let mut ticks = Vec::with_capacity(iters);
            let cal = cycles::Calibration::start();
            for i in 0..iters {
                let t = cycles::now();
                qp.post_read(i as u64, src, remote, true)?;
                let n = loop {
                    let n = cq.poll(&mut wcs[..1])?;
                    if n > 0 {
                        break n;
                    }
                };
                ticks.push(cycles::now().wrapping_sub(t));
                debug_assert_eq!(n, 1);
                wcs[0].ok()?;
            }
            let per_us = cal.per_us();
            let mut lat: Vec<f64> = ticks.iter().map(|&t| t as f64 / per_us).collect();
            let avg = lat.iter().sum::<f64>() / lat.len() as f64;
            lat.sort_by(|x, y| x.total_cmp(y));
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "RESULT tool=wrapper mode=read_lat size={} iters={iters} t_min_us={:.2} t_typical_us={:.2} t_avg_us={:.2} t_p99_us={:.2}",
                a.size,
                lat[0],
                pct(0.5),
                avg,
                pct(0.99)
            );
        }
        m => bail!("--mode {m}: want read-bw or read-lat"),
    }
    Ok(())
}

fn main() {
    logmemcached::logging::init();
    let args: Args = argh::from_env();
    let r = match args.cmd {
        Cmd::Server(a) => serve(a),
        Cmd::Client(a) => client(a),
    };
    if let Err(e) = r {
        eprintln!("verbs_bench: {e}");
        std::process::exit(1);
    }
}
