"""End-to-end: the circuit breaker and manual pause / resume, seen from a real
receiver's arrival times and from callback_endpoints / callback_health.

- after failure_threshold consecutive failures the endpoint opens (state and
  reason visible), nothing is sent during the cooldown, then exactly one
  probe; a failed probe opens it again for another cooldown, a successful
  one closes it and the backlog flows;
- pause_endpoint holds deliveries (while another endpoint keeps receiving)
  and resume_endpoint releases them, each exactly once;
- resume_endpoint also closes an open breaker without waiting for its
  cooldown.

Absence is shown against a positive condition that takes time: a second,
rate-limited endpoint receiving a known number of events meanwhile.
"""

import time

import pytest

from conftest import record_figure


def enqueue(cluster, event_type, n, start=1):
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(%s, %s) g", (event_type, start, start + n - 1))


def breaker(cluster, name):
    return cluster.query(
        "SELECT breaker_state, breaker_reason FROM callback.callback_endpoints WHERE name = %s",
        (name,))[0]


def health(cluster, name):
    return cluster.query(
        "SELECT status, reason, breaker_state, paused, backlog FROM callback.callback_health "
        " WHERE endpoint = %s", (name,))[0]


def queue_counts(cluster, name):
    return dict(cluster.query(
        "SELECT q.status::text, count(*) FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = %s GROUP BY 1", (name,)))


def wait_delivered(cluster, name, n, timeout=30):
    cluster.wait_until(lambda: queue_counts(cluster, name) == {"delivered": n}, timeout=timeout,
                       interval=0.1, what="%d deliveries of %s delivered" % (n, name))


def times(receiver, path):
    return sorted(r.monotonic for r in receiver.requests(path))


def once_each(receiver, path, n):
    ids = [r.headers["webhook-id"] for r in receiver.requests(path)]
    assert len(ids) == n and len(set(ids)) == n, "%d requests, %d distinct, %d events" \
        % (len(ids), len(set(ids)), n)


@pytest.fixture(autouse=True)
def worker_up(cluster):
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")


def test_breaker_opens_cools_down_probes_once_and_closes(cluster, receiver, endpoint_factory):
    threshold, cooldown, probe_s = 3, 3.0, 2.0
    # 3 failures open it; the first probe fails (open again); then 204s
    receiver.script("/trip", [500] * threshold + [503])
    endpoint_factory("br_trip", receiver.url("/trip"), event_types="{br.trip}",
                     failure_threshold=threshold, breaker_cooldown=cooldown,
                     retry_schedule=["100 milliseconds"], max_attempts=50)
    enqueue(cluster, "br.trip", 1)

    state = cluster.wait_until(
        lambda: breaker(cluster, "br_trip")[0] == "open" and breaker(cluster, "br_trip"),
        timeout=20, what="br_trip breaker open")
    assert receiver.count("/trip") == threshold, receiver.count("/trip")
    assert "%d consecutive failures" % threshold in state[1] and "HTTP 500" in state[1], state
    h = health(cluster, "br_trip")
    assert h[0] == "alert" and "circuit breaker open (%s)" % state[1] in h[1], h
    assert h[2] == "open", h

    # a backlog builds up while open; the probe answers slowly, so that a
    # second request during the probe would show
    receiver.set_delay("/trip", probe_s)
    enqueue(cluster, "br.trip", 5, start=2)
    # the failed probe opens it again, with that failure as the reason
    cluster.wait_until(lambda: "HTTP 503" in (breaker(cluster, "br_trip")[1] or ""),
                       timeout=20, what="br_trip re-opened by the failed probe")
    assert breaker(cluster, "br_trip")[0] == "open"
    assert "%d consecutive failures" % (threshold + 1) in breaker(cluster, "br_trip")[1]

    total = threshold + 1 + 6
    assert receiver.wait_for(total, "/trip", timeout=30), receiver.count("/trip")
    wait_delivered(cluster, "br_trip", 6)
    assert receiver.count("/trip") == total
    t = times(receiver, "/trip")
    fails = t[:threshold]
    probe1, probe2, after = t[threshold], t[threshold + 1], t[threshold + 2:]
    gap1 = probe1 - fails[-1]
    gap2 = probe2 - probe1
    record_figure("breaker: threshold %d, cooldown %.0f s: open -> probe %.2f s; failed probe "
                  "(answered in %.0f s) -> next probe %.2f s; good probe -> next request %.2f s"
                  % (threshold, cooldown, gap1, probe_s, gap2, after[0] - probe2))
    # nothing during the cooldown, then one probe
    assert gap1 >= cooldown * 0.95, "probe %.2f s after opening (cooldown %.0f s)" % (gap1, cooldown)
    assert gap1 <= cooldown + 3, "probe only %.2f s after opening" % gap1
    # the failed probe's answer took probe_s; the second cooldown counts from it
    assert gap2 >= probe_s + cooldown * 0.95, "second probe %.2f s after the first" % gap2
    # exactly one probe: nothing else until its (slow) success came back
    assert after[0] - probe2 >= probe_s * 0.9, \
        "a request %.2f s after the probe, before its answer" % (after[0] - probe2)
    # closed: the 5 others follow together, not one by one (one by one, each
    # answered after probe_s, they would span 4 * probe_s; slack for noise)
    assert after[-1] - after[0] < probe_s * 2.5, after

    cluster.wait_until(lambda: breaker(cluster, "br_trip")[0] == "closed", timeout=10,
                       what="br_trip breaker closed")
    assert breaker(cluster, "br_trip")[1] is None
    h = health(cluster, "br_trip")
    assert h[2] == "closed" and "breaker" not in h[1], h
    # 4 failed attempts, all of the first event; then each event once
    ids = [r.headers["webhook-id"] for r in sorted(receiver.requests("/trip"),
                                                   key=lambda r: r.monotonic)]
    assert len(set(ids)) == 6 and len(set(ids[:threshold])) == 1, ids


def test_pause_holds_and_resume_releases(cluster, receiver, endpoint_factory):
    n, pace = 40, 10
    endpoint_factory("br_paused", receiver.url("/paused"), event_types="{br.pause}",
                     rate_limit=pace, rate_burst=1)
    endpoint_factory("br_free", receiver.url("/free"), event_types="{br.free}",
                     rate_limit=pace, rate_burst=1)
    enqueue(cluster, "br.pause", n)
    assert receiver.wait_for(5, "/paused", timeout=20)
    cluster.execute("SELECT callback.pause_endpoint('br_paused')")
    k0 = receiver.count("/paused")
    t_pause = time.monotonic()

    # meanwhile another endpoint at the same pace takes its 20 events (~2 s)
    m = 20
    enqueue(cluster, "br.free", m)
    assert receiver.wait_for(m, "/free", timeout=20)
    wait_delivered(cluster, "br_free", m)
    held_for = time.monotonic() - t_pause
    k1 = receiver.count("/paused")
    h = health(cluster, "br_paused")
    q = queue_counts(cluster, "br_paused")
    record_figure("breaker: pause_endpoint at 10/s: %d arrived before the pause, %d after it "
                  "within %.1f s while another endpoint took %d" % (k0, k1 - k0, held_for, m))
    # at most what was already claimed when the pause committed
    assert k1 - k0 <= 2, "%d deliveries after pause_endpoint" % (k1 - k0)
    assert held_for >= (m - 1) / pace * 0.9
    assert q.get("pending", 0) == n - k1 and q.get("delivered", 0) == k1, q
    assert h[3] is True and h[0] == "warn" and "paused" in h[1], h

    t_resume = time.monotonic()
    cluster.execute("SELECT callback.resume_endpoint('br_paused')")
    assert receiver.wait_for(n, "/paused", timeout=(n - k1) / pace + 20), receiver.count("/paused")
    wait_delivered(cluster, "br_paused", n)
    once_each(receiver, "/paused", n)
    late = [x for x in times(receiver, "/paused") if x >= t_resume]
    assert len(late) == n - k1, (len(late), n - k1)
    assert health(cluster, "br_paused")[3] is False


def test_resume_closes_an_open_breaker_before_its_cooldown(cluster, receiver, endpoint_factory):
    receiver.script("/stuck", [500, 500])
    endpoint_factory("br_stuck", receiver.url("/stuck"), event_types="{br.stuck}",
                     failure_threshold=2, breaker_cooldown=3600,
                     retry_schedule=["100 milliseconds"], max_attempts=50)
    endpoint_factory("br_clock", receiver.url("/clock"), event_types="{br.clock}",
                     rate_limit=10, rate_burst=1)
    enqueue(cluster, "br.stuck", 1)
    cluster.wait_until(lambda: breaker(cluster, "br_stuck")[0] == "open", timeout=20,
                       what="br_stuck breaker open")
    enqueue(cluster, "br.stuck", 3, start=2)
    # ~1 s of deliveries elsewhere: the retry (100 ms) and the 3 new events
    # are due all along, and held by the open breaker
    enqueue(cluster, "br.clock", 10)
    assert receiver.wait_for(10, "/clock", timeout=20)
    assert receiver.count("/stuck") == 2, receiver.count("/stuck")
    assert queue_counts(cluster, "br_stuck") == {"pending": 4}

    t0 = time.monotonic()
    cluster.execute("SELECT callback.resume_endpoint('br_stuck')")
    assert breaker(cluster, "br_stuck") == ("closed", None)
    assert receiver.wait_for(6, "/stuck", timeout=20), receiver.count("/stuck")
    wait_delivered(cluster, "br_stuck", 4)
    took = times(receiver, "/stuck")[-1] - t0
    record_figure("breaker: resume_endpoint on an open breaker (cooldown 1 h): backlog of 4 "
                  "delivered %.0f ms later" % (took * 1000))
    assert took < 10
    ids = [r.headers["webhook-id"] for r in receiver.requests("/stuck")]
    assert len(set(ids)) == 4, ids


def test_failures_that_are_not_consecutive_do_not_open(cluster, receiver, endpoint_factory):
    """threshold 3; answers go fail, fail, ok, fail, fail, ok, ...: a success
    resets the count, so the breaker never opens (and never changes)."""
    receiver.script("/flaky", [500, 500, 204] * 6)
    endpoint_factory("br_flaky", receiver.url("/flaky"), event_types="{br.flaky}",
                     failure_threshold=3, breaker_cooldown=3600, rate_limit=5, rate_burst=1,
                     retry_schedule=["100 milliseconds"], max_attempts=50)
    n = 6
    enqueue(cluster, "br.flaky", n)
    assert receiver.wait_for(3 * n, "/flaky", timeout=3 * n / 5.0 + 20), receiver.count("/flaky")
    wait_delivered(cluster, "br_flaky", n)
    assert receiver.count("/flaky") == 3 * n
    state, reason, changed = cluster.query(
        "SELECT breaker_state, breaker_reason, breaker_changed_at FROM callback.callback_endpoints "
        " WHERE name = 'br_flaky'")[0]
    assert (state, reason, changed) == ("closed", None, None), (state, reason, changed)
    assert cluster.scalar("SELECT sum(failed) FROM callback.callback_stats s "
                          "  JOIN callback.callback_endpoints e ON e.id = s.endpoint_id "
                          " WHERE e.name = 'br_flaky'") == 2 * n
