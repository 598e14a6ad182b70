"""End-to-end: races around the worker loop, each against a real cluster and
a real receiver.

- a stall longer than the lease (the worker stopped with SIGSTOP while a
  request is in flight) loses no outcome: every request the receiver saw
  has its attempt row, and attempts counts them;
- PREPARE TRANSACTION of a transaction that queued an event leaves no wake
  flag behind (the next, unrelated commit of that session does not wake the
  worker), and COMMIT PREPARED wakes it (delivered long before the poll);
- resume_endpoint closes an open breaker even when its transaction began
  before the breaker opened, and the worker's breaker write-back does not
  overwrite a resume that committed while it held the endpoint's row (the
  worker skips the row meanwhile and writes its breaker later, if at all);
- DROP DATABASE by a role that may not drop the worker's database (plain,
  inside a transaction block, WITH (FORCE)) leaves the worker alone; the
  owner's drop still succeeds at once.  Runs last: it drops the database.

Every wait is a bounded poll.  The windows in which something must NOT
happen (a spurious wake, a late delivery) are bounded polls that expect the
condition to stay false; each is short next to what the old behaviour
needed to show itself (the 60 s poll, the 60 s cooldown).
"""

import os
import signal
import time

import psycopg2
import pytest

from conftest import record_figure

LONG_POLL_MS = 60000

CLUSTER_CONF = {
    # no pg_cron: its launcher would hold the database the last test drops
    "shared_preload_libraries": "pg_callback",
    "cron.database_name": None,
    "max_prepared_transactions": 4,
    # the shortest lease; with the stall test's endpoint timeout (0.3 s) and
    # this connect timeout the worker's lease is the 1 s given here
    "callback.lease": "1s",
    "callback.connect_timeout": "100ms",
}


def enqueue(cluster, event_type, conn=None):
    sql = "SELECT callback.enqueue(%s, '{}'::jsonb)::text"
    if conn is None:
        return cluster.scalar(sql, (event_type,))
    with conn.cursor() as cur:
        cur.execute(sql, (event_type,))
        return cur.fetchone()[0]


def msg_id(event_uuid):
    return "msg_" + event_uuid.replace("-", "")


def batches(cluster):
    return cluster.scalar("SELECT sum(batches) FROM callback.callback_worker_stats")


def stays_false(fn, seconds, interval=0.05):
    """Poll fn() for `seconds`; the first truthy value, or None if none came."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)  # the poll interval of a bounded poll
    return None


def set_poll(cluster, ms):
    cluster.set_conf(**{"callback.poll_interval": "%dms" % ms})
    cluster.reload()
    cluster.wait_until(
        lambda: cluster.scalar("SELECT setting::int FROM pg_settings "
                               " WHERE name = 'callback.poll_interval'") == ms,
        timeout=10, what="poll_interval %d ms loaded" % ms)


@pytest.fixture(autouse=True)
def worker_up(cluster):
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")


# ------------------------------------------------------------------ item 8: stall > lease

def test_outcome_after_stall_longer_than_lease_is_kept(cluster, receiver, endpoint_factory):
    path = "/stall"
    eid = endpoint_factory("stall", receiver.url(path), event_types="{stall.*}",
                           timeout=0.3, retry_schedule=[0.2], max_attempts=20,
                           failure_threshold=1000)
    receiver.set_delay(path, 0.2)
    pid = cluster.running_worker_pid()
    ev = enqueue(cluster, "stall.ev")
    assert receiver.wait_for(1, path, timeout=10), "the first request never arrived"
    os.kill(pid, signal.SIGSTOP)
    try:
        # stopped with its request in flight until its lease is well past
        cluster.wait_until(
            lambda: cluster.scalar(
                "SELECT lease_expires_at < pg_catalog.clock_timestamp() - interval '500 ms' "
                "  FROM callback.callback_queue WHERE endpoint_id = %s", (eid,)),
            timeout=20, what="the lease to run out while the worker is stopped")
        receiver.set_delay(path, 0)
    finally:
        os.kill(pid, signal.SIGCONT)

    cluster.wait_until(
        lambda: cluster.scalar("SELECT status::text FROM callback.callback_queue "
                               " WHERE endpoint_id = %s", (eid,)) == "delivered",
        timeout=20, what="the delivery delivered")
    sent = [r for r in receiver.requests(path) if r.headers.get("webhook-id") == msg_id(ev)]
    attempts, rows = cluster.query(
        "SELECT q.attempts, (SELECT count(*) FROM callback.callback_attempts a "
        "                     WHERE a.delivery_id = q.id) "
        "  FROM callback.callback_queue q WHERE q.endpoint_id = %s", (eid,))[0]
    record_figure("stall > lease: %d requests sent, attempts %d, %d attempt rows"
                  % (len(sent), attempts, rows))
    assert rows == len(sent) and attempts == len(sent), \
        "%d requests reached the receiver but attempts = %d and %d attempt rows" \
        % (len(sent), attempts, rows)


def test_outcome_kept_when_another_sweep_returned_the_row(cluster, receiver, endpoint_factory):
    """Another claimer's sweep (done here by hand, as a second worker would)
    returns our row to 'pending' while our request is in flight: the
    outcome is still recorded, since nobody claimed the row again.  (The
    hand-made sweep also puts the row's due time off, so that our worker
    cannot claim it again before its outcome comes in; the write-back does
    not look at it.)"""
    path = "/swept"
    eid = endpoint_factory("swept", receiver.url(path), event_types="{swept.*}",
                           timeout=5, retry_schedule=[0.2], max_attempts=20)
    receiver.set_delay(path, 0.5)
    pid = cluster.running_worker_pid()
    ev = enqueue(cluster, "swept.ev")
    assert receiver.wait_for(1, path, timeout=10), "the first request never arrived"
    os.kill(pid, signal.SIGSTOP)
    try:
        n = cluster.scalar(
            "WITH s AS (UPDATE callback.callback_queue "
            "              SET status = 'pending', lease_expires_at = NULL, claimed_by = NULL, "
            "                  next_attempt_at = now() + interval '1 hour' "
            "            WHERE endpoint_id = %s AND status = 'sending' RETURNING 1) "
            "SELECT count(*) FROM s", (eid,))
        assert n == 1
        receiver.set_delay(path, 0)
    finally:
        os.kill(pid, signal.SIGCONT)
    cluster.wait_until(
        lambda: cluster.scalar("SELECT status::text FROM callback.callback_queue "
                               " WHERE endpoint_id = %s", (eid,)) == "delivered",
        timeout=20, what="the delivery delivered")
    sent = [r for r in receiver.requests(path) if r.headers.get("webhook-id") == msg_id(ev)]
    attempts, rows = cluster.query(
        "SELECT q.attempts, (SELECT count(*) FROM callback.callback_attempts a "
        "                     WHERE a.delivery_id = q.id) "
        "  FROM callback.callback_queue q WHERE q.endpoint_id = %s", (eid,))[0]
    record_figure("row swept by another claimer while in flight: %d requests sent, "
                  "attempts %d, %d attempt rows" % (len(sent), attempts, rows))
    assert rows == len(sent) and attempts == len(sent), \
        "%d requests reached the receiver but attempts = %d and %d attempt rows" \
        % (len(sent), attempts, rows)


# ------------------------------------------------------------------ item 14: PREPARE TRANSACTION

def test_prepared_transaction_leaves_no_wake_and_commit_prepared_wakes(
        cluster, receiver, endpoint_factory):
    path = "/prep"
    eid = endpoint_factory("prep", receiver.url(path), event_types="{prep.*}")
    set_poll(cluster, LONG_POLL_MS)
    s = cluster.connect()
    other = cluster.connect()
    try:
        # a wake now, so that no poll falls in the windows below
        before = batches(cluster)
        cluster.execute("SELECT callback.wake_worker()")
        cluster.wait_until(lambda: batches(cluster) > before, timeout=10,
                           what="a cycle after wake_worker()")
        with s.cursor() as cur:
            cur.execute("BEGIN")
            ev = enqueue(cluster, "prep.ev", conn=s)
            cur.execute("PREPARE TRANSACTION 'pgcb_prep'")
        base = batches(cluster)
        with s.cursor() as cur:
            cur.execute("CREATE TEMP TABLE unrelated (i int)")  # a commit of its own
        woke = stays_false(lambda: batches(cluster) > base, 1.5)
        assert not woke, "the next unrelated commit after PREPARE TRANSACTION woke the worker"

        t0 = time.monotonic()
        with other.cursor() as cur:
            cur.execute("COMMIT PREPARED 'pgcb_prep'")
        ok = receiver.wait_for(1, path, timeout=10)
        took = time.monotonic() - t0
        record_figure("COMMIT PREPARED -> delivered in %.2f s (poll interval %d ms)"
                      % (took, LONG_POLL_MS))
        assert ok, "not delivered within 10 s of COMMIT PREPARED (poll interval %d ms)" \
            % LONG_POLL_MS
        assert receiver.requests(path)[0].headers["webhook-id"] == msg_id(ev)
    finally:
        for c in (s, other):
            c.close()
        for gid, in cluster.query("SELECT gid FROM pg_prepared_xacts"):
            cluster.execute("ROLLBACK PREPARED %s", (gid,))
        set_poll(cluster, 200)
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s",
                          (eid,)) == 1


# ------------------------------------------------------------------ item 15: breaker vs resume

def breaker_state(cluster, name):
    return cluster.scalar("SELECT breaker_state FROM callback.callback_endpoints WHERE name = %s",
                          (name,))


def test_resume_from_transaction_older_than_the_breaker_wins(cluster, receiver, endpoint_factory):
    path = "/brold"
    receiver.script(path, [500])
    endpoint_factory("brold", receiver.url(path), event_types="{brold.*}", failure_threshold=1,
                     breaker_cooldown=60, retry_schedule=[0.2], max_attempts=50)
    r = cluster.connect(autocommit=False)
    try:
        with r.cursor() as cur:
            cur.execute("SELECT now()")   # its now() is from before the breaker opens
        enqueue(cluster, "brold.ev")
        cluster.wait_until(lambda: breaker_state(cluster, "brold") == "open", timeout=10,
                           what="the breaker open")
        with r.cursor() as cur:
            cur.execute("SELECT callback.resume_endpoint('brold')")
        r.commit()
    finally:
        r.close()
    ok = receiver.wait_for(2, path, timeout=8)
    assert ok, "resume_endpoint was ignored: %d requests, breaker %s (cooldown 60 s)" % (
        receiver.count(path), breaker_state(cluster, "brold"))
    assert breaker_state(cluster, "brold") == "closed"


def test_breaker_write_back_does_not_overwrite_a_resume(cluster, receiver, endpoint_factory):
    path = "/brrace"
    receiver.script(path, [500])
    endpoint_factory("brrace", receiver.url(path), event_types="{brrace.*}", failure_threshold=1,
                     breaker_cooldown=60, retry_schedule=[0.2], max_attempts=50)
    pid = cluster.running_worker_pid()
    lk = cluster.connect(autocommit=False)
    try:
        with lk.cursor() as cur:
            cur.execute("SELECT 1 FROM callback.callback_endpoints WHERE name = 'brrace' FOR UPDATE")
        enqueue(cluster, "brrace.ev")
        assert receiver.wait_for(1, path, timeout=10)
        # the worker's write-back of the breaker it just opened found our
        # lock: it skipped the row (it never waits on one: test_worker_locks)
        # and committed the attempt, keeping the breaker to write later
        cluster.wait_until(
            lambda: cluster.scalar("SELECT count(*) FROM callback.callback_attempts a "
                                   "  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
                                   " WHERE e.name = 'brrace'") >= 1,
            timeout=10, what="the worker's write-back committed, the endpoint row skipped")
        assert cluster.scalar("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                              (pid,)) != "Lock"
        assert breaker_state(cluster, "brrace") == "closed"   # not written: we hold the row
        with lk.cursor() as cur:
            cur.execute("SELECT callback.resume_endpoint('brrace')")
        lk.commit()
    finally:
        lk.close()
    ok = receiver.wait_for(2, path, timeout=8)
    state = breaker_state(cluster, "brrace")
    assert ok and state == "closed", \
        "the worker's write-back overwrote resume_endpoint: breaker %s, %d requests" % (
            state, receiver.count(path))


# ------------------------------------------------------------------ item 3: DROP DATABASE guard

def test_drop_database_denied_leaves_the_worker(cluster, receiver, endpoint_factory):
    path = "/guard"
    endpoint_factory("guard", receiver.url(path), event_types="{guard.*}")
    cluster.execute("DROP ROLE IF EXISTS pgcb_nobody")
    cluster.execute("CREATE ROLE pgcb_nobody LOGIN")
    pid = cluster.running_worker_pid()
    attempts = [
        ("plain", ['DROP DATABASE "%s"' % cluster.dbname], "must be owner"),
        ("in a transaction block", ["BEGIN", 'DROP DATABASE "%s"' % cluster.dbname],
         "cannot run inside a transaction block"),
        ("WITH (FORCE)", ['DROP DATABASE "%s" WITH (FORCE)' % cluster.dbname], "must be owner"),
    ]
    for what, stmts, expect in attempts:
        dsn = cluster.dsn("postgres")
        dsn["user"] = "pgcb_nobody"
        conn = psycopg2.connect(**dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                with pytest.raises(psycopg2.Error) as e:
                    for s in stmts:
                        cur.execute(s)
                assert expect in str(e.value), (what, str(e.value))
        finally:
            conn.close()
        n = receiver.count(path)
        t0 = time.monotonic()
        enqueue(cluster, "guard.ev")
        ok = receiver.wait_for(n + 1, path, timeout=5)
        took = time.monotonic() - t0
        now_pid = cluster.worker_pid()
        record_figure("denied DROP DATABASE (%s): worker %s -> %s, next event in %.2f s"
                      % (what, pid, now_pid, took))
        assert now_pid == pid, "a denied DROP DATABASE (%s) evicted the worker (%s -> %s)" % (
            what, pid, now_pid)
        assert ok, "no delivery within 5 s after a denied DROP DATABASE (%s)" % what

    # the owner's drop fails after the guard let it through (another session
    # is connected): the worker was asked to leave, and comes back at once
    # rather than when the hold runs out (10 s after the drop began)
    blocker = cluster.connect()
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg2.Error) as e:
            cluster.execute('DROP DATABASE "%s"' % cluster.dbname, dbname="postgres")
        failed_after = time.monotonic() - t0
        assert "is being accessed by other users" in str(e.value), str(e.value)
        back = cluster.wait_until(lambda: cluster.worker_pid() not in (None, pid) and
                                  cluster.worker_pid(), timeout=30,
                                  what="the worker back after the failed drop")
        back_after = time.monotonic() - t0
    finally:
        blocker.close()
    record_figure("owner's DROP DATABASE failing (other session): error after %.2f s, "
                  "worker %s back %.2f s after the drop began" % (failed_after, back, back_after))
    assert back_after - failed_after < 3, \
        "the worker came back %.1f s after the failed drop's error" % (back_after - failed_after)

    # the owner's drop goes ahead at once, the worker leaves
    cluster.close_connections()
    t0 = time.monotonic()
    cluster.execute('DROP DATABASE "%s"' % cluster.dbname, dbname="postgres")
    took = time.monotonic() - t0
    record_figure("owner's DROP DATABASE of the served database took %.2f s" % took)
    assert took < 10, "DROP DATABASE took %.1f s" % took
    cluster.wait_until(lambda: cluster.worker_pid() is None, timeout=10,
                       what="the worker to be gone")
