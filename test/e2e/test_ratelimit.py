"""End-to-end: per-endpoint token buckets and the global cap, measured at a
real receiver from its own arrival times.

- 20/s with burst 5 and 500 queued events: never more than 25 arrivals in
  any one-second window, all 500 arrive, and it takes at least (500-5)/20 s;
  an unlimited endpoint fed meanwhile is not slowed by that backlog;
- alter_endpoint(rate_limit => higher) mid-run raises the measured rate, no
  restart;
- callback.max_rate caps all endpoints together (set with ALTER SYSTEM and
  pg_reload_conf());
- the bucket is shared by the worker and a backend running
  callback.process_callbacks() at the same time;
- a 429, or a 503 with Retry-After, slows the endpoint down.

Every wait is a bounded poll; the arrival times are the receiver's.
"""

import threading
import time

import pytest

from conftest import record_figure


def max_in_window(times, width=1.0):
    """Most arrivals in any half-open window [t, t + width)."""
    times = sorted(times)
    best = 0
    i = 0
    for j in range(len(times)):
        while times[j] - times[i] >= width:
            i += 1
        best = max(best, j - i + 1)
    return best


def _peak_bound(rate, burst):
    """Most arrivals allowed in one 1-second window at the receiver: what the
    bucket lets out (rate + burst) and slack for the scheduling noise of a
    loaded machine, which bunches arrivals that left on time."""
    return int(rate + burst + max(3, 0.2 * (rate + burst)))


def arrivals(receiver, path):
    return sorted(r.monotonic for r in receiver.requests(path))


def enqueue_many(cluster, event_type, n, start=1):
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(%s, %s) g", (event_type, start, start + n - 1))


def queue_counts(cluster, name):
    return dict(cluster.query(
        "SELECT q.status::text, count(*) FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = %s GROUP BY 1", (name,)))


def wait_all_delivered(cluster, name, n, timeout):
    cluster.wait_until(lambda: queue_counts(cluster, name).get("delivered", 0) == n,
                       timeout=timeout, interval=0.2,
                       what="%d deliveries of %s delivered (now %r)"
                            % (n, name, queue_counts(cluster, name)))
    assert queue_counts(cluster, name) == {"delivered": n}


def assert_once_each(receiver, path, n):
    reqs = receiver.requests(path)
    ids = [r.headers.get("webhook-id") for r in reqs]
    assert len(reqs) == n, "%d requests for %d events" % (len(reqs), n)
    assert len(set(ids)) == n, "some event arrived twice"


@pytest.fixture(autouse=True)
def worker_up(cluster):
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")


# ------------------------------------------------------------------ tests

def test_20_per_second_burst_5_with_500_events(cluster, receiver, endpoint_factory):
    n = 500
    endpoint_factory("rl_limited", receiver.url("/limited"), event_types="{rl.limited}",
                     rate_limit=20, rate_burst=5)
    endpoint_factory("rl_free", receiver.url("/free"), event_types="{rl.free}")

    t_commit = time.monotonic()
    enqueue_many(cluster, "rl.limited", n)

    # while the limited endpoint works through its backlog, feed an
    # unlimited one: it must not wait behind the other's tokens
    assert receiver.wait_for(40, "/limited", timeout=30), \
        "only %d limited requests arrived" % receiver.count("/limited")
    m = 200
    t_free = time.monotonic()
    enqueue_many(cluster, "rl.free", m)
    assert receiver.wait_for(m, "/free", timeout=20), \
        "only %d of %d unlimited requests arrived" % (receiver.count("/free"), m)
    free_times = arrivals(receiver, "/free")
    free_took = free_times[-1] - t_free
    limited_meanwhile = receiver.count("/limited")
    record_figure("ratelimit: unlimited endpoint, %d events next to a 20/s backlog: "
                  "commit -> last arrival %.3f s" % (m, free_took))
    # behind the limited backlog it would take ~(500 - 40) / 20 = 23 s: a
    # generous bound that a loaded machine stays under
    assert free_took < 12.0, \
        "the unlimited endpoint took %.1f s for %d events (slowed by the limited one?)" \
        % (free_took, m)
    assert limited_meanwhile < n - 100, \
        "the limited endpoint was not still waiting (%d of %d arrived)" % (limited_meanwhile, n)

    assert receiver.wait_for(n, "/limited", timeout=(n - 5) / 20.0 + 30), \
        "only %d of %d limited requests arrived" % (receiver.count("/limited"), n)
    wait_all_delivered(cluster, "rl_limited", n, timeout=30)
    wait_all_delivered(cluster, "rl_free", m, timeout=30)
    assert_once_each(receiver, "/limited", n)

    times = arrivals(receiver, "/limited")
    peak = max_in_window(times)
    span = times[-1] - times[0]
    rate = (n - 1) / span if span > 0 else float("inf")
    record_figure("ratelimit: 20/s burst 5, %d events: max %d in any 1 s window, "
                  "first -> last arrival %.2f s (%.2f/s), commit -> first %.0f ms"
                  % (n, peak, span, rate, (times[0] - t_commit) * 1000))
    # the bucket allows 20 + 5 per second at the sender; arrival times carry
    # the scheduling noise of a loaded machine, hence the slack (unlimited,
    # the 500 would come in well under a second)
    assert peak <= _peak_bound(20, 5), \
        "%d arrivals in one 1-second window (limit 20/s + burst 5)" % peak
    assert span >= (n - 5) / 20.0 * 0.97, \
        "500 events took only %.2f s: the limit was not applied" % span
    # and it was not much slower than the limit either (generous: half the rate)
    assert span <= (n - 5) / 20.0 * 2.0, "500 events took %.2f s at 20/s" % span


def test_alter_rate_limit_mid_run_takes_effect(cluster, receiver, endpoint_factory):
    n = 300
    endpoint_factory("rl_alter", receiver.url("/alter"), event_types="{rl.alter}",
                     rate_limit=10, rate_burst=1)
    pid_before = cluster.worker_pid()
    enqueue_many(cluster, "rl.alter", n)
    assert receiver.wait_for(26, "/alter", timeout=30)
    before = arrivals(receiver, "/alter")
    # steady state at 10/s, burst excluded
    slow = (25 - 5) / (before[25] - before[5])

    cluster.execute("SELECT callback.alter_endpoint('rl_alter', rate_limit => 50)")
    t_alter = time.monotonic()
    k = receiver.count("/alter")
    assert receiver.wait_for(k + 130, "/alter", timeout=30), \
        "only %d requests after the change" % (receiver.count("/alter") - k)
    after = [t for t in arrivals(receiver, "/alter") if t >= t_alter + 0.3]
    assert len(after) >= 100, len(after)
    fast = (len(after) - 1) / (after[-1] - after[0])
    record_figure("ratelimit: alter_endpoint mid-run: %.1f/s at rate_limit 10, "
                  "%.1f/s after rate_limit => 50" % (slow, fast))
    assert slow <= 13, "measured %.1f/s at rate_limit 10" % slow
    # more than twice the old limit shows the change took effect; the upper
    # bound has slack for arrival noise
    assert 25 <= fast <= 60, "measured %.1f/s after rate_limit => 50" % fast
    assert max_in_window(after) <= _peak_bound(50, 1), max_in_window(after)

    assert receiver.wait_for(n, "/alter", timeout=30)
    wait_all_delivered(cluster, "rl_alter", n, timeout=30)
    assert_once_each(receiver, "/alter", n)
    assert cluster.worker_pid() == pid_before, "the worker was restarted"


def test_global_max_rate_caps_all_endpoints(cluster, receiver, endpoint_factory):
    cap = 25
    per = 100
    endpoint_factory("rl_g1", receiver.url("/g1"), event_types="{rl.g}")
    endpoint_factory("rl_g2", receiver.url("/g2"), event_types="{rl.g}")
    cluster.execute("ALTER SYSTEM SET callback.max_rate = %s" % cap)
    cluster.execute("SELECT pg_reload_conf()")
    try:
        def applied():
            conn = cluster.connect()
            try:
                cur = conn.cursor()
                cur.execute("SHOW callback.max_rate")
                return cur.fetchone()[0] == str(cap)
            finally:
                conn.close()
        cluster.wait_until(applied, timeout=10, what="callback.max_rate = %d after reload" % cap)

        enqueue_many(cluster, "rl.g", per)   # one event, both endpoints
        total = 2 * per
        assert receiver.wait_for(total, None, timeout=(total - cap) / cap + 30), \
            "only %d of %d arrived" % (receiver.count(), total)
        times = arrivals(receiver, None)
        peak = max_in_window(times)
        span = times[-1] - times[0]
        g1 = arrivals(receiver, "/g1")
        g2 = arrivals(receiver, "/g2")
        record_figure("ratelimit: callback.max_rate %d, 2 unlimited endpoints x %d events: "
                      "max %d in any 1 s window, %.2f s (%.1f/s)"
                      % (cap, per, peak, span, (total - 1) / span))
        assert peak <= 2 * cap, "%d arrivals in one second under max_rate %d (burst %d)" \
            % (peak, cap, cap)
        assert span >= (total - cap) / cap * 0.97, \
            "%d events in %.2f s: the global cap was not applied" % (total, span)
        # both endpoints progressed under the shared cap (neither starved)
        mid = times[0] + span / 2
        assert any(t < mid for t in g1) and any(t < mid for t in g2), "one endpoint starved"
        wait_all_delivered(cluster, "rl_g1", per, timeout=30)
        wait_all_delivered(cluster, "rl_g2", per, timeout=30)
    finally:
        cluster.execute("ALTER SYSTEM RESET callback.max_rate")
        cluster.execute("SELECT pg_reload_conf()")


def test_bucket_shared_by_worker_and_process_callbacks(cluster, receiver, endpoint_factory):
    """A backend draining with process_callbacks() takes from the same bucket
    as the worker: together they stay within the endpoint's limit."""
    n = 60
    endpoint_factory("rl_shared", receiver.url("/shared"), event_types="{rl.shared}",
                     rate_limit=10, rate_burst=2)
    stop = threading.Event()
    drained = []
    errors = []

    def drain():
        conn = cluster.connect()
        try:
            cur = conn.cursor()
            while not stop.is_set():
                cur.execute("SELECT callback.process_callbacks(50)")
                drained.append(cur.fetchone()[0])
                stop.wait(0.002)  # pace of the drain loop, not a wait for a condition
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            conn.close()

    th = threading.Thread(target=drain, daemon=True)
    th.start()
    try:
        # The worker is woken just when a token is due, so the backend's
        # polling wins only some tokens; another round of n events (at most
        # three in all) when it won none, so that both really share the bucket.
        for rounds in range(1, 4):
            enqueue_many(cluster, "rl.shared", n)
            total = n * rounds
            ok = receiver.wait_for(total, "/shared", timeout=(n - 2) / 10.0 + 30)
            if not ok or sum(drained) > 0:
                break
    finally:
        stop.set()
        th.join(timeout=30)
    n = total
    assert not errors, errors
    assert ok, "only %d of %d arrived" % (receiver.count("/shared"), n)
    wait_all_delivered(cluster, "rl_shared", n, timeout=30)
    assert_once_each(receiver, "/shared", n)
    times = arrivals(receiver, "/shared")
    peak = max_in_window(times)
    span = times[-1] - times[0]
    by_backend = sum(drained)
    record_figure("ratelimit: worker + process_callbacks() on one 10/s burst 2 endpoint: "
                  "%d by the backend, %d by the worker, max %d in 1 s, %.2f s"
                  % (by_backend, n - by_backend, peak, span))
    assert by_backend > 0, "the backend never won a token: the test proves nothing"
    assert peak <= _peak_bound(10, 2), "%d arrivals in one second at 10/s burst 2" % peak
    # each round may open with a full bucket (burst 2)
    assert span >= (n - 2 * rounds) / 10.0 * 0.97, "%d events in %.2f s at 10/s" % (n, span)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_slows_the_endpoint_down(cluster, receiver, endpoint_factory, status):
    """The endpoint answers its first request 429 (or 503) with Retry-After:
    2.  That delivery comes back no sooner than 2 s later, and the endpoint
    itself is given that breather: nothing else is sent to it meanwhile."""
    n = 12
    path, name, etype = "/busy%d" % status, "rl_busy%d" % status, "rl.busy%d" % status
    receiver.script(path, [(status, {"Retry-After": "2"}, "slow down")])
    endpoint_factory(name, receiver.url(path), event_types=[etype],
                     rate_limit=5, rate_burst=1, retry_schedule=["100 milliseconds"],
                     failure_threshold=100)
    enqueue_many(cluster, etype, n)
    assert receiver.wait_for(n + 1, path, timeout=30), \
        "only %d of %d requests arrived" % (receiver.count(path), n + 1)
    wait_all_delivered(cluster, name, n, timeout=30)

    reqs = sorted(receiver.requests(path), key=lambda r: r.monotonic)
    first = reqs[0]
    t_held = first.monotonic
    retry = [r for r in reqs[1:] if r.headers["webhook-id"] == first.headers["webhook-id"]]
    assert len(retry) == 1, "the %d'd event arrived %d more times" % (status, len(retry))
    assert retry[0].monotonic - t_held >= 1.9, \
        "Retry-After: 2 not honoured: retried after %.2f s" % (retry[0].monotonic - t_held)

    others_soon = [round(r.monotonic - t_held, 2) for r in reqs[1:]
                   if r.monotonic - t_held < 1.5]
    record_figure("ratelimit: %d Retry-After 2 at 5/s: %d other requests within 1.5 s after "
                  "it (at %r s)" % (status, len(others_soon), others_soon))
    assert not others_soon, \
        ("after a %d with Retry-After: 2 the endpoint kept receiving requests at its full "
         "rate (%d within 1.5 s, at %r s): the %d did not slow the endpoint down, only "
         "that one delivery" % (status, len(others_soon), others_soon, status))


def test_503_without_retry_after_does_not_hold_the_endpoint(cluster, receiver, endpoint_factory):
    """A 503 without Retry-After is an ordinary failure: that delivery is
    retried by its schedule (3 s here, which a hold of the endpoint would
    take as its length), and the endpoint is not held back: its other
    deliveries keep coming at the rate limit (5/s: about 7 in 1.5 s)."""
    n = 12
    path, name, etype = "/plain503", "rl_plain503", "rl.plain503"
    receiver.script(path, [(503, {}, "unavailable")])
    endpoint_factory(name, receiver.url(path), event_types=[etype],
                     rate_limit=5, rate_burst=1, retry_schedule=["3 seconds"],
                     failure_threshold=100)
    enqueue_many(cluster, etype, n)
    assert receiver.wait_for(n + 1, path, timeout=30), \
        "only %d of %d requests arrived" % (receiver.count(path), n + 1)
    wait_all_delivered(cluster, name, n, timeout=30)

    reqs = sorted(receiver.requests(path), key=lambda r: r.monotonic)
    t_failed = reqs[0].monotonic
    others_soon = [round(r.monotonic - t_failed, 2) for r in reqs[1:]
                   if r.monotonic - t_failed < 1.5]
    record_figure("ratelimit: plain 503 at 5/s: %d other requests within 1.5 s after it"
                  % len(others_soon))
    assert len(others_soon) >= 2, \
        ("a 503 without Retry-After held the endpoint: only %d requests within 1.5 s "
         "after it (at %r s), at 5/s" % (len(others_soon), others_soon))
