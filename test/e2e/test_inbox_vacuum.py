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
  moves nothing takes ACCESS EXCLUSIVE without waiting and truncates).

The endpoint is paused: moves go on (every callback.poll_interval), and the
receiver need not keep up.  Real parts only: a throwaway cluster, the
worker; autovacuum off, so that every vacuum counted is the worker's.
Every wait is bounded.
"""

import threading
import time

from conftest import record_figure

CLUSTER_CONF = {"callback.inbox": True, "autovacuum": False}

SESSIONS = 4
PER_SESSION = 15000
# Unvacuumed, 30,000 such rows left 1,001 pages behind them here, so these
# 60,000 about 2,000.  Vacuumed, the inbox holds what is written between
# two vacuums, and what the last one could not yet remove: 130 to 137 pages
# at 8,000 events a second here, more on a faster machine.
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

