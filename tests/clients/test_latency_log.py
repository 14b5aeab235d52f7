"""The --latency-log file, read by the HdrHistogram project's Python reader.

tests/operations.rs parses the log with the Rust crate that wrote it; this
reads it with an independent implementation (PyPI `hdrhistogram`, module
`hdrh`: HistogramLogReader, as the Java HistogramLogProcessor reads it), so
"standard tools read it" is checked, not assumed.
Run: python3 -m pytest tests/clients/test_latency_log.py
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from pymemcache.client.base import Client

from conftest import logmemcached

N = 1000
KINDS = {"get", "set", "delete", "incr_decr", "touch", "meta", "other"}


def test_interval_log_reads_with_hdrh(tmp_path: Path):
    log = tmp_path / "latency.hlog"
    with logmemcached("--latency-log", str(log), "--latency-log-interval", "1") as (port, proc):
        c = Client(("127.0.0.1", port), connect_timeout=5, timeout=5)
        for i in range(N):
            assert c.set(f"k{i}", b"value", noreply=False)
        for i in range(N):
            assert c.get(f"k{i}") == b"value"
        st = c.stats("latency")
        assert st[b"get_count"] == N and st[b"set_count"] == N
        q = [float(st[f"get_{p}_us".encode()]) for p in ("p50", "p90", "p99", "p99_9", "max")]
        assert 0 < q[0] and q == sorted(q) and q[-1] < 1e6, q
        c.close()
        time.sleep(1.2)  # at least one full interval, then the last one at exit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0

    # Reference histogram: 1 ns .. 1 h, 3 significant digits (what we record).
    reader = HistogramLogReader(str(log), HdrHistogram(1, 3_600_000_000_000, 3))
    totals = {}
    intervals = 0
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        intervals += 1
        tag = h.get_tag()
        assert tag in KINDS, tag
        totals[tag] = totals.get(tag, 0) + h.get_total_count()
        if h.get_total_count():
            assert 0 < h.get_value_at_percentile(50) <= h.get_max_value() < 1_000_000_000
    reader.close()
    assert reader.get_start_time_sec() > 1.6e9, "StartTime read from the header"
    assert intervals >= 2 * len(KINDS)
    assert totals["get"] == N and totals["set"] == N, totals
