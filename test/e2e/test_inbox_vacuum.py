"""End-to-end: the worker vacuums callback_inbox (src/inbox_vacuum.c).

Under a stream of single-row transactions with callback.inbox on, each move
deletes what it moved, and only a vacuum lets the producers use that space
again.  Autovacuum comes once a minute at most and skips the inbox while a
move holds it, so the inbox grew by every row written, and each move read it
all.  Here, from several sessions:

- the inbox stays small while 60,000 events are written (sampled every
  0.1 s), the worker's vacuums are counted in pg_stat_user_tables, and every
  event reaches the queue exactly once;
- once the stream stops, the inbox is truncated to no page (a cycle that
  moves nothing, with no other process holding a lock on the inbox, runs a
  vacuum that may truncate);
- the database's owner, no superuser, cannot stall that vacuum or the worker
  with it: not with vacuum_cost_delay set on the database (the worker's
  vacuum has no cost delay), nor with the freeze ages set to 0 while a
  callback_admin keeps a page of the inbox pinned with a cursor (an
  aggressive vacuum would wait for the pin; the worker's uses VACUUM's
  default ages), nor with an ALTER DATABASE left open (VACUUM the statement
  would wait for it in pg_database; the worker's vacuum does not go there);
- a GRANT on the inbox left open (its pg_class row, which the vacuum's
  statistics update waits for) costs the vacuum a lock timeout, not the
  worker its deliveries.

The endpoint is paused: moves go on (every callback.poll_interval), and the
receiver need not keep up.  Real parts only: a throwaway cluster, the
worker; autovacuum off, so that every vacuum counted is the worker's.
Every wait is bounded.
"""

import threading
import time

import psycopg2

from cluster import SUPERUSER
from conftest import record_figure
from test_inbox import MOVER_LOCK

CLUSTER_CONF = {"callback.inbox": True, "autovacuum": False}

SESSIONS = 4
PER_SESSION = 15000
# Unvacuumed, these 60,000 rows left 2,001 pages behind them here.
# Vacuumed, the inbox holds what is written between two vacuums, and what
# the last one could not remove yet: 71 to 137 pages at 5,000 to 8,000
# events a second here, more on a faster machine.
MAX_PAGES = 500


def inbox_pages(cluster):
    return cluster.scalar("SELECT pg_relation_size('callback.callback_inbox') / 8192")


def inbox_vacuums(cluster):
    # the statistics of other sessions: read them afresh
    cluster.execute("SELECT pg_stat_clear_snapshot()")
    return cluster.scalar("SELECT vacuum_count FROM pg_stat_user_tables "
                          " WHERE relid = 'callback.callback_inbox'::regclass")


def produce(cluster, table, first, n, errors):
    try:
        conn = cluster.connect()
        with conn.cursor() as cur:
            for i in range(first, first + n):
                cur.execute("INSERT INTO %s VALUES (%%s)" % table, (i,))
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(repr(e))


def test_the_inbox_stays_small_under_a_stream_and_shrinks_after(cluster, endpoint_factory):
    eid = endpoint_factory("ivac", "http://127.0.0.1:9/ivac", event_types=["ivac.*"])
    cluster.execute("SELECT callback.pause_endpoint('ivac')")
    cluster.execute("DROP TABLE IF EXISTS ivac_t")
    cluster.execute("CREATE TABLE ivac_t (id int PRIMARY KEY)")
    cluster.execute("CREATE TRIGGER cb AFTER INSERT ON ivac_t FOR EACH ROW "
                    "EXECUTE FUNCTION callback.trigger('ivac')")
    vacuums_before = inbox_vacuums(cluster)
    errors = []
    threads = [threading.Thread(target=produce,
                                args=(cluster, "ivac_t", 1 + s * PER_SESSION, PER_SESSION, errors))
               for s in range(SESSIONS)]
    started = time.time()
    for t in threads:
        t.start()
    sizes = []
    while any(t.is_alive() for t in threads):
        sizes.append(inbox_pages(cluster))
        time.sleep(0.1)
    for t in threads:
        t.join()
    seconds = time.time() - started
    assert not errors, errors
    total = SESSIONS * PER_SESSION

    # every event reached the queue, once
    cluster.wait_until(lambda: cluster.scalar("SELECT count(*) FROM callback.callback_inbox") == 0,
                       timeout=60, interval=0.2, what="the inbox moved")
    got = cluster.query("SELECT count(*), count(DISTINCT event_id) FROM callback.callback_queue "
                        " WHERE endpoint_id = %s", (eid,))[0]
    assert got == (total, total), "queue rows, distinct event ids: %r, not %d of each" % (got, total)

    vacuums = inbox_vacuums(cluster) - vacuums_before
    record_figure("inbox under %d single-row transactions from %d sessions in %.1f s: at most "
                  "%d pages (%d samples), %d vacuums" % (total, SESSIONS, seconds, max(sizes),
                                                        len(sizes), vacuums))
    assert max(sizes) < MAX_PAGES, \
        "the inbox reached %d pages (at most %d expected) while %d events were written; " \
        "vacuums of it: %d" % (max(sizes), MAX_PAGES, total, vacuums)
    assert vacuums >= 3, "%d vacuums of the inbox while %d events moved" % (vacuums, total)

    # nothing moves now: a cycle truncates the inbox (every 10 s at most)
    cluster.wait_until(lambda: inbox_pages(cluster) == 0, timeout=40, interval=0.5,
                       what="the idle inbox truncated to no page")


def worker_wait(cluster, worker):
    """What the worker waits for now (pg_stat_activity.wait_event), None if nothing."""
    return cluster.scalar("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (worker,))


def enqueue_watching(cluster, event_type, n, worker):
    """n events, one transaction each; the worker's wait sampled every 100."""
    waits = []
    conn = cluster.connect()
    with conn.cursor() as cur:
        for i in range(n):
            cur.execute("SELECT callback.enqueue(%s, '{}')", (event_type,))
            if i % 100 == 0:
                waits.append(worker_wait(cluster, worker))
    conn.close()
    return waits


def restart_worker(cluster):
    old = cluster.running_worker_pid()
    cluster.execute("SELECT pg_terminate_backend(%s)", (old,))
    return cluster.running_worker_pid(other_than=old)


def test_a_database_owner_cannot_stall_the_worker_s_vacuum(cluster, endpoint_factory):
    eid = endpoint_factory("ivac_own", "http://127.0.0.1:9/ivown", event_types=["ivown.*"])
    cluster.execute("SELECT callback.pause_endpoint('ivac_own')")
    db = cluster.dbname
    cluster.execute("DROP ROLE IF EXISTS ivac_owner")
    cluster.execute("CREATE ROLE ivac_owner LOGIN")
    cluster.execute("DROP ROLE IF EXISTS ivac_admin")
    cluster.execute("CREATE ROLE ivac_admin LOGIN IN ROLE callback_admin")
    admin = held = None
    cluster.execute("ALTER DATABASE %s OWNER TO ivac_owner" % db)
    owner = psycopg2.connect(**dict(cluster.dsn(), user="ivac_owner"))
    try:
        with owner.cursor() as cur:
            owner.autocommit = True
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone()[0] is False
            # a vacuum that honoured these would sleep 100 ms per page it reads
            cur.execute("ALTER DATABASE %s SET vacuum_cost_delay = '100ms'" % db)
            cur.execute("ALTER DATABASE %s SET vacuum_cost_limit = 1" % db)
            # a vacuum that honoured these would be aggressive: it waits for pins
            cur.execute("ALTER DATABASE %s SET vacuum_freeze_min_age = 0" % db)
            cur.execute("ALTER DATABASE %s SET vacuum_freeze_table_age = 0" % db)
        worker = restart_worker(cluster)
        fresh = cluster.connect()  # a new session, as the worker is, gets the database's settings
        with fresh.cursor() as cur:
            cur.execute("SELECT current_setting('vacuum_cost_delay'), "
                        "       current_setting('vacuum_freeze_table_age')")
            assert cur.fetchone() == ("100ms", "0")
        fresh.close()
        # a callback_admin's cursor keeps the inbox's first page pinned
        held = cluster.connect(autocommit=False)
        held.cursor().execute(MOVER_LOCK)
        cluster.execute("SELECT callback.enqueue('ivown.e', '{}')")
        admin = psycopg2.connect(**dict(cluster.dsn(), user="ivac_admin"))
        admin.autocommit = False
        admin_cur = admin.cursor()
        admin_cur.execute("DECLARE c CURSOR FOR SELECT event_id FROM callback.callback_inbox")
        admin_cur.execute("FETCH 1 FROM c")
        assert admin_cur.fetchone() is not None
        held.rollback()
        held.close()
        held = None
        owner.autocommit = False
        with owner.cursor() as cur:
            # left open: VACUUM would wait for it, updating pg_database
            cur.execute("ALTER DATABASE %s CONNECTION LIMIT 50" % db)
        vacuums = inbox_vacuums(cluster)
        n = 3000 - 1
        waits = enqueue_watching(cluster, "ivown.e", n, worker)

        def settled():
            waits.append(worker_wait(cluster, worker))
            return cluster.scalar("SELECT count(*) FROM callback.callback_inbox") == 0 and \
                inbox_vacuums(cluster) > vacuums
        cluster.wait_until(settled, timeout=60, interval=0.1,
                           what="the inbox moved and vacuumed while the owner's ALTER DATABASE is open")
        assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                              (eid,)) == n + 1
        stalled = [w for w in waits if w in ("VacuumDelay", "BufferPin", "transactionid", "tuple")]
        assert not stalled, "the worker waited in %r (%d of %d samples)" % (
            sorted(set(stalled)), len(stalled), len(waits))
        assert cluster.worker_pid() == worker
    finally:
        if held is not None:
            held.rollback()
            held.close()
        owner.rollback()
        owner.close()
        if admin is not None:
            admin.rollback()
            admin.close()
        for setting in ("vacuum_cost_delay", "vacuum_cost_limit", "vacuum_freeze_min_age",
                        "vacuum_freeze_table_age"):
            cluster.execute("ALTER DATABASE %s RESET %s" % (db, setting))
        cluster.execute("ALTER DATABASE %s OWNER TO %s" % (db, SUPERUSER))
        cluster.execute("DROP ROLE IF EXISTS ivac_owner")
        cluster.execute("DROP ROLE IF EXISTS ivac_admin")
        restart_worker(cluster)  # without the database's settings


def test_a_grant_on_the_inbox_left_open_does_not_stop_deliveries(cluster, endpoint_factory):
    eid = endpoint_factory("ivac_grant", "http://127.0.0.1:9/ivgrant", event_types=["ivgrant.*"])
    cluster.execute("SELECT callback.pause_endpoint('ivac_grant')")
    worker = cluster.running_worker_pid()
    granter = cluster.connect(autocommit=False)
    try:
        # left open: the vacuum's update of the inbox's pg_class row waits for it
        granter.cursor().execute("GRANT SELECT ON callback.callback_inbox TO PUBLIC")
        vacuums = inbox_vacuums(cluster)
        n = 3000
        waits = enqueue_watching(cluster, "ivgrant.e", n, worker)

        def moved():
            waits.append(worker_wait(cluster, worker))
            return cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                                  " WHERE endpoint_id = %s", (eid,)) == n
        cluster.wait_until(moved, timeout=30, interval=0.1,
                           what="every event moved while a GRANT on the inbox is open")
        # a lock timeout of 200 ms every 10 s at most; samples taken while
        # enqueueing bunch up (9 of 33 fell in one wait in a CI run): at most
        # half, where a retry without the backoff waits 200 of every 250 ms
        waited = sum(1 for w in waits if w == "transactionid")
        assert waited <= len(waits) // 2, "the worker waited on a transaction in %d of %d " \
            "samples" % (waited, len(waits))
        # tried and timed out: none counted (pgstat's count comes after the update)
        assert inbox_vacuums(cluster) == vacuums
        assert cluster.worker_pid() == worker
    finally:
        granter.rollback()
        granter.close()
    # the GRANT gone: vacuumed again, after the backoff
    cluster.wait_until(lambda: inbox_vacuums(cluster) > vacuums, timeout=30, interval=0.2,
                       what="a vacuum of the inbox once the GRANT ended")


def test_autovacuum_of_the_inbox_keeps_vacuum_s_default_freeze_ages(cluster):
    """A database owner's vacuum_freeze_table_age = 0 must not make
    autovacuum's vacuums of the inbox aggressive (waiting on pinned pages
    with the lock every move needs): the table's own settings win."""
    opts = cluster.scalar("SELECT reloptions FROM pg_class "
                          " WHERE oid = 'callback.callback_inbox'::regclass")
    for want in ("autovacuum_freeze_min_age=50000000", "autovacuum_freeze_table_age=150000000",
                 "autovacuum_multixact_freeze_min_age=5000000",
                 "autovacuum_multixact_freeze_table_age=150000000"):
        assert want in (opts or []), opts
