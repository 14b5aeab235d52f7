"""Shared by the Python client tests: start the real logmemcached binary
($LOGMEMCACHED_BIN, or target/debug/logmemcached, built if missing) on a
free 127.0.0.1 port and stop it by its pid."""
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def binary():
    env = os.environ.get("LOGMEMCACHED_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    path = Path(target) / "debug" / "logmemcached"
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def logmemcached(*extra):
    """Yield (port, process) of a running server; SIGTERM it afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [binary(), "serve", "-p", str(port), "-l", "127.0.0.1", "--hugepages", "off", "-t", "2", "-m", "16", *extra],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("logmemcached did not start")
                time.sleep(0.05)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server():
    with logmemcached() as (port, _):
        yield port
