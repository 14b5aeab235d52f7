//! Replication lag probe: write a fresh value on the primary, then poll a
//! replica until it serves that value; the time from the primary's STORED to
//! the replica's first matching reply goes into an HdrHistogram.
//!
//!   cargo run --release --example replication_lag -- PRIMARY_PORT REPLICA_PORT [SAMPLES]
//!
//! Includes one TCP get round trip of polling granularity; prints
//! p50/p99/p99.9/max in microseconds as `lag_us p50=.. p99=.. p999=.. max=.. n=..`,
//! and the p50 of a plain get round trip to the replica (the polling granularity).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let r = BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("read");
    l
}

fn main() {
    logmemcached::logging::init();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: replication_lag PRIMARY_PORT REPLICA_PORT [SAMPLES]");
        std::process::exit(2);
    }
    let pport: u16 = args[1].parse().expect("primary port");
    let rport: u16 = args[2].parse().expect("replica port");
    let samples: u64 = args.get(3).map(|s| s.parse().expect("samples")).unwrap_or(2000);
    let (mut pw, mut pr) = connect(pport);
    let (mut rw, mut rr) = connect(rport);
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    // The polling granularity: a plain get round trip to the replica.
    let mut rtt = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for _ in 0..200 {
        let t0 = Instant::now();
        rw.write_all(b"get lagprobe-rtt\r\n").expect("write");
        assert_eq!(line(&mut rr), "END\r\n");
        rtt.record(t0.elapsed().as_micros().max(1) as u64).expect("record");
    }
    let mut timeouts = 0;
    for i in 0..samples {
        let v = format!("probe-{i}");
        write!(pw, "set lagprobe 0 0 {}\r\n{v}\r\n", v.len()).expect("write");
        assert_eq!(line(&mut pr), "STORED\r\n");
        let t0 = Instant::now();
        loop {
            rw.write_all(b"get lagprobe\r\n").expect("write");
            let l = line(&mut rr);
            let mut seen = false;
            if l.starts_with("VALUE") {
                let val = line(&mut rr);
                seen = val.trim_end() == v;
                assert_eq!(line(&mut rr), "END\r\n");
            }
            if seen {
                h.record(t0.elapsed().as_micros().max(1) as u64).expect("record");
                break;
            }
            if t0.elapsed().as_secs() >= 5 {
                timeouts += 1;
                break;
            }
        }
    }
    println!(
        "lag_us p50={} p99={} p999={} max={} n={} timeouts={} get_rtt_p50={}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len(),
        timeouts,
        rtt.value_at_quantile(0.5)
    );
}
