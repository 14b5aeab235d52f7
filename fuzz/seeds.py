#!/usr/bin/env python3
"""Write the seed corpora under fuzz/seeds/<target>/ (then `cargo fuzz cmin`
moves the useful ones into fuzz/corpus/<target>/; see README.md).

Sources: the requests the integration and in-crate protocol tests send (every
string literal holding "\\r\\n" in them, per test function and one by one),
memcached's protocol.txt command forms written out, binary frames of every
opcode, and, for client_reply, the replies a real memcached gives to those
frames (`memcached` must be on PATH; skipped with a message if not).
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")
RAW = b"\xff"  # binary/meta: the rest of the input is raw bytes, not choices

TEST_FILES = [
    "tests/text_protocol.rs",
    "tests/meta_protocol.rs",
    "tests/server_basics.rs",
    "tests/operations.rs",
    "tests/differential.rs",
    "tests/replication_processes.rs",
    "src/protocol/text/tests.rs",
    "src/protocol/meta/readonly_tests.rs",
]

# protocol.txt's command forms, each written out once (section order).
PROTOCOL_TXT = [
    b"set foo 0 0 3\r\nbar\r\n",
    b"add foo 5 100 3 noreply\r\nbar\r\n",
    b"replace foo 0 0 3\r\nbaz\r\n",
    b"append foo 0 0 1\r\n!\r\n",
    b"prepend foo 0 0 1\r\n<\r\n",
    b"cas foo 0 0 3 1 noreply\r\nqux\r\n",
    b"get foo bar\r\n",
    b"gets foo\r\n",
    b"delete foo noreply\r\n",
    b"set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100 noreply\r\n",
    b"touch foo 10 noreply\r\n",
    b"gat 10 foo bar\r\ngats 0 foo\r\n",
    b"me foo\r\nme Zm9v b\r\n",
    b"mg foo v k c f t s h l O123 q u\r\n",
    b"mg foo N30 T60 R10 v c\r\nmg foo s v\r\n",
    b"ms foo 2 T90 F5 I C1 q O9 k b\r\nhi\r\n",
    b"ms Zm9v 3 b MA\r\nabc\r\nms foo 1 ME\r\nx\r\nms foo 1 MP\r\ny\r\nms foo 1 MR\r\nz\r\nms foo 1 MS\r\nw\r\n",
    b"md foo q C5 I T30 O1 k\r\nmd Zm9v b\r\n",
    b"ma foo N0 J13 D5 MI v t c\r\nma foo MD D1 q O7 k\r\nma foo M+ C3\r\n",
    b"mn\r\n",
    b"slabs reassign 1 2\r\nslabs automove 1\r\n",
    b"lru_crawler metadump all\r\nlru_crawler crawl 1,2\r\nlru_crawler sleep 100\r\n",
    b"watch fetchers mutations\r\n",
    b"stats\r\nstats settings\r\nstats items\r\nstats slabs\r\nstats sizes\r\nstats conns\r\nstats detail dump\r\nstats reset\r\n",
    b"flush_all\r\nflush_all 10 noreply\r\n",
    b"version\r\nverbosity 1\r\nverbosity 1 noreply\r\n",
    b"cache_memlimit 100\r\nshutdown\r\nquit\r\n",
]


def unescape(lit):
    """A Rust string literal body (no quotes) to bytes."""
    out = bytearray()
    i = 0
    while i < len(lit):
        c = lit[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = lit[i + 1]
        if n == "\n":  # line continuation: skip the newline and leading blanks
            i += 2
            while i < len(lit) and lit[i] in " \t":
                i += 1
            continue
        simple = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", '"': b'"', "0": b"\0", "'": b"'"}
        if n in simple:
            out += simple[n]
            i += 2
        elif n == "x":
            out.append(int(lit[i + 2 : i + 4], 16))
            i += 4
        elif n == "u":
            end = lit.index("}", i)
            out += chr(int(lit[i + 3 : end], 16)).encode()
            i = end + 1
        else:
            out += n.encode()
            i += 2
    return bytes(out)


LITERAL = re.compile(r'b?"((?:[^"\\]|\\.|\\\n)*)"', re.S)
FN = re.compile(r"\bfn\s+(\w+)")


def test_requests():
    """(name, bytes) for each test function's requests, and each literal."""
    seeds = []
    for rel in TEST_FILES:
        path = os.path.join(ROOT, rel)
        text = open(path).read()
        fns = [(m.start(), m.group(1)) for m in FN.finditer(text)]
        per_fn = {}
        for m in LITERAL.finditer(text):
            body = m.group(1)
            if "\\r\\n" not in body:
                continue
            # format! placeholders become a number (a CAS, a length).
            body = re.sub(r"\{[^{}]*\}", "1", body.replace("{{", "\0L").replace("}}", "\0R"))
            body = body.replace("\0L", "{").replace("\0R", "}")
            data = unescape(body)
            owner = max((f for f in fns if f[0] < m.start()), default=(0, "top"))[1]
            per_fn.setdefault(owner, []).append(data)
            seeds.append(data)
        for name, parts in per_fn.items():
            seeds.append(b"".join(parts))
    return seeds


def req(op, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, body, opaque, cas) + extras + key + value


def binary_requests():
    """Frames of every opcode, alone and in the sessions the tests run."""
    store = struct.pack(">II", 5, 0)
    arith = struct.pack(">QQI", 3, 10, 0)
    frames = [
        req(0x01, b"k", store, b"hello", 1),  # set
        req(0x00, b"k", opaque=2),  # get
        req(0x0C, b"k", opaque=3),  # getk
        req(0x09, b"k", opaque=4),  # getq
        req(0x0D, b"nope", opaque=5),  # getkq
        req(0x02, b"k", store, b"x", 6),  # add
        req(0x03, b"k", store, b"y", 7),  # replace
        req(0x0E, b"k", value=b">", opaque=8),  # append
        req(0x0F, b"k", value=b"<", opaque=9),  # prepend
        req(0x05, b"n", arith, opaque=10),  # incr (creates)
        req(0x06, b"n", arith, opaque=11),  # decr
        req(0x1C, b"k", struct.pack(">I", 100), opaque=12),  # touch
        req(0x1D, b"k", struct.pack(">I", 100), opaque=13),  # gat
        req(0x23, b"k", struct.pack(">I", 0), opaque=14),  # gatk
        req(0x04, b"k", opaque=15),  # delete
        req(0x01, b"k", store, b"v", 16, cas=12345),  # set with a stale cas
        req(0x11, b"q", store, b"quiet", 17),  # setq
        req(0x10, opaque=18),  # stat
        req(0x10, b"settings", opaque=19),  # stat settings
        req(0x0B, opaque=20),  # version
        req(0x1B, extras=struct.pack(">I", 1), opaque=21),  # verbosity
        req(0x08, extras=struct.pack(">I", 10), opaque=22),  # flush with a delay
        req(0x18, opaque=23),  # flushq
        req(0x20, opaque=24),  # sasl list mechs
        req(0x0A, opaque=25),  # noop
    ]
    sessions = [b"".join(frames), b"".join(frames) + req(0x07, opaque=26)]
    # A multi-get as the client packs it: quiet GETKs, then a NOOP.
    multi = req(0x01, b"a", store, b"1") + b"".join(req(0x0D, k, opaque=99) for k in [b"a", b"b", b"k"]) + req(0x0A, opaque=99)
    bad = [
        req(0x00, b"k")[:20],  # truncated header
        b"\x81" + req(0x00, b"k")[1:],  # response magic
        req(0x01, b"k", b"", b"v"),  # set without extras
        req(0x00, b"x" * 251),  # key too long
        struct.pack(">BBHBBHIIQ", 0x80, 0x00, 10, 4, 0, 0, 5, 0, 0),  # extras + key > body
        req(0x50, b"k", b"", b"junk"),  # unknown opcode with a body
        req(0x01, b"big", store, b"v" * (20 << 10)),  # over -I
    ]
    return frames, sessions, multi, bad


def memcached_replies(requests):
    """What memcached answers to each request stream, over TCP."""
    exe = shutil.which("memcached")
    if exe is None:
        print("memcached not found: no captured client_reply seeds", file=sys.stderr)
        return []
    port = 23000 + os.getpid() % 1000
    p = subprocess.Popen([exe, "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-u", "nobody"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        replies = []
        for r in requests:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(r + req(0x0A, opaque=0xEEEE))  # a NOOP marks the end
            s.settimeout(0.5)
            got = b""
            while not got.endswith(struct.pack(">BBHBBHIIQ", 0x81, 0x0A, 0, 0, 0, 0, 0, 0xEEEE, 0)):
                try:
                    chunk = s.recv(65536)
                except OSError:  # no answer: keep what came
                    break
                if not chunk:
                    break
                got += chunk
            s.close()
            replies.append(got)
        return replies
    finally:
        p.terminate()
        p.wait()


def response(op, status=0, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x81, op, len(key), len(extras), 0, status, body, opaque, cas) + extras + key + value


def write(target, seeds):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for i, s in enumerate(dict.fromkeys(seeds)):  # dedup, keep order
        with open(os.path.join(d, "seed-%04d" % i), "wb") as f:
            f.write(s)
    print("%-13s %4d seeds" % (target, len(dict.fromkeys(seeds))))


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    text = test_requests() + PROTOCOL_TXT
    frames, sessions, multi, bad = binary_requests()
    binary = frames + sessions + [multi] + bad
    write("text", text + sessions + [multi])
    write("meta", [RAW + t for t in text if re.match(rb"\s*m[gsdaen]\b", t)] + [RAW + t for t in PROTOCOL_TXT])
    write("binary", [RAW + b for b in binary])
    # Datagrams: what the client sends, and what it must not.
    write("ud_request", frames + [multi, b"".join(frames[:8])] + bad)
    captured = memcached_replies(frames + sessions + [multi] + bad[2:])
    ours = [
        response(0x0D, 0x00A0, key=b"big-key", opaque=7),  # NEEDS_RC
        response(0x01, 0x0083, value=b"read-only replica", opaque=3),
        response(0x0C, 0, b"k", struct.pack(">I", 5), b"hello", 9, 42) + response(0x0A, opaque=9),
        response(0x0D, 0, b"a", b"\0\0\0\0", b"1", 1) + response(0x0D, 0, b"b", b"\0\0\0\0", b"2", 2) + response(0x0A, opaque=2),
        response(0x00, 0, extras=b"\0\0\0\1", value=b"x", opaque=1)[:30],  # truncated
    ]
    write("client_reply", captured + ours)


if __name__ == "__main__":
    main()
