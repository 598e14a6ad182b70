"""End-to-end: batches (issue 12.3), against the real receiver.

An endpoint with batch_size => N gets up to N events per request: the body
is a JSON array of the events' bodies, byte for byte as queued, comma-joined;
one webhook-id per batch, the events' own ids in webhook-event-ids; signed
once over the whole body (checked from the specification and by the official
npm standardwebhooks library).  A failed batch is retried as one, with the
same webhook-id and body; every delivery of the batch gets the same outcome,
attempt count and time; dead letters and callback_metrics count deliveries.
batch_window holds a partial batch until it fills or its oldest event has
waited the window.  Rate-limit tokens are per request.
"""

import json
import time

import psycopg2
import pytest

from test_signing import new_secret, spec_verifies, swh_verifier  # noqa: F401 (fixture)


def ep_name(request, suffix=""):
    import re
    return ("bt_" + re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name) + suffix)[:100]


def enqueue_n(cluster, event_type, n, tag, start=0):
    """n events in one transaction; returns their commit-time now()."""
    return cluster.scalar(
        "SELECT max(t) FROM (SELECT callback.enqueue(%s, jsonb_build_object("
        "  'i', g, 'tag', %s::text, 'text', 'quote \" ü € ' || repeat('x', g %% 50))) IS NOT NULL, "
        "  now() AS t FROM generate_series(%s, %s) g) s",
        (event_type, tag, start + 1, start + n))


def queue_rows(cluster, eid):
    """id -> (event msg id, body) of the endpoint's deliveries."""
    return {r[0]: ("msg_" + r[1].replace("-", ""), r[2]) for r in cluster.query(
        "SELECT id, event_id::text, body FROM callback.callback_queue WHERE endpoint_id = %s",
        (eid,))}


def diagnostics(cluster, eid):
    q = cluster.query(
        "SELECT status::text, count(*), max(attempts), max(last_status_code), max(last_error) "
        "  FROM callback.callback_queue WHERE endpoint_id = %s GROUP BY 1", (eid,))
    return "\nqueue: %r\n--- server log (tail) ---\n%s" % (q, cluster.log_tail(20))


def wait_finished(cluster, eid, n, status="delivered", timeout=60):
    def done():
        return cluster.scalar(
            "SELECT count(*) FILTER (WHERE status::text = %s) = %s AND count(*) = %s "
            "  FROM callback.callback_queue WHERE endpoint_id = %s", (status, n, n, eid))
    try:
        cluster.wait_until(done, timeout=timeout, interval=0.1,
                           what="%d deliveries of endpoint %d %s" % (n, eid, status))
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None


def check_batch(rec, rows_by_msg):
    """The body is "[" + the members' bodies joined by "," + "]", in the
    order webhook-event-ids gives; returns the member msg ids."""
    members = rec.headers["webhook-event-ids"].split(",")
    expected = "[" + ",".join(rows_by_msg[m] for m in members) + "]"
    assert rec.body == expected.encode("utf-8"), \
        "the body is not the members' exact bodies, comma-joined in [...]"
    arr = json.loads(rec.body)
    assert isinstance(arr, list) and len(arr) == len(members)
    assert rec.headers["webhook-id"] not in members, "the batch reused an event's webhook-id"
    assert rec.headers.get("content-type", "").startswith("application/json")
    return members


def test_thousand_events_in_ten_batches(request, cluster, receiver, endpoint_factory,
                                        swh_verifier):  # noqa: F811
    secret = new_secret()
    eid = endpoint_factory(ep_name(request), receiver.url("/b100"), event_types="{bt1.*}",
                           secret=secret, batch_size=100)
    enqueue_n(cluster, "bt1.e", 1000, "thousand")
    wait_finished(cluster, eid, 1000)
    recs = receiver.requests("/b100")
    by_id = {}
    for r in recs:
        by_id.setdefault(r.headers["webhook-id"], []).append(r)
    assert len(by_id) == 10 and len(recs) == 10, \
        "%d requests, %d webhook-ids for 1,000 events at batch_size 100" % (len(recs), len(by_id))

    rows = queue_rows(cluster, eid)
    by_msg = {m: b for m, b in rows.values()}
    seen = []
    for r in recs:
        members = check_batch(r, by_msg)
        assert len(members) == 100, "a batch of %d events" % len(members)
        seen += members
        assert spec_verifies(secret, r), "the batch's signature does not verify"
    assert sorted(seen) == sorted(by_msg), "not every event exactly once"
    # each batch went out in delivery order (the order they were queued)
    order = {m: i for i, (m, _) in rows.items()}
    for r in recs:
        ids = [order[m] for m in r.headers["webhook-event-ids"].split(",")]
        assert ids == sorted(ids)

    verified, total, err = swh_verifier(recs, secret)
    assert (verified, total) == (10, 10), "npm standardwebhooks: %d of %d\n%s" % (
        verified, total, err)
    verified, total, _ = swh_verifier(recs[:3], secret, tamper=True)
    assert (verified, total) == (0, 3)

    # the batch each delivery went in is kept; metrics count deliveries
    assert cluster.scalar("SELECT count(DISTINCT batch_id) FROM callback.callback_queue "
                          " WHERE endpoint_id = %s", (eid,)) == 10
    assert cluster.query(
        "SELECT sum(total_calls)::int, sum(delivered)::int, sum(failed_attempts)::int "
        "  FROM callback.callback_metrics WHERE endpoint = %s", (ep_name(request),)) \
        == [(1000, 1000, 0)]
    assert cluster.scalar("SELECT count(*) FROM callback.callback_attempts WHERE endpoint_id = %s",
                          (eid,)) == 1000


def test_failed_batch_is_retried_as_one(request, cluster, receiver, endpoint_factory,
                                        swh_verifier):  # noqa: F811
    secret = new_secret()
    receiver.script("/fail", [500])
    eid = endpoint_factory(ep_name(request), receiver.url("/fail"), event_types="{bt2.*}",
                           secret=secret, batch_size=10, failure_threshold=100,
                           retry_schedule=["2 seconds"])
    enqueue_n(cluster, "bt2.e", 7, "first")
    assert receiver.wait_for(1, "/fail", timeout=30), diagnostics(cluster, eid)
    # events queued while the batch waits for its retry go in a batch of
    # their own; the retry carries the same seven
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) = 7 FROM callback.callback_queue WHERE endpoint_id = %s "
        "   AND status = 'pending' AND attempts = 1", (eid,)), timeout=30,
        what="the failed batch written back")
    enqueue_n(cluster, "bt2.e", 3, "later", start=100)
    wait_finished(cluster, eid, 10)
    recs = receiver.requests("/fail")
    assert len(recs) == 3, "%d requests: expected the batch, its retry, the later batch" % len(recs)
    ids = [r.headers["webhook-id"] for r in recs]
    first = recs[0]
    retry = [r for r in recs[1:] if r.headers["webhook-id"] == ids[0]]
    later = [r for r in recs[1:] if r.headers["webhook-id"] != ids[0]]
    assert len(retry) == 1 and len(later) == 1, "webhook-ids %r" % ids
    assert retry[0].body == first.body, "the retry's body differs from the batch's"
    assert retry[0].headers["webhook-event-ids"] == first.headers["webhook-event-ids"]
    by_msg = {m: b for m, b in queue_rows(cluster, eid).values()}
    assert len(check_batch(first, by_msg)) == 7
    assert len(check_batch(later[0], by_msg)) == 3
    for r in recs:
        assert spec_verifies(secret, r)
    verified, total, err = swh_verifier(recs, secret)
    assert (verified, total) == (3, 3), err

    # one outcome for the whole batch: same attempts, times, status
    rows = cluster.query(
        "SELECT count(*), count(DISTINCT last_attempt_at), min(attempts), max(attempts), "
        "       count(DISTINCT batch_id) "
        "  FROM callback.callback_queue q WHERE endpoint_id = %s "
        "   AND ('msg_' || replace(event_id::text, '-', '')) = ANY (%s)",
        (eid, first.headers["webhook-event-ids"].split(",")))
    assert rows == [(7, 1, 2, 2, 1)], rows
    att = cluster.query(
        "SELECT attempt, status_code, outcome::text, count(*)::int, count(DISTINCT started_at)::int "
        "  FROM callback.callback_attempts WHERE endpoint_id = %s AND attempt <= 2 "
        "   AND delivery_id IN (SELECT id FROM callback.callback_queue WHERE attempts = 2) "
        " GROUP BY 1, 2, 3 ORDER BY 1", (eid,))
    assert att == [(1, 500, "pending", 7, 1), (2, 204, "delivered", 7, 1)], att
    assert cluster.query(
        "SELECT sum(total_calls)::int, sum(delivered)::int, sum(failed_attempts)::int "
        "  FROM callback.callback_metrics WHERE endpoint = %s", (ep_name(request),)) \
        == [(17, 10, 7)]


def test_dead_letters_per_delivery(request, cluster, receiver, endpoint_factory):
    receiver.script("/dead", [400])
    eid = endpoint_factory(ep_name(request), receiver.url("/dead"), event_types="{bt3.*}",
                           batch_size=4, failure_threshold=100)
    enqueue_n(cluster, "bt3.e", 4, "dead")
    wait_finished(cluster, eid, 4, status="dead")
    assert receiver.count("/dead") == 1
    assert cluster.scalar("SELECT count(*) FROM callback.callback_dead_letters "
                          " WHERE endpoint = %s", (ep_name(request),)) == 4
    assert cluster.query(
        "SELECT sum(total_calls)::int, sum(dead)::int FROM callback.callback_metrics "
        " WHERE endpoint = %s", (ep_name(request),)) == [(4, 4)]


def test_window_holds_a_partial_batch(request, cluster, receiver, endpoint_factory):
    window = 3.0
    eid = endpoint_factory(ep_name(request), receiver.url("/win"), event_types="{bt4.*}",
                           batch_size=10, batch_window=window)
    committed = enqueue_n(cluster, "bt4.e", 4, "window")
    assert receiver.wait_for(1, "/win", timeout=window + 60), diagnostics(cluster, eid)
    [rec] = receiver.requests("/win")
    waited = rec.received_at - committed.timestamp()
    # lower bound: not before the oldest event has waited the window;
    # upper bound generous (a loaded machine)
    assert waited >= window, "a partial batch went after %.2f s, before its %.1f s window" % (
        waited, window)
    assert waited <= window + 30, "a partial batch waited %.1f s" % waited
    assert len(rec.json()) == 4
    wait_finished(cluster, eid, 4)


def test_window_a_full_batch_goes_at_once(request, cluster, receiver, endpoint_factory):
    eid = endpoint_factory(ep_name(request), receiver.url("/full"), event_types="{bt5.*}",
                           batch_size=5, batch_window=3600)
    enqueue_n(cluster, "bt5.e", 4, "part")
    # held while it is not full (a bounded look for something that must not come)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert receiver.count("/full") == 0, "a partial batch went before its window"
        time.sleep(0.1)
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
                          "   AND status = 'pending'", (eid,)) == 4
    start = time.time()
    enqueue_n(cluster, "bt5.e", 1, "fill", start=10)
    assert receiver.wait_for(1, "/full", timeout=60), diagnostics(cluster, eid)
    [rec] = receiver.requests("/full")
    assert len(rec.json()) == 5
    assert rec.received_at - start < 60
    wait_finished(cluster, eid, 5)


def test_rate_limit_counts_requests(request, cluster, receiver, endpoint_factory):
    """30 events at batch_size 10 are 3 requests: at 1 request a second they
    take about 2 s; counted per event they would take 29 s."""
    eid = endpoint_factory(ep_name(request), receiver.url("/rate"), event_types="{bt6.*}",
                           batch_size=10, rate_limit=1, rate_burst=1)
    t0 = time.monotonic()
    enqueue_n(cluster, "bt6.e", 30, "rate")
    wait_finished(cluster, eid, 30, timeout=60)
    took = time.monotonic() - t0
    recs = receiver.requests("/rate")
    assert len(recs) == 3, "%d requests" % len(recs)
    gaps = [b.monotonic - a.monotonic for a, b in zip(recs, recs[1:])]
    assert all(g >= 0.8 for g in gaps), "requests closer than the rate allows: %r" % gaps
    assert took < 20, "30 events in 3 batches took %.1f s at 1 request/s" % took


@pytest.mark.parametrize("call,code", [
    ("SELECT callback.create_endpoint('bt_bad', 'http://127.0.0.1:1/h', "
     "batch_window => '1 second')", "22023"),
    ("SELECT callback.create_endpoint('bt_bad', 'http://127.0.0.1:1/h', "
     "batch_size => NULL)", "22004"),
    ("SELECT callback.create_endpoint('bt_bad', 'http://127.0.0.1:1/h', "
     "batch_size => 2000)", "22023"),
    ("SELECT callback.create_endpoint('bt_bad', 'http://127.0.0.1:1/h', "
     "batch_size => 5, batch_window => '2 hours')", "22023"),
])
def test_bad_batch_options_refused(cluster, call, code):
    with pytest.raises(psycopg2.Error) as e:
        cluster.execute(call)
    assert e.value.pgcode == code, (e.value.pgcode, str(e.value))
    assert e.value.diag.message_hint, "no hint"
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints "
                          " WHERE name = 'bt_bad'") == 0


def test_alter_window_on_single_endpoint_refused(request, cluster, endpoint_factory):
    name = ep_name(request)
    endpoint_factory(name, "http://127.0.0.1:1/h", event_types="{bt7.*}")
    with pytest.raises(psycopg2.Error) as e:
        cluster.execute("SELECT callback.alter_endpoint(%s, batch_size => 1, "
                        "batch_window => '5 seconds')", (name,))
    assert e.value.pgcode == "22023" and e.value.diag.message_hint
    assert cluster.query("SELECT batch_size, batch_window::text FROM callback.callback_endpoints "
                         " WHERE name = %s", (name,)) == [(1, "00:00:00")]
    cluster.execute("SELECT callback.alter_endpoint(%s, batch_size => 50, "
                    "batch_window => '5 seconds')", (name,))
    assert cluster.query("SELECT batch_size, batch_window::text FROM callback.callback_endpoints "
                         " WHERE name = %s", (name,)) == [(50, "00:00:05")]
