"""pymemcache round trips against the real logmemcached binary.

The `server` fixture (conftest.py) starts the binary on a free 127.0.0.1
port and stops it by its pid.
Run: python3 -m pytest tests/clients/test_pymemcache.py
"""
import pytest
from pymemcache.client.base import Client

@pytest.fixture
def mc(server):
    c = Client(("127.0.0.1", server), connect_timeout=5, timeout=5)
    c.flush_all()
    yield c
    c.close()


def test_set_get(mc):
    assert mc.set("k", b"hello") is True
    assert mc.get("k") == b"hello"
    assert mc.get("missing") is None
    assert mc.set("bin", bytes(range(256)), noreply=False)
    assert mc.get("bin") == bytes(range(256))


def test_flags_and_noreply(mc):
    assert mc.set("f", b"v", noreply=True) is True
    assert mc.get("f") == b"v"
    mc.set("g", b"w", flags=12345, noreply=False)
    assert mc.get("g") == b"w"
    # pymemcache hands flags to its deserializer; read them back raw.
    seen = []
    raw = Client(mc.server, deserializer=lambda key, value, flags: seen.append(flags) or value)
    assert raw.get("g") == b"w"
    assert seen == [12345]
    raw.close()


def test_get_many(mc):
    for i in range(20):
        mc.set(f"m{i}", str(i).encode(), noreply=False)
    got = mc.get_many([f"m{i}" for i in range(25)])
    assert got == {f"m{i}": str(i).encode() for i in range(20)}
    assert mc.set_many({"a": b"1", "b": b"2"}, noreply=False) == []
    assert mc.get_multi(["a", "b"]) == {"a": b"1", "b": b"2"}


def test_incr_decr(mc):
    mc.set("n", b"10", noreply=False)
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 20) == 0
    assert mc.incr("missing", 1) is None
    mc.set("n", str(2**64 - 1).encode(), noreply=False)
    assert mc.incr("n", 2) == 1
    mc.set("s", b"abc", noreply=False)
    with pytest.raises(Exception):
        mc.incr("s", 1)


def test_gets_cas(mc):
    mc.set("c", b"one", noreply=False)
    value, cas = mc.gets("c")
    assert value == b"one"
    assert mc.cas("c", b"two", cas) is True
    assert mc.cas("c", b"three", cas) is False  # EXISTS
    assert mc.get("c") == b"two"
    assert mc.cas("nope", b"x", cas) is None  # NOT_FOUND
    values = mc.gets_many(["c", "nope"])
    assert values["c"][0] == b"two"


def test_touch_and_expiry(mc):
    mc.set("t", b"v", expire=1, noreply=False)
    assert mc.touch("t", 100, noreply=False) is True
    assert mc.touch("nope", 100, noreply=False) is False
    mc.set("gone", b"v", expire=-1, noreply=False)
    assert mc.get("gone") is None
    assert mc.get("t") == b"v"  # (pymemcache has no gat; tests/text_protocol.rs covers it)


def test_delete(mc):
    mc.set("d", b"v", noreply=False)
    assert mc.delete("d", noreply=False) is True
    assert mc.delete("d", noreply=False) is False
    assert mc.get("d") is None
    mc.set_many({"x": b"1", "y": b"2"}, noreply=False)
    assert mc.delete_many(["x", "y"], noreply=False) is True
    assert mc.get_many(["x", "y"]) == {}


def test_add_replace_append_prepend(mc):
    assert mc.add("a", b"1", noreply=False) is True
    assert mc.add("a", b"2", noreply=False) is False
    assert mc.replace("a", b"3", noreply=False) is True
    assert mc.replace("nope", b"3", noreply=False) is False
    assert mc.append("a", b">", noreply=False) is True
    assert mc.prepend("a", b"<", noreply=False) is True
    assert mc.get("a") == b"<3>"
    assert mc.append("nope", b"x", noreply=False) is False


def test_flush_all(mc):
    mc.set("k", b"v", noreply=False)
    assert mc.flush_all(noreply=False) is True
    assert mc.get("k") is None


def test_stats_and_version(mc):
    mc.set("k", b"v", noreply=False)
    mc.get("k")
    mc.get("nope")
    st = mc.stats()
    assert st[b"curr_items"] >= 1
    assert st[b"get_hits"] >= 1 and st[b"get_misses"] >= 1
    assert b"version" in st
    assert mc.stats("settings")[b"item_size_max"] == 1048576
    assert mc.version().startswith(b"1.6.")
    assert mc.stats("items")[b"items:1:number"] >= 1
