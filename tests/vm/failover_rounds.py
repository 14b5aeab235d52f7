"""Repeated kill -9 failovers across the two VMs of tests/vm/failover-pair.sh
(issue 15: the failover time's p50/p99 over verbs, not one sample per boot).

  failover_rounds.py agent BIN
      side A: serves the control channel on 192.168.77.1:7799, one client.
      "start I" starts round I's primary (-t 1 -m 16, --sync-replicas 1,
      offering its log over rdma://192.168.77.1:7800+I, data port 11400+I)
      and answers "up PID" once it listens; "kill" sends it SIGKILL, reaps it
      and answers "killed"; "final" answers "ok" and exits 0 (side A then
      starts the power-cut round's primary).
  failover_rounds.py rounds BIN N PROMOTE_AFTER_MS,... OUT [STANDBY_BIN,...]
      side B: N rounds, taking the (standby binary, --promote-after)
      combinations in turn (default binary BIN), so that builds and timeouts
      are measured side by side in one boot. Each: the round's primary on A,
      one standby replica here (--replica-of it, --promote-after), 100
      writes acknowledged under
      --sync-replicas 1 (so each is on the standby), a connection to the
      standby that it still refuses writes on, then "kill" to A and a set
      retried on that connection every 2 ms until STORED. Checks: at least
      one set refused after the kill was sent (no promotion before it), the
      standby is primary at a newer epoch and serves every acknowledged
      write and the probe. One line per round on stdout and in OUT (tab
      separated: round, failover ms, control round trip ms, sets refused,
      drain ms, drain result, the standby's binary, --promote-after ms).

The figure is on B's clock alone: from just before B sends "kill" to the
STORED reply of the first accepted set. It includes the control message's
trip to A (at most the control round trip, the third column, which also
covers the kill and the reaping), the standby's --promote-after wait (counted
from the last heartbeat change it saw), its attempt to drain the dead
primary (a dial the dead port refuses), the promotion, and up to one probe
interval (2 ms) plus one probe's round trip on B's loopback.
Exit status 0 only if every round's checks hold."""
import signal, socket, subprocess, sys, time

from memc import Conn, until, wait_port

CTL = ("192.168.77.1", 7799)
TOKEN = "/tmp/lmc-token"
WORK = "target/vm-pair"
WRITES = 100
PROBE_EVERY = 0.002
READ_ONLY = "SERVER_ERROR read-only replica"


def primary_port(i):
    return 11400 + i


def repl_url(i):
    return "rdma://192.168.77.1:%d" % (7800 + i)


def spawn(args, log):
    with open(log, "wb") as f:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)


def agent(bin_):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(CTL)
    l.listen(1)
    s, _ = l.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rwb", buffering=0)
    p = None
    while True:
        req = f.readline().decode().split()
        if not req:
            sys.exit("FAIL: A: the control channel closed before 'final'")
        if req[0] == "start" and len(req) == 2 and req[1].isdigit() and int(req[1]) < 100:
            i = int(req[1])
            if p is not None:
                sys.exit("FAIL: A: 'start' while round %d's primary still runs" % i)
            p = spawn([bin_, "serve", "-l", CTL[0], "-p", str(primary_port(i)), "-t", "1", "-m", "16",
                       "--hugepages", "off", "--auth-token-file", TOKEN, "--replication-listen", repl_url(i),
                       "--sync-replicas", "1", "--sync-timeout", "5000"], "%s/primary-%d.log" % (WORK, i))
            wait_port(CTL[0], primary_port(i))
            if p.poll() is not None:
                sys.exit("FAIL: A: round %d's primary exited with %s" % (i, p.returncode))
            f.write(b"up %d\n" % p.pid)
        elif req == ["kill"] and p is not None:
            p.send_signal(signal.SIGKILL)
            rc = p.wait()
            p = None
            f.write(b"killed %d\n" % rc)
        elif req == ["final"] and p is None:
            f.write(b"ok\n")
            return
        else:
            sys.exit("FAIL: A: unexpected control request %r" % req)


def one_round(bin_, ctl, i, promote_after):
    ctl.write(b"start %d\n" % i)
    up = ctl.readline().decode().split()
    if up[:1] != ["up"]:
        sys.exit("FAIL: round %d: A answered %r to start" % (i, up))
    sport = 11500 + i
    standby = spawn([bin_, "serve", "-l", "127.0.0.1", "-p", str(sport), "-t", "1", "-m", "16", "--hugepages", "off",
                     "--replica-of", repl_url(i), "--auth-token-file", TOKEN, "--promote-after", str(promote_after)],
                    "%s/standby-%d.log" % (WORK, i))
    try:
        wait_port("127.0.0.1", sport)
        rc = Conn(("127.0.0.1", sport))
        until("round %d's standby to connect" % i, lambda: rc.stats("replication").get("connected") == "1")
        p = Conn(("192.168.77.1", primary_port(i)))
        acked = {}
        for j in range(WRITES):
            k, v = "r%d:k%d" % (i, j), "round-%d-value-%d" % (i, j)
            r = p.cmd("set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
            if r != "STORED":
                sys.exit("FAIL: round %d: the primary answered %r to a write" % (i, r))
            acked[k] = v
        p.close()
        probe = "set r%d:probe 0 0 5\r\nafter\r\n" % i
        r = rc.cmd(probe)
        if r != READ_ONLY:
            sys.exit("FAIL: round %d: the standby answered %r to a write before the kill" % (i, r))
        epoch0 = int(rc.stats("replication")["epoch"])

        t0 = time.monotonic()
        ctl.write(b"kill\n")
        killed = ctl.readline().decode().split()
        t_ack = time.monotonic()
        if killed[:1] != ["killed"]:
            sys.exit("FAIL: round %d: A answered %r to kill" % (i, killed))
        refused = 0
        while True:
            r = rc.cmd(probe)
            if r == "STORED":
                t1 = time.monotonic()
                break
            if r != READ_ONLY:
                sys.exit("FAIL: round %d: the standby answered %r to a write after the kill" % (i, r))
            refused += 1
            if time.monotonic() - t0 > 60 + promote_after / 1000:
                sys.exit("FAIL: round %d: no write accepted within 60 s of --promote-after" % i)
            time.sleep(PROBE_EVERY)
        if refused == 0:
            sys.exit("FAIL: round %d: not one write refused after the kill: promoted before it?" % i)
        st = rc.stats("replication")
        if st.get("role") != "primary" or int(st.get("epoch", "0")) <= epoch0:
            sys.exit("FAIL: round %d: accepted a write but reports %r (epoch before %d)" % (i, st, epoch0))
        lost = [k for k, v in acked.items() if rc.get(k) != v]
        if lost:
            sys.exit("FAIL: round %d: %d acknowledged writes lost, e.g. %s" % (i, len(lost), lost[:5]))
        if rc.get("r%d:probe" % i) != "after":
            sys.exit("FAIL: round %d: the accepted write is not served" % i)
        # The promote_drain_* fields appear once the promotion is marked
        # done, a moment after the store takes writes: wait for them.
        until("round %d's promote_drain_us" % i, lambda: "promote_drain_us" in rc.stats("replication"), 10)
        st = rc.stats("replication")
        drain_ms = int(st["promote_drain_us"]) / 1000
        rc.close()
        return (t1 - t0) * 1000, (t_ack - t0) * 1000, refused, drain_ms, st.get("promote_drain_result", "")
    finally:
        standby.kill()
        standby.wait()


def rounds(standby_bins, n, promote_afters, out):
    combos = [(b, pa) for pa in promote_afters for b in standby_bins]
    # The agent takes one connection: this one (no separate port probe).
    deadline = time.time() + 60
    while True:
        try:
            s = socket.create_connection(CTL, timeout=120)
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("FAIL: no control agent at %s:%d" % CTL)
            time.sleep(0.1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctl = s.makefile("rwb", buffering=0)
    with open(out, "w") as o:
        for i in range(n):
            bin_, pa = combos[i % len(combos)]
            row = one_round(bin_, ctl, i, pa)
            line = "%d\t%.1f\t%.2f\t%d\t%.1f\t%s\t%s\t%d" % ((i,) + row + (bin_, pa))
            print("B: ROUND " + line.replace("\t", " | "), flush=True)
            o.write(line + "\n")
            o.flush()
    ctl.write(b"final\n")
    if ctl.readline() != b"ok\n":
        sys.exit("FAIL: A did not acknowledge 'final'")
    print("B: PASS: %d kill -9 rounds, every acknowledged write on the promoted standby" % n, flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:1] == ["agent"] and len(a) == 2:
        agent(a[1])
    elif a[:1] == ["rounds"] and len(a) in (5, 6):
        rounds(a[5].split(",") if len(a) == 6 else [a[1]], int(a[2]), [int(x) for x in a[3].split(",")], a[4])
    else:
        sys.exit("usage: failover_rounds.py agent BIN | rounds BIN N PROMOTE_AFTER_MS,... OUT [STANDBY_BIN,...]")
