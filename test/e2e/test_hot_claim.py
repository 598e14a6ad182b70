"""End-to-end: a claim's new row version is heap-only (HOT): it writes no
index entry (sql/upgrade-1.1/98-queue-storage.sql).

No index of callback_queue names a column the claim changes (status,
claimed_by, lease_expires_at), and the queue leaves half of each page for
the claim's version (fillfactor 50).  A delivery's answer is held by the
receiver, and while it is in flight the claimed version is read off its
page with pageinspect: it must carry HEAP_ONLY_TUPLE.  The write-back that
ends the delivery sets finished_at, which the indexes' predicates name: its
version is not heap-only, and the finished row leaves callback_queue_due.

Each kind of claim that changes only those columns is checked: the C claim
(queue_claim.c) and the ordered endpoints' statement (queue.c).  A batch
claim writes batch_id, a key of callback_queue_batch, the first time a
row goes out: it is not heap-only, by design.
"""

import re

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
