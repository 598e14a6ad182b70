"""End-to-end: the HTTP/1.1 wire, answered byte by byte by a scripted server.

The receiver here is not an HTTP library but a raw TCP server on 127.0.0.1
(ScriptedServer) that reads one request (head and Content-Length body),
then writes the bytes a test scripted, in the writes it scripted, with the
pauses it scripted between them, and then keeps the connection for the
next request, closes it, or half-closes it and stops reading.  It records
every connection it accepted and every request it read, so that a test can
tell which connection carried which request.

Every case runs with each value of callback.http_engine: 'native' (src/http1.c
writes the request and parses the response on a connection libcurl made)
and 'libcurl' (a libcurl transfer per request).  The engine is set with
ALTER SYSTEM and a reload; the worker applies a reload itself before its
next cycle, and a probe delivery (a malformed status line, which the two
engines word differently) proves that the worker, not only a new session,
speaks with the engine asked for before any case runs.

Where the two engines answer differently the case says so in its
docstring.  Where libcurl's answer is sane (a larger limit of its own) the
libcurl run asserts what libcurl does; where it is not (RFC 9112 makes it
an error, or a value comes out wrong) the libcurl run ends as xfail, and
only when libcurl did exactly the difference described: anything else
fails, and a libcurl that comes to agree passes.
"""

import collections
import json
import re
import select
import socket
import threading
import time

import pytest

from conftest import make_endpoint, record_figure
from test_hooks import _RoleConn
from test_outbound import set_system

LOOPBACK = "127.0.0.0/8, ::1/128"
CLUSTER_CONF = {
    "callback.ssrf_allowlist": LOOPBACK,
    # retry delays exactly as scheduled: Retry-After and schedule bounds are checked
    "callback.retry_jitter": 0,
    "callback.connect_timeout": "2s",
}
ENGINES = ("native", "libcurl")
TIMEOUT_S = 3            # endpoint timeout: an attempt that hangs ends within this
SETTLE_S = 20            # how long a delivery may take to reach its final state
PAUSE = 0.003            # between scripted writes


# ------------------------------------------------------------------ the scripted server

class Request:
    """One request as the server read it."""

    def __init__(self, conn, seq, n, method, target, headers, body, raw_head, at):
        self.conn = conn          # index of the connection it came on (0, 1, ...)
        self.seq = seq            # index of the request on that connection (0, 1, ...)
        self.n = n                # 1-based count of requests to this path so far
        self.method = method
        self.target = target
        self.headers = headers    # [(name, value)] as sent, in order
        self.body = body          # bytes; None when the route does not read it
        self.raw_head = raw_head
        self.at = at              # time.monotonic() when read

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Reply:
    """What the server does after reading a request.

    parts: bytes to write (each one write, TCP_NODELAY) and floats (a pause
    of that many seconds between writes).  then: 'keep' (read the next
    request on the connection), 'close' (close it), 'linger' (half-close:
    shutdown(SHUT_WR), then neither read nor close until the client closes
    or `hold` seconds pass)."""

    def __init__(self, parts, then="keep", hold=6.0):
        assert then in ("keep", "close", "linger")
        self.parts = parts
        self.then = then
        self.hold = hold


def split_pauses(data, sizes=None, pause=PAUSE):
    """data as writes of the given sizes (1 byte each by default), a pause
    between consecutive writes."""
    parts = []
    pos = 0
    i = 0
    while pos < len(data):
        k = sizes[i % len(sizes)] if sizes else 1
        if parts:
            parts.append(pause)
        parts.append(data[pos:pos + k])
        pos += k
        i += 1
    return parts


def ok_response(body=b"ok", extra=b""):
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


class ScriptedServer:
    """A threaded raw TCP server on 127.0.0.1 (or host), port 0.  Routes map a path to
    fn(request) -> Reply; read_body=False leaves the request body unread (an
    early answer)."""

    def __init__(self, rcvbuf=None, host="127.0.0.1"):
        self.host = host
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            # inherited by accepted sockets: a client cannot push a large body
            # past a server that does not read it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.routes = {}
        self._cond = threading.Condition()
        self._requests = []
        self._accepted = 0
        self._client_closed = set()     # connections the client closed (EOF / reset)
        self._server_closed = set()     # connections this server closed
        self._idle = {}                 # conn -> socket, waiting for a next request
        self._closing = set()           # connections close_idle() shut down
        self._socks = []
        self._path_counts = collections.Counter()
        self.send_errors = []           # (conn, error) while writing a reply
        self._stop = threading.Event()
        self._threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def url(self, path):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d%s" % (host, self.port, path)

    def on(self, path, fn, read_body=True):
        self.routes[path] = (fn, read_body)

    # --- observing

    def requests(self, path=None):
        with self._cond:
            return [r for r in self._requests if path is None or r.target == path]

    def accepted(self):
        with self._cond:
            return self._accepted

    def client_closed(self):
        with self._cond:
            return set(self._client_closed)

    def wait(self, pred, timeout, what):
        with self._cond:
            if not self._cond.wait_for(pred, timeout=timeout):
                raise AssertionError("timed out after %.1fs waiting for %s; requests: %r, "
                                     "accepted: %d" % (timeout, what,
                                                       [(r.conn, r.target) for r in self._requests],
                                                       self._accepted))

    def wait_requests(self, n, path=None, timeout=SETTLE_S):
        self.wait(lambda: len([r for r in self._requests
                               if path is None or r.target == path]) >= n,
                  timeout, "%d requests to %s" % (n, path))
        return self.requests(path)

    def close_idle(self, farewell=b""):
        """Close every connection that waits for its next request, as a
        server ending idle keep-alive connections does, after writing
        farewell on it (some servers say 408 first); returns how many."""
        with self._cond:
            idle = dict(self._idle)
            self._closing.update(idle)
        for conn, s in idle.items():
            try:
                if farewell:
                    s.sendall(farewell)
                s.shutdown(socket.SHUT_RDWR)     # wakes the connection's thread
            except OSError:
                pass
        self.wait(lambda: all(c in self._server_closed or c in self._client_closed
                              for c in idle), 5, "idle connections closed")
        return len(idle)

    # --- serving

    def _accept_loop(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                conn = self._accepted
                self._accepted += 1
                self._socks.append(s)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(s, conn), daemon=True)
            t.start()
            self._threads.append(t)

    def _mark(self, conn, which):
        with self._cond:
            self._idle.pop(conn, None)
            which.add(conn)
            self._cond.notify_all()

    def _recv(self, s):
        try:
            return s.recv(65536)
        except OSError:
            return b""

    def _serve(self, s, conn):
        buf = b""
        seq = 0
        try:
            while not self._stop.is_set():
                with self._cond:
                    self._idle[conn] = s
                while b"\r\n\r\n" not in buf:
                    data = self._recv(s)
                    if not data:
                        with self._cond:
                            ours = conn in self._closing or self._stop.is_set()
                        self._mark(conn, self._server_closed if ours else self._client_closed)
                        return
                    buf += data
                with self._cond:
                    self._idle.pop(conn, None)
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers.append((name, value.strip()))
                fn, read_body = self.routes.get(target, (lambda r: Reply([ok_response()]), True))
                length = 0
                for name, value in headers:
                    if name.lower() == "content-length":
                        length = int(value)
                body = None
                if read_body:
                    while len(buf) < length:
                        data = self._recv(s)
                        if not data:
                            self._mark(conn, self._client_closed)
                            return
                        buf += data
                    body, buf = buf[:length], buf[length:]
                with self._cond:
                    self._path_counts[target] += 1
                    req = Request(conn, seq, self._path_counts[target], method, target,
                                  headers, body, head, time.monotonic())
                    self._requests.append(req)
                    self._cond.notify_all()
                seq += 1
                reply = fn(req)
                try:
                    for p in reply.parts:
                        if isinstance(p, float):
                            time.sleep(p)     # a scripted pause between two writes
                        else:
                            s.sendall(p)
                except OSError as e:
                    with self._cond:
                        self.send_errors.append((conn, repr(e)))
                    self._mark(conn, self._client_closed)
                    return
                if reply.then == "close":
                    self._mark(conn, self._server_closed)
                    return
                if reply.then == "linger":
                    s.shutdown(socket.SHUT_WR)
                    p = select.poll()
                    p.register(s, select.POLLRDHUP)
                    deadline = time.monotonic() + reply.hold
                    while time.monotonic() < deadline and not self._stop.is_set():
                        if p.poll(50):
                            break
                    self._mark(conn, self._server_closed)
                    return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._cond:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.stop()


# ------------------------------------------------------------------ the engine

NATIVE_STATUS_LINE_ERROR = "malformed HTTP/1.x status line"


def worker_engine(cluster, probe, k):
    """Which engine the worker used for one probe delivery: the probe
    answers 'FOO', which native reports as a malformed status line and
    libcurl as HTTP/0.9."""
    name = "wire_probe_%d" % k
    eid = make_endpoint(cluster, name, probe.url("/probe"), event_types="{wire.probe%d}" % k,
                        timeout=TIMEOUT_S, max_attempts=1)
    try:
        cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", ("wire.probe%d" % k,))
        err = cluster.wait_until(
            lambda: cluster.scalar("SELECT last_error FROM callback.callback_queue "
                                   "WHERE endpoint_id = %s AND status = 'dead'", (eid,)),
            timeout=SETTLE_S, what="the probe delivery dead")
    finally:
        cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
    return "native" if NATIVE_STATUS_LINE_ERROR in err else "libcurl"


_probe_seq = [0]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, cluster):
    """callback.http_engine for the cases that take this fixture; pytest
    runs every case of one engine, then every case of the other."""
    value = request.param
    set_system(cluster, "callback.http_engine", value)
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the worker")
    probe = ScriptedServer()
    probe.on("/probe", lambda r: Reply([b"FOO\r\n\r\n"], then="close"))
    try:
        seen = []

        def applied():
            _probe_seq[0] += 1
            seen.append(worker_engine(cluster, probe, _probe_seq[0]))
            return seen[-1] == value
        try:
            cluster.wait_until(applied, timeout=30, interval=0.1,
                               what="the worker delivering with %s" % value)
        except AssertionError as e:
            raise AssertionError("%s; the probes were answered by: %r" % (e, seen)) from None
    finally:
        probe.stop()
    yield value


# ------------------------------------------------------------------ helpers

def tag(request):
    """A short name for the test and its engine: endpoint name, event type."""
    return re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:60]


class Case:
    """One test's endpoint on the scripted server: events in, rows out."""

    def __init__(self, cluster, endpoint_factory, server, request, path="/hook", **kw):
        self.cluster = cluster
        self.server = server
        self.name = "wire_" + tag(request)
        self.event_type = "wire." + tag(request)
        kw.setdefault("timeout", TIMEOUT_S)
        kw.setdefault("max_attempts", 1)
        self.eid = endpoint_factory(self.name, server.url(path),
                                    event_types="{%s}" % self.event_type, **kw)

    def enqueue(self, payload=None):
        return self.cluster.scalar("SELECT callback.enqueue(%s, %s::jsonb)::text",
                                   (self.event_type, json.dumps(payload or {"k": 1})))

    def rows(self):
        cols = ("id", "event_id", "status", "attempts", "last_status_code", "last_error",
                "next_attempt_at", "last_attempt_at", "body")
        return [dict(zip(cols, r)) for r in self.cluster.query(
            "SELECT id, event_id::text, status::text, attempts, last_status_code, last_error, "
            "       next_attempt_at, last_attempt_at, body "
            "  FROM callback.callback_queue WHERE endpoint_id = %s ORDER BY id", (self.eid,))]

    def row(self, event_id):
        r = [x for x in self.rows() if x["event_id"] == event_id]
        assert len(r) == 1, (event_id, self.rows())
        return r[0]

    def attempts(self, event_id=None):
        cols = ("delivery_id", "attempt", "status_code", "error", "response_body", "outcome",
                "started_at", "latency_ms")
        sql = ("SELECT a.delivery_id, a.attempt, a.status_code, a.error, a.response_body, "
               "       a.outcome::text, a.started_at, a.latency_ms "
               "  FROM callback.callback_attempts a WHERE a.endpoint_id = %s")
        params = [self.eid]
        if event_id is not None:
            sql += " AND a.event_id = %s::uuid"
            params.append(event_id)
        return [dict(zip(cols, r)) for r in self.cluster.query(
            sql + " ORDER BY a.delivery_id, a.attempt", params)]

    def final(self, event_id, timeout=SETTLE_S):
        """The queue row once delivered or dead."""
        def done():
            r = self.row(event_id)
            return r if r["status"] in ("delivered", "dead") else None
        try:
            return self.cluster.wait_until(done, timeout=timeout,
                                           what="delivery of %s final" % event_id)
        except AssertionError as e:
            raise AssertionError(str(e) + self.diagnostics()) from None

    def deliver(self, payload=None):
        """Enqueue one event and wait for its final row."""
        ev = self.enqueue(payload)
        return ev, self.final(ev)

    def diagnostics(self):
        return "\nqueue: %r\nattempts: %r\nserver: accepted %d, requests %r\n" \
               "--- server log (tail) ---\n%s" % (
                   [(r["status"], r["attempts"], r["last_status_code"], r["last_error"])
                    for r in self.rows()],
                   [(a["attempt"], a["status_code"], a["error"]) for a in self.attempts()],
                   self.server.accepted(),
                   [(q.conn, q.target) for q in self.server.requests()],
                   self.cluster.log_tail(15))


def assert_delivered(case, row, body=None):
    atts = case.attempts(row["event_id"])
    assert row["status"] == "delivered", "%r%s" % (row, case.diagnostics())
    assert row["attempts"] == 1 and row["last_status_code"] == 200 and row["last_error"] is None, row
    assert len(atts) == 1 and atts[0]["status_code"] == 200 and atts[0]["error"] is None, atts
    if body is not None:
        assert atts[0]["response_body"] == body, \
            "response_body %r, sent %r" % (atts[0]["response_body"], body)
    return atts[0]


def assert_failed_once(case, row):
    """A single attempt (max_attempts 1) that failed without a status."""
    atts = case.attempts(row["event_id"])
    assert row["status"] == "dead" and row["attempts"] == 1, "%r%s" % (row, case.diagnostics())
    assert row["last_status_code"] is None, row
    assert len(atts) == 1 and atts[0]["status_code"] is None and atts[0]["error"], atts
    return atts[0]


def libcurl_known_difference(engine, seen, reason):
    """The libcurl run did exactly what is described as libcurl's known,
    not sane, difference (seen): xfail with the reason.  Otherwise the
    case's assertions decide."""
    if engine == "libcurl" and seen:
        pytest.xfail("libcurl 7.88 differs: " + reason)


# ------------------------------------------------------------------ 1-4: framing

def test_content_length_in_one_byte_writes(request, cluster, engine, server, endpoint_factory):
    """A Content-Length response written one byte at a time, with a pause
    between writes (inside the status line, between CR and LF, inside a
    UTF-8 sequence of the body): delivered, the body kept exactly."""
    body = '{"ok":true,"word":"café","n":[1,2,3]}'
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" \
        % len(body.encode()) + body.encode()
    server.on("/hook", lambda r: Reply(split_pauses(wire, pause=0.002)))
    case = Case(cluster, endpoint_factory, server, request, timeout=10)
    ev, row = case.deliver()
    assert_delivered(case, row, body)
    rec = server.requests()[0]
    assert rec.body == row["body"].encode(), "the request body is the queued body"
    record_figure("%s: %d-byte response in %d writes" % (engine, len(wire), len(wire)))


CHUNK_DATA = b"abcdefghijklmnopqrstuvwxyz"   # 0x1a bytes


def chunked_parts():
    """A chunked body with chunk extensions and a trailer, cut at awkward
    places: inside a chunk-size line, between CR and LF, inside data and
    inside the trailer."""
    return [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Digest\r\n\r\n",
        PAUSE, b"6;x=y\r",
        PAUSE, b"\nhel",
        PAUSE, b"lo \r",
        PAUSE, b"\n1",
        PAUSE, b"a;name=\"v\";x=y\r\n" + CHUNK_DATA[:10],
        PAUSE, CHUNK_DATA[10:] + b"\r",
        PAUSE, b"\n3\r\nend\r\n0",
        PAUSE, b";last=1\r\nX-Digest: ab",
        PAUSE, b"c\r\n\r",
        PAUSE, b"\n",
    ]


def test_chunked_split_at_awkward_places(request, cluster, engine, server, endpoint_factory):
    """Chunks with extensions and a trailer, split across writes at awkward
    places: delivered, body de-chunked exactly; and the parse ends exactly
    at the end of the trailer, so the connection is reused."""
    server.on("/hook", lambda r: Reply(chunked_parts()))
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    assert_delivered(case, row, "hello " + CHUNK_DATA.decode() + "end")
    _, row2 = case.deliver()
    assert_delivered(case, row2, "hello " + CHUNK_DATA.decode() + "end")
    assert server.accepted() == 1 and [r.conn for r in server.requests()] == [0, 0], \
        "a chunked response's connection not reused: %d accepted" % server.accepted()


def test_informational_responses_skipped(request, cluster, engine, server, endpoint_factory):
    """100 Continue and 102 Processing (with a header) before the final 200:
    delivered with 200 and the final response's body; written in pieces and
    then all in one write (on the same, reused connection)."""
    interim = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\nX-Interim: 1\r\n\r\n"]
    final = ok_response(b"final body")

    def reply(r):
        if r.n == 1:
            return Reply([interim[0], PAUSE, interim[1][:9], PAUSE, interim[1][9:], PAUSE,
                          final])
        return Reply([interim[0] + interim[1] + final])
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, "final body")
    assert server.accepted() == 1, "%d connections for two deliveries" % server.accepted()


LONG_EXT = b"5;ext=" + b"v" * 2000 + b"\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("write", [None, 200], ids=["one_write", "200_byte_writes"])
def test_long_chunk_extension(request, cluster, engine, server, endpoint_factory, write):
    """A chunk-size line with a 2 kB extension (RFC 9112, 7.1.1: a recipient
    ignores extensions it does not know): the outcome must be the same
    whether the line arrives in one write or in 200-byte writes."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    parts = [head + LONG_EXT] if write is None else \
        [head, PAUSE] + split_pauses(LONG_EXT, [write], pause=0.01)
    server.on("/hook", lambda r: Reply(parts))
    case = Case(cluster, endpoint_factory, server, request)
    ev, row = case.deliver()
    record_figure("%s, %s: 2 kB chunk extension -> %r" % (
        engine, write, [(a["status_code"], a["error"]) for a in case.attempts(ev)]))
    assert_delivered(case, row, "hello")


def test_empty_reply_on_a_new_connection_not_resent(request, cluster, engine, server,
                                                    endpoint_factory):
    """The server reads a request on a new connection and closes without a
    byte of answer: the attempt fails ("Empty reply from server") and the
    request is not sent again at once (only a reused connection earns that)."""
    server.on("/hook", lambda r: Reply([], then="close"))
    case = Case(cluster, endpoint_factory, server, request)
    ev, row = case.deliver()
    att = assert_failed_once(case, row)
    assert "Empty reply from server" in att["error"], att
    assert len(server.requests()) == 1, [(r.conn, r.seq) for r in server.requests()]


def test_trickling_response_times_out(request, cluster, engine, server, endpoint_factory):
    """A response whose body trickles (a byte every 0.2 s) past the
    endpoint's timeout: the attempt fails with a timeout, about when it is
    due, with no status."""
    parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"]
    for _ in range(60):
        parts += [0.2, b"x"]
    server.on("/hook", lambda r: Reply(parts, then="close"))
    case = Case(cluster, endpoint_factory, server, request, timeout=2)
    ev, row = case.deliver()
    att = assert_failed_once(case, row)
    record_figure("%s: trickle past a 2 s timeout -> %r after %.0f ms" % (
        engine, att["error"], att["latency_ms"]))
    assert re.search(r"timed out", att["error"]), att
    assert 1900 <= att["latency_ms"] <= 3500, att


VALID_HEADS = {
    "no_reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "empty_reason": b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "odd_spacing": b"HTTP/1.1 200 Fine Thanks\r\ncontent-LENGTH:\t 2 \t\r\n\r\nok",
}


@pytest.mark.parametrize("kind", sorted(VALID_HEADS))
def test_lenient_but_valid_heads(request, cluster, engine, server, endpoint_factory, kind):
    """Heads a client reads all the same (RFC 9112: no reason phrase, an
    empty one, bare LF line ends, a header name in any case, whitespace
    around a value): delivered, on a connection reused afterwards."""
    server.on("/hook", lambda r: Reply([VALID_HEADS[kind]]))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()] == [0, 0]


def test_body_over_the_kept_cap(request, cluster, engine, server, endpoint_factory):
    """A 20 kB body with Content-Length, over callback.max_response_bytes:
    the first max_response_bytes are kept, the rest read and dropped, so the
    connection is reused for the next request."""
    cap = int(cluster.scalar("SELECT setting FROM pg_settings "
                             "WHERE name = 'callback.max_response_bytes'"))
    body = (b"0123456789abcdef" * 1300)[:20000]
    assert len(body) > cap
    server.on("/hook", lambda r: Reply(
        split_pauses(ok_response(body), [7000], pause=0.005)))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, body[:cap].decode())
    assert [r.conn for r in server.requests()] == [0, 0]


def test_body_read_to_close(request, cluster, engine, server, endpoint_factory):
    """No Content-Length and not chunked: the body is every byte until the
    server closes; delivered; the next request uses a new connection."""
    parts = [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", PAUSE,
             b"first part, ", 0.05, b"second part"]
    server.on("/hook", lambda r: Reply(parts, then="close"))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, "first part, second part")
    assert [r.conn for r in server.requests()] == [0, 1]


# ------------------------------------------------------------------ 5-8: connections

def test_http10_without_keep_alive_not_reused(request, cluster, engine, server, endpoint_factory):
    """HTTP/1.0 200 without keep-alive, the server leaving the connection
    open: the client must not reuse it; the next request opens a new one."""
    server.on("/hook", lambda r: Reply([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()] == [0, 1], \
        [(r.conn, r.seq) for r in server.requests()]
    # the client, not the server, ended the first connection
    server.wait(lambda: 0 in server.client_closed(), 10, "the client closing connection 0")


def test_http10_keep_alive_reused(request, cluster, engine, server, endpoint_factory):
    """HTTP/1.0 200 with Connection: keep-alive and a length: reused (the
    counterpart of the case above, so that one cannot pass by never reusing)."""
    server.on("/hook", lambda r: Reply(
        [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"]))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(2):
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()] == [0, 0]


def test_connection_close_not_reused(request, cluster, engine, server, endpoint_factory):
    """Connection: close on a 200 (the server leaves it open all the same):
    the next request goes on a new connection, nothing fails."""
    server.on("/hook", lambda r: Reply([ok_response(extra=b"Connection: close\r\n")]))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(3):
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()] == [0, 1, 2]
    server.wait(lambda: {0, 1} <= server.client_closed(), 10, "the client closing connections")


def test_keep_alive_one_connection(request, cluster, engine, server, endpoint_factory):
    """Three sequential deliveries go over one connection."""
    server.on("/hook", lambda r: Reply([ok_response()]))
    case = Case(cluster, endpoint_factory, server, request)
    for _ in range(3):
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
    assert server.accepted() == 1, "%d connections for 3 deliveries" % server.accepted()
    assert [(r.conn, r.seq) for r in server.requests()] == [(0, 0), (0, 1), (0, 2)]
    record_figure("%s: 3 sequential deliveries, %d connection(s)" % (engine, server.accepted()))


def test_stale_keep_alive_closed_by_server(request, cluster, engine, server, endpoint_factory):
    """After a delivery the server closes the idle connection: the next
    delivery succeeds at its first attempt, on a new connection."""
    server.on("/hook", lambda r: Reply([ok_response()]))
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    assert_delivered(case, row, "ok")
    assert server.close_idle() == 1
    _, row = case.deliver()
    assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()] == [0, 1]
    assert len(case.attempts()) == 2 and all(a["error"] is None for a in case.attempts())


def worker_in_transform(cluster):
    """The worker sits in the slow transform's pg_sleep: it has claimed the
    event and sends it as soon as the transform returns."""
    return cluster.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_callback worker' "
        "AND wait_event = 'PgSleep'", dbname="postgres") > 0


@pytest.mark.parametrize("farewell", [
    b"",
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"],
    ids=["fin", "408_then_fin"])
def test_idle_close_just_before_reuse(request, cluster, engine, server, owned_factory,
                                      farewell):
    """The server ends the idle keep-alive connection (a plain close, or a
    408 and a close, as some servers do) after the worker claimed the next
    event and before it sends it (it is in the endpoint's slow transform, so
    it has no chance to see the close first).  What the server said on the
    idle connection is no answer to a request it never got: the delivery
    succeeds at its first attempt, on a new connection, with no failure."""
    server.on("/hook", lambda r: Reply([ok_response()]))
    case = Case(cluster, owned_factory, server, request,
                transform="wire_app.slow", max_attempts=1)
    _, row = case.deliver()
    assert_delivered(case, row, "ok")
    ev = case.enqueue()
    cluster.wait_until(lambda: worker_in_transform(cluster), timeout=SETTLE_S, interval=0.02,
                       what="the worker in the slow transform of the second event")
    assert server.close_idle(farewell) == 1
    row = case.final(ev)
    record_figure("%s, %s: idle close during the claim -> %r, connections %r" % (
        engine, request.node.callspec.id, [(a["status_code"], a["error"]) for a in case.attempts(ev)],
        [r.conn for r in server.requests()]))
    # native looks at an idle connection before it reuses one (http1.c,
    # assign_connections); libcurl 7.88 sends on it and reads the 408
    libcurl_known_difference(engine, farewell and row["last_status_code"] == 408,
                             "the idle connection is reused without looking whether the server "
                             "spoke on it since, and its 408 taken for the answer")
    assert_delivered(case, row, "ok")
    assert [r.conn for r in server.requests()][-1] == 1, [r.conn for r in server.requests()]


def test_reused_connection_closed_without_answer_is_resent(request, cluster, engine, server,
                                                           endpoint_factory):
    """The server reads the second request on a kept-alive connection and
    closes without a byte of answer (its idle close crossing the request):
    the request is sent once more on a new connection, and the delivery
    succeeds at its first attempt with no failure recorded."""
    def reply(r):
        if r.n == 2:
            return Reply([], then="close")
        return Reply([ok_response()])
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    assert_delivered(case, row, "ok")
    _, row = case.deliver()
    assert_delivered(case, row, "ok")
    reqs = server.requests()
    assert [(r.conn, r.seq) for r in reqs] == [(0, 0), (0, 1), (1, 0)], \
        [(r.conn, r.seq) for r in reqs]
    assert reqs[1].header("webhook-id") == reqs[2].header("webhook-id") != reqs[0].header("webhook-id")
    assert reqs[1].body == reqs[2].body


# ------------------------------------------------------------------ 9-12: broken responses

def test_close_mid_body_fails_and_is_retried(request, cluster, engine, server, endpoint_factory):
    """Content-Length 100, 10 bytes, close: that attempt fails (no status,
    an error naming the early close) and is retried on the schedule."""
    def reply(r):
        if r.n == 1:
            return Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", PAUSE,
                          b"0123456789"], then="close")
        return Reply([ok_response()])
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request, max_attempts=3, retry_schedule=[1])
    ev, row = case.deliver()
    atts = case.attempts(ev)
    assert row["status"] == "delivered" and row["attempts"] == 2, "%r%s" % (row, case.diagnostics())
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in atts] == \
        [(1, None, "pending"), (2, 200, "delivered")], atts
    err = atts[0]["error"] or ""
    assert re.search(r"\bclosed?\b", err), "error does not name the early close: %r" % err
    reqs = server.requests()
    gap = reqs[1].at - reqs[0].at
    assert 1.0 <= gap < 1.0 + 3.0, "retry after %.2fs, schedule 1s" % gap
    record_figure("%s: close mid-body -> %r; retried after %.2fs" % (engine, err, gap))


MALFORMED_STATUS = {
    "http2": b"HTTP/2 200",
    "foo": b"FOO",
    "letters": b"HTTP/1.1 2OO OK",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED_STATUS))
def test_malformed_status_line_fails(request, cluster, engine, server, endpoint_factory, kind):
    """A malformed status line: the attempt fails with an error, nothing
    delivered."""
    line = MALFORMED_STATUS[kind]
    server.on("/hook", lambda r: Reply([line + b"\r\nContent-Length: 2\r\n\r\nok"], then="close"))
    case = Case(cluster, endpoint_factory, server, request)
    ev, row = case.deliver()
    libcurl_known_difference(
        engine, kind == "http2" and row["status"] == "delivered" and
        case.attempts(ev)[0]["response_body"] == "ok",
        "it takes 'HTTP/2 200' on an HTTP/1.1 connection as a status line and delivers")
    att = assert_failed_once(case, row)
    record_figure("%s: status line %r -> %r" % (engine, line, att["error"]))


def big_head(total, line_len):
    """A 200 whose head is about total bytes, in header lines of line_len."""
    lines = []
    size = 0
    i = 0
    while size < total:
        line = b"X-Pad-%05d: " % i
        line += b"p" * max(1, line_len - len(line) - 2) + b"\r\n"
        lines.append(line)
        size += len(line)
        i += 1
    return b"HTTP/1.1 200 OK\r\n" + b"".join(lines) + b"Content-Length: 2\r\n\r\nok"


# kind: (head bytes, bytes per header line, bytes per write (None: one write),
#        whether libcurl fails it).  native fails every one: its limit is 100 kB
#        of head (README "On the wire"); libcurl 7.88 (Debian's, with the fix of
#        CVE-2023-38039) allows 300 kB of headers and 100 kB per line.
OVERSIZED = {
    "many_lines_350k": (350 * 1024, 100, None, True),
    "one_line_150k": (150 * 1024, 150 * 1024, None, True),
    "many_lines_150k": (150 * 1024, 100, None, False),
    # just over native's limit, the same bytes in one write and in 4 kB writes:
    # the outcome must not depend on how TCP cuts them
    "many_lines_110k_one_write": (110 * 1024, 100, None, False),
    "many_lines_110k_4k_writes": (110 * 1024, 100, 4096, False),
}


@pytest.mark.parametrize("kind", sorted(OVERSIZED))
def test_oversized_head_fails(request, cluster, engine, server, endpoint_factory, kind):
    """A response head over 100 kB: with native the attempt fails with an
    error naming the head, however the bytes are cut; the worker stays the
    same process and delivers the next event.  libcurl: fails a head over
    its own (larger, sane) limits and delivers the others."""
    total, line_len, write, libcurl_fails = OVERSIZED[kind]
    wire = big_head(total, line_len)
    parts = [wire] if write is None else split_pauses(wire, [write], pause=0.01)

    def reply(r):
        if r.n == 1:
            return Reply(parts, then="close")
        return Reply([ok_response()])
    server.on("/hook", reply)
    pid = cluster.wait_until(cluster.worker_pid, timeout=30, what="the worker")
    case = Case(cluster, endpoint_factory, server, request, timeout=5)
    ev, row = case.deliver()
    record_figure("%s: %d-byte head (%s) -> %r" % (
        engine, len(wire) - 4, kind, [(a["status_code"], a["error"]) for a in case.attempts(ev)]))
    if engine == "native" or libcurl_fails:
        att = assert_failed_once(case, row)
        if engine == "native":
            assert "head exceeds" in att["error"], att
    else:
        assert_delivered(case, row, "ok")
    _, row2 = case.deliver()
    assert_delivered(case, row2, "ok")
    assert cluster.worker_pid() == pid, "the worker was restarted"


BAD_LENGTH = {
    # (header lines, body written before the close)
    "conflicting": (b"Content-Length: 2\r\nContent-Length: 5\r\n", b"hello"),
    "not_a_number": (b"Content-Length: 5x\r\n", b"hello"),
    "negative": (b"Content-Length: -5\r\n", b"hello"),
    "list": (b"Content-Length: 5, 2\r\n", b"hello"),
}

# what libcurl 7.88 does instead (delivers, with this body), against RFC 9112, 6.3
LIBCURL_LENGTH = {
    "conflicting": ("it takes the last of two different Content-Length values", "hello"),
    "not_a_number": ("it reads the number at the start of '5x'", "hello"),
    "list": ("it reads the number at the start of '5, 2'", "hello"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LENGTH))
def test_invalid_content_length_fails(request, cluster, engine, server, endpoint_factory, kind):
    """An invalid or conflicting Content-Length (RFC 9112, 6.3: an
    unrecoverable framing error): the attempt fails."""
    lines, body = BAD_LENGTH[kind]
    server.on("/hook", lambda r: Reply([b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n" + body],
                                       then="close"))
    case = Case(cluster, endpoint_factory, server, request)
    ev, row = case.deliver()
    libcurl_known_difference(
        engine, kind in LIBCURL_LENGTH and row["status"] == "delivered" and
        case.attempts(ev)[0]["response_body"] == LIBCURL_LENGTH[kind][1],
        LIBCURL_LENGTH[kind][0] if kind in LIBCURL_LENGTH else "")
    att = assert_failed_once(case, row)
    record_figure("%s: %s Content-Length -> %r" % (engine, kind, att["error"]))


def test_repeated_equal_content_length_accepted(request, cluster, engine, server,
                                                endpoint_factory):
    """The same Content-Length twice is one length (RFC 9112, 6.3): delivered."""
    server.on("/hook", lambda r: Reply(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"]))
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    assert_delivered(case, row, "hello")


# ------------------------------------------------------------------ 13: an early answer

@pytest.mark.parametrize("after", ["hold", "drain"])
def test_early_413_before_the_body_is_read(request, cluster, engine, endpoint_factory, after):
    """A ~1 MB event; the server reads the request head only and answers 413
    (Content-Length 0, Connection: close) at once; its receive buffer is
    small, so the client cannot have sent the body.  Then 'hold': it
    half-closes and reads nothing more (until the client closes); 'drain':
    it reads and drops the rest of the body, then closes (a lingering
    close).  The attempt records 413, dead as a 4xx is."""
    srv = ScriptedServer(rcvbuf=4096)
    answer = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    def reply(r):
        if after == "hold":
            return Reply([answer], then="linger", hold=TIMEOUT_S + 3)
        return Reply([answer], then="keep")   # keep: the next "request" read is the body
    srv.on("/big", reply, read_body=False)
    try:
        case = Case(cluster, endpoint_factory, srv, request, path="/big")
        max_payload = int(cluster.scalar("SELECT setting FROM pg_settings "
                                         "WHERE name = 'callback.max_payload_bytes'"))
        blob = "x" * min(1000 * 1000, max_payload - 1024)
        ev = case.enqueue({"blob": blob})
        body_len = len(case.row(ev)["body"].encode())
        assert 900 * 1000 < body_len <= max_payload, (body_len, max_payload)
        row = case.final(ev, timeout=SETTLE_S)
        atts = case.attempts(ev)
        req = srv.requests()[0]
        assert int(req.header("content-length")) == body_len
        record_figure("%s, %s: early 413 to a %d-byte request -> %r" % (
            engine, after, body_len,
            [(a["status_code"], a["error"], round(a["latency_ms"])) for a in atts]))
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("dead", 1, 413), \
            "%r%s" % (row, case.diagnostics())
        assert len(atts) == 1 and atts[0]["status_code"] == 413, atts
        assert "client error" in (atts[0]["error"] or ""), atts
        # answered, not timed out
        assert atts[0]["latency_ms"] < TIMEOUT_S * 1000 * 0.8, atts
    finally:
        srv.stop()


# ------------------------------------------------------------------ 14: headers to on_response

HOOK_ROLE = "wire_app"
HOOK_SETUP = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wire_app') THEN
    CREATE ROLE wire_app NOSUPERUSER IN ROLE callback_admin;
  END IF;
END $$;
DROP SCHEMA IF EXISTS wire_app CASCADE;
CREATE SCHEMA wire_app AUTHORIZATION wire_app;
SET ROLE wire_app;
CREATE TABLE wire_app.seen (delivery_id bigint, status int, headers jsonb, body text);
CREATE FUNCTION wire_app.keep(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE sql AS $f$ INSERT INTO wire_app.seen VALUES (delivery_id, status, headers, body) $f$;
-- a transform that takes its time: the worker has claimed the event and will
-- send it right after, with no look at its connections in between
CREATE FUNCTION wire_app.slow(e jsonb) RETURNS jsonb LANGUAGE plpgsql
    AS $f$ BEGIN PERFORM pg_sleep(0.7); RETURN e; END $f$;
RESET ROLE;
"""


@pytest.fixture(scope="module")
def hook_app(cluster):
    cluster.execute(HOOK_SETUP)
    return HOOK_ROLE


@pytest.fixture
def owned_factory(cluster, hook_app):
    """endpoint_factory, the endpoints created by wire_app (hooks may not be
    a superuser's); dropped at the end."""
    made = []

    def factory(name, url, **kw):
        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET ROLE %s" % hook_app)
            eid = make_endpoint(_RoleConn(conn), name, url, **kw)
        finally:
            conn.close()
        made.append(name)
        return eid
    yield factory
    for name in made:
        cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))


def test_response_headers_given_to_on_response(request, cluster, engine, server, owned_factory):
    """The final response's headers as on_response gets them: names
    lower-cased, values trimmed of spaces and tabs (inner ones kept), an
    empty value kept, of a repeated name the last, no 1xx header: the same
    object for both engines."""
    wire = (b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
            b"HTTP/1.1 200 OK\r\n"
            b"X-Mixed-Case: Value-One\r\n"
            b"x-lower: lower\r\n"
            b"X-UPPER: UP\r\n"
            b"X-Padded:    padded value \t  \r\n"
            b"X-Tabbed:\tt1\t\r\n"
            b"X-Empty:\r\n"
            b"X-Dup: first\r\n"
            b"X-Dup: second\r\n"
            b"X-Inner: a  b\r\n"
            b"Content-Length: 2\r\n"
            b"\r\nok")
    server.on("/hook", lambda r: Reply([wire[:50], PAUSE, wire[50:]]))
    name = "wire_" + tag(request)
    event_type = "wire." + tag(request)
    eid = owned_factory(name, server.url("/hook"), event_types="{%s}" % event_type,
                        timeout=TIMEOUT_S, max_attempts=1, on_response="wire_app.keep")
    cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (event_type,))
    rows = cluster.wait_until(
        lambda: cluster.query("SELECT s.status, s.headers, s.body FROM wire_app.seen s "
                              "JOIN callback.callback_queue q ON q.id = s.delivery_id "
                              "WHERE q.endpoint_id = %s", (eid,)),
        timeout=SETTLE_S, what="the on_response call")
    assert len(rows) == 1, rows
    status, headers, body = rows[0]
    record_figure("%s: on_response headers %s" % (engine, json.dumps(headers, sort_keys=True)))
    assert (status, body) == (200, "ok"), rows
    libcurl_known_difference(
        engine, headers.get("x-empty") == "\r" and
        dict(headers, **{"x-empty": ""}) == EXPECTED_HEADERS,
        "its header API (lib/headers.c, namevalue) keeps the CR of an empty value: "
        "x-empty is \"\\r\"")
    assert headers == EXPECTED_HEADERS, headers


EXPECTED_HEADERS = {
    "x-mixed-case": "Value-One",
    "x-lower": "lower",
    "x-upper": "UP",
    "x-padded": "padded value",
    "x-tabbed": "t1",
    "x-empty": "",
    "x-dup": "second",
    "x-inner": "a  b",
    "content-length": "2",
}


# ------------------------------------------------------------------ 15: Retry-After

def test_retry_after_on_503_honoured(request, cluster, engine, server, endpoint_factory):
    """503 with Retry-After: 2 against a 0.2 s schedule: the next attempt is
    due 2 s after the first (not sooner, and not much later), and happens."""
    def reply(r):
        if r.n == 1:
            return Reply([b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n"
                          b"Content-Length: 4\r\n\r\nbusy"])
        return Reply([ok_response()])
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request, max_attempts=3, retry_schedule=[0.2])
    ev = case.enqueue()
    first = cluster.wait_until(
        lambda: [a for a in case.attempts(ev) if a["attempt"] == 1], timeout=SETTLE_S,
        what="the first attempt")[0]
    assert (first["status_code"], first["outcome"], first["response_body"]) == \
        (503, "pending", "busy"), first
    due = cluster.scalar("SELECT extract(epoch FROM next_attempt_at - %s::timestamptz) "
                         "FROM callback.callback_queue WHERE event_id = %s::uuid "
                         "AND endpoint_id = %s", (first["started_at"], ev, case.eid))
    # the delay counts from the outcome, which comes latency_ms after the start
    assert 2.0 <= float(due) <= 2.0 + first["latency_ms"] / 1000.0 + 1.0, \
        "next attempt due %.3fs after the first started" % float(due)
    row = case.final(ev)
    assert row["status"] == "delivered" and row["attempts"] == 2, row
    reqs = server.requests()
    gap = reqs[1].at - reqs[0].at
    assert 2.0 <= gap < 2.0 + 3.0, "second attempt %.2fs after the first" % gap
    record_figure("%s: Retry-After 2 -> due after %.3fs, sent after %.2fs" % (engine, float(due), gap))


def test_repeated_retry_after(request, cluster, engine, server, endpoint_factory):
    """503 with Retry-After twice, 0 then 3 (a singleton field sent twice:
    RFC 9110 gives no rule).  Both engines take the first: libcurl because
    delivery.c asks curl_easy_header for index 0, native because
    http1_response.c keeps the first it reads, to agree with it."""
    def reply(r):
        if r.n == 1:
            return Reply([b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\n"
                          b"Retry-After: 3\r\nContent-Length: 0\r\n\r\n"])
        return Reply([ok_response()])
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request, max_attempts=2, retry_schedule=[0.2])
    ev = case.enqueue()
    first = cluster.wait_until(
        lambda: [a for a in case.attempts(ev) if a["attempt"] == 1], timeout=SETTLE_S,
        what="the first attempt")[0]
    due = float(cluster.scalar(
        "SELECT extract(epoch FROM next_attempt_at - %s::timestamptz) FROM callback.callback_queue "
        "WHERE event_id = %s::uuid AND endpoint_id = %s", (first["started_at"], ev, case.eid)))
    record_figure("%s: Retry-After 0 then 3 -> next attempt due after %.3fs" % (engine, due))
    slack = first["latency_ms"] / 1000.0 + 1.0
    assert 0.2 <= due <= 0.2 + slack, due


# ------------------------------------------------------------------ the request itself

# the URL's path as configured -> the request target sent
TARGETS = {
    "query": ("/hook?a=1&b=two", "/hook?a=1&b=two"),
    "dot_segments": ("/a/./b/../hook", "/a/hook"),
    "no_path": ("", "/"),
}


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_request_head_as_libcurl_writes_it(request, cluster, engine, server, endpoint_factory,
                                           kind):
    """The request line and header order are the same for both engines:
    the target as curl's URL parser makes it, Host, User-Agent, Accept, the
    webhook headers, the endpoint's headers, Content-Length; the body is the
    queued body."""
    path, target = TARGETS[kind]
    case = Case(cluster, endpoint_factory, server, request, path=path,
                headers={"X-Custom": "c1", "X-Other": "o2"})
    ev, row = case.deliver()
    reqs = server.requests()
    assert len(reqs) == 1, [r.target for r in reqs]
    req = reqs[0]
    names = [n for n, _ in req.headers]
    record_figure("%s: request head %r" % (engine, req.raw_head.split(b"\r\n")[0]))
    assert req.raw_head.split(b"\r\n")[0] == b"POST %s HTTP/1.1" % target.encode()
    assert names[:3] == ["Host", "User-Agent", "Accept"], names
    assert names[-1] == "Content-Length", names
    assert req.header("Host") == "127.0.0.1:%d" % server.port
    assert req.header("Accept") == "*/*"
    # the endpoint's headers come from a jsonb object, in its key order
    assert sorted(n for n in names if n.lower().startswith("x-")) == ["X-Custom", "X-Other"], names
    assert names.index("webhook-id") < names.index("webhook-timestamp") < \
        names.index("webhook-signature") < names.index("Content-Type") < \
        min(names.index("X-Custom"), names.index("X-Other")), names
    assert req.header("X-Custom") == "c1" and req.header("X-Other") == "o2", req.headers
    assert "Expect" not in names and "Transfer-Encoding" not in names, names
    assert req.body == row["body"].encode() and int(req.header("Content-Length")) == len(req.body)


def test_ipv6_loopback_host_header(request, cluster, engine, endpoint_factory):
    """An endpoint on [::1] (allowlisted as ::1/128): delivered, with the
    Host header in brackets, as libcurl writes it."""
    try:
        srv = ScriptedServer(host="::1")
    except OSError as e:
        pytest.skip("no IPv6 loopback here: %s" % e)
    try:
        srv.on("/v6", lambda r: Reply([ok_response()]))
        case = Case(cluster, endpoint_factory, srv, request, path="/v6")
        _, row = case.deliver()
        assert_delivered(case, row, "ok")
        assert srv.requests()[0].header("Host") == "[::1]:%d" % srv.port
    finally:
        srv.stop()


# ------------------------------------------------------------------ found in review (helper-63)

def test_nul_in_head_fails(request, cluster, engine, server, endpoint_factory):
    """A NUL byte in a header line fails the response (libcurl refuses it
    too): the header lines are kept for an on_response hook, and a NUL there
    once made the native engine read past its copy of them."""
    server.on("/hook", lambda r: Reply([b"HTTP/1.1 200 OK\r\nX-A: a\x00" + b"b" * 3000 +
                                        b"\r\nContent-Length: 2\r\n\r\nok"]))
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    att = assert_failed_once(case, row)
    if engine == "native":
        assert "NUL" in att["error"], att


def test_peer_bytes_in_errors_are_printable(request, cluster, engine, server, endpoint_factory):
    """What an error quotes of a response is stored as printable ASCII: the
    bytes a peer sends are not text in the database's encoding."""
    server.on("/hook", lambda r: Reply([b"\xff\xfe\xc3 BAD\r\n\r\n"], then="close"))
    case = Case(cluster, endpoint_factory, server, request)
    _, row = case.deliver()
    assert_failed_once(case, row)
    assert cluster.scalar(
        "SELECT bool_and(e ~ '^[ -~]*$') FROM ("
        "  SELECT last_error AS e FROM callback.callback_queue WHERE endpoint_id = %s"
        "  UNION ALL SELECT error FROM callback.callback_attempts WHERE endpoint_id = %s) x",
        (case.eid, case.eid)), case.diagnostics()


def test_request_sent_after_its_claim_commits(request, cluster, engine, server, owned_factory):
    """Two events claimed in one cycle, B's sent first and A's held by a slow
    transform before the claim commits: when B's request reaches the server,
    B's row already says it is being sent (the claim committed), as with
    libcurl's transfers; the native engine once sent it from inside the
    claim's transaction, so a rolled-back claim sent it twice."""
    seen = []
    state = {}

    def reply(r):
        if state.get("watch"):
            c = cluster.connect()
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT status::text, claimed_by IS NOT NULL FROM callback.callback_queue "
                                "WHERE endpoint_id = %s ORDER BY id DESC LIMIT 1", (state["b"],))
                    seen.append(cur.fetchone())
            finally:
                c.close()
        return Reply([ok_response()])
    server.on("/b", reply)
    server.on("/a", lambda r: Reply([ok_response()]))
    et_a, et_b = "wire.tx.a." + engine, "wire.tx.b." + engine
    state["b"] = owned_factory("wire_tx_b_" + engine, server.url("/b"), event_types="{%s}" % et_b,
                               timeout=TIMEOUT_S, max_attempts=1)
    owned_factory("wire_tx_a_" + engine, server.url("/a"), event_types="{%s}" % et_a,
                  timeout=TIMEOUT_S, max_attempts=1, transform="wire_app.slow")
    # a kept-alive connection for B first: a request could go out at once on it
    cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (et_b,))
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s AND status = 'delivered'",
        (state["b"],)) == 1, timeout=SETTLE_S, what="B's first delivery")
    state["watch"] = True
    conn = cluster.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (et_b,))
        cur.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (et_a,))
    conn.commit()
    conn.close()
    server.wait_requests(1, "/a")
    cluster.wait_until(lambda: len(seen) >= 1, timeout=SETTLE_S, what="B's second request")
    assert seen[0] == ("sending", True), \
        "B's row when its request arrived: %r (the claim had not committed)" % (seen[0],)


def test_resend_goes_on_a_new_connection(request, cluster, engine, server, endpoint_factory):
    """Two idle connections, and a server that closes any reused connection
    without an answer: the request is sent once more on a new connection
    (not on the other idle one, which the server closes as well), and is
    delivered at its first attempt."""
    def reply(r):
        if r.seq == 0:
            return Reply([0.5, ok_response()]) if r.n <= 2 else Reply([ok_response()])
        return Reply([], then="close")      # a reused connection: closed without an answer
    server.on("/hook", reply)
    case = Case(cluster, endpoint_factory, server, request)
    cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb) FROM generate_series(1, 2)",
                    (case.event_type,))
    cluster.wait_until(lambda: [r["status"] for r in case.rows()] == ["delivered", "delivered"],
                       timeout=SETTLE_S, what="two deliveries on two connections")
    assert server.accepted() == 2, [(q.conn, q.seq) for q in server.requests()]
    ev, row = case.deliver()
    assert_delivered(case, row)
    assert server.requests()[-1].seq == 0, \
        "the resent request went on a reused connection: %r" % [(q.conn, q.seq) for q in server.requests()]
