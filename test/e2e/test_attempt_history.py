"""End-to-end: callback.attempt_history (src/attempt_history.c).

With `failures`, a delivery delivered at its first attempt leaves no
callback_attempts row, while callback_stats -- and so callback_metrics and
prometheus_metrics() -- still count every attempt exactly (checked against
what the receiver saw).  Every failed attempt keeps its row; so does the
success of a delivery that was attempted before (a retry, a redriven dead
letter) and a success whose on_response hook failed (its row is written
with the hook_error).  Batches follow the rule per delivery, and so does
process_callbacks().  Set back to `all` (a reload), every attempt has its
row again.  A value that is not one of the two is refused with a SQLSTATE.

The setting is a reload one: each test sets it in the cluster's file,
reloads and waits until a new session sees it (the postmaster has then
signalled the worker, which rereads its settings before its next write-back).
"""

import re

import psycopg2
import pytest

import promparse
from conftest import make_endpoint
from faults_util import enqueue_many as enqueue, queue_status
from test_batches import wait_finished as wait_final
from test_hooks import OWNER, SETUP as HOOKS_SETUP, as_role
from test_inbox import no_worker

N = 40


def history(cluster, value):
    """callback.attempt_history = value in the file, reloaded and seen."""
    cluster.set_conf(**{"callback.attempt_history": value})
    cluster.reload()

    def seen():
        conn = cluster.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('callback.attempt_history')")
                return cur.fetchone()[0] == value
        finally:
            conn.close()
    cluster.wait_until(seen, timeout=30, what="callback.attempt_history = %s reloaded" % value)


@pytest.fixture
def failures(cluster):
    history(cluster, "failures")
    yield
    history(cluster, "all")


def name_of(request, suffix=""):
    return re.sub(r"[^A-Za-z0-9]", "", "ah" + request.node.name[-20:] + suffix)[:40]


def wait_stats(cluster, eid, attempts):
    """The rollup is written after the outcomes, apart: wait for all of it."""
    cluster.wait_until(
        lambda: cluster.scalar("SELECT coalesce(sum(attempts), 0) FROM callback.callback_stats "
                               " WHERE endpoint_id = %s", (eid,)) == attempts,
        timeout=30, interval=0.05, what="callback_stats to count %d attempts of %d" % (attempts, eid))


def attempt_rows(cluster, eid):
    return cluster.query(
        "SELECT a.delivery_id, a.attempt, a.status_code, a.error, a.outcome::text, a.hook_error "
        "  FROM callback.callback_attempts a WHERE a.endpoint_id = %s "
        " ORDER BY a.delivery_id, a.started_at, a.attempt", (eid,))


def stats(cluster, eid):
    """(attempts, delivered, failed, dead) of the endpoint in callback_stats."""
    return cluster.query(
        "SELECT sum(attempts)::int, sum(delivered)::int, sum(failed)::int, sum(dead)::int "
        "  FROM callback.callback_stats WHERE endpoint_id = %s", (eid,))[0]


def redrive_delivered(cluster, did):
    """Redrive one dead letter and wait until it is delivered."""
    assert cluster.scalar("SELECT callback.redrive(ARRAY[%s]::bigint[])", (did,)) == 1
    cluster.wait_until(lambda: cluster.scalar("SELECT status::text FROM callback.callback_queue "
                                              " WHERE id = %s", (did,)) == "delivered",
                       timeout=60, what="the redriven delivery delivered")


def test_the_setting_is_a_reload_enum_and_refuses_other_values(cluster):
    [row] = cluster.query("SELECT setting, boot_val, context, enumvals FROM pg_settings "
                          " WHERE name = 'callback.attempt_history'")
    assert row == ("all", "all", "sighup", ["all", "failures"]), row
    with pytest.raises(psycopg2.Error) as e:
        cluster.execute("ALTER SYSTEM SET callback.attempt_history = 'successes'")
    assert e.value.pgcode == "22023", e.value.pgerror
    assert "Available values: all, failures" in e.value.pgerror, e.value.pgerror
    # a reload setting: no session may change it for itself
    with pytest.raises(psycopg2.Error) as e:
        cluster.execute("SET callback.attempt_history = 'failures'")
    assert e.value.pgcode == "55P02", e.value.pgerror
    assert cluster.scalar("SELECT current_setting('callback.attempt_history')") == "all"


def test_first_try_successes_leave_no_rows_and_the_metrics_stay_exact(request, cluster, receiver,
                                                                        endpoint_factory, failures):
    name = name_of(request)
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"])
    enqueue(cluster, name + ".ev", N)
    wait_final(cluster, eid, N)
    wait_stats(cluster, eid, N)
    assert receiver.count("/" + name) == N

    assert attempt_rows(cluster, eid) == []
    assert stats(cluster, eid) == (N, N, 0, 0)
    [metrics] = cluster.query("SELECT total_calls, delivered, failed_attempts, dead, pending "
                              "  FROM callback.callback_metrics WHERE endpoint = %s", (name,))
    assert metrics == (N, N, 0, 0, 0), metrics
    fams = promparse.parse(cluster.scalar("SELECT callback.prometheus_metrics()"))
    lab = {"endpoint": name, "event_type": name + ".ev"}
    assert fams["pg_callback_calls_total"].value(**lab) == N
    assert fams["pg_callback_delivered_total"].value(**lab) == N
    assert fams["pg_callback_failed_attempts_total"].value(**lab) == 0
    assert fams["pg_callback_latency_seconds"].value(name="pg_callback_latency_seconds_count",
                                                     **lab) == N
    # the queue rows say all there is: delivered at attempt 1
    assert cluster.query("SELECT status::text, attempts, count(*) FROM callback.callback_queue "
                         " WHERE endpoint_id = %s GROUP BY 1, 2", (eid,)) == [("delivered", 1, N)]


def test_a_retried_delivery_keeps_its_whole_history(request, cluster, receiver, endpoint_factory,
                                                    failures):
    name = name_of(request)
    receiver.script("/" + name, [(500, {}, "boom")])
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"],
                           max_attempts=3, retry_schedule=[0.1])
    enqueue(cluster, name + ".ev", 1)
    wait_final(cluster, eid, 1)
    wait_stats(cluster, eid, 2)
    rows = attempt_rows(cluster, eid)
    assert [r[1:5] for r in rows] == [(1, 500, "HTTP 500", "pending"), (2, 204, None, "delivered")], rows
    assert stats(cluster, eid) == (2, 1, 1, 0)


def test_a_dead_letter_keeps_every_attempt_and_its_redrive_too(request, cluster, receiver,
                                                               endpoint_factory, failures):
    name = name_of(request)
    receiver.script("/" + name, [(503, {}, "down")] * 3 + [(400, {}, "no")])
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"],
                           max_attempts=3, retry_schedule=[0.1])
    enqueue(cluster, name + ".a", 1)
    wait_final(cluster, eid, 1, status="dead")
    enqueue(cluster, name + ".b", 1)
    wait_final(cluster, eid, 2, status="dead")
    wait_stats(cluster, eid, 4)
    rows = attempt_rows(cluster, eid)
    assert [r[1:5] for r in rows] == [
        (1, 503, "HTTP 503", "pending"), (2, 503, "HTTP 503", "pending"),
        (3, 503, "HTTP 503 (no attempts left)", "dead"),
        (1, 400, rows[3][3], "dead")], rows
    assert rows[3][3].startswith("HTTP 400"), rows

    # redriven, the first dead letter is delivered at (its new) attempt 1:
    # kept, for the delivery has a history
    first = rows[0][0]
    redrive_delivered(cluster, first)
    wait_stats(cluster, eid, 5)
    rows = attempt_rows(cluster, eid)
    assert [r[1:5] for r in rows if r[0] == first] == [
        (1, 503, "HTTP 503", "pending"), (2, 503, "HTTP 503", "pending"),
        (3, 503, "HTTP 503 (no attempts left)", "dead"), (1, 204, None, "delivered")], rows
    assert stats(cluster, eid) == (5, 1, 4, 2)


def test_batches_follow_the_rule_per_delivery(request, cluster, receiver, endpoint_factory,
                                              failures):
    ok = name_of(request, "ok")
    flaky = name_of(request, "fl")
    eok = endpoint_factory(ok, receiver.url("/" + ok), event_types=[ok + ".*"], batch_size=10)
    receiver.script("/" + flaky, [(500, {}, "boom")])
    efl = endpoint_factory(flaky, receiver.url("/" + flaky), event_types=[flaky + ".*"],
                           batch_size=10, max_attempts=3, retry_schedule=[0.1])
    # one transaction each: the whole batch is due at once
    enqueue(cluster, ok + ".ev", 10)
    enqueue(cluster, flaky + ".ev", 10)
    wait_final(cluster, eok, 10)
    wait_final(cluster, efl, 10)
    wait_stats(cluster, eok, 10)
    wait_stats(cluster, efl, 20)
    assert receiver.count("/" + ok) == 1 and receiver.count("/" + flaky) == 2
    assert attempt_rows(cluster, eok) == []
    rows = attempt_rows(cluster, efl)
    by_delivery = {}
    for r in rows:
        by_delivery.setdefault(r[0], []).append(r[1:5])
    assert len(by_delivery) == 10, rows
    for got in by_delivery.values():
        assert got == [(1, 500, "HTTP 500", "pending"), (2, 204, None, "delivered")], got
    assert stats(cluster, eok) == (10, 10, 0, 0)
    assert stats(cluster, efl) == (20, 10, 10, 0)


def test_a_failed_on_response_writes_its_attempt_row(request, cluster, receiver, failures):
    cluster.execute(HOOKS_SETUP)
    made = []

    def owned(name, **kw):
        eid = as_role(cluster, OWNER, lambda c: make_endpoint(c, name, receiver.url("/" + name),
                                                             event_types=[name + ".*"], **kw))
        made.append(name)
        return eid
    try:
        good = owned(name_of(request, "ack"), on_response="app.ack")
        bad = owned(name_of(request, "err"), on_response="app.r_error")
        enqueue(cluster, name_of(request, "ack") + ".ev", 3)
        enqueue(cluster, name_of(request, "err") + ".ev", 3)
        wait_final(cluster, good, 3)
        wait_final(cluster, bad, 3)
        wait_stats(cluster, good, 3)
        wait_stats(cluster, bad, 3)
        # the hook that worked left nothing to see
        assert cluster.scalar("SELECT count(*) FROM app.hook_calls hc JOIN callback.callback_queue q "
                              "  ON q.id = hc.delivery_id WHERE q.endpoint_id = %s", (good,)) == 3
        assert attempt_rows(cluster, good) == []
        # the one that failed: each first-try success has its row, with the error
        rows = attempt_rows(cluster, bad)
        assert len(rows) == 3, rows
        for r in rows:
            assert r[1:5] == (1, 204, None, "delivered"), rows
            assert r[5].startswith("on_response app.r_error") and "handler broke on" in r[5], rows
        [full] = cluster.query(
            "SELECT bool_and(a.event_id = q.event_id AND a.event_type = q.event_type "
            "                AND a.started_at = q.last_attempt_at AND a.latency_ms >= 0) "
            "  FROM callback.callback_attempts a JOIN callback.callback_queue q ON q.id = a.delivery_id "
            " WHERE a.endpoint_id = %s", (bad,))
        assert full == (True,), "the row written with the hook error is the attempt's"
    finally:
        for name in made:
            cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))


def test_process_callbacks_follows_the_setting(request, cluster, receiver, endpoint_factory,
                                               failures):
    ok = name_of(request, "ok")
    flaky = name_of(request, "fl")
    eok = endpoint_factory(ok, receiver.url("/" + ok), event_types=[ok + ".*"])
    receiver.script("/" + flaky, [(500, {}, "boom")])
    efl = endpoint_factory(flaky, receiver.url("/" + flaky), event_types=[flaky + ".*"],
                           retry_schedule=[0.1])
    with no_worker(cluster):
        enqueue(cluster, ok + ".ev", 5)
        enqueue(cluster, flaky + ".ev", 1)

        def drained():
            cluster.scalar("SELECT callback.process_callbacks(100)")
            return queue_status(cluster, eok) == {"delivered": 5} and \
                queue_status(cluster, efl) == {"delivered": 1}
        cluster.wait_until(drained, timeout=60, interval=0.1, what="process_callbacks() to deliver all")
    wait_stats(cluster, eok, 5)
    wait_stats(cluster, efl, 2)
    assert attempt_rows(cluster, eok) == []
    assert [r[1:5] for r in attempt_rows(cluster, efl)] == [
        (1, 500, "HTTP 500", "pending"), (2, 204, None, "delivered")]
    assert stats(cluster, eok) == (5, 5, 0, 0)


def test_back_to_all_every_attempt_has_its_row_again(request, cluster, receiver, endpoint_factory,
                                                     failures):
    name = name_of(request)
    eid = endpoint_factory(name, receiver.url("/" + name), event_types=[name + ".*"])
    enqueue(cluster, name + ".one", N)
    wait_final(cluster, eid, N)
    wait_stats(cluster, eid, N)
    assert attempt_rows(cluster, eid) == []

    history(cluster, "all")
    enqueue(cluster, name + ".two", N)
    wait_final(cluster, eid, 2 * N)
    wait_stats(cluster, eid, 2 * N)
    assert cluster.query("SELECT event_type, attempt, outcome::text, count(*) "
                         "  FROM callback.callback_attempts WHERE endpoint_id = %s "
                         " GROUP BY 1, 2, 3", (eid,)) == [(name + ".two", 1, "delivered", N)]
    assert stats(cluster, eid) == (2 * N, 2 * N, 0, 0)
