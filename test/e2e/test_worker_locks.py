"""End-to-end: an SQL user's transaction left open never stops the worker.

The admin functions lock rows the worker writes: alter_endpoint() (and
every function through _endpoint_for_update) an endpoint's row, purge()
the stats rows it deletes, drop_endpoint(force => true) the queue rows it
deletes.  Each test holds such a transaction open and checks that another
endpoint's deliveries go on (sent, their row 'delivered', their attempt
row there) while it is open, and that what the worker could not write
meanwhile (a breaker state, stats) is written, once, after the commit.

Every wait is a bounded poll.
"""

import time

import pytest

from cluster import free_port

CLUSTER_CONF = {
    "callback.connect_timeout": "200ms",
}

# what "deliveries go on" means here: well under the admin transaction's life
PROMPT_S = 6


def enqueue(cluster, event_type):
    return cluster.scalar("SELECT callback.enqueue(%s, '{}'::jsonb)::text", (event_type,))


def row(cluster, event_id):
    return cluster.query(
        "SELECT q.status::text, (SELECT count(*) FROM callback.callback_attempts a "
        "                         WHERE a.delivery_id = q.id) "
        "  FROM callback.callback_queue q WHERE q.event_id = %s", (event_id,))


def delivered_and_recorded(cluster, event_id):
    r = row(cluster, event_id)
    return len(r) == 1 and r[0][0] == "delivered" and r[0][1] == 1


def worker_wait(cluster):
    return cluster.query("SELECT wait_event_type, wait_event, query FROM pg_stat_activity "
                         " WHERE pid = %s", (cluster.worker_pid(),))


def within(cluster, fn, timeout):
    try:
        cluster.wait_until(fn, timeout=timeout, what="condition")
        return True
    except Exception:
        return False


def early_in_minute(cluster):
    # the stats row the test locks is this minute's: start with room to spare
    cluster.wait_until(
        lambda: cluster.scalar("SELECT extract(second FROM clock_timestamp()) < 40"),
        timeout=30, interval=0.2, what="the first 40 s of a minute")


def test_breaker_write_back_skips_a_locked_endpoint(cluster, receiver, endpoint_factory):
    """alter_endpoint() uncommitted on `bad`: `fast` keeps delivering, and
    `bad`'s breaker is written once the admin commits."""
    endpoint_factory("lk_fast", receiver.url("/lk_fast"), event_types="{lkfast.*}")
    endpoint_factory("lk_bad", "http://127.0.0.1:%d/nobody" % free_port(56600, 57600),
                     event_types="{lkbad.*}", failure_threshold=1, breaker_cooldown=60,
                     retry_schedule=[0.2], max_attempts=50, timeout=1)
    admin = cluster.connect(autocommit=False)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT callback.alter_endpoint('lk_bad', timeout => '5s')")
        bad_ev = enqueue(cluster, "lkbad.ev")
        # bad's attempt fails at once and opens its breaker, which is to be
        # written to the row the admin holds.  Its attempt row shows it (the
        # old worker waited on the lock before committing it: then this
        # poll runs out and the assertion below tells)
        bad_seen = within(cluster, lambda: row(cluster, bad_ev)[0][1] >= 1, PROMPT_S)
        fast_ev = enqueue(cluster, "lkfast.ev")
        t0 = time.monotonic()
        ok = within(cluster, lambda: delivered_and_recorded(cluster, fast_ev), PROMPT_S)
        assert ok, ("fast's event not delivered within %d s while alter_endpoint('lk_bad') is "
                    "uncommitted: row %r, %d requests, bad's attempt recorded: %s, worker %r" % (
                        PROMPT_S, row(cluster, fast_ev), receiver.count("/lk_fast"), bad_seen,
                        worker_wait(cluster)))
        print("fast delivered in %.2f s while bad's row was locked" % (time.monotonic() - t0))
        assert cluster.scalar("SELECT breaker_state FROM callback.callback_endpoints "
                              " WHERE name = 'lk_bad'") == "closed"   # not written yet
        admin.commit()
    finally:
        admin.close()
    assert within(cluster, lambda: cluster.scalar(
        "SELECT breaker_state FROM callback.callback_endpoints WHERE name = 'lk_bad'") == "open",
        PROMPT_S), "bad's breaker not written after the commit: %r" % cluster.query(
        "SELECT breaker_state, breaker_reason FROM callback.callback_endpoints WHERE name = 'lk_bad'")
    # the admin's change stands too
    assert cluster.scalar("SELECT timeout_ms FROM callback.callback_endpoints "
                          " WHERE name = 'lk_bad'") == 5000


def stats_match_attempts(cluster, names):
    """Per endpoint and event type: attempts counted in callback_stats ==
    attempt rows (purge('0') removed both sides' older rows)."""
    rows = cluster.query(
        "SELECT e.name, a.event_type, a.n, s.n FROM callback.callback_endpoints e "
        "  JOIN (SELECT endpoint_id, event_type, count(*) AS n FROM callback.callback_attempts "
        "         GROUP BY 1, 2) a ON a.endpoint_id = e.id "
        "  LEFT JOIN (SELECT endpoint_id, event_type, sum(attempts) AS n "
        "               FROM callback.callback_stats GROUP BY 1, 2) s "
        "         ON s.endpoint_id = e.id AND s.event_type = a.event_type "
        " WHERE e.name = ANY (%s) ORDER BY 1, 2", (list(names),))
    return rows, all(r[3] is not None and int(r[2]) == int(r[3]) for r in rows)


def test_purge_uncommitted_holds_back_only_its_stats(cluster, receiver, endpoint_factory):
    """purge('0') uncommitted holds this minute's stats rows: deliveries of
    the same type and minute and of another endpoint are still delivered and
    recorded at once; the stats are added after the commit, each attempt
    once."""
    endpoint_factory("pg_a", receiver.url("/pg_a"), event_types="{pga.*}")
    endpoint_factory("pg_b", receiver.url("/pg_b"), event_types="{pgb.*}")
    early_in_minute(cluster)
    first = enqueue(cluster, "pga.ev")
    assert within(cluster, lambda: delivered_and_recorded(cluster, first), 10)
    assert cluster.scalar("SELECT count(*) FROM callback.callback_stats s "
                          "  JOIN callback.callback_endpoints e ON e.id = s.endpoint_id "
                          " WHERE e.name = 'pg_a'") == 1
    admin = cluster.connect(autocommit=False)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT callback.purge('0')")
        same = enqueue(cluster, "pga.ev")        # same endpoint, type and minute: a locked key
        other = enqueue(cluster, "pgb.ev")       # another endpoint
        t0 = time.monotonic()
        ok = within(cluster, lambda: delivered_and_recorded(cluster, same) and
                    delivered_and_recorded(cluster, other), PROMPT_S)
        assert ok, ("not delivered and recorded within %d s while purge('0') is uncommitted: "
                    "same type %r, other endpoint %r, requests a=%d b=%d, worker %r" % (
                        PROMPT_S, row(cluster, same), row(cluster, other),
                        receiver.count("/pg_a"), receiver.count("/pg_b"), worker_wait(cluster)))
        print("delivered and recorded in %.2f s under an open purge" % (time.monotonic() - t0))
        # a later event is not held back by the stats kept for later either
        later = enqueue(cluster, "pgb.ev2")
        assert within(cluster, lambda: delivered_and_recorded(cluster, later), PROMPT_S), \
            "a later event waited: %r" % row(cluster, later)
        admin.commit()
    finally:
        admin.close()
    # the first delivery was purged; the three since are counted once each
    got = {}

    def settled():
        got["rows"], ok = stats_match_attempts(cluster, ["pg_a", "pg_b"])
        return ok and len(got["rows"]) == 3
    assert within(cluster, settled, PROMPT_S), \
        "stats do not match the attempts after the commit: %r" % (got.get("rows"),)
    assert sorted((r[0], r[1], int(r[2])) for r in got["rows"]) == [
        ("pg_a", "pga.ev", 1), ("pg_b", "pgb.ev", 1), ("pg_b", "pgb.ev2", 1)]
    assert receiver.count("/pg_a") == 2 and receiver.count("/pg_b") == 2, \
        "a delivery was sent twice: a=%d b=%d" % (receiver.count("/pg_a"), receiver.count("/pg_b"))


def test_drop_endpoint_force_uncommitted_does_not_stop_others(cluster, receiver, endpoint_factory):
    """drop_endpoint(force => true) uncommitted deletes rows the worker has
    claimed and sent: their outcomes wait (then go with the rows), and the
    other endpoints keep delivering."""
    endpoint_factory("dr_fast", receiver.url("/dr_fast"), event_types="{drfast.*}")
    endpoint_factory("dr_slow", receiver.url("/dr_slow"), event_types="{drslow.*}", timeout=20)
    receiver.set_delay("/dr_slow", 2.0)
    slow = [enqueue(cluster, "drslow.ev") for _ in range(2)]
    assert receiver.wait_for(2, "/dr_slow", timeout=10), "dr_slow's requests not sent"
    admin = cluster.connect(autocommit=False)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT callback.drop_endpoint('dr_slow', force => true)")
        # the slow answers come back now, for rows the admin is deleting
        fast = []
        t0 = time.monotonic()
        deadline = t0 + 4
        while time.monotonic() < deadline:
            fast.append(enqueue(cluster, "drfast.ev"))
            ok = within(cluster, lambda: delivered_and_recorded(cluster, fast[-1]), PROMPT_S)
            assert ok, ("dr_fast's event %d not delivered within %d s while "
                        "drop_endpoint('dr_slow', force => true) is uncommitted: row %r, "
                        "worker %r" % (len(fast), PROMPT_S, row(cluster, fast[-1]),
                                       worker_wait(cluster)))
        print("%d events of dr_fast delivered in %.1f s under the open drop" % (
            len(fast), time.monotonic() - t0))
        admin.commit()
    finally:
        admin.close()
    assert cluster.query("SELECT count(*) FROM callback.callback_queue WHERE event_id = ANY (%s::uuid[])",
                         (slow,))[0][0] == 0
    after = enqueue(cluster, "drfast.ev")
    assert within(cluster, lambda: delivered_and_recorded(cluster, after), PROMPT_S)


def test_process_callbacks_waits_for_the_lock_and_counts_once(cluster, receiver, endpoint_factory):
    """process_callbacks() runs in its caller's transaction, which chose to
    wait: under an open purge('0') it waits on the stats row, and once the
    purge commits it finishes, each attempt recorded and counted once.
    Runs last: it restarts the cluster without a worker for its database."""
    cluster.set_conf(**{"callback.database_name": "pgcb_no_such_db"})
    cluster.restart()
    cluster.wait_until(lambda: not cluster.worker_pids(), timeout=20, what="no worker")
    endpoint_factory("pc_a", receiver.url("/pc_a"), event_types="{pca.*}")
    early_in_minute(cluster)
    enqueue(cluster, "pca.ev")
    assert cluster.scalar("SELECT callback.process_callbacks(10)") == 1
    admin = cluster.connect(autocommit=False)
    drainer = cluster.connect(autocommit=True)
    result = {}
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT callback.purge('0')")
        ev = enqueue(cluster, "pca.ev")
        drainer_pid = drainer.get_backend_pid()

        def drain():
            with drainer.cursor() as cur:
                cur.execute("SELECT callback.process_callbacks(10)")
                result["n"] = cur.fetchone()[0]
        import threading
        t = threading.Thread(target=drain)
        t.start()
        cluster.wait_until(
            lambda: cluster.scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                   (drainer_pid,)) == "Lock",
            timeout=10, what="process_callbacks() waiting on the purge's lock")
        assert receiver.count("/pc_a") == 2
        admin.commit()
        t.join(timeout=15)
        assert not t.is_alive(), "process_callbacks() still waits after the purge committed"
    finally:
        admin.close()
        drainer.close()
    assert result.get("n") == 1
    assert delivered_and_recorded(cluster, ev)
    rows, ok = stats_match_attempts(cluster, ["pc_a"])
    assert ok and [(r[1], int(r[2])) for r in rows] == [("pca.ev", 1)], rows
