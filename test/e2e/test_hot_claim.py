"""End-to-end: a claim's new row version is heap-only (HOT): it writes no
index entry (sql/upgrade-1.1/98-queue-storage.sql).

No index of callback_queue names a column the claim changes (status,
claimed_by, lease_expires_at), and the queue leaves half of each page for
the claim's version (fillfactor 50).  A delivery's answer is held by the
receiver, and while it is in flight the claimed version is read off its
page with pageinspect: it must carry HEAP_ONLY_TUPLE.  The write-back that
ends the delivery sets finished_at, which the indexes' predicates name: its
version is not heap-only.

Each kind of claim that changes only those columns is checked: the C claim
(queue_claim.c) and the ordered endpoints' statement (queue.c).  A batch
claim writes batch_id, a key of callback_queue_batch, the first time a
row goes out: it is not heap-only, by design.
"""

import re
import time

import psycopg2
import psycopg2.errors
import pytest

HOLD_S = 8.0          # the answer is held this long: the row stays in flight
HEAP_ONLY_TUPLE = 0x8000  # t_infomask2 (access/htup_details.h)


def _label(request, suffix):
    return re.sub(r"[^A-Za-z0-9]", "", "hot%s%s" % (request.node.name[-12:], suffix))[:40]


def _version(cluster, did, status):
    """(ctid, t_infomask2) of the live version of queue row did, which must
    have the given status, read off its page."""
    rows = cluster.query("SELECT ctid::text FROM callback.callback_queue WHERE id = %s AND status = %s",
                         (did, status))
    assert len(rows) == 1, "row %s is %s: %r" % (did, status, rows)
    block, offset = map(int, rows[0][0].strip("()").split(","))
    [(mask,)] = cluster.query(
        "SELECT t_infomask2 FROM heap_page_items(get_raw_page('callback.callback_queue', %s)) "
        " WHERE lp = %s", (block, offset))
    return rows[0][0], mask


@pytest.fixture(scope="module")
def pageinspect(cluster):
    cluster.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    yield
    cluster.execute("DROP EXTENSION IF EXISTS pageinspect")


def test_queue_leaves_room_for_the_claim(cluster):
    [(opts,)] = cluster.query("SELECT reloptions FROM pg_class "
                              " WHERE oid = 'callback.callback_queue'::regclass")
    assert opts == ["fillfactor=50"]
    # no index names a column the claim writes
    rows = cluster.query(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        " WHERE i.indrelid = 'callback.callback_queue'::regclass")
    assert rows, "the queue has indexes"
    for name, definition in rows:
        for column in ("status", "claimed_by", "lease_expires_at"):
            assert column not in definition, (name, definition)


@pytest.mark.parametrize("options", [{}, {"ordered": True}], ids=["single", "ordered"])
def test_claimed_version_is_heap_only(request, cluster, receiver, endpoint_factory, pageinspect,
                                      options):
    name = _label(request, "ep")
    receiver.set_delay("/" + name, HOLD_S)
    ep = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"],
                          timeout=60, **options)
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    key = ", key => 'k'" if options.get("ordered") else ""
    event_id = cluster.scalar("SELECT callback.enqueue(%%s, '{\"x\": 1}'::jsonb%s)" % key,
                              (name + ".ev",))
    did = cluster.scalar("SELECT id FROM callback.callback_queue WHERE event_id = %s", (event_id,))
    queued_at, mask = _version(cluster, did, "pending")
    assert not mask & HEAP_ONLY_TUPLE, "a new row is indexed"
    cluster.execute("SELECT callback.resume_endpoint(%s)", (name,))
    assert receiver.wait_for(1, "/" + name, timeout=60), "the delivery was sent"

    claimed_at, mask = _version(cluster, did, "sending")
    assert claimed_at != queued_at, "the claim wrote a new version"
    assert mask & HEAP_ONLY_TUPLE, "the claim's version %s is heap-only" % claimed_at
    # the claimed row is still found through callback_queue_due, for the sweeps
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")
            cur.execute("SET LOCAL enable_bitmapscan = off")
            open_rows = ("SELECT count(*) FROM callback.callback_queue "
                         " WHERE endpoint_id = %s AND finished_at IS NULL AND status = 'sending'")
            cur.execute("EXPLAIN (COSTS OFF) " + open_rows, (ep,))
            plan = "\n".join(r[0] for r in cur.fetchall())
            cur.execute(open_rows, (ep,))
            [(n,)] = cur.fetchall()
    finally:
        conn.close()
    assert "callback_queue_due" in plan, plan
    assert n == 1

    cluster.wait_until(lambda: cluster.scalar(
        "SELECT status = 'delivered' FROM callback.callback_queue WHERE id = %s", (did,)),
        timeout=HOLD_S + 60, what="the delivery written back")
    _, mask = _version(cluster, did, "delivered")
    assert not mask & HEAP_ONLY_TUPLE, "the write-back's version is indexed (finished_at)"


def test_batch_rows_released_at_a_restart_are_due_at_once(request, cluster, receiver,
                                                           endpoint_factory):
    """A batch claim parks its rows at the lease's end (next_attempt_at), out
    of the way of the scans for due rows.  A worker that restarts returns its
    predecessor's claims at once (README, Delivery semantics): the release
    must make them due now, not at that lease's end (review of this change:
    they were sent again only when the lease ran out)."""
    name = _label(request, "bt")
    receiver.set_delay("/" + name, 3 * HOLD_S)   # the first request stays in flight
    ep = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"],
                          timeout=10, batch_size=2)
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    for i in range(2):
        cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', %s))", (name + ".ev", i))
    cluster.execute("SELECT callback.resume_endpoint(%s)", (name,))
    assert receiver.wait_for(1, "/" + name, timeout=60), "the batch was sent"
    rows = cluster.query("SELECT status::text, next_attempt_at > lease_expires_at - interval '1 second' "
                         "  FROM callback.callback_queue WHERE endpoint_id = %s", (ep,))
    assert rows == [("sending", True)] * 2, "the batch's rows are parked at their lease's end"

    old = cluster.worker_pid()
    receiver.set_delay("/" + name, 0)
    t0 = time.monotonic()
    cluster.execute("SELECT pg_terminate_backend(%s)", (old,))
    # the lease is callback.lease (60 s): well before its end
    assert receiver.wait_for(2, "/" + name, timeout=30), \
        "the batch was sent again after the restart: %r" % cluster.query(
            "SELECT status, next_attempt_at - now() FROM callback.callback_queue WHERE endpoint_id = %s", (ep,))
    first, again = receiver.requests("/" + name)
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert time.monotonic() - t0 < 30
    assert cluster.worker_pid() != old


def test_status_and_finished_at_agree(cluster, endpoint_factory, receiver, request):
    """The indexes tell undelivered rows by finished_at IS NULL: an UPDATE
    that makes a row pending and leaves its finished_at, or finished and
    leaves none, is refused rather than leaving a row no claim finds."""
    name = _label(request, "ck")
    endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"])
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    event_id = cluster.scalar("SELECT callback.enqueue(%s, '{}'::jsonb)", (name + ".ev",))
    did = cluster.scalar("SELECT id FROM callback.callback_queue WHERE event_id = %s", (event_id,))
    for change in ("status = 'dead'", "finished_at = now()",
                   "status = 'delivered', finished_at = NULL"):
        with pytest.raises(psycopg2.errors.CheckViolation) as e:
            cluster.execute("UPDATE callback.callback_queue SET " + change + " WHERE id = %s", (did,))
        assert "callback_queue_finished_at_status" in str(e.value)
    cluster.execute("UPDATE callback.callback_queue SET status = 'dead', finished_at = now() "
                    " WHERE id = %s", (did,))
    cluster.execute("SELECT callback.redrive(ARRAY[%s]::bigint[])", (did,))
    assert cluster.query("SELECT status::text, finished_at IS NULL FROM callback.callback_queue "
                         " WHERE id = %s", (did,)) == [("pending", True)]
