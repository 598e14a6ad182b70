"""End-to-end: several delivery workers per database
(callback.workers_per_database = 4), measured at a real receiver.

- the launcher starts 4 workers; callback_worker_stats shows each with its
  database, the Prometheus worker series carry a database label; going
  back to 1 stops the others;
- 2,000 events: every event arrives exactly once (disjoint claims) and
  more than one worker sent some;
- a rate limit of 20/s burst 5 stays 20/s over 4 workers;
- callback.max_inflight_per_endpoint = 3 holds over 4 workers (each alone
  could have 3 in flight);
- an open breaker sends one probe at a time over 4 workers, and nothing
  during its cooldown.
"""

import time

import pytest

from conftest import record_figure

WORKERS = 4


def n_workers(cluster):
    return cluster.scalar("SELECT count(*) FROM callback.callback_worker_stats "
                          " WHERE database = current_database()")


def set_workers(cluster, n):
    cluster.set_conf(**{"callback.workers_per_database": n})
    cluster.reload()
    cluster.wait_until(lambda: n_workers(cluster) == n, timeout=60,
                       what="%d workers in the database" % n)


@pytest.fixture(autouse=True)
def four_workers(cluster):
    set_workers(cluster, WORKERS)
    yield
    cluster.set_conf(**{"callback.max_inflight_per_endpoint": None, "callback.max_inflight": None})
    cluster.reload()


def enqueue(cluster, event_type, n, start=1):
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(%s, %s) g", (event_type, start, start + n - 1))


def delivered(cluster, ep):
    return cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                          " WHERE endpoint_id = %s AND status = 'delivered'", (ep,))


def max_in_window(times, width):
    times = sorted(times)
    best = i = 0
    for j in range(len(times)):
        while times[j] - times[i] >= width:
            i += 1
        best = max(best, j - i + 1)
    return best


def test_workers_started_shown_and_stopped(cluster):
    rows = cluster.query("SELECT database, pid FROM callback.callback_worker_stats")
    assert len(rows) == WORKERS and {r[0] for r in rows} == {cluster.dbname}, rows
    text = cluster.scalar("SELECT callback.prometheus_metrics()")
    lines = [l for l in text.splitlines() if l.startswith("pg_callback_worker_sent_total{")]
    assert len(lines) == WORKERS and all('database="%s"' % cluster.dbname in l for l in lines), \
        lines
    state = cluster.query("SELECT state, detail FROM callback.callback_databases "
                          " WHERE database = current_database()")
    assert state == [("served", None)], state
    set_workers(cluster, 1)
    set_workers(cluster, WORKERS)


def test_claims_are_disjoint(cluster, receiver, endpoint_factory):
    n = 2000
    # A worker keeps at most 8 requests in flight, each answered 50 ms
    # later: alone it would need 12.5 s, so the others (woken at the
    # enqueue's commit, or by their poll a second later) must claim too.
    # Without that, one fast worker could drain all 2,000 before the
    # others woke, and the disjointness would go untested.
    cluster.set_conf(**{"callback.max_inflight": 8})
    cluster.reload()
    cluster.wait_until(lambda: cluster.scalar("SELECT setting FROM pg_settings "
                                              " WHERE name = 'callback.max_inflight'") == "8",
                       what="setting reloaded")
    receiver.set_delay("/all", 0.05)
    ep = endpoint_factory("wk_all", receiver.url("/all"), event_types=["wk.all"])
    sent_before = dict(cluster.query("SELECT pid, sent FROM callback.callback_worker_stats"))
    enqueue(cluster, "wk.all", n)
    cluster.wait_until(lambda: delivered(cluster, ep) == n, timeout=120, interval=0.2,
                       what="%d delivered" % n)
    ids = [r.headers["webhook-id"] for r in receiver.requests("/all")]
    assert len(ids) == n and len(set(ids)) == n, "%d requests, %d distinct" % (len(ids), len(set(ids)))
    sent = dict(cluster.query("SELECT pid, sent FROM callback.callback_worker_stats"))
    busy = [p for p in sent if sent[p] > sent_before.get(p, 0)]
    record_figure("4 workers, %d events: each once; per worker %r"
                  % (n, sorted(sent[p] - sent_before.get(p, 0) for p in sent)))
    assert len(busy) >= 2, sent


def test_rate_limit_holds_over_workers(cluster, receiver, endpoint_factory):
    rate, burst, n = 20, 5, 160
    ep = endpoint_factory("wk_rate", receiver.url("/rate"), event_types=["wk.rate"],
                          rate_limit=rate, rate_burst=burst)
    enqueue(cluster, "wk.rate", n)
    cluster.wait_until(lambda: delivered(cluster, ep) == n, timeout=60, interval=0.2,
                       what="%d delivered" % n)
    t = sorted(r.monotonic for r in receiver.requests("/rate"))
    span = t[-1] - t[0]
    peak = max_in_window(t, 1.0)
    record_figure("4 workers, 20/s burst 5: %d events in %.1f s, peak %d in 1 s" % (n, span, peak))
    assert span >= (n - burst) / rate * 0.95, span
    assert peak <= rate + burst + 5, peak


def test_inflight_cap_holds_over_workers(cluster, receiver, endpoint_factory):
    cap, delay, n = 3, 0.4, 24
    cluster.set_conf(**{"callback.max_inflight_per_endpoint": cap})
    cluster.reload()
    cluster.wait_until(lambda: cluster.scalar("SELECT setting FROM pg_settings "
                                              " WHERE name = 'callback.max_inflight_per_endpoint'")
                       == str(cap), what="setting reloaded")
    receiver.set_delay("/slow", delay)
    ep = endpoint_factory("wk_cap", receiver.url("/slow"), event_types=["wk.cap"])
    enqueue(cluster, "wk.cap", n)
    cluster.wait_until(lambda: delivered(cluster, ep) == n, timeout=60, interval=0.2,
                       what="%d delivered" % n)
    t = [r.monotonic for r in receiver.requests("/slow")]
    # each request is answered delay s after it arrives: the arrivals in
    # any window shorter than that were in flight together
    together = max_in_window(t, delay * 0.9)
    record_figure("4 workers, max_inflight_per_endpoint %d: at most %d in flight" % (cap, together))
    assert together <= cap, together
    assert together == cap, "the cap was never reached: %d" % together


def test_breaker_probes_once_over_workers(cluster, receiver, endpoint_factory):
    threshold, cooldown, probe_s = 3, 2.0, 1.5
    receiver.script("/brk", [500] * 40)
    ep = endpoint_factory("wk_brk", receiver.url("/brk"), event_types=["wk.brk"],
                          failure_threshold=threshold, breaker_cooldown=cooldown,
                          retry_schedule=["100 milliseconds"], max_attempts=100)
    enqueue(cluster, "wk.brk", 12)
    cluster.wait_until(lambda: cluster.scalar("SELECT breaker_state FROM callback.callback_endpoints "
                                              " WHERE id = %s", (ep,)) == "open",
                       timeout=30, what="breaker open")
    opened = time.monotonic()
    before = receiver.count("/brk")
    receiver.set_delay("/brk", probe_s)
    # two probes fail (each answered after probe_s), each after a cooldown
    assert receiver.wait_for(before + 2, "/brk", timeout=30), receiver.count("/brk")
    t = sorted(r.monotonic for r in receiver.requests("/brk"))
    later = [x for x in t if x > opened]
    # nothing during the cooldown, then one probe at a time
    assert later[0] - opened >= cooldown * 0.8 - 0.5, later[:3]
    assert len([x for x in later if x < later[0] + probe_s * 0.9]) == 1, later[:5]
    assert later[1] - later[0] >= probe_s + cooldown * 0.9, later[:5]
    # the opening took threshold failures plus what was in flight then
    assert before <= threshold + 12, before
    record_figure("4 workers, breaker threshold %d: %d attempts before open, probes %.1f s apart"
                  % (threshold, before, later[1] - later[0]))


def test_new_extension_starts_with_fresh_shared_state(cluster, receiver):
    """The workers' shared state of an endpoint (breaker, hold, in-flight)
    belongs to that endpoint of that extension: after DROP EXTENSION and
    CREATE EXTENSION the ids start over, and a new endpoint must not inherit
    what held a dropped one with the same id (here: a 429 with Retry-After:
    3600)."""
    from conftest import make_endpoint

    def recreate():
        cluster.execute("DROP EXTENSION pg_callback CASCADE")
        cluster.execute("CREATE EXTENSION pg_callback")
        cluster.wait_until(lambda: n_workers(cluster) == WORKERS, timeout=60,
                           what="%d workers after CREATE EXTENSION" % WORKERS)

    recreate()
    receiver.script("/held", [(429, {"Retry-After": "3600"}, "slow down")])
    held = make_endpoint(cluster, "ws_held", receiver.url("/held"), event_types=["held.*"])
    enqueue(cluster, "held.a", 2)
    assert receiver.wait_for(1, "/held", timeout=30), "the 429 was never asked for"
    # the answer was taken (and the endpoint held) once its attempt is written back
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_attempts WHERE status_code = 429") >= 1,
        timeout=30, what="the 429 attempt written back")
    recreate()
    fresh = make_endpoint(cluster, "ws_fresh", receiver.url("/fresh"), event_types=["fresh.*"])
    assert fresh == held, "ids did not start over (%d, %d): the test proves nothing" % (held, fresh)
    enqueue(cluster, "fresh.a", 1)
    assert receiver.wait_for(1, "/fresh", timeout=30), \
        "a new endpoint with a dropped endpoint's id inherited its one-hour hold"
