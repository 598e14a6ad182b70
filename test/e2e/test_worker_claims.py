"""End-to-end: README claims about the delivery worker that only timing,
process state or connection counts can show.

- "A background worker is woken at commit": this module's cluster polls
  every 10 s (callback.poll_interval), so an arrival within 2 s of COMMIT,
  time after time, is explained only by the wake at commit.
- "connections reused": the receiver counts the TCP connections it accepts;
  many requests arrive over few connections.
- "No transaction is open while HTTP is in flight": while a receiver holds
  requests unanswered, the worker's backend has no transaction, no xid, no
  snapshot and no lock (pg_stat_activity, pg_locks).
- "SIGTERM ... and postmaster death are handled inside the same wait,
  however slow an endpoint is": with requests stalled at the receiver (and
  an endpoint timeout of 5 minutes) the worker exits within seconds of a
  SIGTERM, and of the postmaster's death.
- "It starts the worker again if it exits, with a back-off if it keeps
  failing": a worker terminated as soon as it starts is started again after
  delays that grow.

Real parts only: throwaway clusters, the real worker and launcher, libcurl,
test/receiver.py on loopback.  Every wait is a bounded poll.
"""

import os
import re
import signal
import time

import pytest

from cluster import running_cluster
from conftest import record_figure

POLL_S = 10
MAX_INFLIGHT_PER_ENDPOINT = 16
CLUSTER_CONF = {
    "callback.poll_interval": "%ds" % POLL_S,
    "callback.max_inflight_per_endpoint": MAX_INFLIGHT_PER_ENDPOINT,
}
STALL_TIMEOUT_S = 300   # the stalled endpoint's own timeout: nothing waits for it
EXIT_BOUND_S = 10       # well under it, generous for a loaded machine


# ------------------------------------------------------------------ helpers

def enqueue(cluster, etype, n=1, start=1):
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(%s, %s) g", (etype, start, start + n - 1))


def queue_counts(cluster, eid):
    return dict(cluster.query(
        "SELECT status::text, count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        " GROUP BY 1", (eid,)))


def wait_delivered(cluster, eid, n, timeout=60):
    cluster.wait_until(lambda: queue_counts(cluster, eid) == {"delivered": n}, timeout=timeout,
                       interval=0.05, what="%d deliveries of endpoint %d delivered (now %r)"
                       % (n, eid, queue_counts(cluster, eid)))


def worker_up(cluster, other_than=None, timeout=60):
    def pid():
        p = cluster.worker_pid()
        return p if p and p != other_than else None
    return cluster.wait_until(pid, timeout=timeout, interval=0.02,
                              what="a pg_callback worker (other than %s)" % other_than)


def process_gone(pid):
    """The process exited (or is a zombie nobody reaped yet)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            state = re.search(r"^State:\s+(\S)", f.read(), re.M)
        return bool(state and state.group(1) in ("Z", "X"))
    except OSError:
        return True


def stall(cluster, receiver, endpoint_factory, name, n):
    """An endpoint whose receiver holds every request unanswered, and n
    requests in flight to it; returns the endpoint id."""
    path = "/" + name
    receiver.set_delay(path, 3600)
    eid = endpoint_factory(name, receiver.url(path), event_types=["%s.*" % name],
                           timeout=STALL_TIMEOUT_S)
    enqueue(cluster, name + ".ev", n)
    assert receiver.wait_for(n, path, timeout=30), \
        "only %d of %d requests reached the stalling receiver" % (receiver.count(path), n)
    return eid


@pytest.fixture(autouse=True)
def _worker(cluster):
    worker_up(cluster)


# ------------------------------------------------------------------ tests

def test_delivery_starts_at_commit(cluster, receiver, endpoint_factory):
    """With a 10 s poll, every one of 6 commits (3 by callback.enqueue, 3 by
    the C trigger) arrives within 2 s of COMMIT returning.  Without the wake
    each would wait for the next poll, at a time uniform over 10 s: 6 fast
    arrivals by luck would have a chance of 0.2^6."""
    assert cluster.scalar("SHOW callback.poll_interval") == "%ds" % POLL_S
    eid = endpoint_factory("wake", receiver.url("/wake"), event_types="{wake.*}")
    cluster.execute("DROP TABLE IF EXISTS public.wake_rows; "
                    "CREATE TABLE public.wake_rows (id int PRIMARY KEY); "
                    "CREATE TRIGGER wake_cb AFTER INSERT ON public.wake_rows "
                    "  FOR EACH ROW EXECUTE FUNCTION callback.trigger('wake')")
    conn = cluster.connect(autocommit=False)
    latencies = []
    try:
        cur = conn.cursor()
        for i in range(1, 7):
            if i % 2:
                cur.execute("SELECT callback.enqueue('wake.by_enqueue', jsonb_build_object('i', %s))",
                            (i,))
            else:
                cur.execute("INSERT INTO public.wake_rows VALUES (%s)", (i,))
            conn.commit()
            t_commit = time.monotonic()
            assert receiver.wait_for(i, "/wake", timeout=3 * POLL_S), \
                "commit %d never arrived" % i
            latencies.append(receiver.requests("/wake")[-1].monotonic - t_commit)
            # the worker writes the outcome back, then sleeps until woken
            wait_delivered(cluster, eid, i)
    finally:
        conn.close()
    record_figure("wake at commit, poll_interval %d s: COMMIT -> arrival %s ms"
                  % (POLL_S, ", ".join("%.1f" % (x * 1000) for x in latencies)))
    slow = [round(x, 2) for x in latencies if x >= 2.0]
    assert not slow, \
        ("arrivals %r s after COMMIT with a %d s poll: the worker was not woken at commit"
         % (slow, POLL_S))


def test_connections_reused(cluster, receiver, endpoint_factory):
    """20 events one after another go over one connection; 1000 at once over
    no more connections than the endpoint may have requests in flight."""
    eid = endpoint_factory("reuse", receiver.url("/reuse"), event_types="{reuse.*}")
    for i in range(1, 21):
        enqueue(cluster, "reuse.one", 1, start=i)
        wait_delivered(cluster, eid, i)
    one_by_one = receiver.connections()
    assert receiver.count("/reuse") == 20
    assert one_by_one == 1, \
        "20 requests one after another opened %d connections (not reused)" % one_by_one

    enqueue(cluster, "reuse.many", 1000)
    wait_delivered(cluster, eid, 1020)
    total = receiver.connections()
    record_figure("connections reused: 20 sequential requests over %d connection(s); "
                  "1020 requests over %d connections (max_inflight_per_endpoint %d)"
                  % (one_by_one, total, MAX_INFLIGHT_PER_ENDPOINT))
    assert receiver.count("/reuse") == 1020
    assert total <= MAX_INFLIGHT_PER_ENDPOINT + 1, \
        "1020 requests opened %d connections (max %d in flight): not reused" \
        % (total, MAX_INFLIGHT_PER_ENDPOINT)


def _worker_xact(cluster, pid):
    return cluster.query(
        "SELECT a.xact_start IS NOT NULL, a.backend_xid IS NOT NULL, "
        "       a.backend_xmin IS NOT NULL, "
        "       extract(epoch FROM clock_timestamp() - a.xact_start)::float8, "
        "       (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid) "
        "  FROM pg_stat_activity a WHERE a.pid = %s", (pid,), dbname="postgres")


def test_no_transaction_open_while_http_in_flight(cluster, receiver, endpoint_factory):
    pid = worker_up(cluster)
    eid = stall(cluster, receiver, endpoint_factory, "intx", 8)
    samples = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        rows = _worker_xact(cluster, pid)
        assert rows, "the worker (pid %d) is gone" % pid
        samples.append(rows[0])
        time.sleep(0.05)  # sampling pace while the requests stay stalled
    assert receiver.count("/intx") == 8 and queue_counts(cluster, eid) == {"sending": 8}, \
        "the requests were not in flight all along: %r" % queue_counts(cluster, eid)
    clean = [s for s in samples if not (s[0] or s[1] or s[2] or s[4])]
    held = [s for s in samples if s[3] is not None and s[3] >= 1.0]
    record_figure("no transaction during HTTP: %d of %d samples of the worker with 8 requests "
                  "stalled show no transaction, xid, snapshot or lock" % (len(clean), len(samples)))
    # a claim / write-back cycle may be caught in passing; none lasts
    assert not held, "the worker held a transaction open for %.1f s while HTTP was in flight" \
        % max(s[3] for s in held)
    assert len(clean) >= 0.8 * len(samples), \
        "the worker had a transaction, snapshot or locks in %d of %d samples: %r" \
        % (len(samples) - len(clean), len(samples), samples[:5])
    receiver.set_delay("/intx", 0)


def test_sigterm_while_endpoint_stalls(cluster, receiver, endpoint_factory):
    pid = worker_up(cluster)
    off = len(cluster.log_text())
    eid = stall(cluster, receiver, endpoint_factory, "term", 8)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    cluster.wait_until(lambda: process_gone(pid), timeout=EXIT_BOUND_S, interval=0.02,
                       what="the worker (pid %d) to exit on SIGTERM while 8 requests are "
                            "stalled (endpoint timeout %d s)" % (pid, STALL_TIMEOUT_S))
    took = time.monotonic() - t0
    record_figure("SIGTERM with 8 requests stalled (endpoint timeout %d s): worker exited "
                  "in %.0f ms" % (STALL_TIMEOUT_S, took * 1000))
    # it comes back and delivers what it had in flight (at least once)
    receiver.set_delay("/term", 0)
    worker_up(cluster, other_than=pid)
    wait_delivered(cluster, eid, 8)
    assert "terminated by signal" not in cluster.log_text()[off:]


def test_postmaster_death_while_endpoint_stalls(receiver):
    """A cluster of its own: its postmaster is killed while the worker has
    requests stalled; the worker and the launcher exit within seconds."""
    with running_cluster("pmdeath", extra_conf=CLUSTER_CONF) as c:
        wpid = worker_up(c)
        lpid = c.launcher_pid()
        assert lpid
        path = "/pmdeath"
        receiver.set_delay(path, 3600)
        c.execute("SELECT callback.create_endpoint('pmdeath', %s, event_types => '{pm.*}', "
                  "timeout => %s * interval '1 second')", (receiver.url(path), STALL_TIMEOUT_S))
        enqueue(c, "pm.ev", 8)
        assert receiver.wait_for(8, path, timeout=30), receiver.count(path)
        c.close_connections()
        t0 = time.monotonic()
        os.kill(c.postmaster_pid(), signal.SIGKILL)
        c.wait_until(lambda: process_gone(wpid) and process_gone(lpid), timeout=EXIT_BOUND_S,
                     interval=0.02, what="the worker (pid %d) and launcher (pid %d) to exit "
                     "after the postmaster died, 8 requests stalled" % (wpid, lpid))
        record_figure("postmaster SIGKILLed with 8 requests stalled (endpoint timeout %d s): "
                      "worker and launcher gone in %.0f ms" % (STALL_TIMEOUT_S,
                                                            (time.monotonic() - t0) * 1000))


def test_launcher_backs_off_a_failing_worker(cluster):
    """Terminate the worker each time it comes up: the launcher starts it
    again after delays that double (launcher.c: from 100 ms, doubling while
    the worker runs less than 10 s)."""
    rounds = 5
    gaps = []
    pid = worker_up(cluster)
    for _ in range(rounds):
        t_term = cluster.scalar("SELECT extract(epoch FROM clock_timestamp())::float8 "
                                "  FROM (SELECT pg_terminate_backend(%s)) t", (pid,))
        new = worker_up(cluster, other_than=pid)
        started = cluster.scalar(
            "SELECT extract(epoch FROM backend_start)::float8 FROM pg_stat_activity "
            " WHERE pid = %s", (new,), dbname="postgres")
        gaps.append(started - t_term)
        pid = new
    record_figure("launcher back-off: worker terminated as it came up, %d times: restarted "
                  "after %s s" % (rounds, ", ".join("%.2f" % g for g in gaps)))
    # lower bounds: 0.1 s doubled each time; a launcher without back-off
    # restarts at once every time
    for k, g in enumerate(gaps):
        assert g >= 0.1 * 2 ** k * 0.9, \
            "restart %d came %.2f s after the exit; the back-off wants %.1f s (gaps %r)" \
            % (k + 1, g, 0.1 * 2 ** k, gaps)
    assert gaps[-1] >= 8 * gaps[0], "the delays do not grow: %r" % gaps
