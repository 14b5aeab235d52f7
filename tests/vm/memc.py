"""The memcached text-protocol client and the waiting helpers shared by the
two-VM failover scripts (tests/vm/failover_client.py, failover_rounds.py)."""
import socket, sys, time


class Conn:
    def __init__(self, addr, timeout=30):
        if isinstance(addr, str):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(addr)
        else:
            self.s = socket.create_connection(addr, timeout=timeout)
            self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l.decode()

    def cmd(self, req):
        self.s.sendall(req.encode())
        return self.line()

    def stats(self, group):
        self.s.sendall(("stats %s\r\n" % group).encode())
        out = {}
        while True:
            l = self.line()
            if l == "END":
                return out
            parts = l.split(" ", 2)
            out[parts[1]] = parts[2] if len(parts) > 2 else ""

    def get(self, key):
        l = self.cmd("get %s\r\n" % key)
        if l == "END":
            return None
        n = int(l.split()[3])
        while len(self.buf) < n + 2:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d
        v, self.buf = self.buf[:n], self.buf[n + 2:]
        if self.line() != "END":
            raise ConnectionError("get %s: no END" % key)
        return v.decode()

    def close(self):
        self.s.close()


def until(what, pred, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    sys.exit("FAIL: timed out waiting for " + what)


def wait_port(host, port, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("FAIL: no server at %s:%d" % (host, port))
