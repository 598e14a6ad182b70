"""End-to-end: the batch claim in C (src/batch_claim.c) forms the batches
the SQL statement it replaced formed.

The statement below is batch.c's claim as it was before the port, kept here
as the specification.  Each cycle runs it first on the queue as it stands,
in a transaction rolled back (its batch ids are random: batches sent before
are compared by id, new ones by their members), then lets
process_callbacks() claim with the C claim and send; the receiver must see
exactly those batches.  The queue is built by hand for what the grouping
must get right: new rows of mixed attempts cut into chunks per attempt
count, a batch sent before whose first member is due early and whose rest
the limit cuts off (one of them not due, one held by another session's
lock), a batch sent before that is due late, and two batches per claim.
No worker runs for the database: process_callbacks() is the only claimer.
"""

import hashlib
import uuid

import pytest

from test_batches import queue_rows

NO_WORKER_DB = "pgcb_batch_claim_no_worker"
CLUSTER_CONF = {"callback.database_name": NO_WORKER_DB}

SIZE = 4       # the endpoint's batch_size
N = 2          # batches per claim: process_callbacks(N) asks for N requests

# batch.c's claim_sql before the port ($1 ids, $2 batches wanted, $3 sizes,
# $4 lease in ms, $5 claimed_by)
SQL_CLAIM = """
WITH w AS (
  SELECT * FROM ROWS FROM (pg_catalog.unnest(%(ids)s::int[]), pg_catalog.unnest(%(n)s::int[]),
                           pg_catalog.unnest(%(sizes)s::int[])) AS w(endpoint_id, n, size)),
d AS MATERIALIZED (
  SELECT l.id, l.endpoint_id, l.batch_id, l.attempts, l.next_attempt_at, w.n, w.size
    FROM w CROSS JOIN LATERAL (
      SELECT q.id, q.endpoint_id, q.batch_id, q.attempts, q.next_attempt_at
        FROM callback.callback_queue q
       WHERE q.endpoint_id = w.endpoint_id AND q.status = 'pending'
         AND q.next_attempt_at <= pg_catalog.now()
       ORDER BY q.next_attempt_at
       LIMIT w.n * w.size FOR UPDATE SKIP LOCKED) l),
g AS (
  SELECT d.id, d.endpoint_id, d.batch_id, d.next_attempt_at, d.n,
         CASE WHEN d.batch_id IS NULL THEN d.attempts END AS na,
         CASE WHEN d.batch_id IS NULL THEN
           (pg_catalog.row_number() OVER (PARTITION BY d.endpoint_id, d.batch_id IS NULL, d.attempts
                                          ORDER BY d.next_attempt_at, d.id) - 1) / d.size END AS chunk
    FROM d),
k AS (
  SELECT g.endpoint_id, g.batch_id, g.na, g.chunk, pg_catalog.max(g.n) AS n,
         pg_catalog.row_number() OVER (PARTITION BY g.endpoint_id
                                       ORDER BY pg_catalog.min(g.next_attempt_at),
                                                pg_catalog.min(g.id)) AS rank
    FROM g GROUP BY g.endpoint_id, g.batch_id, g.na, g.chunk),
kept AS MATERIALIZED (
  SELECT k.endpoint_id, k.batch_id, k.na, k.chunk,
         coalesce(k.batch_id, pg_catalog.gen_random_uuid()) AS new_id
    FROM k WHERE k.rank <= k.n),
x AS MATERIALIZED (
  SELECT q.id, q.batch_id FROM callback.callback_queue q
   WHERE q.batch_id = ANY (ARRAY(SELECT kept.batch_id FROM kept WHERE kept.batch_id IS NOT NULL))
     AND q.status = 'pending'
     AND NOT (q.id = ANY (ARRAY(SELECT d.id FROM d)))
     FOR UPDATE SKIP LOCKED),
m AS MATERIALIZED (
  SELECT g.id, kept.new_id FROM g JOIN kept
      ON g.endpoint_id = kept.endpoint_id
     AND (g.batch_id = kept.batch_id
          OR (g.batch_id IS NULL AND kept.batch_id IS NULL
              AND g.na = kept.na AND g.chunk = kept.chunk))
  UNION ALL SELECT x.id, x.batch_id FROM x)
UPDATE callback.callback_queue q
   SET status = 'sending', claimed_by = %(by)s, batch_id = c.new_id,
       lease_expires_at = pg_catalog.now() + (%(lease)s * interval '1 millisecond')
  FROM ROWS FROM (pg_catalog.unnest(ARRAY(SELECT m.id FROM m ORDER BY m.id)),
                  pg_catalog.unnest(ARRAY(SELECT m.new_id FROM m ORDER BY m.id))) AS c(id, new_id)
 WHERE q.id = c.id
RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.body, q.batch_id, q.ctid
"""


def sql_batches(cluster, eid):
    """What the SQL claim would claim now: {(batch id sent before, or None
    for a new batch, frozenset of queue ids)}; nothing is kept."""
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(SQL_CLAIM, {"ids": [eid], "n": [N], "sizes": [SIZE], "lease": 60000.0,
                                    "by": 1})
            claimed = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    before = old_batches(cluster, eid)
    groups = {}
    for row in claimed:
        groups.setdefault(row[5], set()).add(row[0])
    return {(b if b in before else None, frozenset(ids)) for b, ids in groups.items()}


def old_batches(cluster, eid):
    return {r[0] for r in cluster.query(
        "SELECT DISTINCT batch_id::text FROM callback.callback_queue "
        " WHERE endpoint_id = %s AND batch_id IS NOT NULL", (eid,))}


def sent_batches(cluster, eid, recs, before):
    """The batches the receiver got, as sql_batches gives them; each one's
    webhook-id is the one its batch id and members make (batch.c)."""
    rows = queue_rows(cluster, eid)
    by_msg = {m: i for i, (m, _) in rows.items()}
    out = set()
    for r in recs:
        ids = [by_msg[m] for m in r.headers["webhook-event-ids"].split(",")]
        assert ids == sorted(ids), "a batch's members out of id order: %r" % ids
        [(bid,)] = cluster.query("SELECT DISTINCT batch_id::text FROM callback.callback_queue "
                                 " WHERE id = ANY (%s)", (ids,))
        h = hashlib.sha256(uuid.UUID(bid).bytes)
        for i in ids:
            h.update(uuid.UUID(hex=rows[i][0][4:]).bytes)
        assert r.headers["webhook-id"] == "msg_" + h.hexdigest()[:32]
        out.add((bid if bid in before else None, frozenset(ids)))
    return out


def build_queue(cluster, eid):
    """20 deliveries: e[1..20] by id, arranged as the module's comment says."""
    cluster.execute("SELECT callback.enqueue('bcl.e', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 20) g")
    e = [None] + [r[0] for r in cluster.query(
        "SELECT id FROM callback.callback_queue WHERE endpoint_id = %s ORDER BY id", (eid,))]
    assert len(e) == 21
    b1, b2 = str(uuid.uuid4()), str(uuid.uuid4())

    def put(i, seconds, attempts=0, batch=None, due=True):
        at = ("now() - interval '1 hour' + %s * interval '1 second'" if due
              else "now() + interval '1 hour' + %s * interval '1 second'")
        cluster.execute("UPDATE callback.callback_queue SET next_attempt_at = " + at +
                        ", attempts = %s, batch_id = %s WHERE id = %s",
                        (seconds, attempts, batch, e[i]))
    # new rows, attempts mixed
    for i, att in zip(range(1, 7), (0, 1, 0, 1, 0, 0)):
        put(i, i, att)
    # a batch sent before: its first member due first, the rest cut off by
    # the limit, e11 not due, e10 held by another session
    put(7, 0.5, 1, b1)
    for i in (8, 9, 10):
        put(i, 30, 1, b1)
    put(11, 0, 1, b1, due=False)
    # another batch sent before, due after the new rows
    put(12, 20, 1, b2)
    put(13, 20, 1, b2)
    for i in range(14, 21):
        put(i, 10 + (i - 14), 0)
    return e, b1, b2


@pytest.fixture
def holder(cluster):
    conn = cluster.connect(autocommit=False)
    yield conn
    conn.rollback()
    conn.close()


def test_c_claim_forms_the_sql_claims_batches(request, cluster, receiver, endpoint_factory,
                                              holder):
    assert cluster.worker_pid() is None
    eid = endpoint_factory("bcl_groups", receiver.url("/bcl"), event_types="{bcl.*}",
                           batch_size=SIZE, failure_threshold=100)
    e, b1, b2 = build_queue(cluster, eid)
    with holder.cursor() as cur:
        cur.execute("SELECT 1 FROM callback.callback_queue WHERE id = %s FOR UPDATE", (e[10],))

    # the cycles the arrangement makes (checked against the SQL claim below)
    planned = [
        {(b1, frozenset(e[i] for i in (7, 8, 9, 11))), (None, frozenset(e[i] for i in (1, 3, 5, 6)))},
        {(None, frozenset(e[i] for i in (2, 4))), (None, frozenset(e[i] for i in (14, 15, 16, 17)))},
        {(None, frozenset(e[i] for i in (18, 19, 20))), (b2, frozenset(e[i] for i in (12, 13)))},
    ]
    for cycle, plan in enumerate(planned, 1):
        expected = sql_batches(cluster, eid)
        assert expected == plan, "cycle %d: the SQL claim itself formed %r" % (cycle, expected)
        before = old_batches(cluster, eid)
        seen = receiver.count("/bcl")
        attempted = cluster.scalar("SELECT callback.process_callbacks(%s)", (N,))
        recs = receiver.requests("/bcl")[seen:]
        got = sent_batches(cluster, eid, recs, before)
        assert got == expected, "cycle %d: the C claim sent %r, the SQL claim forms %r" % (
            cycle, sorted(map(sorted_pair, got)), sorted(map(sorted_pair, expected)))
        assert attempted == sum(len(m) for _, m in expected)

    # what neither claimed is still pending, in its batch: e10 (held)
    assert cluster.query("SELECT id, status::text, batch_id::text FROM callback.callback_queue "
                         " WHERE endpoint_id = %s AND status <> 'delivered'", (eid,)) \
        == [(e[10], "pending", b1)]
    holder.rollback()
    # released, it goes alone in its batch (short: another webhook-id)
    seen = receiver.count("/bcl")
    assert cluster.scalar("SELECT callback.process_callbacks(%s)", (N,)) == 1
    [rec] = receiver.requests("/bcl")[seen:]
    assert sent_batches(cluster, eid, [rec], {b1}) == {(b1, frozenset([e[10]]))}


def sorted_pair(p):
    return (p[0] or "", sorted(p[1]))


def shared_batch(cluster, receiver, endpoint_factory, tag):
    """Two batch endpoints (bcl_<tag>_a/b on /<tag>a, /<tag>b), two due
    deliveries each, all four in one batch sent before: (ea, eb, batch id)."""
    ea = endpoint_factory("bcl_%s_a" % tag, receiver.url("/%sa" % tag),
                          event_types="{b%s.a}" % tag, batch_size=3, failure_threshold=100)
    eb = endpoint_factory("bcl_%s_b" % tag, receiver.url("/%sb" % tag),
                          event_types="{b%s.b}" % tag, batch_size=3, failure_threshold=100)
    cluster.execute("SELECT callback.enqueue(t, jsonb_build_object('i', g)) "
                    "  FROM unnest(ARRAY[%s, %s]) t, generate_series(1, 2) g",
                    ("b%s.a" % tag, "b%s.b" % tag))
    bid = str(uuid.uuid4())
    cluster.execute("UPDATE callback.callback_queue SET batch_id = %s, attempts = 1, "
                    "       next_attempt_at = now() - interval '1 minute' "
                    " WHERE endpoint_id IN (%s, %s)", (bid, ea, eb))
    return ea, eb, bid


def test_batch_shared_by_two_endpoints(cluster, receiver, endpoint_factory):
    """Review rev23c: a batch id on rows of two endpoints (an operator moved
    part of a batch with an UPDATE of endpoint_id).  The C claim kept the
    batch once per endpoint and took its rest (x) twice: 'tuple already
    updated by self' in every claim, the worker restarting forever and no
    endpoint of the database served.  x also takes the other endpoint's
    rows into the batch, so they go to this endpoint's URL (the SQL claim
    did that too).  Each row must be claimed once and only to its own
    endpoint."""
    assert cluster.worker_pid() is None
    ea, eb, _ = shared_batch(cluster, receiver, endpoint_factory, "sh")
    # each endpoint's later row not due: the rest of the batch the claim takes through x
    cluster.execute("UPDATE callback.callback_queue SET next_attempt_at = now() + interval '1 hour' "
                    " WHERE id IN (SELECT max(id) FROM callback.callback_queue "
                    "               WHERE endpoint_id IN (%s, %s) GROUP BY endpoint_id)", (ea, eb))
    cluster.scalar("SELECT callback.process_callbacks(1000)")
    for eid, path in ((ea, "/sha"), (eb, "/shb")):
        mine = {m for m, _ in queue_rows(cluster, eid).values()}
        for r in receiver.requests(path):
            got = set(r.headers["webhook-event-ids"].split(","))
            assert got <= mine, "%s got another endpoint's deliveries: %r" % (path, got - mine)


def delivered_ids(receiver, path):
    """The event ids of each request the receiver saw on path (a plain
    request has no webhook-event-ids: its webhook-id is the event's)."""
    return [(r.headers.get("webhook-event-ids") or r.headers["webhook-id"]).split(",")
            for r in receiver.requests(path)]


def process_until_done(conn, eids, what):
    """process_callbacks() on conn until no delivery of eids is left
    pending or sending (bounded: each call sends what is due)."""
    with conn.cursor() as cur:
        for _ in range(50):
            cur.execute("SELECT callback.process_callbacks(100)")
            cur.execute("SELECT count(*) FROM callback.callback_queue "
                        " WHERE endpoint_id = ANY(%s) AND status IN ('pending', 'sending')",
                        (list(eids),))
            if cur.fetchone()[0] == 0:
                return
    raise AssertionError("%s: deliveries still pending after 50 cycles" % what)


def test_batch_index_missing(cluster, receiver, endpoint_factory):
    """Review rev23c F3: without the callback_queue_batch index (dropped,
    or left invalid by a failed CREATE INDEX CONCURRENTLY) every batch
    claim failed, so the worker restarted forever and plain endpoints of
    the database stalled too.  The index is needed only to complete a
    batch sent before: a claim with none needs no index and warns of
    nothing; one with such a batch finds its rest by a sequential scan and
    warns, with a HINT that gives the CREATE INDEX."""
    assert cluster.worker_pid() is None
    plain = endpoint_factory("bcl_ix_plain", receiver.url("/ixp"), event_types="{bix.p}",
                             failure_threshold=100)
    batch = endpoint_factory("bcl_ix_batch", receiver.url("/ixb"), event_types="{bix.b}",
                             batch_size=3, failure_threshold=100)
    conn = cluster.connect()            # a fresh backend: its warning not yet given
    cluster.execute("DROP INDEX callback.callback_queue_batch")
    try:
        # new batches only: no index needed, no warning
        cluster.execute("SELECT callback.enqueue(t, jsonb_build_object('i', g)) "
                        "  FROM unnest(ARRAY['bix.p', 'bix.b']) t, generate_series(1, 2) g")
        process_until_done(conn, (plain, batch), "new batches")
        assert [n for n in conn.notices if "callback_queue_batch" in n] == []
        assert sum(map(len, delivered_ids(receiver, "/ixp"))) == 2
        assert sum(map(len, delivered_ids(receiver, "/ixb"))) == 2

        # a batch sent before, its second member not due: x must find it without the index
        cluster.execute("SELECT callback.enqueue(t, jsonb_build_object('i', g)) "
                        "  FROM unnest(ARRAY['bix.p', 'bix.b']) t, generate_series(3, 4) g")
        bid = str(uuid.uuid4())
        cluster.execute("UPDATE callback.callback_queue SET batch_id = %s, attempts = 1 "
                        " WHERE endpoint_id = %s AND status = 'pending'", (bid, batch))
        cluster.execute("UPDATE callback.callback_queue SET next_attempt_at = now() + interval '1 hour' "
                        " WHERE id = (SELECT max(id) FROM callback.callback_queue "
                        "              WHERE endpoint_id = %s AND status = 'pending')", (batch,))
        seen = receiver.count("/ixb")
        process_until_done(conn, (plain, batch), "a batch sent before")
        assert sum(map(len, delivered_ids(receiver, "/ixp"))) == 4
        rows = queue_rows(cluster, batch)
        mine = {m for m, _ in rows.values()}
        members = {rows[i][0] for (i,) in cluster.query(
            "SELECT id FROM callback.callback_queue WHERE batch_id = %s", (bid,))}
        assert len(members) == 2
        assert [set(r) for r in delivered_ids(receiver, "/ixb")[seen:]] == [members]
        assert set().union(*map(set, delivered_ids(receiver, "/ixb"))) == mine
        warned = [n for n in conn.notices if "callback_queue_batch" in n]
        assert len(warned) == 1, conn.notices
        assert "sequential scan" in warned[0]
        assert ("CREATE INDEX callback_queue_batch ON callback.callback_queue (batch_id) "
                "WHERE batch_id IS NOT NULL AND finished_at IS NULL") in warned[0], warned[0]
    finally:
        conn.close()
        cluster.execute("CREATE INDEX IF NOT EXISTS callback_queue_batch "
                        "    ON callback.callback_queue (batch_id) "
                        " WHERE batch_id IS NOT NULL AND finished_at IS NULL")


def test_trigger_nulls_batch_id(cluster, receiver, endpoint_factory):
    """Review rev23c F4: a BEFORE UPDATE trigger that writes batch_id NULL
    on the claim.  NULL was read as an all-zero batch id, so every such row
    of the claim went in one request: the rows of two endpoints to the
    first one's URL.  Each row written with no batch id goes alone, to its
    own endpoint, and none is lost."""
    assert cluster.worker_pid() is None
    ea = endpoint_factory("bcl_nl_a", receiver.url("/nla"), event_types="{bnl.a}",
                          batch_size=2, failure_threshold=100)
    eb = endpoint_factory("bcl_nl_b", receiver.url("/nlb"), event_types="{bnl.b}",
                          batch_size=2, failure_threshold=100)
    cluster.execute("""
        CREATE OR REPLACE FUNCTION public.bcl_null_batch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.batch_id := NULL; RETURN NEW; END $$""")
    cluster.execute("""
        CREATE TRIGGER bcl_null_batch BEFORE UPDATE ON callback.callback_queue
           FOR EACH ROW WHEN (NEW.status = 'sending' AND NEW.endpoint_id IN (%d, %d))
           EXECUTE FUNCTION public.bcl_null_batch()""" % (ea, eb))
    conn = cluster.connect()
    try:
        cluster.execute("SELECT callback.enqueue(t, jsonb_build_object('i', g)) "
                        "  FROM unnest(ARRAY['bnl.a', 'bnl.b']) t, generate_series(1, 4) g")
        process_until_done(conn, (ea, eb), "rows written with no batch id")
    finally:
        conn.close()
        cluster.execute("DROP TRIGGER IF EXISTS bcl_null_batch ON callback.callback_queue")
    for eid, path in ((ea, "/nla"), (eb, "/nlb")):
        mine = {m for m, _ in queue_rows(cluster, eid).values()}
        got = delivered_ids(receiver, path)
        assert all(len(r) == 1 for r in got), "%s: rows with no batch id sent together: %r" % (
            path, got)
        assert sorted(sum(got, [])) == sorted(mine), "%s got %r, its own are %r" % (path, got, mine)
    assert cluster.query("SELECT DISTINCT status::text FROM callback.callback_queue "
                         " WHERE endpoint_id IN (%s, %s)", (ea, eb)) == [("delivered",)]


def test_batch_rest_of_its_own_endpoint_only(cluster, receiver, endpoint_factory):
    """Review rev23c F2, x's side: completing a batch sent before takes the
    rows of the batch's own endpoint only.  A row of the same batch id moved
    to another endpoint, not due there, is not this batch: it stays pending
    and is not sent (it took it, sent to the other URL, before)."""
    assert cluster.worker_pid() is None
    ea, eb, _ = shared_batch(cluster, receiver, endpoint_factory, "ow")
    # eb's rows not due: only ea's claim sees batch bid
    cluster.execute("UPDATE callback.callback_queue SET next_attempt_at = now() + interval '1 hour' "
                    " WHERE endpoint_id = %s", (eb,))
    cluster.scalar("SELECT callback.process_callbacks(1000)")
    mine = {m for m, _ in queue_rows(cluster, ea).values()}
    assert [set(r) for r in delivered_ids(receiver, "/owa")] == [mine]
    assert delivered_ids(receiver, "/owb") == []
    assert cluster.query("SELECT status::text, count(*) FROM callback.callback_queue "
                         " WHERE endpoint_id = %s GROUP BY 1", (eb,)) == [("pending", 2)]
