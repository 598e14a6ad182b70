"""Tests of the test receiver itself (no PostgreSQL needed)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from receiver import Receiver  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def r():
    rec = Receiver().start()
    yield rec
    rec.stop()


def conn(r, timeout=10):
    return http.client.HTTPConnection("127.0.0.1", r.port, timeout=timeout)


def post(c, path, body=b"{}", headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request("POST", path, body=body, headers=h)
    resp = c.getresponse()
    data = resp.read()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


def test_records_request(r):
    c = conn(r)
    status, headers, data = post(c, "/hook?x=1", b'{"a": 1}', {"Webhook-Id": "msg_1"})
    assert status == 204 and data == b""
    assert r.wait_for(1, "/hook", timeout=5)
    [rec] = r.requests("/hook")
    assert rec.method == "POST"
    assert rec.path == "/hook?x=1"
    assert rec.headers["webhook-id"] == "msg_1"
    assert rec.headers["content-type"] == "application/json"
    assert rec.body == b'{"a": 1}' and rec.json() == {"a": 1}
    assert abs(rec.received_at - time.time()) < 5
    assert r.count() == 1 and r.count("/hook") == 1 and r.count("/other") == 0
    assert r.url("/hook") == "http://127.0.0.1:%d/hook" % r.port
    r.clear()
    assert r.count() == 0 and r.requests() == []


def test_script_sequence_then_default(r):
    r.script("/s", [(500, {}, "boom"), (429, {"Retry-After": "2"}, ""), (200, {}, "ok")])
    c = conn(r)
    got = [post(c, "/s") for _ in range(5)]
    assert [g[0] for g in got] == [500, 429, 200, 204, 204]
    assert got[0][2] == b"boom"
    assert got[1][1]["retry-after"] == "2"
    assert got[2][2] == b"ok"
    # every response carrying a body is framed by Content-Length
    assert got[0][1]["content-length"] == "4"
    assert got[1][1]["content-length"] == "0"
    # other paths are unaffected; default status settable
    r.default_status = 202
    assert post(c, "/other")[0] == 202
    assert r.count("/s") == 5


def test_delay(r):
    r.set_delay("/slow", 1.0)
    c = conn(r)
    t0 = time.monotonic()
    assert post(c, "/slow")[0] == 204
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    assert post(c, "/fast")[0] == 204
    fast = time.monotonic() - t0
    assert slow >= 0.95
    # the delay is per path: /fast is not held the 1 s that /slow is (a
    # generous bound, not a latency figure: a loaded machine stays under it)
    assert fast < 0.5
    # a client with a short timeout gives up on the slow path
    c2 = conn(r, timeout=0.1)
    with pytest.raises((socket.timeout, TimeoutError)):
        post(c2, "/slow")
    c2.close()
    # the request was recorded on arrival, even though never answered in time
    assert r.count("/slow") == 2


def test_down_refuses_then_up_accepts(r):
    port = r.port
    c = conn(r)
    assert post(c, "/a")[0] == 204  # a kept-alive connection now exists
    r.down()
    # new connections are refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    # the kept-alive connection was really closed by the server
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected,
                        http.client.BadStatusLine, OSError)):
        post(c, "/a")
    c.close()
    r.up()
    assert r.port == port
    c = conn(r)
    assert post(c, "/a")[0] == 204
    assert r.count("/a") == 2
    # down/up again, immediately
    r.down()
    r.up()
    assert post(conn(r), "/a")[0] == 204


def test_down_resets_idle_keepalive_socket(r):
    # a raw kept-alive socket sees EOF/reset promptly after down()
    s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
    s.sendall(b"POST /k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 204")
    r.down()
    try:
        got = s.recv(4096)
    except ConnectionResetError:
        got = b""
    assert got == b""
    s.close()


def test_wait_for_bounded(r):
    t0 = time.monotonic()
    assert r.wait_for(1, "/never", timeout=0.3) is False
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0

    def later():
        c = conn(r)
        for _ in range(3):
            post(c, "/w")

    t = threading.Thread(target=later)
    t.start()
    assert r.wait_for(3, "/w", timeout=10) is True
    t.join(10)
    assert r.wait_for(3, timeout=0) is True


def test_keepalive_one_connection_100_requests(r):
    c = conn(r)
    c.connect()
    sock = c.sock
    for i in range(100):
        status, _, _ = post(c, "/ka", json.dumps({"i": i}).encode())
        assert status == 204
        assert c.sock is sock, "connection was not kept alive"
    assert r.count("/ka") == 100
    assert r.connections() == 1
    assert [json.loads(x.body)["i"] for x in r.requests("/ka")] == list(range(100))
    c.close()


def test_chunked_and_expect_continue(r):
    s = socket.create_connection(("127.0.0.1", r.port), timeout=5)
    s.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 204")
    s.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 100")
    s.sendall(b"xyz")
    assert s.recv(4096).startswith(b"HTTP/1.1 204")
    s.close()
    assert [x.body for x in r.requests("/c")] == [b"abcde", b"xyz"]


def test_many_concurrent_keepalive_connections(r):
    nconn, per = 200, 10
    conns = [conn(r) for _ in range(nconn)]
    errors = []

    def worker(c, k):
        try:
            for j in range(per):
                assert post(c, "/many", b'{"k": %d, "j": %d}' % (k, j))[0] == 204
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(c, k)) for k, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert r.wait_for(nconn * per, "/many", timeout=10)
    assert r.connections() == nconn
    for c in conns:
        c.close()


def test_cli_jsonl_and_print(tmp_path):
    # pick a free port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    jl = tmp_path / "out.jsonl"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "receiver.py"), "--port", str(port),
                          "--jsonl", str(jl), "--print", "--status", "200"],
                         stdout=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.strip() == "listening on http://127.0.0.1:%d" % port
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        status, _, _ = post(c, "/demo", b'{"type": "order.insert"}', {"webhook-id": "msg_x"})
        assert status == 200
        line = p.stdout.readline()
        assert "msg_x" in line and "order.insert" in line
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
    assert p.returncode == 0
    [obj] = [json.loads(x) for x in jl.read_text().splitlines()]
    assert obj["path"] == "/demo"
    assert obj["headers"]["webhook-id"] == "msg_x"
    assert obj["body"] == '{"type": "order.insert"}'
    assert isinstance(obj["received_at"], float)
