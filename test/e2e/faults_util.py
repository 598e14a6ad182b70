"""Shared helpers of test_faults.py and test_retry.py: event-id accounting at
the receiver, bulk enqueueing, worker process figures (memory, sockets), a
"black hole" TCP server that accepts connections and never answers, and the
events of a packed inbox row (the inbox tests).

Every wait is a bounded poll or a condition wait with a timeout.
"""

import collections
import os
import re
import socket
import struct
import threading
import time
import uuid


# ------------------------------------------------------------------ event-id accounting

class IdTracker:
    """Counts webhook-id headers per path as requests reach a Receiver
    (through its on_request hook), so that a test can wait, bounded, until
    every expected id has arrived at least once."""

    def __init__(self, receiver):
        self.receiver = receiver
        self._cond = threading.Condition()
        self._ids = collections.defaultdict(collections.Counter)   # path -> Counter(id)
        self._first = {}                                            # (path, id) -> monotonic
        self._last_new = {}                                         # path -> monotonic
        self._prev = receiver.on_request
        receiver.on_request = self._on_request

    def close(self):
        self.receiver.on_request = self._prev

    def _on_request(self, rec):
        path = rec.path.split("?", 1)[0]
        wid = rec.headers.get("webhook-id")
        with self._cond:
            c = self._ids[path]
            if wid not in c:
                self._first[(path, wid)] = rec.monotonic
                self._last_new[path] = rec.monotonic
            c[wid] += 1
            self._cond.notify_all()
        if self._prev is not None:
            self._prev(rec)

    def counter(self, path):
        with self._cond:
            return collections.Counter(self._ids[path])

    def distinct(self, path):
        with self._cond:
            return len(self._ids[path])

    def total(self, path):
        with self._cond:
            return sum(self._ids[path].values())

    def last_new_at(self, path):
        with self._cond:
            return self._last_new.get(path)

    def wait_distinct(self, path, n, timeout):
        """Wait until at least n distinct ids arrived on path; True if so."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ids[path]) >= n, timeout=timeout)

    def wait_ids(self, path, expected, timeout):
        """Wait until every id of expected arrived on path; the ids missing."""
        expected = set(expected)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = expected.difference(self._ids[path])
                if not missing:
                    return set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return missing
                self._cond.wait(min(left, 1.0))

    def accounting(self, path, expected):
        """(distinct expected ids received, duplicate requests, missing ids,
        unexpected ids) for path."""
        c = self.counter(path)
        expected = set(expected)
        got = set(c)
        dups = sum(v - 1 for v in c.values())
        return len(got & expected), dups, expected - got, got - expected


def webhook_ids(cluster, endpoint_id):
    """The webhook-id of every delivery queued for endpoint_id:
    'msg_' + the event uuid in hex without dashes."""
    return {r[0] for r in cluster.query(
        "SELECT 'msg_' || replace(event_id::text, '-', '') FROM callback.callback_queue "
        " WHERE endpoint_id = %s", (endpoint_id,))}


def enqueue_many(cluster, event_type, n, start=1):
    """Commit n events of event_type in one transaction (payload {"i": k});
    returns their event ids."""
    rows = cluster.query(
        "SELECT callback.enqueue(%s, jsonb_build_object('i', g))::text "
        "  FROM generate_series(%s, %s) g", (event_type, start, start + n - 1))
    return [r[0] for r in rows]


def inbox_row_events(event_id, events, more, body=None):
    """The events one callback_inbox row carries, [(event id, body)]: the
    first in its own columns, a pack's others (events > 1) in more, read as
    documented on callback_inbox.more: per event a 4-byte big-endian body
    length and the body; its id is the row's with its last 48 bits plus its
    place (1 for the second event)."""
    out = [(str(event_id), body)]
    if more is None:
        assert events == 1, "row %s: events %s and no more" % (event_id, events)
        return out
    b = bytes(more)
    first = uuid.UUID(str(event_id)).int
    pos = 0
    for k in range(1, events):
        low = ((first & (2 ** 48 - 1)) + k) % 2 ** 48
        eid = str(uuid.UUID(int=(first >> 48 << 48) | low))
        (n,) = struct.unpack(">I", b[pos:pos + 4])
        out.append((eid, None if body is None else b[pos + 4:pos + 4 + n].decode("utf-8")))
        pos += 4 + n
    assert pos == len(b), "more of row %s: %d bytes, %d read" % (event_id, len(b), pos)
    return out


def msg_id(event_uuid):
    return "msg_" + event_uuid.replace("-", "")


def queue_status(cluster, endpoint_id):
    return dict(cluster.query(
        "SELECT status::text, count(*) FROM callback.callback_queue "
        " WHERE endpoint_id = %s GROUP BY 1", (endpoint_id,)))


def wait_queue_delivered(cluster, endpoint_id, n, timeout):
    """Bounded poll until n rows of endpoint_id are 'delivered' (and no other)."""
    def done():
        st = queue_status(cluster, endpoint_id)
        return st if st.get("delivered", 0) == n and sum(st.values()) == n else False
    return cluster.wait_until(done, timeout=timeout, interval=0.25,
                              what="%d deliveries of endpoint %s delivered" % (n, endpoint_id))


def diagnostics(cluster, endpoint_id=None, log_lines=40):
    out = []
    try:
        if endpoint_id is not None:
            out.append("queue: %r" % queue_status(cluster, endpoint_id))
            out.append("endpoint: %r" % cluster.query(
                "SELECT enabled, paused, breaker_state, breaker_reason "
                "  FROM callback.callback_endpoints WHERE id = %s", (endpoint_id,)))
        out.append("workers: %r" % cluster.query(
            "SELECT pid, backend_type, datname, state, wait_event FROM pg_stat_activity "
            " WHERE backend_type LIKE 'pg_callback%%'", dbname="postgres"))
    except Exception as e:  # diagnostics must not hide the failure
        out.append("diagnostics query failed: %s" % e)
    out.append("--- server log (tail) ---\n" + cluster.log_tail(log_lines))
    return "\n" + "\n".join(out)


# ------------------------------------------------------------------ worker process figures

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def proc_memory_kb(pid):
    """Memory figures of a process, in kB: 'rss' (VmRSS), 'hwm' (VmHWM, the
    peak RSS), 'anon' (RssAnon: private memory, the part a leak grows;
    VmRSS also counts the shared buffers the process touched), 'shmem'
    (RssShmem) and 'private_dirty' (smaps_rollup).  Missing ones are absent
    (the process is gone)."""
    out = {}
    status = _read("/proc/%d/status" % pid)
    for key, name in (("rss", "VmRSS"), ("hwm", "VmHWM"), ("anon", "RssAnon"),
                      ("shmem", "RssShmem")):
        m = re.search(r"^%s:\s+(\d+) kB" % name, status, re.M)
        if m:
            out[key] = int(m.group(1))
    text = _read("/proc/%d/smaps_rollup" % pid)
    m = re.search(r"^Private_Dirty:\s+(\d+) kB", text, re.M)
    if m:
        out["private_dirty"] = int(m.group(1))
    return out


def proc_socket_inodes(pid):
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    return inodes


def proc_tcp_sockets(pid):
    """Number of TCP sockets (v4 and v6) the process holds open."""
    inodes = proc_socket_inodes(pid)
    if not inodes:
        return 0
    # distinct inodes: the tables list the whole network namespace, and a
    # table read while sockets come and go (other tests on the machine) can
    # list a socket twice
    seen = set()
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        for line in _read(table).splitlines()[1:]:
            parts = line.split()
            if len(parts) > 9 and parts[9] in inodes:
                seen.add(parts[9])
    return len(seen)


# ------------------------------------------------------------------ a black hole

class BlackHole:
    """A TCP listener on loopback that accepts connections and never answers:
    an endpoint that is up but unresponsive (requests hang until the client's
    timeout)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self._conns = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                self._conns.append(c)   # held open, never read, never answered
            except socket.timeout:
                continue
            except OSError:
                return

    def url(self, path="/hole"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def close(self):
        self._stop.set()
        self._t.join(timeout=5)
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()


def log_since(cluster, offset):
    """Server log text written after byte offset."""
    text = cluster.log_text()
    return text[offset:]


def log_offset(cluster):
    return len(cluster.log_text())
