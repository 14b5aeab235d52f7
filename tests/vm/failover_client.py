"""Side B of tests/vm/failover-pair.sh: write through the primary on the other
VM, power-cut it, promote the most advanced replica, and check that no
acknowledged write was lost. Exit status 0 only if every check holds."""
import subprocess, sys, time

from memc import Conn, until, wait_port

PRIMARY = ("192.168.77.1", 11311)
REPLICAS = {"r1": (("127.0.0.1", 11312), "rdma://192.168.77.2:7701"),
            "r2": (("127.0.0.1", 11313), "rdma://192.168.77.2:7702")}
# Promote and follow are admin commands: each replica's --admin-socket.
ADMIN = {"r1": "/tmp/lmc-r1.sock", "r2": "/tmp/lmc-r2.sock"}


if sys.argv[1:2] == ["wait"]:
    wait_port(sys.argv[2], int(sys.argv[3]))
    sys.exit(0)

for a, _ in REPLICAS.values():
    wait_port(*a)
reps = {n: Conn(a) for n, (a, _) in REPLICAS.items()}
until("replicas connected", lambda: all(c.stats("replication").get("connected") == "1" for c in reps.values()))
p = Conn(PRIMARY)
acked = {}
for i in range(300):
    k, v = "acked:%d" % i, "value-%d" % i
    r = p.cmd("set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
    if r != "STORED":
        sys.exit("FAIL: primary answered %r to a write" % r)
    acked[k] = v
print("B: 300 writes acknowledged under --sync-replicas 1; power-cutting A", flush=True)
t0 = time.time()
subprocess.run(["/ctl/kill-vm", "A"], check=True)


def settled(c):
    last = None
    while True:
        now = c.stats("replication")["applied"]
        if now == last:
            return int(now)
        last = now
        time.sleep(0.5)


applied = {n: settled(c) for n, c in reps.items()}
new = max(applied, key=applied.get)
other = [n for n in reps if n != new][0]
print("B: applied positions %s; promoting %s" % (applied, new), flush=True)
r = Conn(ADMIN[new]).cmd("replica promote\r\n")
if r != "OK":
    sys.exit("FAIL: promote answered %r" % r)
print("B: promoted %.1f s after the power cut" % (time.time() - t0), flush=True)
# Failover time under this operator's script (settling polls every 0.5 s):
# the power cut to the new primary's first accepted write.
if reps[new].cmd("set failover:probe 0 0 1\r\nx\r\n") != "STORED":
    sys.exit("FAIL: the promoted replica refused its first write")
print("B: FAILOVER first write accepted %.3f s after the power cut" % (time.time() - t0), flush=True)
r = Conn(ADMIN[other]).cmd("replica follow %s\r\n" % REPLICAS[new][1])
if r != "OK":
    sys.exit("FAIL: follow answered %r" % r)
np, nf = reps[new], reps[other]
lost = [k for k, v in acked.items() if np.get(k) != v]
if lost:
    sys.exit("FAIL: %d acknowledged writes lost, e.g. %s" % (len(lost), lost[:5]))
for i in range(100):
    if np.cmd("set after:%d 0 0 1\r\nx\r\n" % i) != "STORED":
        sys.exit("FAIL: the new primary refused a write")
st = np.stats("replication")
if st["role"] != "primary" or st["epoch"] != "2":
    sys.exit("FAIL: new primary reports %r" % st)
until("the follower to converge", lambda: nf.stats("replication").get("applied") == np.stats("replication")["head"])
missing = [k for k, v in acked.items() if nf.get(k) != v] + [k for k in ("after:0", "after:99") if nf.get(k) != "x"]
if missing:
    sys.exit("FAIL: follower lacks %s" % missing[:5])
print("B: PASS: all 300 acknowledged writes on the new primary (epoch 2) and its follower; writes go on", flush=True)
