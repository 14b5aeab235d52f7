"""pylibmc (libmemcached) in binary mode against logmemcached: a scripted
round trip of every operation the client offers.

The `server` fixture (conftest.py) runs the binary on a free port and stops
it afterwards:  pytest tests/clients/test_pylibmc.py
"""
import time

import pylibmc
import pytest


@pytest.fixture
def mc(server):
    client = pylibmc.Client([f"127.0.0.1:{server}"], binary=True, behaviors={"cas": True})
    client.flush_all()
    yield client
    client.disconnect_all()


def test_set_get_add_replace(mc):
    assert mc.set("k", "v")
    assert mc.get("k") == "v"
    assert mc.get("missing") is None
    assert not mc.add("k", "other")
    assert mc.add("new", "n")
    assert mc.replace("k", "v2")
    # libmemcached reports a binary replace miss (status Not found) as NotFound,
    # against memcached as here.
    with pytest.raises(pylibmc.NotFound):
        mc.replace("missing", "x")
    assert mc.get("k") == "v2"
    # pylibmc's own value encodings ride on the item flags.
    assert mc.set("int", 42) and mc.get("int") == 42
    assert mc.set("bytes", b"\x00\xff") and mc.get("bytes") == b"\x00\xff"
    assert mc.set("obj", {"a": [1, 2]}) and mc.get("obj") == {"a": [1, 2]}


def test_append_prepend(mc):
    mc.set("ap", "mid")
    assert mc.append("ap", ">")
    assert mc.prepend("ap", "<")
    assert mc.get("ap") == "<mid>"
    assert not mc.append("missing", "x")


def test_gets_and_cas(mc):
    mc.set("c", "one")
    value, token = mc.gets("c")
    assert value == "one" and token
    assert mc.cas("c", "two", token)
    assert not mc.cas("c", "three", token), "a used CAS token must fail"
    assert mc.get("c") == "two"
    assert mc.gets("missing") == (None, None)


def test_incr_decr(mc):
    mc.set("n", "10")
    assert mc.incr("n") == 11
    assert mc.incr("n", 9) == 20
    assert mc.decr("n", 5) == 15
    assert mc.decr("n", 100) == 0
    with pytest.raises(pylibmc.NotFound):
        mc.incr("missing")
    mc.set("s", "abc")
    with pytest.raises(pylibmc.Error):
        mc.incr("s")


def test_delete_and_touch(mc):
    mc.set("d", "x")
    assert mc.delete("d")
    assert not mc.delete("d")
    mc.set("t", "x", time=1)
    assert mc.touch("t", 100)
    time.sleep(2.1)
    assert mc.get("t") == "x", "touch extended the expiry"
    assert not mc.touch("missing", 10)
    mc.set("e", "x", time=1)
    time.sleep(2.1)
    assert mc.get("e") is None


def test_multi(mc):
    assert mc.set_multi({"m1": "a", "m2": "b", "m3": "c"}) == []
    assert mc.get_multi(["m1", "m2", "m3", "nope"]) == {"m1": "a", "m2": "b", "m3": "c"}
    assert mc.set_multi({"x": "1", "y": "2"}, key_prefix="p:") == []
    assert mc.get_multi(["x", "y"], key_prefix="p:") == {"x": "1", "y": "2"}
    assert mc.delete_multi(["m1", "m2"])
    assert mc.get_multi(["m1", "m2", "m3"]) == {"m3": "c"}
    assert mc.add_multi({"m3": "z", "m4": "d"}) == ["m3"]


def test_flush_all_and_stats(mc):
    mc.set("f", "x")
    assert mc.flush_all()
    assert mc.get("f") is None
    stats = mc.get_stats()
    assert stats and "pid" in stats[0][1]
    # libmemcached folds a stats group into its fixed struct; just ask.
    assert mc.get_stats("settings")


def test_large_values(mc):
    big = "x" * (512 * 1024)
    assert mc.set("big", big)
    assert mc.get("big") == big
    too_big = "x" * (2 * 1024 * 1024)
    with pytest.raises(pylibmc.Error):
        mc.set("big", too_big, min_compress_len=0)
    # The connection stays usable after the refusal.
    assert mc.set("after", "ok") and mc.get("after") == "ok"
