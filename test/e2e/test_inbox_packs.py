"""End-to-end: packed inbox rows (issue 10, the statement path with
callback.inbox on).  The statement trigger packs a statement's events of
one endpoint, type and trace context (no ordering key) into callback_inbox
rows stored in about 1,900 bytes at most, more compressed with lz4
(src/inbox_pack.c); the worker's move unpacks each into one queue row per
event.

- 10,000 rows in one INSERT ... SELECT: far fewer inbox rows than events
  (below events / 5), sum(events) = 10,000, callback_health, callback_metrics
  and prometheus count 10,000 waiting; after the move 10,000 queue rows with
  distinct event ids, bodies equal (timestamp masked) to what the row trigger
  queues for the same rows, delivered to the real receiver once each;
- a savepoint rolled back, and a statement failing half-way in a savepoint,
  leave none of their events;
- wide rows (bodies near and past the bound) and an ordered endpoint beside
  an unordered one: every pack row stored inline below the TOAST threshold
  (its more compressed with lz4 or not at all), keyed events never packed,
  every event delivered once;
- bodies that compress (a pack's more in lz4, more events to a row than
  the bound holds raw) and bodies that do not, in one session: nothing is
  lost, at most one row goes out of line at the switch;
- fan-out to 3 endpoints: each packs, the same event ids at each;
- a corrupt pack: the move fails with an error naming the row, nothing is
  lost; repaired, it moves;
- pg_dump / pg_restore with packs waiting: the restored database delivers
  each event once.

Moves are held back where a test looks at the inbox by holding the movers'
lock (as test_inbox.py does).  Real parts only: throwaway clusters, the
worker, test/receiver.py on loopback.  Every wait is bounded.
"""

import contextlib
import re
import uuid

import psycopg2
import pytest

from faults_util import IdTracker, diagnostics, inbox_row_events, msg_id, queue_status
from test_dump_restore import dump, restore, source, target, target_db  # noqa: F401

CLUSTER_CONF = {"callback.inbox": True}
MOVER_LOCK = "LOCK TABLE callback.callback_inbox IN SHARE UPDATE EXCLUSIVE MODE"
# src/inbox_pack.h, and the heap's TOAST_TUPLE_THRESHOLD with 8 kB pages
PACK_MAX_ROW = 1900
TOAST_TUPLE_THRESHOLD = 2032

ROWS_SQL = """
INSERT INTO {t} (id, item, qty, note)
SELECT g, 'item "' || g || E'" \\\\ ü €', g %% 7,
       CASE WHEN g %% 5 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(%s, %s) g
"""


@pytest.fixture
def tracker(receiver):
    t = IdTracker(receiver)
    yield t
    t.close()


@contextlib.contextmanager
def moves_held(cluster):
    """While open, no worker or process_callbacks() moves anything."""
    conn = cluster.connect(autocommit=False)
    try:
        conn.cursor().execute(MOVER_LOCK)
        yield conn
    finally:
        conn.rollback()
        conn.close()


def make_table(cluster, name, event_type, row_trigger=False):
    """A table name whose INSERTs queue event_type.insert: the statement
    trigger, or the row trigger."""
    cluster.execute("DROP TABLE IF EXISTS %s" % name)
    cluster.execute("CREATE TABLE %s (id int PRIMARY KEY, item text, qty int, note text)" % name)
    if row_trigger:
        cluster.execute("CREATE TRIGGER cb AFTER INSERT ON %s FOR EACH ROW "
                        "EXECUTE FUNCTION callback.trigger(%%s)" % name, (event_type,))
    else:
        cluster.execute("CREATE TRIGGER cb AFTER INSERT ON %s REFERENCING NEW TABLE AS n "
                        "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger(%%s)" % name,
                        (event_type,))


def inbox_rows(cluster, eid, cur=None):
    sql = ("SELECT event_id::text, body, events, more, ordering_key FROM callback.callback_inbox "
           " WHERE endpoint_id = %s ORDER BY written_at, xact, seq")
    if cur is not None:
        cur.execute(sql, (eid,))
        return cur.fetchall()
    return cluster.query(sql, (eid,))


def inbox_events(cluster, eid, cur=None):
    """Every event waiting in the inbox for eid, in order: [(id, body)]."""
    out = []
    for event_id, body, events, more, _ in inbox_rows(cluster, eid, cur):
        out.extend(inbox_row_events(event_id, events, more, body))
    return out


def masked(body):
    return re.sub(r'"timestamp":"[^"]*"', '"timestamp":"<ts>"', body)


def queue_bodies(cluster, eid):
    return cluster.query("SELECT event_id::text, body FROM callback.callback_queue "
                         " WHERE endpoint_id = %s ORDER BY id", (eid,))


def wait_moved(cluster, n_events, eids, timeout=120):
    """The inbox empty of eids and n_events queue rows for each."""
    def done():
        left = cluster.scalar("SELECT count(*) FROM callback.callback_inbox "
                              " WHERE endpoint_id = ANY(%s)", (list(eids),))
        counts = [cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                                 " WHERE endpoint_id = %s", (e,)) for e in eids]
        return left == 0 and all(c == n_events for c in counts)
    cluster.wait_until(done, timeout=timeout, interval=0.2,
                       what="%d events of %r moved into the queue" % (n_events, eids))


def deliver_all(cluster, tracker, name, eid, expected_ids, timeout=180):
    """Resume name; every expected event arrives once at /name and the
    queue says delivered; the received bodies are the queued bodies."""
    cluster.execute("SELECT callback.resume_endpoint(%s)", (name,))
    expected = {msg_id(e) for e in expected_ids}
    missing = tracker.wait_ids("/" + name, expected, timeout)
    assert not missing, "%d of %d ids never arrived (e.g. %s)%s" % (
        len(missing), len(expected), sorted(missing)[:2], diagnostics(cluster, eid))
    n = len(expected)
    cluster.wait_until(lambda: queue_status(cluster, eid) == {"delivered": n}, timeout=60,
                       interval=0.2, what="%d deliveries delivered" % n)
    got, dups, missing, unexpected = tracker.accounting("/" + name, expected)
    assert (got, dups, missing, unexpected) == (n, 0, set(), set()), \
        (got, dups, len(missing), len(unexpected))


def paused_endpoint(cluster, endpoint_factory, receiver, name, types, **kw):
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=types, **kw)
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    return eid


def toasted_values(cluster):
    """Values of callback_inbox stored out of line, in its TOAST table."""
    toast = cluster.scalar("SELECT reltoastrelid::regclass::text FROM pg_class "
                           " WHERE oid = 'callback.callback_inbox'::regclass")
    return cluster.scalar("SELECT count(DISTINCT chunk_id) FROM %s" % toast)


def server_has_lz4(cluster):
    conn = cluster.connect()
    try:
        conn.cursor().execute("SET default_toast_compression = 'lz4'")
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


# ------------------------------------------------------------------ tests

def test_10000_rows_one_statement(cluster, receiver, endpoint_factory, tracker):
    name = "pk_big"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pkbig.*}")
    make_table(cluster, "pk_big_t", "pkbig")
    n = 10000
    with moves_held(cluster):
        cluster.execute(ROWS_SQL.format(t="pk_big_t"), (1, n))
        rows, events = cluster.query(
            "SELECT count(*), sum(events) FROM callback.callback_inbox WHERE endpoint_id = %s",
            (eid,))[0]
        assert events == n, "sum(events) %s, not %d" % (events, n)
        assert rows < n / 5, "%d inbox rows for %d events: not packed" % (rows, n)
        assert cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                              " WHERE endpoint_id = %s", (eid,)) == 0
        # the views count events, not rows
        assert cluster.scalar("SELECT backlog FROM callback.callback_health WHERE endpoint = %s",
                              (name,)) == n
        assert cluster.scalar("SELECT pending FROM callback.callback_metrics "
                              " WHERE endpoint = %s AND event_type = 'pkbig.insert'", (name,)) == n
        prom = cluster.scalar("SELECT callback.prometheus_metrics()")
        assert re.search(r'pg_callback_pending\{[^}]*endpoint="%s"[^}]*\} %d\b' % (name, n), prom), \
            [line for line in prom.splitlines() if name in line and "pending" in line]
        waiting = inbox_events(cluster, eid)
    assert len(waiting) == n and len({e for e, _ in waiting}) == n

    wait_moved(cluster, n, [eid])
    queued = queue_bodies(cluster, eid)
    assert len(queued) == n
    assert len({e for e, _ in queued}) == n, "event ids are not distinct"
    # each event moved as it waited: same id, same body, in order
    assert queued == waiting, "the queue's events differ from the packed ones"

    # the row trigger's bodies for the same rows (queued straight into the
    # queue in a transaction rolled back): equal but for the timestamp
    conn = cluster.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SET LOCAL callback.inbox = off")
        cur.execute("SELECT coalesce(max(id), 0) FROM callback.callback_queue")
        last = cur.fetchone()[0]
        cur.execute("DROP TRIGGER cb ON pk_big_t")
        cur.execute("CREATE TRIGGER cb AFTER INSERT ON pk_big_t FOR EACH ROW "
                    "EXECUTE FUNCTION callback.trigger('pkbig')")
        cur.execute("TRUNCATE pk_big_t")
        cur.execute(ROWS_SQL.format(t="pk_big_t"), (1, n))
        cur.execute("SELECT body FROM callback.callback_queue WHERE endpoint_id = %s AND id > %s",
                    (eid, last))
        row_bodies = sorted(masked(r[0]) for r in cur.fetchall())
    finally:
        conn.rollback()
        conn.close()
    assert len(row_bodies) == n
    assert sorted(masked(b) for _, b in queued) == row_bodies, \
        "packed bodies differ from the row trigger's"

    deliver_all(cluster, tracker, name, eid, [e for e, _ in queued])
    received = {r.headers["webhook-id"]: r.body for r in receiver.requests("/" + name)}
    assert received == {msg_id(e): b.encode("utf-8") for e, b in queued}, \
        "received bodies differ from the queued ones"


def test_a_statements_events_have_consecutive_ids(cluster, receiver, endpoint_factory, tracker):
    # A pack stores its first event's id only: the events a statement
    # trigger call writes into the inbox (on in this module's cluster) get
    # consecutive ids (the first random, each next one with its last 48
    # bits one up), version 4 UUIDs all.  Another statement starts from a
    # random id of its own; the row trigger's ids stay random.
    name = "pk_ids"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pkids.*}")
    make_table(cluster, "pk_ids_t", "pkids")
    make_table(cluster, "pk_ids_r", "pkids", row_trigger=True)
    with moves_held(cluster):
        cluster.execute(ROWS_SQL.format(t="pk_ids_t"), (1, 500))
        cluster.execute(ROWS_SQL.format(t="pk_ids_t"), (501, 1000))
        cluster.execute(ROWS_SQL.format(t="pk_ids_r"), (1, 3))
        assert cluster.scalar("SELECT count(*) FROM callback.callback_inbox WHERE endpoint_id = %s",
                              (eid,)) < 1000 / 10
        waiting = inbox_events(cluster, eid)
    ids = [uuid.UUID(e) for e, _ in waiting]
    assert len(ids) == 1003 and len(set(ids)) == 1003
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)

    def step(u, k):
        return uuid.UUID(int=(u.int >> 48 << 48) | (((u.int & (2 ** 48 - 1)) + k) % 2 ** 48))
    first, second, rows = ids[:500], ids[500:1000], ids[1000:]
    assert first == [step(first[0], k) for k in range(500)]
    assert second == [step(second[0], k) for k in range(500)]
    assert second[0].int >> 48 != first[0].int >> 48
    assert rows[1] != step(rows[0], 1) and rows[2] != step(rows[1], 1)
    wait_moved(cluster, 1003, [eid])
    assert queue_bodies(cluster, eid) == waiting
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])


def test_ids_stay_random_where_nothing_is_packed(cluster, receiver, endpoint_factory, tracker):
    # Review of bb520d7: consecutive ids only pay for packs, which only the
    # inbox makes.  With callback.inbox off (the default) the statement
    # trigger's events, and a row trigger's events fired while a statement
    # trigger runs, should keep random ids: consecutive ones tell a
    # receiver which events one statement made, and how many in between.
    name = "pk_rand"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pkrand.*}")
    make_table(cluster, "pk_rand_t", "pkrand")
    conn = cluster.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SET LOCAL callback.inbox = off")
        cur.execute(ROWS_SQL.format(t="pk_rand_t"), (1, 50))
        conn.commit()
    finally:
        conn.close()
    ids = [uuid.UUID(e) for e, _ in queue_bodies(cluster, eid)]
    assert len(ids) == 50 and len(set(ids)) == 50
    prefixes = {u.int >> 48 for u in ids}
    assert len(prefixes) == 50, "%d of 50 ids share their first 80 bits" % (50 - len(prefixes) + 1)


def test_ids_stay_random_where_the_inbox_is_missing(cluster):
    # Review of a8666db: callback.inbox on for the server, but a database
    # still at pg_callback 1.0 has no callback_inbox, and its events go into
    # callback_queue, unpacked.  pgcb_queue_batch_packs() asks only for the
    # setting (target_is_inbox), so the statement's ids come out consecutive
    # there, where nothing is packed (fails at a8666db: 1 prefix of 50).
    db = "pk_v10"
    cluster.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db, dbname="postgres")
    cluster.execute('CREATE DATABASE "%s"' % db, dbname="postgres")
    try:
        cluster.execute("CREATE EXTENSION pg_callback VERSION '1.0' CASCADE", dbname=db)
        cluster.execute("SELECT callback.create_endpoint('pk_v10', 'http://127.0.0.1:9/x', "
                        "'{pkv10.*}')", dbname=db)
        cluster.execute("SELECT callback.pause_endpoint('pk_v10')", dbname=db)
        cluster.execute("CREATE TABLE pk_v10_t (id int); "
                        "CREATE TRIGGER cb AFTER INSERT ON pk_v10_t REFERENCING NEW TABLE AS n "
                        "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('pkv10')", dbname=db)
        assert cluster.scalar("SHOW callback.inbox", dbname=db) == "on"
        cluster.execute("INSERT INTO pk_v10_t SELECT generate_series(1, 50)", dbname=db)
        ids = [uuid.UUID(str(r[0])) for r in
               cluster.query("SELECT event_id FROM callback.callback_queue", dbname=db)]
        assert len(ids) == 50 and len(set(ids)) == 50
        prefixes = {u.int >> 48 for u in ids}
        assert len(prefixes) == 50, "%d of 50 ids share their first 80 bits, unpacked" % (
            50 - len(prefixes) + 1)
    finally:
        cluster.close_connections()
        cluster.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db, dbname="postgres")


def test_savepoints_leave_none_of_their_events(cluster, receiver, endpoint_factory, tracker):
    name = "pk_sp"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pksp.*}")
    make_table(cluster, "pk_sp_t", "pksp")
    with moves_held(cluster):
        conn = cluster.connect(autocommit=False)
        try:
            cur = conn.cursor()
            cur.execute(ROWS_SQL.format(t="pk_sp_t"), (1, 300))
            cur.execute("SAVEPOINT a")
            cur.execute(ROWS_SQL.format(t="pk_sp_t"), (1001, 1500))
            # seen inside the transaction, packed
            cur.execute("SELECT sum(events) FROM callback.callback_inbox WHERE endpoint_id = %s",
                        (eid,))
            assert cur.fetchone()[0] == 800
            cur.execute("ROLLBACK TO SAVEPOINT a")
            # a statement failing half-way (a body past the payload limit)
            # after hundreds of its events were packed
            cur.execute("SAVEPOINT b")
            cur.execute("SET LOCAL callback.max_payload_bytes = 2000")
            with pytest.raises(Exception) as e:
                cur.execute("INSERT INTO pk_sp_t SELECT g, 'x', 1, "
                            "CASE WHEN g = 2600 THEN repeat('y', 5000) END "
                            "FROM generate_series(2001, 3000) g")
            assert "max_payload_bytes" in str(e.value), e.value
            cur.execute("ROLLBACK TO SAVEPOINT b")
            cur.execute(ROWS_SQL.format(t="pk_sp_t"), (301, 400))
            conn.commit()
        finally:
            conn.close()
        waiting = inbox_events(cluster, eid)
    ids = sorted(int(re.search(r'"new":\{"id":(\d+)', b).group(1)) for _, b in waiting)
    assert ids == list(range(1, 401)), "events waiting: %d, ids %s..%s" % (
        len(ids), ids[:3], ids[-3:])
    wait_moved(cluster, 400, [eid])
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])


def test_wide_rows_and_an_ordered_endpoint(cluster, receiver, endpoint_factory, tracker):
    free, ordered = "pk_wide", "pk_wide_ord"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, free, "{pkwide.*}")
    oid = paused_endpoint(cluster, endpoint_factory, receiver, ordered, "{pkwide.*}",
                          ordered=True)
    make_table(cluster, "pk_wide_t", "pkwide")
    # notes of 10 bytes up to past the bound, interleaved
    widths = [10, 300, 1000, 1500, 1700, 1750, 1800, 1900, 2500, 6000]
    n = 600
    with moves_held(cluster):
        cluster.execute("INSERT INTO pk_wide_t SELECT g, 'w', 1, repeat('n', (%s::int[])[1 + g %% %s]) "
                        "  FROM generate_series(1, %s) g", (widths, len(widths), n))
        rows = inbox_rows(cluster, eid)
        events = sum(r[2] for r in rows)
        assert events == n
        assert len(rows) < n, "nothing was packed"
        assert all(r[4] is None for r in rows)
        sizes = cluster.query(
            "SELECT events, pg_column_size(i.*), pg_column_compression(i.body), "
            "       pg_column_compression(i.more), length(i.body) "
            "  FROM callback.callback_inbox i WHERE endpoint_id = %s", (eid,))
        packs = [s for s in sizes if s[0] > 1]
        assert packs, "no pack"
        for ev, size, c_body, c_more, body_len in packs:
            assert size <= TOAST_TUPLE_THRESHOLD and c_body is None and c_more in (None, "lz4"), \
                "a pack row of %d events: %d bytes, compression %s/%s" % (ev, size, c_body, c_more)
        assert toasted_values(cluster) == 0
        # a body past the bound alone is written as before: one event
        wide_alone = [s for s in sizes if s[4] > PACK_MAX_ROW]
        assert wide_alone and all(s[0] == 1 for s in wide_alone), wide_alone[:3]
        # the ordered endpoint: one row per event, each with its key
        orows = inbox_rows(cluster, oid)
        assert len(orows) == n and all(r[2] == 1 and r[3] is None and r[4] for r in orows)
        waiting = inbox_events(cluster, eid)
        owaiting = inbox_events(cluster, oid)
    assert {e for e, _ in waiting} == {e for e, _ in owaiting}
    wait_moved(cluster, n, [eid, oid])
    assert queue_bodies(cluster, eid) == waiting
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
                          "   AND ordering_key IS NOT NULL", (oid,)) == n
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
                          "   AND ordering_key IS NOT NULL", (eid,)) == 0
    deliver_all(cluster, tracker, free, eid, [e for e, _ in waiting])
    deliver_all(cluster, tracker, ordered, oid, [e for e, _ in owaiting])


def test_a_pack_opened_by_a_wide_body_stays_below_the_bound(cluster, receiver, endpoint_factory,
                                                           tracker):
    # How far a pack collects follows how well the packs before it
    # compressed, and its own first body: narrow bodies that compress well,
    # then one of 1,500 bytes opening a pack, then narrow ones again.  That
    # pack once took as much as the narrow ones' packs (8 kB raw), and its
    # row went past the TOAST threshold: the heap compressed its body with
    # pglz.  No row may be compressed or toasted by the heap.
    name = "pk_wide_first"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pkwfirst.*}")
    make_table(cluster, "pk_wfirst_t", "pkwfirst")
    conn = cluster.connect()  # a new session: nothing learnt before
    try:
        with moves_held(cluster):
            conn.cursor().execute(
                "INSERT INTO pk_wfirst_t SELECT g, 'item ' || g, g % 7, "
                "  CASE WHEN g = 301 THEN repeat('z', 1500) ELSE 'note ' || g END "
                "  FROM generate_series(1, 600) g")
            rows = cluster.query(
                "SELECT events, pg_column_size(i.*), pg_column_compression(i.body), "
                "       pg_column_compression(i.more), length(i.body) "
                "  FROM callback.callback_inbox i WHERE endpoint_id = %s", (eid,))
            assert sum(r[0] for r in rows) == 600
            wide = [r for r in rows if r[4] >= 1500]
            assert len(wide) == 1, rows
            for ev, size, c_body, c_more, body_len in rows:
                assert size <= TOAST_TUPLE_THRESHOLD and c_body is None and c_more in (None, "lz4"), \
                    "a row of %d events, first body %d bytes: %d bytes, compression %s/%s" % (
                        ev, body_len, size, c_body, c_more)
            assert toasted_values(cluster) == 0
            waiting = inbox_events(cluster, eid)
    finally:
        conn.close()
    wait_moved(cluster, 600, [eid])
    assert queue_bodies(cluster, eid) == waiting
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])


def test_fan_out_to_three_endpoints(cluster, receiver, endpoint_factory, tracker):
    names = ["pk_fan%d" % i for i in range(1, 4)]
    eids = [paused_endpoint(cluster, endpoint_factory, receiver, nm, "{pkfan.*}") for nm in names]
    make_table(cluster, "pk_fan_t", "pkfan")
    n = 3000
    with moves_held(cluster):
        cluster.execute(ROWS_SQL.format(t="pk_fan_t"), (1, n))
        per = {}
        for e in eids:
            rows, events = cluster.query("SELECT count(*), sum(events) FROM callback.callback_inbox "
                                         " WHERE endpoint_id = %s", (e,))[0]
            assert events == n and rows < n / 5, (e, rows, events)
            per[e] = inbox_events(cluster, e)
    ids = [{x for x, _ in per[e]} for e in eids]
    assert len(ids[0]) == n and ids[0] == ids[1] == ids[2], "not the same events at each endpoint"
    wait_moved(cluster, n, eids)
    for nm, e in zip(names, eids):
        assert queue_bodies(cluster, e) == per[e]
        deliver_all(cluster, tracker, nm, e, ids[0])


def test_fan_out_past_the_open_packs(cluster, receiver, endpoint_factory):
    """More endpoints than packs open at once (32): the first ones pack, the
    others' events are written alone; none is lost, each endpoint's order is
    kept.  (Closing the least recently used pack instead left every pack one
    event long in round robin: 33 x 300 rows.)"""
    names = ["pk_w%02d" % i for i in range(1, 34)]
    eids = [paused_endpoint(cluster, endpoint_factory, receiver, nm, "{pkwide.*}") for nm in names]
    make_table(cluster, "pk_wide_t", "pkwide")
    n = 300
    with moves_held(cluster):
        cluster.execute(ROWS_SQL.format(t="pk_wide_t"), (1, n))
        rows, events = cluster.query("SELECT count(*), sum(events) FROM callback.callback_inbox "
                                     " WHERE endpoint_id = ANY(%s)", (eids,))[0]
        assert events == 33 * n
        assert rows < 33 * n / 3, rows
        per = {e: inbox_events(cluster, e) for e in eids}
    wait_moved(cluster, n, eids)
    for e in eids:
        assert queue_bodies(cluster, e) == per[e]


def _past_the_end(more):
    return more[:-3]


def _empty_body(more):
    n = int.from_bytes(more[0:4], "big")
    return bytes(4) + more[4 + n:]


def _nul_in_body(more):
    b = bytearray(more)
    b[4] = 0
    return bytes(b)


def move_error(cluster, what):
    """The error of the first call of _move_inbox that fails (polled: while
    the worker holds the movers' lock, a call moves nothing and returns 0)."""
    err = None

    def failed():
        nonlocal err
        try:
            cluster.scalar("SELECT callback._move_inbox(2000)")
        except Exception as e:
            err = str(e)
            return True
        return False
    cluster.wait_until(failed, timeout=60, interval=0.2, what=what)
    return err


@pytest.mark.parametrize("corrupt,says", [(_past_the_end, "runs past the end"),
                                          (_empty_body, "its body is empty"),
                                          (_nul_in_body, "not valid text")],
                         ids=["past_the_end", "empty_body", "nul_in_body"])
def test_corrupt_pack_is_an_error_and_loses_nothing(cluster, receiver, endpoint_factory, tracker,
                                                    corrupt, says):
    name = "pk_bad_" + corrupt.__name__.strip("_")
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{%s.*}" % name)
    make_table(cluster, name + "_t", name)
    with moves_held(cluster):
        cluster.execute(ROWS_SQL.format(t=name + "_t"), (1, 200))
        waiting = inbox_events(cluster, eid)
        victim = cluster.query("SELECT ctid::text, event_id::text, more FROM callback.callback_inbox "
                               " WHERE endpoint_id = %s AND events > 2 LIMIT 1", (eid,))[0]
        bad = corrupt(bytes(victim[2]))
        cluster.execute("UPDATE callback.callback_inbox SET more = %s "
                        " WHERE event_id = %s::uuid AND endpoint_id = %s",
                        (psycopg2.Binary(bad), victim[1], eid))
    err = move_error(cluster, "a move failing on the corrupt pack")
    assert "corrupt pack" in err and victim[1] in err and says in err, err
    # nothing lost, nothing moved
    assert cluster.scalar("SELECT sum(events) FROM callback.callback_inbox WHERE endpoint_id = %s",
                          (eid,)) == 200
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                          (eid,)) == 0
    # repaired, it moves and delivers
    cluster.execute("UPDATE callback.callback_inbox SET more = %s WHERE event_id = %s::uuid "
                    "   AND endpoint_id = %s", (victim[2], victim[1], eid))
    wait_moved(cluster, 200, [eid])
    assert queue_bodies(cluster, eid) == waiting
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])


def test_a_count_edited_by_hand_does_not_stop_the_oldest_half(cluster, receiver, endpoint_factory,
                                                               tracker):
    # A move takes the oldest rows carrying about half of what waits.  A
    # row's events edited by hand to 2^31 - 1 made every call reach for it
    # and fail on it, so nothing moved at all.  It weighs what a pack can
    # carry at most now: the older rows move by halves as before, until the
    # edited row comes first; then each call fails naming it, nothing is
    # lost, and repaired, it moves.
    name = "pk_count"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pkcount.*}")
    make_table(cluster, "pk_count_t", "pkcount")
    with moves_held(cluster):
        for lo in range(1, 5000, 1000):
            cluster.execute(ROWS_SQL.format(t="pk_count_t"), (lo, lo + 999))
        waiting = inbox_events(cluster, eid)
        young_id, young_events = cluster.query(
            "SELECT event_id::text, events FROM callback.callback_inbox WHERE endpoint_id = %s "
            " ORDER BY written_at DESC, xact DESC, seq DESC LIMIT 1", (eid,))[0]
        assert young_events > 1
        cluster.execute("UPDATE callback.callback_inbox SET events = 2147483647 "
                        " WHERE event_id = %s::uuid AND endpoint_id = %s", (young_id, eid))
    cluster.wait_until(
        lambda: cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                               (eid,)) >= 2000,
        timeout=60, interval=0.2, what="the oldest half moved")
    err = move_error(cluster, "a move failing on the edited row")
    assert "corrupt pack" in err and young_id in err, err
    assert cluster.scalar("SELECT coalesce(sum(events) FILTER (WHERE event_id <> %s::uuid), 0) FROM "
                          "callback.callback_inbox WHERE endpoint_id = %s", (young_id, eid)) \
        + cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                         (eid,)) == 5000 - young_events
    cluster.execute("UPDATE callback.callback_inbox SET events = %s "
                    " WHERE event_id = %s::uuid AND endpoint_id = %s", (young_events, young_id, eid))
    wait_moved(cluster, 5000, [eid])
    assert queue_bodies(cluster, eid) == waiting
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])


def test_packs_survive_a_dump(source, target, target_db, receiver):  # noqa: F811
    ep = "dr_packs"
    source.execute("SELECT callback.create_endpoint(%s, %s, event_types => '{packs.*}')",
                   (ep, receiver.url("/packs")))
    source.execute("SELECT callback.pause_endpoint(%s)", (ep,))
    eid = source.scalar("SELECT id FROM callback.callback_endpoints WHERE name = %s", (ep,))
    make_table(source, "dr_packs_t", "packs")
    n = 3000
    try:
        holder = source.connect(autocommit=False)
        try:
            holder.cursor().execute(MOVER_LOCK)
            writer = source.connect()
            cur = writer.cursor()
            cur.execute("SET callback.inbox = on")
            cur.execute(ROWS_SQL.format(t="dr_packs_t"), (1, n))
            writer.close()
            rows = source.scalar("SELECT count(*) FROM callback.callback_inbox WHERE endpoint_id = %s",
                                 (eid,))
            waiting = inbox_events(source, eid)
            assert len(waiting) == n and rows < n / 5, (rows, len(waiting))
            path = dump(source, "custom", "--no-sync")
        finally:
            holder.rollback()
            holder.close()
        n_before = receiver.count()
        p = restore(target, path)
        assert "ERROR" not in p.stdout, p.stdout
        # every event restored: in the inbox, or moved already by the
        # restored database's worker (the endpoint paused, not yet sent)
        assert target.scalar("SELECT (SELECT coalesce(sum(events), 0) FROM callback.callback_inbox) "
                             "     + (SELECT count(*) FROM callback.callback_queue)",
                             dbname=target_db) == n
        target.execute("SELECT callback.resume_endpoint(%s)", (ep,), dbname=target_db)
        target.wait_until(lambda: receiver.count("/packs") >= n
                          and target.scalar("SELECT count(*) FROM callback.callback_inbox",
                                            dbname=target_db) == 0,
                          timeout=180, what="the restored packs moved and delivered")
        target.wait_until(lambda: target.scalar(
            "SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'",
            dbname=target_db) == n, timeout=60, what="%d delivered in the restored database" % n)
        got = [r.headers["webhook-id"] for r in receiver.requests()[n_before:]]
        assert sorted(got) == sorted(msg_id(e) for e, _ in waiting), \
            "%d requests for %d events" % (len(got), n)
        bodies = {r.headers["webhook-id"]: r.body for r in receiver.requests()[n_before:]}
        assert bodies == {msg_id(e): b.encode("utf-8") for e, b in waiting}
    finally:
        source.execute("SELECT callback.drop_endpoint(%s, force => true)", (ep,))


def test_bodies_that_compress_and_bodies_that_do_not(cluster, receiver, endpoint_factory, tracker):
    name = "pk_lz"
    eid = paused_endpoint(cluster, endpoint_factory, receiver, name, "{pklz.*}")
    make_table(cluster, "pk_lz_t", "pklz")
    lz4 = server_has_lz4(cluster)
    toasted_before = toasted_values(cluster)
    # one session (the pack bound follows what this backend's packs
    # compressed): notes that compress, then random hex (lz4 gains next to
    # nothing on it), then notes that compress again
    phases = [(1, 1000, "repeat('c', 100)"),
              (1001, 2000, "md5(random()::text) || md5(g::text) || md5(random()::text)"),
              (2001, 3000, "repeat('c', 100)")]
    with moves_held(cluster):
        conn = cluster.connect(autocommit=False)
        try:
            cur = conn.cursor()
            for lo, hi, note in phases:
                cur.execute("INSERT INTO pk_lz_t SELECT g, 'i', 1, %s FROM generate_series(%%s, %%s) g"
                            % note, (lo, hi))
            conn.commit()
        finally:
            conn.close()
        rows = cluster.query(
            "SELECT events, pg_column_compression(i.more), position('ccccc' in i.body) > 0 "
            "  FROM callback.callback_inbox i WHERE endpoint_id = %s", (eid,))
        assert sum(r[0] for r in rows) == 3000
        compressible = [r for r in rows if r[2] and r[0] > 1]
        random_hex = [r for r in rows if not r[2] and r[0] > 1]
        assert compressible and random_hex, rows[:5]
        # a row of 1,900 bytes holds 13 of these events raw (about 140 bytes each)
        if lz4:
            assert all(c == "lz4" for _, c, _ in compressible), compressible[:5]
            assert max(ev for ev, _, _ in compressible) > 20, compressible[:5]
            assert len(rows) < 3000 // 10, "%d rows for 3,000 events" % len(rows)
        else:
            assert all(c is None for _, c, _ in compressible), compressible[:5]
        # the switch to bodies that do not compress: the first pack may be
        # toasted (it collected as the compressed ones did), no more
        assert toasted_values(cluster) - toasted_before <= 1
        waiting = inbox_events(cluster, eid)
    assert len({e for e, _ in waiting}) == 3000
    wait_moved(cluster, 3000, [eid])
    assert queue_bodies(cluster, eid) == waiting
    deliver_all(cluster, tracker, name, eid, [e for e, _ in waiting])
