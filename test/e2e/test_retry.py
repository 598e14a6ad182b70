"""End-to-end: the retry policy, dead letters, redrive and the attempt history,
against a real cluster and the real receiver on loopback.

- 408, 429, 5xx, connection errors and timeouts are retried on the
  endpoint's retry_schedule (down to milliseconds), with jitter, at most
  max_attempts times; then the delivery is a dead letter;
- Retry-After (seconds or HTTP-date) is honoured, clamped to
  callback.retry_after_max;
- 3xx and other 4xx are dead after one attempt; 410 also disables the endpoint;
- dead letters are visible (status, attempts, last status code, last error) and
  callback.redrive() by ids, by endpoint or since a time puts them back, to be
  sent with the same webhook-id;
- callback.callback_attempts has one row per attempt: status code, latency,
  error text, the response body truncated to callback.max_response_bytes.

Every wait is bounded.
"""

import email.utils
import re
import time

import pytest

from conftest import record_figure
from cluster import free_port
from faults_util import diagnostics, msg_id, queue_status

RETRY_AFTER_MAX_S = 4

CLUSTER_CONF = {
    # clamp of Retry-After, small so that the clamp is testable
    "callback.retry_after_max": "%ds" % RETRY_AFTER_MAX_S,
}

JITTER = 0.2   # callback.retry_jitter, the default


# ------------------------------------------------------------------ helpers

def _name(request, suffix=""):
    return ("r_" + re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name) + suffix)[:100]


def _etype(request, suffix=""):
    return ("rt" + re.sub(r"[^A-Za-z0-9]", "", request.node.name) + suffix)[:50]


class One:
    """An endpoint of its own (event type prefix, receiver path) for one test."""

    def __init__(self, request, cluster, receiver, endpoint_factory, suffix="", url=None, **kw):
        self.cluster = cluster
        self.receiver = receiver
        self.path = "/" + _etype(request, suffix)
        self.etype = _etype(request, suffix)
        self.name = _name(request, suffix)
        self.id = endpoint_factory(self.name, url or receiver.url(self.path),
                                   event_types=[self.etype + ".*"], **kw)

    def enqueue(self, n=1):
        rows = self.cluster.query(
            "SELECT callback.enqueue(%s, jsonb_build_object('i', g))::text "
            "  FROM generate_series(1, %s) g", (self.etype + ".ev", n))
        return [r[0] for r in rows]

    def rows(self):
        return self.cluster.query(
            "SELECT id, event_id::text, status::text, attempts, last_status_code, last_error "
            "  FROM callback.callback_queue WHERE endpoint_id = %s ORDER BY id", (self.id,))

    def attempts(self, delivery_id=None):
        sql = ("SELECT delivery_id, attempt, status_code, latency_ms, error, response_body, "
               "       outcome::text, started_at "
               "  FROM callback.callback_attempts WHERE endpoint_id = %s")
        params = [self.id]
        if delivery_id is not None:
            sql += " AND delivery_id = %s"
            params.append(delivery_id)
        return self.cluster.query(sql + " ORDER BY delivery_id, started_at", params)

    def wait_status(self, status, n, timeout=30):
        def done():
            st = queue_status(self.cluster, self.id)
            return st if st.get(status, 0) == n and sum(st.values()) == n else False
        try:
            return self.cluster.wait_until(done, timeout=timeout, interval=0.05,
                                           what="%d deliveries %s" % (n, status))
        except AssertionError as e:
            raise AssertionError(str(e) + diagnostics(self.cluster, self.id)) from None

    def requests(self):
        return self.receiver.requests(self.path)

    def assert_no_more_requests(self, n, settle=1.5):
        """No request beyond the n seen arrives within settle seconds."""
        more = self.receiver.wait_for(n + 1, self.path, timeout=settle)
        assert not more, "%d requests arrived, expected exactly %d" % (
            self.receiver.count(self.path), n)


def _gaps(reqs):
    t = [r.monotonic for r in reqs]
    return [b - a for a, b in zip(t, t[1:])]


# ------------------------------------------------------------------ retry schedule

def test_500_three_times_then_200_exactly_4_attempts_growing_gaps(request, cluster, receiver,
                                                                   endpoint_factory):
    # apart enough that jitter (20 %) and the wake-up granularity cannot reorder them
    schedule = [0.4, 1.0, 2.0]
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=8,
             retry_schedule=schedule)
    receiver.script(ep.path, [(500, {}, "boom 1"), (500, {}, "boom 2"), (500, {}, "boom 3"),
                              (200, {}, "ok")])
    [ev] = ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=60)
    assert receiver.wait_for(4, ep.path, timeout=10)
    ep.assert_no_more_requests(4)

    reqs = ep.requests()
    assert [r.headers["webhook-id"] for r in reqs] == [msg_id(ev)] * 4, \
        "webhook-id must be the same on every attempt"
    [(did, _, status, attempts, code, err)] = ep.rows()
    assert (status, attempts, code, err) == ("delivered", 4, 200, None)

    hist = ep.attempts(did)
    assert [(a[1], a[2], a[6]) for a in hist] == [
        (1, 500, "pending"), (2, 500, "pending"), (3, 500, "pending"), (4, 200, "delivered")]
    assert [a[4] for a in hist] == ["HTTP 500", "HTTP 500", "HTTP 500", None]
    assert [a[5] for a in hist] == ["boom 1", "boom 2", "boom 3", "ok"]

    gaps = _gaps(reqs)
    record_figure("retry 500x3 then 200: schedule %s s, gaps %s s"
                  % (schedule, ", ".join("%.3f" % g for g in gaps)))
    assert gaps[0] < gaps[1] < gaps[2], "gaps do not grow: %r" % gaps
    for g, base in zip(gaps, schedule):
        assert g >= base * (1 - JITTER) - 0.02, "gap %.3f s shorter than %.1f s - jitter" % (g, base)
        assert g <= base * (1 + JITTER) + 2.0, "gap %.3f s far beyond %.1f s + jitter" % (g, base)


def test_millisecond_schedule(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3,
             retry_schedule=["50 milliseconds", "100 milliseconds"])
    receiver.script(ep.path, [503, 503])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    reqs = ep.requests()
    assert len(reqs) == 3
    gaps = _gaps(reqs)
    record_figure("retry ms schedule {50 ms,100 ms}: gaps %s ms"
                  % ", ".join("%.1f" % (g * 1000) for g in gaps))
    assert gaps[0] >= 0.050 * (1 - JITTER) - 0.005, gaps
    assert gaps[1] >= 0.100 * (1 - JITTER) - 0.005, gaps
    # not rounded up to whole seconds (generous slack for a loaded machine;
    # the wake when a retry is due is tested with a 5 s poll below)
    assert gaps[0] < 0.9 and gaps[1] < 0.9, gaps


def test_jitter_spreads_retries(request, cluster, receiver, endpoint_factory):
    assert float(cluster.scalar("SHOW callback.retry_jitter")) == pytest.approx(JITTER)
    n = 40
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3, retry_schedule=[3])
    receiver.script(ep.path, [500] * n)
    ep.enqueue(n)
    # the first attempts written back: each delivery pending with its retry time
    cluster.wait_until(
        lambda: cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                               " WHERE endpoint_id = %s AND attempts = 1 AND status = 'pending'",
                               (ep.id,)) == n,
        timeout=30, what="%d first attempts written back" % n)
    delays = [r[0] for r in cluster.query(
        "SELECT extract(epoch FROM next_attempt_at - last_attempt_at)::float8 "
        "  FROM callback.callback_queue WHERE endpoint_id = %s", (ep.id,))]
    lo, hi = min(delays), max(delays)
    record_figure("retry jitter %.1f on 3 s: %d delays from %.3f to %.3f s"
                  % (JITTER, n, lo, hi))
    # next_attempt_at - attempt start = latency + delay; the latency is small here
    assert lo >= 3 * (1 - JITTER) - 0.01, delays
    assert hi <= 3 * (1 + JITTER) + 1.0, delays
    assert hi - lo >= 0.2, "retry delays are not spread by jitter: %r" % sorted(delays)
    assert len({round(d, 3) for d in delays}) > n // 2, "too few distinct delays: %r" % sorted(delays)
    ep.wait_status("delivered", n, timeout=60)


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_retryable_status(request, cluster, receiver, endpoint_factory, code):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=5, retry_schedule=[0.1])
    receiver.script(ep.path, [code, code])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    assert receiver.count(ep.path) == 3
    [(did, _, _, attempts, last_code, _)] = ep.rows()
    assert attempts == 3 and last_code == 204
    assert [(a[2], a[6]) for a in ep.attempts(did)] == [
        (code, "pending"), (code, "pending"), (204, "delivered")]


def test_max_attempts_then_dead(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3, retry_schedule=[0.1])
    receiver.default_status = 503
    [ev] = ep.enqueue(1)
    ep.wait_status("dead", 1, timeout=30)
    ep.assert_no_more_requests(3)
    dl = cluster.query(
        "SELECT endpoint, attempts, last_status_code, last_error, event_id::text "
        "  FROM callback.callback_dead_letters WHERE endpoint = %s", (ep.name,))
    assert len(dl) == 1, dl
    endpoint, attempts, code, err, event_id = dl[0]
    assert (attempts, code, event_id) == (3, 503, ev)
    assert "503" in err and "no attempts left" in err, err
    assert [(a[1], a[6]) for a in ep.attempts()] == [(1, "pending"), (2, "pending"), (3, "dead")]


# ------------------------------------------------------------------ no retry

@pytest.mark.parametrize("code", [301, 302, 307, 400, 401, 403, 404, 409, 422])
def test_dead_after_one_attempt(request, cluster, receiver, endpoint_factory, code):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=8, retry_schedule=[0.1])
    headers = {"Location": receiver.url("/elsewhere")} if 300 <= code < 400 else {}
    receiver.script(ep.path, [(code, headers, "no thanks")])
    [ev] = ep.enqueue(1)
    ep.wait_status("dead", 1, timeout=30)
    ep.assert_no_more_requests(1)
    assert receiver.count("/elsewhere") == 0, "a redirect was followed"
    dl = cluster.query(
        "SELECT attempts, last_status_code, last_error, event_id::text, died_at IS NOT NULL "
        "  FROM callback.callback_dead_letters WHERE endpoint = %s", (ep.name,))
    assert len(dl) == 1, dl
    attempts, last_code, err, event_id, died = dl[0]
    assert (attempts, last_code, event_id, died) == (1, code, ev, True)
    assert str(code) in err, err
    hist = ep.attempts()
    assert [(a[1], a[2], a[5], a[6]) for a in hist] == [(1, code, "no thanks", "dead")]
    # the endpoint stays enabled (only 410 disables)
    assert cluster.scalar("SELECT enabled FROM callback.callback_endpoints WHERE id = %s",
                          (ep.id,)) is True


def test_410_dead_and_endpoint_disabled(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=8, retry_schedule=[0.1])
    receiver.script(ep.path, [(410, {}, "gone")])
    [ev] = ep.enqueue(1)
    ep.wait_status("dead", 1, timeout=30)
    enabled, reason = cluster.query(
        "SELECT enabled, disabled_reason FROM callback.callback_endpoints WHERE id = %s",
        (ep.id,))[0]
    assert enabled is False, "410 must disable the endpoint"
    assert reason and "410" in reason, reason
    [(_, _, _, attempts, code, err)] = ep.rows()
    assert (attempts, code) == (1, 410) and "410" in err

    # a disabled endpoint gets no new deliveries (events route to enabled
    # endpoints only, README "How it works") and nothing more is sent
    ep.enqueue(1)
    ep.assert_no_more_requests(1, settle=1.5)
    assert queue_status(cluster, ep.id) == {"dead": 1}
    dl = cluster.query(
        "SELECT attempts, last_status_code, last_error FROM callback.callback_dead_letters "
        " WHERE endpoint = %s", (ep.name,))
    assert len(dl) == 1 and dl[0][:2] == (1, 410) and "410" in dl[0][2], dl

    # enabled again: new events go; the dead one waits for a redrive, then
    # goes with the same webhook-id
    cluster.execute("SELECT callback.alter_endpoint(%s, enabled => true)", (ep.name,))
    [ev2] = ep.enqueue(1)
    assert receiver.wait_for(2, ep.path, timeout=30), diagnostics(cluster, ep.id)
    assert cluster.scalar("SELECT callback.redrive(%s)", (ep.name,)) == 1
    ep.wait_status("delivered", 2, timeout=30)
    ids = [r.headers["webhook-id"] for r in ep.requests()]
    assert sorted(ids) == sorted([msg_id(ev), msg_id(ev2), msg_id(ev)])


# ------------------------------------------------------------------ Retry-After

def test_429_retry_after_seconds(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=5, retry_schedule=[0.1])
    receiver.script(ep.path, [(429, {"Retry-After": "2"}, "slow down")])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    reqs = ep.requests()
    assert len(reqs) == 2
    gap = reqs[1].monotonic - reqs[0].monotonic
    record_figure("retry 429 Retry-After: 2 -> next attempt after %.3f s" % gap)
    assert gap >= 2.0, "the next attempt came %.3f s after a 429 with Retry-After: 2" % gap
    assert gap < 2.0 + 5.0, "the next attempt came only after %.3f s" % gap


def test_503_retry_after_http_date(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=5, retry_schedule=[0.1])
    not_before = int(time.time()) + 3
    receiver.script(ep.path, [(503, {"Retry-After": email.utils.formatdate(not_before, usegmt=True)},
                               "maintenance")])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    reqs = ep.requests()
    assert len(reqs) == 2
    gap = reqs[1].monotonic - reqs[0].monotonic
    record_figure("retry 503 Retry-After: <HTTP-date +3 s> -> next attempt after %.3f s "
                  "(%.3f s past the date)" % (gap, reqs[1].received_at - not_before))
    assert reqs[1].received_at >= not_before - 0.05, \
        "retried at %.3f, before the Retry-After date %d" % (reqs[1].received_at, not_before)
    assert gap < 3.0 + 5.0, gap


def test_retry_after_is_clamped(request, cluster, receiver, endpoint_factory):
    assert cluster.scalar("SHOW callback.retry_after_max") == "%ds" % RETRY_AFTER_MAX_S
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=5, retry_schedule=[0.1])
    receiver.script(ep.path, [(429, {"Retry-After": "3600"}, "")])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=60)
    reqs = ep.requests()
    gap = reqs[1].monotonic - reqs[0].monotonic
    record_figure("retry 429 Retry-After: 3600 clamped to %d s -> next attempt after %.3f s"
                  % (RETRY_AFTER_MAX_S, gap))
    assert RETRY_AFTER_MAX_S - 0.05 <= gap < RETRY_AFTER_MAX_S + 5.0, gap


# ------------------------------------------------------------------ network errors

def test_connection_refused_retried_then_dead(request, cluster, receiver, endpoint_factory):
    port = free_port(56600, 57600)   # nothing listens there
    ep = One(request, cluster, receiver, endpoint_factory,
             url="http://127.0.0.1:%d/nobody" % port, max_attempts=3, retry_schedule=[0.2])
    ep.enqueue(1)
    ep.wait_status("dead", 1, timeout=30)
    [(did, _, _, attempts, code, err)] = ep.rows()
    assert attempts == 3 and code is None, (attempts, code, err)
    assert re.search(r"connect|refused", err, re.I), err
    hist = ep.attempts(did)
    assert [(a[1], a[2], a[6]) for a in hist] == [(1, None, "pending"), (2, None, "pending"),
                                                  (3, None, "dead")]
    assert all(a[4] and re.search(r"connect|refused", a[4], re.I) for a in hist), hist


def test_timeout_retried_then_delivered(request, cluster, receiver, endpoint_factory):
    ep = One(request, cluster, receiver, endpoint_factory, timeout=0.3, max_attempts=5,
             retry_schedule=[0.2])
    receiver.set_delay(ep.path, 2.0)
    ep.enqueue(1)
    assert receiver.wait_for(2, ep.path, timeout=30), diagnostics(cluster, ep.id)
    receiver.set_delay(ep.path, 0)
    ep.wait_status("delivered", 1, timeout=30)
    [(did, _, _, attempts, code, _)] = ep.rows()
    hist = ep.attempts(did)
    assert len(hist) == attempts >= 3
    for a in hist[:-1]:
        assert a[2] is None and a[6] == "pending", a
        assert re.search(r"time", a[4], re.I), a
        assert 250 <= a[3] <= 2000, "latency of a 300 ms timeout: %r" % (a,)
    assert hist[-1][2] == 204 and hist[-1][6] == "delivered"


# ------------------------------------------------------------------ attempt history

def test_attempt_history_truncates_response_body(request, cluster, receiver, endpoint_factory):
    limit = int(cluster.scalar("SELECT setting FROM pg_settings WHERE name = 'callback.max_response_bytes'"))
    big = "".join("%05d," % i for i in range(2000))   # 12000 bytes
    assert len(big) > limit
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3, retry_schedule=[0.1])
    receiver.set_delay(ep.path, 0.05)
    receiver.script(ep.path, [(500, {}, big), (200, {}, "fine")])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    [(did, _, _, _, _, _)] = ep.rows()
    hist = ep.attempts(did)
    assert len(hist) == 2
    a1, a2 = hist
    assert (a1[1], a1[2], a1[4], a1[6]) == (1, 500, "HTTP 500", "pending")
    assert a1[5] == big[:limit], "response body not truncated to %d bytes: %d" % (limit, len(a1[5] or ""))
    assert (a2[1], a2[2], a2[4], a2[5], a2[6]) == (2, 200, None, "fine", "delivered")
    for a in hist:
        assert a[3] >= 40, "latency %r ms under the receiver's 50 ms delay" % a[3]
        assert a[3] < 5000
    assert a2[7] > a1[7]


# ------------------------------------------------------------------ dead letters and redrive

def test_dead_letters_and_redrive(request, cluster, receiver, endpoint_factory):
    e1 = One(request, cluster, receiver, endpoint_factory, suffix="a", max_attempts=5,
             retry_schedule=[0.1])
    e2 = One(request, cluster, receiver, endpoint_factory, suffix="b", max_attempts=5,
             retry_schedule=[0.1])
    receiver.script(e1.path, [(422, {}, "bad 1")] * 4)
    receiver.script(e2.path, [(404, {}, "bad 2")] * 4)

    ev1 = e1.enqueue(4)
    e1.wait_status("dead", 4)
    # a time after e1's dead letters and before e2's
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT clock_timestamp() > max(finished_at) + interval '50 ms' "
        "  FROM callback.callback_queue WHERE endpoint_id = %s", (e1.id,)),
        timeout=5, what="time to pass")
    since = cluster.scalar("SELECT clock_timestamp()")
    ev2 = e2.enqueue(4)
    e2.wait_status("dead", 4)

    dl = cluster.query(
        "SELECT id, event_id::text, endpoint, event_type, attempts, last_status_code, last_error, "
        "       died_at, body "
        "  FROM callback.callback_dead_letters WHERE endpoint IN (%s, %s) ORDER BY id",
        (e1.name, e2.name))
    assert len(dl) == 8
    for row in dl:
        _, _, endpoint, etype, attempts, code, err, died, body = row
        assert attempts == 1 and died is not None and body
        assert (endpoint, code) in ((e1.name, 422), (e2.name, 404)), row
        assert str(code) in err and "not retried" in err, err
    assert {r[1] for r in dl} == set(ev1) | set(ev2)

    # by ids: two of e1's
    e1_ids = [r[0] for r in dl if r[2] == e1.name]
    picked = e1_ids[:2]
    assert cluster.scalar("SELECT callback.redrive(%s::bigint[])", (picked,)) == 2
    cluster.wait_until(lambda: queue_status(cluster, e1.id) == {"delivered": 2, "dead": 2},
                       timeout=30, what="2 redriven deliveries of e1 delivered")
    # since a time: only e2's died after it
    assert cluster.scalar("SELECT callback.redrive(%s::timestamptz)", (since,)) == 4
    e2.wait_status("delivered", 4)
    assert queue_status(cluster, e1.id) == {"delivered": 2, "dead": 2}
    # by endpoint: the rest of e1's
    assert cluster.scalar("SELECT callback.redrive(%s::text)", (e1.name,)) == 2
    e1.wait_status("delivered", 4)
    # nothing left to redrive
    assert cluster.scalar("SELECT callback.redrive(%s::text)", (e1.name,)) == 0
    assert cluster.scalar("SELECT count(*) FROM callback.callback_dead_letters "
                          " WHERE endpoint IN (%s, %s)", (e1.name, e2.name)) == 0

    # redriven deliveries are sent with the same webhook-id as the first time
    for ep, evs in ((e1, ev1), (e2, ev2)):
        ids = [r.headers["webhook-id"] for r in ep.requests()]
        assert sorted(ids) == sorted([msg_id(e) for e in evs] * 2), ids
        for did, *_ in ep.rows():
            assert [a[6] for a in ep.attempts(did)] == ["dead", "delivered"]

    # clear errors
    with pytest.raises(Exception, match="does not exist"):
        cluster.execute("SELECT callback.redrive('no_such_endpoint'::text)")
    with pytest.raises(Exception, match="must not be NULL"):
        cluster.execute("SELECT callback.redrive(NULL::bigint[])")


# ------------------------------------------------------------------ defaults and odd Retry-After

def test_default_policy_is_the_documented_one(request, cluster, receiver, endpoint_factory):
    """No policy given: 8 attempts on 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    (README "Retries"); the first failure is retried about 5 s later."""
    ep = One(request, cluster, receiver, endpoint_factory)
    sched, max_attempts = cluster.query(
        "SELECT retry_schedule::text[], max_attempts FROM callback.callback_endpoints "
        " WHERE id = %s", (ep.id,))[0]
    secs = [cluster.scalar("SELECT extract(epoch FROM %s::interval)::int", (s,)) for s in sched]
    assert (secs, max_attempts) == ([5, 300, 1800, 7200, 18000, 36000, 36000], 8)
    receiver.script(ep.path, [500])
    ep.enqueue(1)
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT attempts FROM callback.callback_queue WHERE endpoint_id = %s", (ep.id,)) == 1,
        timeout=30, what="the first attempt written back")
    delay = cluster.scalar(
        "SELECT extract(epoch FROM next_attempt_at - last_attempt_at)::float8 "
        "  FROM callback.callback_queue WHERE endpoint_id = %s", (ep.id,))
    assert 5 * (1 - JITTER) - 0.01 <= delay <= 5 * (1 + JITTER) + 1.0, delay


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_unusable_or_past_retry_after_falls_back_to_schedule(request, cluster, receiver,
                                                            endpoint_factory, value):
    ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3, retry_schedule=[0.3])
    receiver.script(ep.path, [(503, {"Retry-After": value}, "")])
    ep.enqueue(1)
    ep.wait_status("delivered", 1, timeout=30)
    reqs = ep.requests()
    assert len(reqs) == 2
    gap = reqs[1].monotonic - reqs[0].monotonic
    assert 0.3 * (1 - JITTER) - 0.02 <= gap < 0.3 * (1 + JITTER) + 1.5, \
        "Retry-After %r: next attempt after %.3f s, expected the 0.3 s schedule" % (value, gap)
def test_retries_wake_the_worker_at_their_due_time(request, cluster, receiver, endpoint_factory):
    """With a long poll interval, a retry 50 ms later still goes ~50 ms later:
    the worker wakes for it instead of waiting for its next poll."""
    cluster.set_conf(**{"callback.poll_interval": "5s"})
    cluster.reload()
    try:
        cluster.wait_until(lambda: _show_poll(cluster) == "5s",
                           timeout=10, what="poll_interval 5s")
        ep = One(request, cluster, receiver, endpoint_factory, max_attempts=3,
                 retry_schedule=["50 milliseconds", "100 milliseconds"])
        receiver.script(ep.path, [503, 503])
        ep.enqueue(1)
        ep.wait_status("delivered", 1, timeout=30)
        gaps = _gaps(ep.requests())
        record_figure("retry ms schedule with poll_interval 5 s: gaps %s ms"
                      % ", ".join("%.1f" % (g * 1000) for g in gaps))
        # well under the 5 s poll: only the wake when the retry is due
        # explains it (generous slack for a loaded machine)
        assert gaps[0] < 2.0 and gaps[1] < 2.0, gaps
    finally:
        cluster.set_conf(**{"callback.poll_interval": "200ms"})
        cluster.reload()


def _show_poll(cluster):
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW callback.poll_interval")
            return cur.fetchone()[0]
    finally:
        conn.close()
