"""End-to-end: callback.inbox = on for the whole cluster (issue 10, the write
path).  The trigger and enqueue() write deliveries into callback_inbox; the
worker (or process_callbacks()) moves them into callback_queue and delivers
them.

- the row and the statement trigger, to one endpoint and to three: every
  event was in the inbox at commit (none in the queue), reaches the
  receiver exactly once with the webhook-id of its queue row, and the
  inbox drains to empty;
- an ordered endpoint, four sessions updating rows (the keys) in many
  transactions: per key, the events arrive in the order the changes
  committed, both for transactions moved together as a backlog and for
  transactions moved as they commit;
- a crash (pg_ctl stop -m immediate) with events waiting in the inbox, and
  one while a backlog of 20,000 is being moved: after the restart each
  committed event is in the inbox or the queue exactly once, and arrives
  exactly once after resume_endpoint();
- 50,000 events written while no worker serves the database: moved in
  several calls (each move is one transaction of the worker: its xmin on
  the moved rows), far fewer than 50,000 / 2,000, and all delivered;
- drop_endpoint(force) while rows wait in the inbox, one producer's
  transaction still open: nothing reaches the dropped endpoint, the late
  rows become dead letters, none stays pending;
- process_callbacks() with no worker for the database (the pg_cron path)
  moves and delivers.

Moves are held back, where a test needs a backlog, by holding the movers'
lock (callback._move_inbox takes SHARE UPDATE EXCLUSIVE on callback_inbox
with a conditional lock and moves nothing without it; a superuser session
of the test holds it with LOCK TABLE); each such test first checks that the
lock does hold moves back.  Real parts only: a throwaway cluster, the worker,
test/receiver.py on loopback.  Every wait is bounded.
"""

import contextlib
import random
import threading
import time

import pytest

from conftest import record_figure
from faults_util import IdTracker, diagnostics, inbox_row_events, msg_id, queue_status

CLUSTER_CONF = {"callback.inbox": True}

# src/inbox.c: the movers' lock, which a superuser may take too
MOVER_LOCK = "LOCK TABLE callback.callback_inbox IN SHARE UPDATE EXCLUSIVE MODE"
NO_SUCH_DB = "pgcb_inbox_no_worker_here"


# ------------------------------------------------------------------ helpers

@pytest.fixture
def tracker(receiver):
    t = IdTracker(receiver)
    yield t
    t.close()


def inbox_ids(cluster, eid, cur=None):
    """The ids of the events waiting in the inbox for eid (a statement's
    events are packed: several to a row)."""
    sql = "SELECT event_id::text, events, more FROM callback.callback_inbox WHERE endpoint_id = %s"
    if cur is not None:
        cur.execute(sql, (eid,))
        rows = cur.fetchall()
    else:
        rows = cluster.query(sql, (eid,))
    return [e for r in rows for e, _ in inbox_row_events(*r)]


def inbox_count(cluster, eid):
    """Events waiting in the inbox for eid."""
    return cluster.scalar("SELECT coalesce(sum(events), 0) FROM callback.callback_inbox "
                          " WHERE endpoint_id = %s", (eid,))


def queue_count(cluster, eid):
    return cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                          (eid,))


def where_ids_are(cluster, eid):
    """{event id: [places]} over the inbox and the queue, read in one snapshot
    (a move between two reads would show a row twice or not at all)."""
    rows = cluster.query(
        "SELECT event_id::text, 'inbox', events, more FROM callback.callback_inbox "
        " WHERE endpoint_id = %s "
        "UNION ALL "
        "SELECT event_id::text, 'queue', 1, NULL FROM callback.callback_queue WHERE endpoint_id = %s",
        (eid, eid))
    out = {}
    for first, where, events, more in rows:
        for e, _ in inbox_row_events(first, events, more):
            out.setdefault(e, []).append(where)
    return out


def assert_each_once(cluster, eid, expected, what):
    places = where_ids_are(cluster, eid)
    lost = set(expected) - set(places)
    twice = {e: p for e, p in places.items() if len(p) > 1}
    unknown = set(places) - set(expected)
    assert not lost and not twice and not unknown, \
        "%s: %d lost (e.g. %s), %d twice (e.g. %s), %d unknown%s" % (
            what, len(lost), sorted(lost)[:2], len(twice), list(twice.items())[:2],
            len(unknown), diagnostics(cluster, eid))
    return places


@contextlib.contextmanager
def moves_held(cluster):
    """Hold the movers' lock in a transaction of our own: while it is open,
    no worker or process_callbacks() moves anything out of the inbox."""
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(MOVER_LOCK)
        yield conn
    finally:
        try:
            conn.rollback()
        except Exception:
            pass  # the server went away with it (a crash test)
        conn.close()


def assert_moves_held(cluster, eid, n):
    """n rows of eid wait in the inbox, none in the queue, and a mover
    called now moves nothing: the lock of moves_held() is the movers'."""
    assert cluster.scalar("SELECT callback._move_inbox(2000)") == 0
    got = (inbox_count(cluster, eid), queue_count(cluster, eid))
    assert got == (n, 0), "inbox, queue rows of endpoint %s: %r, not (%d, 0): the inbox was " \
        "not written, or the lock %r did not hold moves back" % (eid, got, n, MOVER_LOCK)


def wait_all_once(cluster, tracker, path, eid, expected, timeout):
    """Every expected webhook-id arrives at path, the queue says delivered
    for all of them, nothing arrived twice or unasked; the inbox holds
    nothing of eid."""
    missing = tracker.wait_ids(path, expected, timeout)
    assert not missing, "%d of %d ids never arrived at %s (e.g. %s)%s" % (
        len(missing), len(expected), path, sorted(missing)[:2], diagnostics(cluster, eid))
    n = len(expected)
    try:
        cluster.wait_until(lambda: queue_status(cluster, eid) == {"delivered": n},
                           timeout=60, interval=0.2, what="%d deliveries delivered" % n)
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None
    got, dups, missing, unexpected = tracker.accounting(path, expected)
    assert got == n and not missing and not unexpected, (got, n, missing, unexpected)
    assert dups == 0, "%d duplicate requests at %s" % (dups, path)
    assert inbox_count(cluster, eid) == 0


@contextlib.contextmanager
def no_worker(cluster):
    """No delivery worker for the test database (callback.database_name
    names another), as where pg_cron drives delivery; the worker is back
    afterwards."""
    cluster.set_conf(**{"callback.database_name": NO_SUCH_DB})
    cluster.reload()
    try:
        cluster.wait_until(lambda: cluster.worker_pid() is None, timeout=60,
                           what="the worker of %s gone" % cluster.dbname)
        yield
    finally:
        cluster.set_conf(**{"callback.database_name": cluster.dbname})
        cluster.reload()
        cluster.wait_until(cluster.worker_pid, timeout=60,
                           what="a worker for %s again" % cluster.dbname)


def paused_statement_flow(cluster, receiver, endpoint_factory, name):
    """A paused endpoint name (at /name), and a new table name whose INSERTs
    queue name.insert events for it (statement trigger); the endpoint's id.
    Paused: moved rows stay as the moves left them until resume_endpoint."""
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"])
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    cluster.execute("DROP TABLE IF EXISTS %s" % name)
    cluster.execute("CREATE TABLE %s (id int PRIMARY KEY, v text)" % name)
    cluster.execute("CREATE TRIGGER cb AFTER INSERT ON %s REFERENCING NEW TABLE AS n "
                    "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger(%%s)" % name, (name,))
    return eid


def produce_statements(cluster, table, n_tx, rows_per_tx, start=1):
    """n_tx transactions, each one INSERT ... SELECT of rows_per_tx rows."""
    for t in range(n_tx):
        lo = start + t * rows_per_tx
        cluster.execute("INSERT INTO %s SELECT g, 'v' || g FROM generate_series(%%s, %%s) g" % table,
                        (lo, lo + rows_per_tx - 1))


# ------------------------------------------------------------------ delivery

def test_row_and_statement_triggers_one_and_three_endpoints(cluster, receiver, endpoint_factory,
                                                            tracker):
    one = endpoint_factory("ib_one", receiver.url("/one"), event_types=["ibone.*"])
    fan = [endpoint_factory("ib_fan%d" % i, receiver.url("/fan%d" % i), event_types=["ibfan.*"])
           for i in (1, 2, 3)]
    cluster.execute("""
        DROP TABLE IF EXISTS ib_r1, ib_s1, ib_r3, ib_s3;
        CREATE TABLE ib_r1 (id int PRIMARY KEY, v text);
        CREATE TABLE ib_s1 (id int PRIMARY KEY, v text);
        CREATE TABLE ib_r3 (id int PRIMARY KEY, v text);
        CREATE TABLE ib_s3 (id int PRIMARY KEY, v text);
        CREATE TRIGGER cb AFTER INSERT OR UPDATE ON ib_r1 FOR EACH ROW
            EXECUTE FUNCTION callback.trigger('ibone.row');
        CREATE TRIGGER cb AFTER INSERT ON ib_s1 REFERENCING NEW TABLE AS n FOR EACH STATEMENT
            EXECUTE FUNCTION callback.trigger('ibone.stmt');
        CREATE TRIGGER cb AFTER INSERT OR UPDATE ON ib_r3 FOR EACH ROW
            EXECUTE FUNCTION callback.trigger('ibfan.row');
        CREATE TRIGGER cb AFTER INSERT ON ib_s3 REFERENCING NEW TABLE AS n FOR EACH STATEMENT
            EXECUTE FUNCTION callback.trigger('ibfan.stmt');
    """)
    assert cluster.scalar("SHOW callback.inbox") == "on"
    conn = cluster.connect(autocommit=False)
    try:
        cur = conn.cursor()
        for table in ("ib_r1", "ib_r3"):
            cur.execute("INSERT INTO %s SELECT g, 'row ' || g FROM generate_series(1, 150) g" % table)
            cur.execute("UPDATE %s SET v = v || ' updated' WHERE id <= 50" % table)
        for table in ("ib_s1", "ib_s3"):
            cur.execute("INSERT INTO %s SELECT g, 'stmt ' || g FROM generate_series(1, 1200) g"
                        % table)
        # before the commit: all in the inbox, none in the queue
        expected = {}
        for eid in [one] + fan:
            expected[eid] = {msg_id(e) for e in inbox_ids(cluster, eid, cur)}
            cur.execute("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                        (eid,))
            queued = cur.fetchone()[0]
            assert queued == 0, "%d rows of endpoint %s in the queue, %d in the inbox, " \
                "before the commit" % (queued, eid, len(expected[eid]))
        conn.commit()
    finally:
        conn.close()
    assert len(expected[one]) == 150 + 50 + 1200
    assert all(expected[f] == expected[fan[0]] for f in fan), "fan-out: not the same events"
    assert len(expected[fan[0]]) == 1400

    t0 = time.monotonic()
    for eid, path in [(one, "/one")] + [(f, "/fan%d" % i) for i, f in enumerate(fan, 1)]:
        wait_all_once(cluster, tracker, path, eid, expected[eid], timeout=120)
        # the webhook-id is the queue row's event id
        queued = {msg_id(r[0]) for r in cluster.query(
            "SELECT event_id::text FROM callback.callback_queue WHERE endpoint_id = %s", (eid,))}
        assert queued == expected[eid]
    # the bodies are the rows'
    ids = sorted(r.json()["data"]["new"]["id"] for r in receiver.requests("/one")
                 if r.json()["type"] == "ibone.stmt.insert")
    assert ids == list(range(1, 1201))
    record_figure("inbox on: 1,400 events to one endpoint and 1,400 to three (row and statement "
                  "triggers) written to the inbox, each delivered once, %.1f s after the commit"
                  % (time.monotonic() - t0))


# ------------------------------------------------------------------ order

ORD_KEYS = 12
ORD_SESSIONS = 4
ORD_TX = 30          # per session and phase
ORD_PER_TX = 3       # keys a transaction updates


def _ordered_sessions(cluster, seed, errors):
    """ORD_SESSIONS sessions, ORD_TX transactions each: every transaction
    updates ORD_PER_TX keys (in key order, no deadlock) and commits."""
    def run(i):
        rng = random.Random(seed * 100 + i)
        conn = cluster.connect(autocommit=False)
        try:
            cur = conn.cursor()
            for _ in range(ORD_TX):
                for k in sorted(rng.sample(range(ORD_KEYS), ORD_PER_TX)):
                    cur.execute("UPDATE ib_keys SET n = n + 1 WHERE k = %s", ("k%02d" % k,))
                conn.commit()
        except Exception as e:  # reported by the test
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(ORD_SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "producer sessions still running"
    assert not errors, errors


def test_ordered_key_commit_order_four_sessions(cluster, receiver, endpoint_factory):
    """ib_keys.n counts the committed updates of each key: the events of a
    key must arrive with n = 1, 2, 3, ... (each update waits for the
    previous one's commit on the row's lock)."""
    eid = endpoint_factory("ib_ord", receiver.url("/ord"), event_types=["ibord.*"], ordered=True)
    cluster.execute("DROP TABLE IF EXISTS ib_keys")
    cluster.execute("CREATE TABLE ib_keys (k text PRIMARY KEY, n int NOT NULL)")
    cluster.execute("INSERT INTO ib_keys SELECT 'k' || lpad(g::text, 2, '0'), 0 "
                    "  FROM generate_series(0, %s) g", (ORD_KEYS - 1,))
    cluster.execute("CREATE TRIGGER cb AFTER UPDATE ON ib_keys FOR EACH ROW "
                    "EXECUTE FUNCTION callback.trigger('ibord')")
    errors = []
    per_phase = ORD_SESSIONS * ORD_TX * ORD_PER_TX
    # a backlog: the transactions move together, after all of them committed
    with moves_held(cluster):
        _ordered_sessions(cluster, 1, errors)
        assert_moves_held(cluster, eid, per_phase)
        backlog = dict(cluster.query("SELECT k, n FROM ib_keys"))
    # moved as they commit
    _ordered_sessions(cluster, 2, errors)
    total = 2 * per_phase
    cluster.wait_until(lambda: queue_status(cluster, eid).get("delivered", 0) == total,
                       timeout=180, interval=0.25, what="%d ordered events delivered" % total)
    arrivals = {}
    for r in receiver.requests("/ord"):
        new = r.json()["data"]["new"]
        arrivals.setdefault(new["k"], []).append(new["n"])
    counts = dict(cluster.query("SELECT k, n FROM ib_keys"))
    bad = {k: seq for k, seq in arrivals.items() if seq != list(range(1, counts[k] + 1))}
    assert sum(len(s) for s in arrivals.values()) == total
    # an event arriving before one with a smaller n: in which phase
    late = [(k, n) for k, seq in arrivals.items() for i, n in enumerate(seq) if n > min(seq[i:])]
    assert not bad, "%d of %d keys out of commit order (%d events early: %d in the backlog, " \
        "%d moved as they committed), e.g. %s" % (
            len(bad), ORD_KEYS, len(late), sum(1 for k, n in late if n <= backlog[k]),
            sum(1 for k, n in late if n > backlog[k]), sorted(bad.items())[:1])
    record_figure("inbox on, ordered endpoint: %d updates of %d keys from %d sessions (half moved "
                  "as a backlog), every key in commit order" % (total, ORD_KEYS, ORD_SESSIONS))


# ------------------------------------------------------------------ crashes

def test_crash_with_events_in_the_inbox(cluster, receiver, endpoint_factory, tracker):
    eid = endpoint_factory("ib_crash", receiver.url("/crash"), event_types=["ibcrash.*"])
    cluster.execute("SELECT callback.pause_endpoint('ib_crash')")
    with moves_held(cluster):
        for t in range(5):
            cluster.execute("SELECT callback.enqueue('ibcrash.ev', jsonb_build_object('i', g)) "
                            "  FROM generate_series(%s, %s) g", (t * 200 + 1, t * 200 + 200))
        assert_moves_held(cluster, eid, 1000)
        expected = inbox_ids(cluster, eid)
        cluster.stop("immediate")
    cluster.start()
    assert_each_once(cluster, eid, expected, "after the crash")
    cluster.execute("SELECT callback.resume_endpoint('ib_crash')")
    wait_all_once(cluster, tracker, "/crash", eid, {msg_id(e) for e in expected}, timeout=120)


N_BIG = 20000


def test_crash_while_a_backlog_moves(cluster, receiver, endpoint_factory, tracker):
    eid = paused_statement_flow(cluster, receiver, endpoint_factory, "ibbig")
    with moves_held(cluster):
        produce_statements(cluster, "ibbig", 40, N_BIG // 40)
        assert_moves_held(cluster, eid, N_BIG)
        expected = inbox_ids(cluster, eid)
    # the worker moves the backlog now, by halves: stop the server as soon
    # as part of it is in the queue
    seen = []

    def partly_moved():
        row = cluster.query(
            "SELECT (SELECT count(*) FROM callback.callback_inbox WHERE endpoint_id = %s), "
            "       (SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s)",
            (eid, eid))[0]
        seen.append(row)
        return row[1] > 0
    cluster.wait_until(partly_moved, timeout=60, interval=0.002, what="a first move")
    cluster.stop("immediate")
    in_inbox, in_queue = seen[-1]
    assert in_inbox > 0, "the whole backlog had moved before the crash: %r" % seen[-3:]
    cluster.start()
    places = assert_each_once(cluster, eid, expected, "after a crash during the moves")
    after = sum(1 for p in places.values() if p == ["inbox"])
    cluster.execute("SELECT callback.resume_endpoint('ibbig')")
    wait_all_once(cluster, tracker, "/ibbig", eid, {msg_id(e) for e in expected}, timeout=240)
    record_figure("inbox on: crash while %d events moved (last look: %d in the inbox, %d in "
                  "the queue; %d in the inbox after recovery): each once after the restart, "
                  "all delivered once" % (N_BIG, in_inbox, in_queue, after))


# ------------------------------------------------------------------ no worker

N_BACKLOG = 50000


def test_backlog_built_without_worker(cluster, receiver, endpoint_factory, tracker):
    # paused: the moved rows stay as the moves left them, to be counted
    eid = paused_statement_flow(cluster, receiver, endpoint_factory, "ibback")
    with no_worker(cluster):
        t0 = time.monotonic()
        produce_statements(cluster, "ibback", 100, N_BACKLOG // 100)
        wrote = time.monotonic() - t0
        expected = inbox_ids(cluster, eid)
        assert len(expected) == N_BACKLOG and queue_count(cluster, eid) == 0
        t1 = time.monotonic()
    cluster.wait_until(lambda: inbox_count(cluster, eid) == 0, timeout=120, interval=0.1,
                       what="the inbox moved")
    moved_in = time.monotonic() - t1
    # one move is one transaction of the worker; a paused endpoint's rows
    # are not touched again, so their xmin tells the moves apart
    moves = cluster.query("SELECT xmin::text::bigint AS x, count(*) FROM callback.callback_queue "
                          " WHERE endpoint_id = %s GROUP BY 1 ORDER BY 1", (eid,))
    sizes = [n for _, n in moves]
    assert sum(sizes) == N_BACKLOG
    assert 1 < len(sizes) < N_BACKLOG // 2000, \
        "%d moves for a backlog of %d (by halves: about log2(%d / 2000) + 1): %r" % (
            len(sizes), N_BACKLOG, N_BACKLOG, sizes)
    assert sizes[0] >= N_BACKLOG // 4, "the first move took %d of %d" % (sizes[0], N_BACKLOG)
    assert_each_once(cluster, eid, expected, "after the moves")
    cluster.execute("SELECT callback.resume_endpoint('ibback')")
    t2 = time.monotonic()
    wait_all_once(cluster, tracker, "/ibback", eid, {msg_id(e) for e in expected}, timeout=300)
    record_figure("inbox on, no worker: %d events written in %.1f s (%d transactions); the "
                  "worker moved them in %d moves (%s) in %.1f s; delivered in %.1f s"
                  % (N_BACKLOG, wrote, 100, len(sizes), ", ".join(map(str, sizes)), moved_in,
                     time.monotonic() - t2))


def test_process_callbacks_moves_and_delivers(cluster, receiver, endpoint_factory, tracker):
    eid = endpoint_factory("ib_cron", receiver.url("/cron"), event_types=["ibcron.*"])
    with no_worker(cluster):
        cluster.execute("SELECT callback.enqueue('ibcron.ev', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 300) g")
        expected = {msg_id(e) for e in inbox_ids(cluster, eid)}
        assert len(expected) == 300 and queue_count(cluster, eid) == 0
        done = 0
        for _ in range(20):
            n = cluster.scalar("SELECT callback.process_callbacks(1000)")
            done += n
            if n == 0:
                break
        assert done == 300, "process_callbacks() attempted %d of 300" % done
        assert cluster.worker_pid() is None
        wait_all_once(cluster, tracker, "/cron", eid, expected, timeout=30)


# ------------------------------------------------------------------ drop_endpoint

def test_drop_endpoint_force_with_rows_in_the_inbox(cluster, receiver, endpoint_factory, tracker):
    drop = endpoint_factory("ib_drop", receiver.url("/drop"), event_types=["ibdrop.*"])
    keep = endpoint_factory("ib_keep", receiver.url("/keep"), event_types=["ibdrop.*"])
    late = cluster.connect(autocommit=False)
    try:
        with moves_held(cluster):
            cluster.execute("SELECT callback.enqueue('ibdrop.ev', jsonb_build_object('i', g)) "
                            "  FROM generate_series(1, 200) g")
            assert_moves_held(cluster, drop, 200)
            # a producer's transaction still open: drop_endpoint cannot see its rows
            cur = late.cursor()
            cur.execute("SELECT callback.enqueue('ibdrop.late', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 10) g")
            cluster.execute("SELECT callback.drop_endpoint('ib_drop', force => true)")
            assert inbox_count(cluster, drop) == 0
            late.commit()
            assert inbox_count(cluster, drop) == 10
        expected_keep = {msg_id(e) for e in where_ids_are(cluster, keep)}
    finally:
        late.close()
    assert len(expected_keep) == 210
    wait_all_once(cluster, tracker, "/keep", keep, expected_keep, timeout=120)
    # the late rows: moved, then dead letters ('endpoint dropped'); nothing pending
    cluster.wait_until(lambda: queue_status(cluster, drop) == {"dead": 10}, timeout=60,
                       interval=0.2, what="the late rows of the dropped endpoint dead")
    assert cluster.query("SELECT DISTINCT last_error FROM callback.callback_queue "
                         " WHERE endpoint_id = %s", (drop,)) == [("endpoint dropped",)]
    assert inbox_count(cluster, drop) == 0
    assert receiver.count("/drop") == 0
