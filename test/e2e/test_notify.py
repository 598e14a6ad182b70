"""End-to-end: notify:<channel> endpoints, against a real cluster and a real
LISTEN connection.

- events reach a LISTEN session of the same database, sent by the worker's
  transaction: each once, in queue order, only after the writing
  transaction commits, never for one rolled back; each attempt is recorded
  in callback_attempts (status_code NULL) and counted in callback_metrics;
- the payload limit: a body of 7999 bytes is delivered, one of 8000 bytes
  becomes a dead letter with the reason after one attempt, nothing sent;
- rate limits apply as to HTTP endpoints;
- channel names are checked when the endpoint is saved: 22023 with a hint.

Every wait is bounded.
"""

import json
import select
import time

import psycopg2
import pytest

from conftest import record_figure

CLUSTER_CONF = {
    # the fallback poll, long: a backlog must drain without waiting for it
    "callback.poll_interval": "10s",
}


class Listener:
    def __init__(self, cluster, channel):
        self.conn = cluster.connect()
        self.channel = channel
        with self.conn.cursor() as cur:
            cur.execute("LISTEN %s" % channel)
        self.got = []

    def poll(self, timeout):
        """Collect what arrives within timeout seconds (at least one poll)."""
        if select.select([self.conn], [], [], max(timeout, 0))[0]:
            self.conn.poll()
            while self.conn.notifies:
                self.got.append(self.conn.notifies.pop(0))

    def wait_for(self, n, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        return len(self.got) >= n

    def quiet_for(self, seconds):
        """True when nothing more arrives within seconds."""
        before = len(self.got)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll(deadline - time.monotonic())
        return len(self.got) == before

    def close(self):
        self.conn.close()


@pytest.fixture
def notify_ep(request, cluster, endpoint_factory):
    """(name, event type prefix, channel, endpoint id, listener)."""
    made = []

    def make(suffix="", **kw):
        base = "tn_" + request.node.name.split("[")[0][5:30].lower() + suffix
        channel = base.replace("-", "_")
        etype = "tn" + channel.replace("_", "")
        eid = endpoint_factory(base, "notify:" + channel, event_types=[etype + ".*"], **kw)
        lis = Listener(cluster, channel)
        made.append(lis)
        return base, etype, channel, eid, lis

    yield make
    for lis in made:
        lis.close()


def test_100_events_in_order_once_after_commit(cluster, notify_ep):
    name, etype, channel, eid, lis = notify_ep()
    worker = cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 100) g", (etype + ".x",))
        # not committed: the worker cannot see them, nothing is sent
        assert lis.quiet_for(0.5), "notifications before commit: %r" % lis.got[:3]
        t0 = time.monotonic()
        conn.commit()
    finally:
        conn.close()
    assert lis.wait_for(100, timeout=60), "only %d of 100 notifications" % len(lis.got)
    record_figure("notify: 100 events committed together, all received %.1f ms after commit"
                  % ((time.monotonic() - t0) * 1000))
    assert lis.quiet_for(1.0), "more than 100 notifications: %d" % len(lis.got)
    assert [n.channel for n in lis.got] == [channel] * 100
    assert {n.pid for n in lis.got} == {worker}, "sent by another process than the worker"
    bodies = [json.loads(n.payload) for n in lis.got]
    assert [b["data"]["i"] for b in bodies] == list(range(1, 101)), "out of order or repeated"
    assert {b["type"] for b in bodies} == {etype + ".x"}

    # recorded like HTTP attempts: one each, no status code, delivered
    assert cluster.wait_until(lambda: cluster.query(
        "SELECT status::text, count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        "GROUP BY 1", (eid,)) == [("delivered", 100)], timeout=30, what="100 delivered rows")
    assert cluster.query(
        "SELECT attempt, status_code, error, outcome::text, count(*) FROM callback.callback_attempts "
        " WHERE endpoint_id = %s GROUP BY 1, 2, 3, 4", (eid,)) == [(1, None, None, "delivered", 100)]
    assert cluster.wait_until(lambda: cluster.scalar(
        "SELECT sum(delivered) FROM callback.callback_metrics WHERE endpoint = %s", (name,)) == 100,
        timeout=30, what="callback_metrics delivered = 100")


def test_backlog_drains_without_waiting_for_the_poll(cluster, notify_ep):
    # more than one claim's worth (max_inflight 256 / 2 = 128 per claim)
    name, etype, channel, eid, lis = notify_ep()
    n = 1000
    t0 = time.monotonic()
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, %s) g", (etype + ".x", n))
    assert lis.wait_for(n, timeout=60), "only %d of %d" % (len(lis.got), n)
    took = time.monotonic() - t0
    record_figure("notify: %d events in one transaction, all received in %.2f s" % (n, took))
    # once each (the order across claims follows due times, equal here)
    assert sorted(json.loads(x.payload)["data"]["i"] for x in lis.got) == list(range(1, n + 1))
    assert lis.quiet_for(0.5)
    # each claim after the first waits for nothing: far below 8 polls of 10 s
    assert took < 8, "backlog drained at the poll's pace: %.1f s" % took


def test_rolled_back_transaction_sends_nothing(cluster, notify_ep):
    name, etype, channel, eid, lis = notify_ep()
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT callback.enqueue(%s, '{\"rolled\": \"back\"}')", (etype + ".x",))
        conn.rollback()
    finally:
        conn.close()
    # a later committed event is the marker: once it is here, the worker has
    # had its chance to send the rolled-back one too
    cluster.execute("SELECT callback.enqueue(%s, '{\"marker\": 1}')", (etype + ".x",))
    assert lis.wait_for(1, timeout=30)
    assert lis.quiet_for(0.5)
    assert [json.loads(n.payload)["data"] for n in lis.got] == [{"marker": 1}]


def _body_len(etype, data_text):
    # {"type":"<etype>","timestamp":"<27 characters>","data":<data>}
    return len('{"type":"') + len(etype) + len('","timestamp":"') + 27 + len('","data":') + \
        len(data_text) + 1


def test_payload_limit_7999_delivered_8000_dead_letter(cluster, notify_ep):
    name, etype, channel, eid, lis = notify_ep()
    fill = _body_len(etype + ".x", '{"p": ""}')
    for size in (7999, 8000):
        cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('p', repeat('x', %s)))",
                        (etype + ".x", size - fill))
    assert cluster.query("SELECT octet_length(body) FROM callback.callback_queue "
                         "WHERE endpoint_id = %s ORDER BY id", (eid,)) == [(7999,), (8000,)], \
        "the test did not build the body sizes it meant to"
    assert lis.wait_for(1, timeout=30)
    assert cluster.wait_until(lambda: cluster.query(
        "SELECT octet_length(body), status::text, attempts, last_status_code, last_error "
        "  FROM callback.callback_queue WHERE endpoint_id = %s AND status <> 'pending' ORDER BY id",
        (eid,)) if cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                                  "WHERE endpoint_id = %s AND status IN ('pending', 'sending')",
                                  (eid,)) == 0 else None,
        timeout=30, what="both deliveries finished") == [
        (7999, "delivered", 1, None, None),
        (8000, "dead", 1, None,
         "event body of 8000 bytes exceeds the NOTIFY payload limit of 7999 bytes")]
    assert lis.quiet_for(0.5)
    assert [len(n.payload) for n in lis.got] == [7999]
    assert cluster.scalar("SELECT count(*) FROM callback.callback_dead_letters WHERE endpoint = %s",
                          (name,)) == 1


def test_rate_limit_applies(cluster, notify_ep):
    name, etype, channel, eid, lis = notify_ep(rate_limit=5, rate_burst=1)
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 6) g", (etype + ".x",))
    t0 = time.monotonic()
    assert lis.wait_for(6, timeout=60)
    took = time.monotonic() - t0
    record_figure("notify: 6 events at rate_limit 5/s, burst 1: %.2f s" % took)
    # a token every 200 ms after the first: at least 1 s for the other five
    assert took >= 0.9, "rate limit not applied: 6 notifications in %.2f s" % took
    assert [json.loads(n.payload)["data"]["i"] for n in lis.got] == list(range(1, 7))


def test_batch_options_do_not_apply(cluster, notify_ep):
    # a notification carries one event: batch_size and batch_window are ignored
    name, etype, channel, eid, lis = notify_ep(batch_size=10, batch_window=30)
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 3) g", (etype + ".x",))
    assert lis.wait_for(3, timeout=20), "held or batched: %d of 3" % len(lis.got)
    assert [json.loads(n.payload)["data"]["i"] for n in lis.got] == [1, 2, 3]


BAD_CHANNELS = [
    ("notify:", "empty"),
    ("notify:Orders", "uppercase"),
    ("notify:1orders", "starts with a digit"),
    ("notify:or-ders", "'-'"),
    ("notify://orders", "slashes"),
    ("notify:or ders", "space"),
    ("notify:" + "a" * 64, "64 bytes"),
]


@pytest.mark.parametrize("url,why", BAD_CHANNELS, ids=[w for _, w in BAD_CHANNELS])
def test_bad_channel_refused(cluster, url, why):
    before = cluster.scalar("SELECT count(*) FROM callback.callback_endpoints")
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute("SELECT callback.create_endpoint('tn_bad', %s)", (url,))
    e = ei.value
    assert e.pgcode == "22023", (why, e.pgcode, e.pgerror)
    assert e.diag.message_hint and "notify:" in e.diag.message_hint, e.pgerror
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints") == before


def test_good_channels_accepted(cluster, endpoint_factory):
    for i, url in enumerate(["notify:a", "notify:_x$1", "notify:" + "a" * 63, "NOTIFY:orders"]):
        endpoint_factory("tn_good%d" % i, url)
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints "
                          "WHERE name LIKE 'tn_good%%'") == 4
    # and an HTTP endpoint may become a notify: one
    cluster.execute("SELECT callback.alter_endpoint('tn_good0', url => 'notify:other')")
    assert cluster.scalar("SELECT url FROM callback.callback_endpoints_redacted "
                          "WHERE name = 'tn_good0'") == "notify:other"
