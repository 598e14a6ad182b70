"""The delivery engine's limits (issue 14, items 5, 6, 7, 12, 13, 18).

With the delivery worker (module cluster, callback.max_inflight = 8,
callback.max_inflight_per_endpoint = 4):

- callback.max_connections applies on reload, not only at start;
- requests beyond callback.max_connections wait in the queue, not inside
  libcurl with their timeout running, and endpoints share the connections
  as they share the slots;
- fair share: two slow but successful endpoints leave slots free, so a third
  endpoint's event is sent at once, not after their responses;
- no busy loop while a breaker has cooled down but a request is still in
  flight (cooldown shorter than the timeout);
- a half-open probe takes a token: callback.max_rate holds for probes too;
- the response body is kept up to callback.max_response_bytes in a buffer
  allocated before the transfer; no curl callback allocates or raises.

Without a worker (drain_cluster: callback.database_name names no database),
callback.process_callbacks() from one session:

- memory stays flat over many deliveries (the backend's private memory is
  sampled during each call, the memory contexts between calls);
- memory stays flat over 100 cancelled calls (statement_timeout while the
  endpoint never answers).
"""

import os
import re
import selectors
import socket
import threading
import time

import psycopg2
import pytest

from cluster import running_cluster
from conftest import record_figure
from faults_util import enqueue_many, proc_memory_kb, proc_socket_inodes
from receiver import Receiver

CLUSTER_CONF = {
    "callback.max_inflight": 8,
    "callback.max_inflight_per_endpoint": 4,
}

NO_SUCH_DB = "pgcb_limits_no_worker_here"
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")

# deliveries for the memory test; the old engine leaked about 2.6 kB each
N_DRAIN = int(os.environ.get("PGCB_LIMITS_DELIVERIES", "100000"))
DRAIN_BATCH = 20000
N_CANCELS = 100


# ------------------------------------------------------------------ helpers

class Staller:
    """A TCP listener on loopback that reads requests and never answers.
    Unlike faults_util.BlackHole it closes its side when the client closes,
    so that hundreds of abandoned connections do not pile up here."""

    def __init__(self, fail_first=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.fail_first = fail_first   # answer the first request 500 at once
        self.requests = 0
        self.open = 0
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.1):
                if key.data is None:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self._sel.register(c, selectors.EVENT_READ, "conn")
                    self.open += 1
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(c)
                    c.close()
                    self.open -= 1
                    continue
                if b"\r\n\r\n" in data:
                    self.requests += 1
                    if self.fail_first and self.requests == 1:
                        c.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                  b"Content-Length: 0\r\n\r\n")

    def url(self, path="/stall"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self._stop.set()
        self._t.join(timeout=5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()


def sockets_to_port(pid, port):
    """TCP sockets of process pid connected to 127.0.0.1:port."""
    inodes = proc_socket_inodes(pid)
    n = 0
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[9] in inodes and \
                    int(parts[2].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                n += 1
    return n


def worker_batches(cluster):
    """Cycles of the worker so far (each cycle writes back once)."""
    return cluster.scalar("SELECT sum(batches) FROM callback.callback_worker_stats")


def reload_and_wait(cluster, name, value):
    cluster.set_conf(**{name: value})
    cluster.reload()
    cluster.wait_until(
        lambda: cluster.scalar("SELECT current_setting(%s)", (name,)) == str(value),
        timeout=10, what="%s = %s after reload" % (name, value))


def poll_with_peak_connections(pid, port, done, timeout=60):
    """Poll done() until it returns something true (at most timeout s),
    sampling the worker's connections to port meanwhile: (done's last
    value, the most connections seen)."""
    peak = 0
    deadline = time.monotonic() + timeout
    while True:
        peak = max(peak, sockets_to_port(pid, port))
        result = done()
        if result or time.monotonic() >= deadline:
            return result, peak
        time.sleep(0.02)  # sampling interval


@pytest.fixture
def staller():
    s = Staller()
    yield s
    s.close()


# ------------------------------------------------------------------ with the worker

def test_max_connections_applies_on_reload(cluster, receiver, endpoint_factory):
    """callback.max_connections lowered by a reload caps the worker's
    connections to an endpoint while requests are in flight."""
    receiver.set_delay("/conns", 1.0)
    endpoint_factory("lim_conns", receiver.url("/conns"), event_types="lim.conns", timeout=20)
    pid = cluster.wait_until(cluster.worker_pid, timeout=30, what="the worker")
    reload_and_wait(cluster, "callback.max_connections", 2)
    try:
        enqueue_many(cluster, "lim.conns", 8)
        _, peak = poll_with_peak_connections(pid, receiver.port,
                                             lambda: receiver.count("/conns") >= 8)
        assert receiver.count("/conns") == 8, "not all 8 requests arrived"
        record_figure("max_connections=2 after reload: peak %d connections" % peak)
        assert 1 <= peak <= 2, "worker held %d connections with max_connections = 2" % peak
    finally:
        reload_and_wait(cluster, "callback.max_connections", 256)


def test_requests_beyond_max_connections_wait_in_the_queue(cluster, receiver, endpoint_factory):
    """callback.max_connections below the in-flight caps (2 against 4 per
    endpoint): the worker starts no more requests than it has connections.
    A request started beyond them used to wait inside libcurl with its
    timeout running: answered after 2.0 s, a 3.5 s timeout left it 1.5 s,
    and it failed (seen with 1.0 s and 1.6 s: 5 of 8 dead, "Operation timed
    out after 594 milliseconds with 0 bytes received")."""
    receiver.set_delay("/connwait", 2.0)
    eid = endpoint_factory("lim_connwait", receiver.url("/connwait"), event_types="lim.connwait",
                           timeout=3.5, max_attempts=1)
    pid = cluster.wait_until(cluster.worker_pid, timeout=30, what="the worker")
    reload_and_wait(cluster, "callback.max_connections", 2)
    try:
        enqueue_many(cluster, "lim.connwait", 8)

        def settled():
            r = cluster.query("SELECT status::text, last_error FROM callback.callback_queue "
                              "WHERE endpoint_id = %s", (eid,))
            return r if len(r) == 8 and all(s in ("delivered", "dead") for s, _ in r) else None

        rows, peak = poll_with_peak_connections(pid, receiver.port, settled)
        assert rows is not None, "the 8 deliveries did not settle in 60 s"
        dead = [e for s, e in rows if s == "dead"]
        assert not dead, "%d of 8 dead with max_connections = 2: %r" % (len(dead), dead[:2])
        assert receiver.count("/connwait") == 8
        assert 1 <= peak <= 2, "worker held %d connections with max_connections = 2" % peak
    finally:
        reload_and_wait(cluster, "callback.max_connections", 256)


def test_connections_shared_fairly_between_endpoints(cluster, receiver, endpoint_factory):
    """callback.max_connections (2) below the slots: two endpoints with a
    backlog each get a connection, as they get slots (fair share), instead
    of the first in the worker's order taking both until its backlog is
    sent."""
    receiver.set_delay("/fair-a", 0.5)
    receiver.set_delay("/fair-b", 0.5)
    endpoint_factory("lim_fair_a", receiver.url("/fair-a"), event_types="lim.fa", timeout=30)
    endpoint_factory("lim_fair_b", receiver.url("/fair-b"), event_types="lim.fb", timeout=30)
    reload_and_wait(cluster, "callback.max_connections", 2)
    try:
        cluster.execute("SELECT callback.enqueue('lim.fa', jsonb_build_object('i', g)), "
                        "       callback.enqueue('lim.fb', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 6) g")
        assert receiver.wait_for(12, timeout=60), "not all 12 requests arrived"
        order = [r.path for r in sorted(receiver.requests(), key=lambda r: r.monotonic)
                 if r.path in ("/fair-a", "/fair-b")]
        assert sorted(order[:2]) == ["/fair-a", "/fair-b"], \
            "the first two requests, with 2 connections: %r" % order
    finally:
        reload_and_wait(cluster, "callback.max_connections", 256)


def test_two_slow_endpoints_leave_room_for_a_third(cluster, receiver, endpoint_factory):
    """max_inflight 8, per endpoint 4: two slow endpoints used to take all 8
    slots, and a third endpoint's event waited for their responses."""
    slow_s = 4.0
    receiver.set_delay("/slow-a", slow_s)
    receiver.set_delay("/slow-b", slow_s)
    endpoint_factory("lim_a", receiver.url("/slow-a"), event_types="lim.a", timeout=30)
    endpoint_factory("lim_b", receiver.url("/slow-b"), event_types="lim.b", timeout=30)
    endpoint_factory("lim_c", receiver.url("/fast-c"), event_types="lim.c", timeout=30)
    cluster.execute("SELECT callback.enqueue('lim.a', jsonb_build_object('i', g)), "
                    "       callback.enqueue('lim.b', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 4) g")
    assert receiver.wait_for(2, path="/slow-a", timeout=20)
    assert receiver.wait_for(2, path="/slow-b", timeout=20)
    t0 = time.monotonic()
    enqueue_many(cluster, "lim.c", 1)
    assert receiver.wait_for(1, path="/fast-c", timeout=30)
    waited = time.monotonic() - t0
    in_flight = receiver.count("/slow-a") + receiver.count("/slow-b")
    record_figure("fair share: third endpoint sent after %.2fs (slow endpoints: %d requests, "
                  "%.0fs each)" % (waited, in_flight, slow_s))
    assert waited < slow_s / 2, \
        "the third endpoint waited %.2fs behind two slow endpoints" % waited
    # the slow ones' work completes (it was only delayed)
    cluster.wait_until(lambda: receiver.count("/slow-a") + receiver.count("/slow-b") >= 8,
                       timeout=60, what="all slow requests sent")


def test_no_busy_loop_while_probe_waits_for_inflight(cluster, endpoint_factory):
    """A breaker open (first request failed), cooled down (0.1 s), while the
    other request hangs (timeout 8 s): the worker must sleep, not cycle."""
    srv = Staller(fail_first=True)
    try:
        eid = endpoint_factory("lim_spin", srv.url(), event_types="lim.spin", timeout=8,
                               failure_threshold=1, breaker_cooldown=0.1,
                               retry_schedule=[0.05], max_attempts=50)
        enqueue_many(cluster, "lim.spin", 2)
        cluster.wait_until(lambda: cluster.scalar(
            "SELECT breaker_state::text = 'open' FROM callback.callback_endpoints WHERE id = %s",
            (eid,)), timeout=10, what="breaker open")
        t_open = time.monotonic()
        b0 = worker_batches(cluster)
        window = 2.0
        cluster.wait_until(lambda: time.monotonic() - t_open >= window, timeout=window + 1,
                           interval=0.1, what="measuring window")
        b1 = worker_batches(cluster)
        still = srv.open
        cycles = b1 - b0
        record_figure("breaker open, request in flight: %d worker cycles in %.1fs" % (cycles, window))
        assert still >= 1, "the hanging request ended before the window did"
        # poll interval 200 ms: about 10 cycles; the busy loop made ~1000/s
        assert cycles <= 40, "worker cycled %d times in %.1fs while waiting" % (cycles, window)
    finally:
        srv.close()


def test_response_body_kept_up_to_max_response_bytes(cluster, receiver, endpoint_factory):
    """The response buffer is allocated before the transfer: a 5000-byte
    body is kept as its first callback.max_response_bytes (1024) bytes."""
    body = "".join(chr(ord("a") + i % 26) for i in range(5000))
    receiver.script("/big", [(200, {"Content-Type": "text/plain"}, body)])
    eid = endpoint_factory("lim_big", receiver.url("/big"), event_types="lim.big")
    enqueue_many(cluster, "lim.big", 1)
    got = cluster.wait_until(lambda: cluster.scalar(
        "SELECT response_body FROM callback.callback_attempts WHERE endpoint_id = %s", (eid,)),
        timeout=30, what="the attempt recorded")
    assert got == body[:1024]


def test_half_open_probe_takes_a_rate_token(cluster, receiver, endpoint_factory):
    """callback.max_rate = 2: a failing endpoint whose breaker cools down in
    50 ms is probed at most at 2/s (the probe used to skip the bucket)."""
    receiver.default_status = 500
    reload_and_wait(cluster, "callback.max_rate", 2)
    try:
        endpoint_factory("lim_probe", receiver.url("/probe"), event_types="lim.probe",
                         failure_threshold=1, breaker_cooldown=0.05,
                         retry_schedule=[0.01], max_attempts=100)
        enqueue_many(cluster, "lim.probe", 3)
        assert receiver.wait_for(3, path="/probe", timeout=20)
        n0, t0 = receiver.count("/probe"), time.monotonic()
        window = 3.0
        cluster.wait_until(lambda: time.monotonic() - t0 >= window, timeout=window + 1,
                           interval=0.1, what="measuring window")
        sent = receiver.count("/probe") - n0
        record_figure("max_rate=2, breaker probing every 50 ms: %d requests in %.0fs"
                      % (sent, window))
        # 2/s for 3 s plus a burst of 2 and one in flight at the edges
        assert sent <= 2 * window + 3, "%d requests in %.0fs at max_rate 2" % (sent, window)
    finally:
        cluster.execute("UPDATE callback.callback_endpoints SET enabled = false "
                        " WHERE name = 'lim_probe'")
        reload_and_wait(cluster, "callback.max_rate", 0)


# ------------------------------------------------------------------ curl callbacks (source audit)

_FORBIDDEN = re.compile(r"\b(palloc\w*|repalloc\w*|pstrdup|pnstrdup|psprintf|MemoryContextAlloc\w*|"
                        r"appendStringInfo\w*|appendBinaryStringInfo\w*|initStringInfo|"
                        r"makeStringInfo|enlargeStringInfo|ereport|elog|CHECK_FOR_INTERRUPTS)\b")


def _c_functions():
    """name -> body of every function defined in src/*.c (pgindent layout:
    the name at the start of a line, the body from '{' to '}' in column 0)."""
    funcs = {}
    for fn in sorted(os.listdir(SRC)):
        if not fn.endswith(".c"):
            continue
        with open(os.path.join(SRC, fn)) as f:
            text = f.read()
        for m in re.finditer(r"^(\w+)\([^;{]*?\)\s*\n\{\n(.*?)^\}", text, re.M | re.S):
            funcs[m.group(1)] = (fn, m.group(2))
    return funcs


def test_curl_callbacks_never_allocate_or_raise():
    """Every function given to curl as a callback, and every function of
    ours that it calls, is free of palloc, ereport and elog: an error raised
    there would longjmp across libcurl's frames."""
    funcs = _c_functions()
    roots = set()
    for fn, body in funcs.values():
        for m in re.finditer(r"curl_(?:easy|multi)_setopt\([\w>-]+,\s*CURLM?OPT_\w*FUNCTION,\s*(\w+)\)",
                             body):
            roots.add(m.group(1))
    assert {"response_write", "socket_callback", "timer_callback",
            "pgcb_netpolicy_opensocket", "pgcb_netpolicy_prereq",
            "connector_socket_callback", "connector_timer_callback", "conn_prereq",
            "conn_closesocket"} <= roots, roots
    seen, todo, bad = set(), list(roots), []
    while todo:
        name = todo.pop()
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        fn, body = funcs[name]
        for m in _FORBIDDEN.finditer(body):
            bad.append("%s:%s calls %s" % (fn, name, m.group(1)))
        todo.extend(c for c in re.findall(r"\b(\w+)\s*\(", body) if c in funcs)
    assert not bad, "curl callbacks that may allocate or raise:\n" + "\n".join(bad)


# ------------------------------------------------------------------ process_callbacks (no worker)

@pytest.fixture(scope="module")
def drain_cluster():
    with running_cluster("limits-drain", extra_conf={"callback.database_name": NO_SUCH_DB}) as c:
        yield c


def _session(cluster):
    conn = cluster.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    return conn, pid


def _one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


class _PeakSampler:
    """Samples a process's private memory (RssAnon) every 20 ms; .peak in kB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = proc_memory_kb(pid).get("anon", 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc_memory_kb(self.pid).get("anon", 0))

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, proc_memory_kb(self.pid).get("anon", 0))


def test_drain_memory_flat_over_many_deliveries(drain_cluster):
    cluster = drain_cluster
    r = Receiver(host="127.0.0.1", port=0, keep_records=False).start()
    # a body the size of callback.max_response_bytes, kept with each attempt
    r.default_status = 200
    r.default_body = '{"ok": true, "pad": "%s"}' % ("x" * 990)
    conn, pid = _session(cluster)
    try:
        eid = cluster.scalar("SELECT callback.create_endpoint(name => 'lim_drain', url => %s, "
                             " event_types => ARRAY['lim.drain'])", (r.url("/drain"),))
        for start in range(1, N_DRAIN + 1, DRAIN_BATCH):
            enqueue_many(cluster, "lim.drain", min(DRAIN_BATCH, N_DRAIN - start + 1), start)
        warm = _one(conn, "SELECT callback.process_callbacks(1000)")
        ctx0 = _one(conn, "SELECT sum(total_bytes) FROM pg_backend_memory_contexts")
        mem0 = proc_memory_kb(pid)
        done, peaks, ctxs = warm, [], []
        t0 = time.monotonic()
        while done < N_DRAIN:
            with _PeakSampler(pid) as s:
                n = _one(conn, "SELECT callback.process_callbacks(%s)", (DRAIN_BATCH,))
            assert n > 0, "process_callbacks found nothing with %d left" % (N_DRAIN - done)
            done += n
            peaks.append(s.peak)
            ctxs.append(_one(conn, "SELECT sum(total_bytes) FROM pg_backend_memory_contexts"))
        took = time.monotonic() - t0
        mem1 = proc_memory_kb(pid)
        delivered = cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                                   " WHERE endpoint_id = %s AND status = 'delivered'", (eid,))
        grow_peak_kb = max(peaks) - mem0["anon"]
        record_figure("process_callbacks %d deliveries in %.0fs: private memory %d kB before, "
                      "peak during calls of %d %s kB, VmRSS %d -> %d kB, contexts %d -> %s bytes"
                      % (done, took, mem0["anon"], DRAIN_BATCH, peaks, mem0["rss"],
                         mem1.get("rss", -1), ctx0, ctxs))
        assert delivered == N_DRAIN
        # the old engine leaked ~2.6 kB per delivery within a call: ~52 MB per batch
        assert grow_peak_kb < 16 * 1024, \
            "private memory grew by %d kB during a call of %d deliveries" % (grow_peak_kb, DRAIN_BATCH)
        assert max(ctxs) - ctx0 < 2 * 1024 * 1024, (ctx0, ctxs)
        # VmRSS also counts the shared buffers this backend touched (RssShmem)
        private0, private1 = mem0["rss"] - mem0["shmem"], mem1["rss"] - mem1["shmem"]
        assert private1 - private0 < 8 * 1024, (mem0, mem1)
    finally:
        conn.close()
        r.stop()


def test_drain_memory_flat_over_cancellations(drain_cluster, staller):
    cluster = drain_cluster
    conn, pid = _session(cluster)
    try:
        eid = cluster.scalar("SELECT callback.create_endpoint(name => 'lim_cancel', url => %s, "
                             " event_types => ARRAY['lim.cancel'], timeout => '60 seconds')",
                             (staller.url(),))
        enqueue_many(cluster, "lim.cancel", 256)
        _one(conn, "SELECT set_config('statement_timeout', '300ms', false)")
        mem = {}
        for i in range(1, N_CANCELS + 1):
            with pytest.raises(psycopg2.errors.QueryCanceled):
                _one(conn, "SELECT callback.process_callbacks(1000)")
            if i in (10, N_CANCELS):
                mem[i] = proc_memory_kb(pid)
        pending = cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                                 " WHERE endpoint_id = %s AND status = 'pending'", (eid,))
        record_figure("%d cancelled process_callbacks (256 in flight each, %d requests seen): "
                      "after 10 %r, after %d %r" % (N_CANCELS, staller.requests, mem[10],
                                                    N_CANCELS, mem[N_CANCELS]))
        assert staller.requests >= N_CANCELS * 100, "requests were not in flight when cancelled"
        assert pending == 256, "cancelled claims must roll back"
        # VmRSS less the shared buffers touched (the claims' row versions add pages)
        grow = (mem[N_CANCELS]["rss"] - mem[N_CANCELS]["shmem"]) - (mem[10]["rss"] - mem[10]["shmem"])
        grow_private = mem[N_CANCELS]["anon"] - mem[10]["anon"]
        # the old engine leaked every handle in flight: about 1 MB per cancel
        assert grow < 8 * 1024, "VmRSS grew by %d kB over %d cancellations" % (grow, N_CANCELS - 10)
        assert grow_private < 4 * 1024, \
            "private memory grew by %d kB over %d cancellations" % (grow_private, N_CANCELS - 10)
    finally:
        conn.close()
