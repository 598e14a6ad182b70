"""End-to-end: committed row changes on a business table arrive as signed
HTTP POSTs at a real receiver; rolled-back changes never do.

Real parts only: a throwaway PostgreSQL 15 cluster with pg_callback
preloaded, the background worker, libcurl, and test/receiver.py on
loopback.  Every wait is bounded.
"""

import base64
import hashlib
import hmac
import json
import re
import time

import pytest

from conftest import record_figure

ORDERS_DDL = """
DROP TABLE IF EXISTS public.orders;
CREATE TABLE public.orders (id int PRIMARY KEY, item text, qty int, note text);
CREATE TRIGGER orders_callback
    AFTER INSERT OR UPDATE OR DELETE ON public.orders
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
"""

# rows with NULLs, quotes, backslashes and non-ASCII, to exercise JSON escaping
ROWS_SQL = """
INSERT INTO public.orders (id, item, qty, note)
SELECT g,
       'item "' || g || E'" \\\\ ü €',
       g %% 7,
       CASE WHEN g %% 5 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(%s, %s) g
"""


# ------------------------------------------------------------------ helpers

def _endpoint_name(request):
    return ("e2e_" + re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name))[:100]


@pytest.fixture
def orders(cluster):
    """A fresh orders table with the callback trigger."""
    cluster.execute(ORDERS_DDL)
    yield "orders"


@pytest.fixture
def endpoint(request, cluster, receiver, orders, endpoint_factory):
    """An endpoint receiving order.* at receiver.url('/orders'); returns
    (id, secret)."""
    eid = endpoint_factory(_endpoint_name(request), receiver.url("/orders"),
                           event_types="{order.*}")
    secret = cluster.scalar("SELECT secret FROM callback.callback_endpoints WHERE id = %s", (eid,))
    assert secret and secret.startswith("whsec_"), secret
    return eid, secret


def diagnostics(cluster, eid):
    """What the queue and the server log say, for assertion messages."""
    try:
        status = cluster.query(
            "SELECT status::text, count(*), max(attempts), max(last_status_code), "
            "       max(last_error) "
            "  FROM callback.callback_queue WHERE endpoint_id = %s GROUP BY 1 ORDER BY 1", (eid,))
    except Exception as e:  # the diagnostics must not hide the failure
        status = "query failed: %s" % e
    try:
        workers = cluster.query(
            "SELECT pid, backend_type, datname, state FROM pg_stat_activity "
            " WHERE backend_type LIKE 'pg_callback%'", dbname="postgres")
    except Exception as e:
        workers = "query failed: %s" % e
    return "\nqueue by status: %r\nworkers: %r\n--- server log (tail) ---\n%s" % (
        status, workers, cluster.log_tail(30))


def committed_rows(cluster):
    """{id: row as JSON object} of the committed orders table."""
    return {r[0]: json.loads(r[1]) for r in
            cluster.query("SELECT o.id, row_to_json(o)::text FROM public.orders o")}


def queue_rows(cluster, eid):
    return cluster.query(
        "SELECT id, event_id::text, event_type, body, status::text, last_status_code "
        "  FROM callback.callback_queue WHERE endpoint_id = %s ORDER BY id", (eid,))


def standard_webhooks_verify(secret, msg_id, timestamp, body, signature_header):
    """Standard Webhooks v1 verification, as any receiver library does it."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    signed = b"%s.%s.%s" % (msg_id.encode(), timestamp.encode(), body)
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for sig in signature_header.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def check_wire(rec, secret, now=None):
    """Headers every delivered request carries, and a valid signature."""
    now = now or time.time()
    h = rec.headers
    assert rec.method == "POST"
    assert h.get("content-type", "").split(";")[0].strip().lower() == "application/json", h
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert h.get(name), "missing %s header in %r" % (name, h)
    ts = h["webhook-timestamp"]
    assert ts.isdigit(), ts
    assert abs(int(ts) - now) < 3600, "webhook-timestamp %s is far from now" % ts
    assert standard_webhooks_verify(secret, h["webhook-id"], ts, rec.body,
                                    h["webhook-signature"]), \
        "bad signature %r for id %r" % (h["webhook-signature"], h["webhook-id"])


def wait_delivered(cluster, eid, n, timeout):
    """Bounded poll until n queue rows of the endpoint are delivered with 204."""
    def done():
        row = cluster.query(
            "SELECT count(*) FILTER (WHERE status = 'delivered' AND last_status_code = 204), "
            "       count(*) FROM callback.callback_queue WHERE endpoint_id = %s", (eid,))[0]
        return row if row[0] == n and row[1] == n else False
    try:
        cluster.wait_until(done, timeout=timeout, interval=0.1,
                           what="%d queue rows delivered with status code 204" % n)
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None


def insert_committed(cluster, first, last):
    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(ROWS_SQL, (first, last))
        t0 = time.monotonic()
        cur.execute("COMMIT")
        t1 = time.monotonic()
    finally:
        conn.close()
    return t0, t1


def check_insert_requests(cluster, eid, secret, reqs, expected_ids):
    """The requests are exactly the inserts of expected_ids, byte-equal to
    the queued bodies, signed, each delivered once."""
    rows = committed_rows(cluster)
    queued = queue_rows(cluster, eid)
    assert len(queued) == len(expected_ids), "queue rows %d != %d" % (len(queued), len(expected_ids))
    queued_bodies = {q[3].encode("utf-8") for q in queued}
    assert len(queued_bodies) == len(queued), "queued bodies are not distinct"
    assert {q[2] for q in queued} == {"order.insert"}

    bodies = [r.body for r in reqs]
    assert len(set(bodies)) == len(bodies), "a body arrived twice"
    ids = [r.headers.get("webhook-id") for r in reqs]
    assert len(set(ids)) == len(ids), "a webhook-id arrived twice"
    assert set(bodies) == queued_bodies, "received bodies differ from callback_queue.body"

    now = time.time()
    seen = set()
    for rec in reqs:
        check_wire(rec, secret, now)
        ev = rec.json()
        assert ev["type"] == "order.insert", ev
        assert "timestamp" in ev
        data = ev["data"]
        assert data["op"] == "INSERT"
        assert data["schema"] == "public"
        assert data["table"] == "orders"
        assert "old" in data and data["old"] is None, data
        new = data["new"]
        assert new == rows[new["id"]], "payload %r != committed row %r" % (new, rows[new["id"]])
        seen.add(new["id"])
    assert seen == set(expected_ids)


# ------------------------------------------------------------------ tests

def test_worker_running(cluster):
    pid = cluster.wait_until(cluster.worker_pid, timeout=30,
                             what="a 'pg_callback worker' in pg_stat_activity")
    assert pid > 0


def test_200_committed_inserts_arrive_once_each(cluster, receiver, endpoint):
    eid, secret = endpoint
    n = 200
    insert_committed(cluster, 1, n)
    assert receiver.wait_for(n, "/orders", timeout=30), \
        "only %d of %d requests arrived" % (receiver.count("/orders"), n) + diagnostics(cluster, eid)
    wait_delivered(cluster, eid, n, timeout=30)
    reqs = receiver.requests("/orders")
    assert len(reqs) == n, "%d requests for %d events" % (len(reqs), n)
    check_insert_requests(cluster, eid, secret, reqs, range(1, n + 1))

    # the same signatures verify with the SQL function
    for rec in reqs[:5]:
        h = rec.headers
        assert cluster.scalar(
            "SELECT callback.verify_signature(%s, %s, %s, %s, %s, '1 hour')",
            (secret, h["webhook-id"], int(h["webhook-timestamp"]), rec.body.decode("utf-8"),
             h["webhook-signature"])) is True

    # one successful attempt recorded per delivery
    def attempts():
        return cluster.scalar(
            "SELECT count(*) FROM callback.callback_attempts "
            " WHERE endpoint_id = %s AND outcome = 'delivered' AND status_code = 204",
            (eid,)) == n
    cluster.wait_until(attempts, timeout=30, what="%d delivered attempts with 204" % n)


def test_rolled_back_rows_never_arrive(cluster, receiver, endpoint):
    eid, secret = endpoint
    m = 50
    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(ROWS_SQL, (1001, 1000 + m))
        cur.execute("ROLLBACK")
        # a committed transaction whose savepoint was rolled back
        cur.execute("BEGIN")
        cur.execute("SAVEPOINT s")
        cur.execute(ROWS_SQL, (2001, 2000 + m))
        cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute("COMMIT")
    finally:
        conn.close()
    # a committed marker, later than everything above
    insert_committed(cluster, 9999, 9999)
    assert receiver.wait_for(1, "/orders", timeout=30), \
        "the committed marker did not arrive" + diagnostics(cluster, eid)
    wait_delivered(cluster, eid, 1, timeout=30)
    reqs = receiver.requests("/orders")
    got = [r.json()["data"]["new"]["id"] for r in reqs]
    assert got == [9999], "rolled-back rows were delivered: %r" % sorted(set(got) - {9999})
    check_wire(reqs[0], secret)
    assert [q[2] for q in queue_rows(cluster, eid)] == ["order.insert"]


def test_update_and_delete(cluster, receiver, endpoint):
    eid, secret = endpoint
    cluster.execute("INSERT INTO public.orders VALUES (1, 'widget', 2, NULL)")
    assert receiver.wait_for(1, "/orders", timeout=30), "insert did not arrive" + diagnostics(cluster, eid)
    cluster.execute("UPDATE public.orders SET qty = 5, note = 'rush' WHERE id = 1")
    cluster.execute("DELETE FROM public.orders WHERE id = 1")
    assert receiver.wait_for(3, "/orders", timeout=30), \
        "%d of 3 requests arrived" % receiver.count("/orders") + diagnostics(cluster, eid)
    wait_delivered(cluster, eid, 3, timeout=30)
    reqs = receiver.requests("/orders")
    assert len(reqs) == 3
    by_type = {}
    for rec in reqs:
        check_wire(rec, secret)
        ev = rec.json()
        by_type[ev["type"]] = ev
    assert set(by_type) == {"order.insert", "order.update", "order.delete"}

    before = {"id": 1, "item": "widget", "qty": 2, "note": None}
    after = {"id": 1, "item": "widget", "qty": 5, "note": "rush"}
    ins = by_type["order.insert"]["data"]
    assert ins["op"] == "INSERT" and ins["new"] == before and ins["old"] is None
    upd = by_type["order.update"]["data"]
    assert upd["op"] == "UPDATE"
    assert (upd["schema"], upd["table"]) == ("public", "orders")
    assert upd["new"] == after
    assert upd["old"] == before
    dele = by_type["order.delete"]["data"]
    assert dele["op"] == "DELETE"
    assert (dele["schema"], dele["table"]) == ("public", "orders")
    assert dele["old"] == after
    assert "new" in dele and dele["new"] is None
    assert {q[2] for q in queue_rows(cluster, eid)} == {"order.insert", "order.update", "order.delete"}


def test_10000_rows_in_one_transaction(cluster, receiver, endpoint):
    eid, secret = endpoint
    n = 10000
    t_commit, t_committed = insert_committed(cluster, 1, n)
    ok = receiver.wait_for(n, "/orders", timeout=60)
    assert ok, "only %d of %d requests arrived within 60 s" % (receiver.count("/orders"), n) \
        + diagnostics(cluster, eid)
    reqs = receiver.requests("/orders")
    first = min(r.monotonic for r in reqs)
    last = max(r.monotonic for r in reqs)
    total = last - t_commit
    record_figure("e2e 10k: %d POSTs, COMMIT -> last arrival %.3f s (%.0f/s), "
                  "COMMIT returned -> first arrival %.1f ms"
                  % (n, total, n / total if total > 0 else float("inf"),
                     (first - t_committed) * 1000))
    wait_delivered(cluster, eid, n, timeout=60)
    reqs = receiver.requests("/orders")
    assert len(reqs) == n, "%d requests for %d events" % (len(reqs), n)
    check_insert_requests(cluster, eid, secret, reqs, range(1, n + 1))
