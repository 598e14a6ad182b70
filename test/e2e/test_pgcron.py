"""End-to-end with the real pg_cron (postgresql-15-cron 1.4.2): jobs made
with cron.schedule run in the cluster and do pg_callback's work.

pg_cron 1.4 schedules by the minute only: a '* * * * *' job runs at the next
minute boundary.  Both jobs are scheduled once, by a module fixture, so that
the two tests wait for the same minute (each poll is bounded at 130 s).

- a purge job (callback.purge('1 hour')) runs - cron.job_run_details says
  succeeded - and removes old delivered and dead rows, their attempts and
  their stats, but keeps pending rows (however old) and recent rows;
- a drain job (callback.process_callbacks(100)) delivers queued events to a
  real receiver, signed, while no delivery worker runs for the database
  (callback.database_name names a database that does not exist, so the
  launcher starts none).

Jobs run in background workers (cron.use_background_workers): the cluster
listens on a Unix socket only, whose directory is not known when this
module's settings are written.
"""

import base64
import hashlib
import hmac
import json
import os

import pytest

from cluster import TEST_DB
from conftest import make_endpoint, record_figure
from receiver import Receiver

NO_SUCH_DB = "pgcb_cron_no_worker_here"

CLUSTER_CONF = {
    "shared_preload_libraries": "pg_callback, pg_cron",
    "cron.database_name": TEST_DB,
    "cron.use_background_workers": True,
    "max_worker_processes": 24,
    # no delivery worker for the test database: pg_cron drives delivery
    "callback.database_name": NO_SUCH_DB,
}

CRON_WAIT_S = 130
N_DRAIN = 20


def spec_verifies(secret, rec):
    """Standard Webhooks v1, from the specification alone."""
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    h = rec.headers
    signed = b"%s.%s.%s" % (h["webhook-id"].encode(), h["webhook-timestamp"].encode(), rec.body)
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(t, expected) for t in h.get("webhook-signature", "").split(" "))


def endpoint_id(cluster, name):
    return cluster.scalar("SELECT id FROM callback.callback_endpoints WHERE name = %s", (name,))


def counts(cluster, eid):
    """(queue rows by status, attempts, stats rows) of one endpoint."""
    q = dict(cluster.query("SELECT status::text, count(*) FROM callback.callback_queue "
                           " WHERE endpoint_id = %s GROUP BY 1", (eid,)))
    a = cluster.scalar("SELECT count(*) FROM callback.callback_attempts WHERE endpoint_id = %s",
                       (eid,))
    s = cluster.scalar("SELECT count(*) FROM callback.callback_stats WHERE endpoint_id = %s",
                       (eid,))
    return q, a, s


def drain_now(cluster):
    """Deliver what is due from this session (there is no worker)."""
    total = 0
    for _ in range(20):
        n = cluster.scalar("SELECT callback.process_callbacks(100)")
        total += n
        if n == 0:
            return total
    raise AssertionError("process_callbacks kept finding work")


def job_runs(cluster, jobid):
    return cluster.query(
        "SELECT status, return_message, start_time, end_time FROM cron.job_run_details "
        " WHERE jobid = %s ORDER BY runid", (jobid,))


def wait_job_succeeded(cluster, jobid, what):
    def done():
        runs = job_runs(cluster, jobid)
        failed = [r for r in runs if r[0] == "failed"]
        assert not failed, "the %s job failed: %r" % (what, failed)
        ok = [r for r in runs if r[0] == "succeeded"]
        return ok[0] if ok else False
    return cluster.wait_until(done, timeout=CRON_WAIT_S, interval=1.0,
                              what="a succeeded run of the %s job in cron.job_run_details" % what)


@pytest.fixture(scope="module")
def cron_jobs(cluster):
    """Prepare the data of both tests, then schedule both jobs once."""
    # the setting this module relies on are in force
    assert "pg_cron" in cluster.scalar("SHOW shared_preload_libraries")
    assert cluster.scalar("SHOW cron.database_name") == cluster.dbname
    assert cluster.scalar("SHOW callback.database_name") == NO_SUCH_DB
    version = cluster.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
    assert version, "pg_cron is not created in %s" % cluster.dbname
    cluster.wait_until(cluster.launcher_pid, timeout=30, what="the pg_callback launcher")
    assert cluster.worker_pid() is None, "a delivery worker runs: the drain test would prove nothing"

    r = Receiver(host="127.0.0.1", port=0).start()
    jobs = {}
    try:
        # --- purge data: old delivered + dead, recent delivered, old pending
        old = make_endpoint(cluster, "cron_purge_old", r.url("/old"), event_types="{cp.old}")
        recent = make_endpoint(cluster, "cron_purge_recent", r.url("/recent"),
                               event_types="{cp.recent}")
        held = make_endpoint(cluster, "cron_purge_pending", r.url("/held"),
                             event_types="{cp.pending}")
        cluster.execute("SELECT callback.pause_endpoint('cron_purge_pending')")
        r.script("/old", [400])  # one of the old deliveries is a dead letter
        cluster.execute("SELECT callback.enqueue('cp.old', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 6) g")
        cluster.execute("SELECT callback.enqueue('cp.recent', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 3) g")
        cluster.execute("SELECT callback.enqueue('cp.pending', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, 4) g")
        drain_now(cluster)
        assert r.count("/old") == 6 and r.count("/recent") == 3 and r.count("/held") == 0
        # age the old endpoint's history and the held deliveries by two days
        cluster.execute("UPDATE callback.callback_queue SET created_at = created_at - interval '2 days', "
                        "       finished_at = finished_at - interval '2 days' WHERE endpoint_id = %s", (old,))
        cluster.execute("UPDATE callback.callback_attempts SET started_at = started_at - interval '2 days' "
                        " WHERE endpoint_id = %s", (old,))
        cluster.execute("UPDATE callback.callback_stats SET minute = minute - interval '2 days' "
                        " WHERE endpoint_id = %s", (old,))
        cluster.execute("UPDATE callback.callback_queue SET created_at = created_at - interval '2 days', "
                        "       next_attempt_at = next_attempt_at - interval '2 days' "
                        " WHERE endpoint_id = %s", (held,))
        before = {k: counts(cluster, v) for k, v in
                  (("old", old), ("recent", recent), ("held", held))}
        assert before["old"] == ({"delivered": 5, "dead": 1}, 6, 1), before
        assert before["recent"] == ({"delivered": 3}, 3, 1), before
        assert before["held"] == ({"pending": 4}, 0, 0), before

        # --- drain data: events for a signed endpoint, left queued
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        drain = make_endpoint(cluster, "cron_drain", r.url("/drain"), event_types="{cd.*}",
                              secret=secret)
        cluster.execute("SELECT callback.enqueue('cd.tick', jsonb_build_object('i', g)) "
                        "  FROM generate_series(1, %s) g", (N_DRAIN,))
        assert counts(cluster, drain)[0] == {"pending": N_DRAIN}

        # --- both jobs, every minute
        scheduled_at = cluster.scalar("SELECT now()")
        jobs["purge"] = cluster.scalar(
            "SELECT cron.schedule('pgcb-purge', '* * * * *', $$SELECT callback.purge('1 hour')$$)")
        jobs["drain"] = cluster.scalar(
            "SELECT cron.schedule('pgcb-drain', '* * * * *', "
            "                     'SELECT callback.process_callbacks(100)')")
        yield dict(receiver=r, jobs=jobs, ids=dict(old=old, recent=recent, held=held, drain=drain),
                   before=before, secret=secret, scheduled_at=scheduled_at, version=version)
    finally:
        for jobid in jobs.values():
            try:
                cluster.execute("SELECT cron.unschedule(%s)", (jobid,))
            except Exception:
                pass
        r.stop()


def test_cron_purge_job_removes_old_history_keeps_pending_and_recent(cluster, cron_jobs):
    ids = cron_jobs["ids"]
    status, message, start, end = wait_job_succeeded(cluster, cron_jobs["jobs"]["purge"], "purge")
    record_figure("pg_cron %s: purge job scheduled at %s ran %s -> %s (%s)"
                  % (cron_jobs["version"], cron_jobs["scheduled_at"], start, end, message))
    assert start >= cron_jobs["scheduled_at"]

    old = counts(cluster, ids["old"])
    recent = counts(cluster, ids["recent"])
    held = counts(cluster, ids["held"])
    # old delivered and dead rows, their attempts and stats: gone
    assert old == ({}, 0, 0), old
    # recent history and pending deliveries (even two days old): kept
    assert recent == cron_jobs["before"]["recent"], recent
    assert held == cron_jobs["before"]["held"], held


def test_cron_drain_job_delivers_signed(cluster, cron_jobs):
    r = cron_jobs["receiver"]
    ids = cron_jobs["ids"]
    status, message, start, end = wait_job_succeeded(cluster, cron_jobs["jobs"]["drain"], "drain")
    assert r.wait_for(N_DRAIN, "/drain", timeout=10), \
        "the drain job succeeded but only %d of %d requests arrived" % (r.count("/drain"), N_DRAIN)
    assert cluster.worker_pid() is None, "a delivery worker started after all"

    reqs = r.requests("/drain")
    assert len(reqs) == N_DRAIN
    assert len({q.headers["webhook-id"] for q in reqs}) == N_DRAIN
    bad = [q.headers.get("webhook-signature") for q in reqs
           if not spec_verifies(cron_jobs["secret"], q)]
    assert not bad, "%d requests with a bad signature: %r" % (len(bad), bad[:3])
    got = sorted(json.loads(q.body)["data"]["i"] for q in reqs)
    assert got == list(range(1, N_DRAIN + 1)), got

    q, attempts, _ = counts(cluster, ids["drain"])
    assert q == {"delivered": N_DRAIN} and attempts == N_DRAIN, (q, attempts)
    # delivered during a run of the job (the job's own transaction)
    first, last = cluster.query(
        "SELECT min(last_attempt_at), max(finished_at) FROM callback.callback_queue "
        " WHERE endpoint_id = %s", (ids["drain"],))[0]
    runs = [x for x in job_runs(cluster, cron_jobs["jobs"]["drain"]) if x[0] == "succeeded"]
    assert any(s <= first and last <= e for _, _, s, e in runs), (first, last, runs)
    record_figure("pg_cron %s: drain job (process_callbacks(100)), no worker: %d signed "
                  "deliveries, job ran %s -> %s (%s)"
                  % (cron_jobs["version"], N_DRAIN, start, end, message))
