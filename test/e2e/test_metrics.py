"""End-to-end: the metrics surface agrees with what a real receiver saw.

A mixed run (2xx, 500-then-200, 400 dead letters; two endpoints, two event
types) is delivered by the real worker to a receiver that decides each answer
from the event itself and logs what it answered.  Then:

- callback.callback_metrics equals the receiver's own counts per endpoint and
  event type (total calls, delivered, failed attempts, dead, pending 0),
  with consistent success rate and ordered latency percentiles;
- callback.callback_worker_stats (live shared-memory counters) moved by what
  the receiver saw, and is readable by a role that is only in pg_monitor;
- callback.callback_health: ok for a healthy endpoint; warn / alert with the
  tripping figure in reason for settable thresholds;
- callback.prometheus_metrics() passes a strict parser (promparse.py) and
  carries the same figures as the view.

Every wait is a bounded poll.
"""

import collections
import json
import math
import re
import threading
import time

import psycopg2
import pytest

from conftest import make_endpoint, record_figure
from receiver import Receiver
import promparse

TYPES = ("m.one", "m.two")

# (endpoint path, event type) -> [ok, flaky (500 then 200), bad (400: dead)]
PLAN = {
    ("/a", "m.one"): (12, 3, 2),
    ("/a", "m.two"): (7, 2, 1),
    ("/b", "m.one"): (11, 6, 0),
    ("/b", "m.two"): (7, 0, 3),
}


class ModeReceiver(Receiver):
    """Answers each request from the event it carries: the payload says, per
    endpoint path, "ok" (204), "flaky" (500 the first time that webhook-id is
    seen, then 200) or "bad" (400).  Logs (path, event type, webhook-id,
    status answered) for every request."""

    def __init__(self):
        super().__init__(host="127.0.0.1", port=0)
        self._tl = threading.local()
        self._log_lock = threading.Lock()
        self.answers = []
        self._seen = collections.Counter()

    def _record(self, method, target, path, headers, body):
        self._tl.body = body
        self._tl.msg_id = headers.get("webhook-id")
        super()._record(method, target, path, headers, body)

    def _response_for(self, path):
        status, headers, body, delay = super()._response_for(path)
        raw = getattr(self._tl, "body", b"")
        msg_id = getattr(self._tl, "msg_id", None)
        try:
            ev = json.loads(raw)
            mode = ev["data"].get(path.strip("/"), "ok")
            etype = ev["type"]
        except Exception:
            mode, etype = "ok", None
        with self._log_lock:
            n = self._seen[(path, msg_id)]
            self._seen[(path, msg_id)] += 1
            if mode == "bad":
                status = 400
            elif mode == "flaky" and n == 0:
                status = 500
            elif mode == "flaky":
                status = 200
            else:
                status = 204
            self.answers.append((path, etype, msg_id, status))
        return status, {}, "", delay


def worker_counters(cluster):
    row = cluster.query("SELECT coalesce(sum(sent), 0), coalesce(sum(delivered), 0), "
                        "       coalesce(sum(failed), 0), coalesce(sum(dead), 0), count(*) "
                        "  FROM callback.callback_worker_stats")[0]
    return dict(zip(("sent", "delivered", "failed", "dead", "workers"), row))


def metrics_rows(cluster, where="", params=None):
    cur_cols = None
    conn = cluster._conn(None)
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM callback.callback_metrics %s ORDER BY endpoint, event_type"
                    % where, params)
        cur_cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    return cur_cols, rows


def format_table(cols, rows):
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)),
           "-+-".join("-" * w for w in widths)]
    for r in cells:
        out.append(" | ".join(v.ljust(w) for v, w in zip(r, widths)))
    return "\n".join(out)


def expected_from_answers(answers):
    """Per (path, event type): what the receiver itself saw and answered."""
    exp = {}
    by_key = collections.defaultdict(list)
    for path, etype, msg_id, status in answers:
        by_key[(path, etype)].append((msg_id, status))
    for key, items in by_key.items():
        final = {}
        for msg_id, status in items:
            final[msg_id] = status  # in arrival order: the last answer wins
        exp[key] = dict(
            total_calls=len(items),
            delivered=sum(1 for s in final.values() if 200 <= s < 300),
            failed_attempts=sum(1 for _, s in items if not 200 <= s < 300),
            dead=sum(1 for s in final.values() if s == 400),
        )
    return exp


# ------------------------------------------------------------------ the mixed run

@pytest.fixture(scope="module")
def mixed_run(cluster):
    """Run the mixed workload once for the module; returns a dict of what was
    planned, what the receiver answered and the endpoint names."""
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")
    r = ModeReceiver().start()
    names = {"/a": "metrics_a", "/b": "metrics_b"}
    for path, name in names.items():
        make_endpoint(cluster, name, r.url(path), event_types="{m.*}",
                      retry_schedule=["100 milliseconds"], max_attempts=5,
                      failure_threshold=1000000)
    before = worker_counters(cluster)

    # events: each says what /a and /b answer for it
    events = []
    for etype in TYPES:
        plan_a = PLAN[("/a", etype)]
        plan_b = PLAN[("/b", etype)]
        modes_a = ["ok"] * plan_a[0] + ["flaky"] * plan_a[1] + ["bad"] * plan_a[2]
        modes_b = ["ok"] * plan_b[0] + ["flaky"] * plan_b[1] + ["bad"] * plan_b[2]
        n = max(len(modes_a), len(modes_b))
        for i in range(n):
            payload = {"i": i}
            payload["a"] = modes_a[i]
            payload["b"] = modes_b[i]
            events.append((etype, payload))
    # every event goes to both endpoints: the plan has equal totals per type
    for etype in TYPES:
        assert sum(PLAN[("/a", etype)]) == sum(PLAN[("/b", etype)])

    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        for etype, payload in events:
            cur.execute("SELECT callback.enqueue(%s, %s::jsonb)", (etype, json.dumps(payload)))
        cur.execute("COMMIT")
    finally:
        conn.close()

    planned_requests = sum(ok + 2 * flaky + bad for ok, flaky, bad in PLAN.values())
    assert r.wait_for(planned_requests, timeout=60), \
        "%d of %d requests arrived" % (r.count(), planned_requests)

    def settled():
        return cluster.scalar(
            "SELECT count(*) = 0 FROM callback.callback_queue q "
            "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
            " WHERE e.name IN ('metrics_a', 'metrics_b') AND q.status IN ('pending', 'sending')")
    cluster.wait_until(settled, timeout=60, what="no pending deliveries for metrics_a/b")
    # the worker's counters are bumped as attempts finish; make sure every
    # finished attempt is counted before reading them
    cluster.wait_until(lambda: worker_counters(cluster)["sent"] - before["sent"] >= planned_requests,
                       timeout=30, what="worker_stats.sent to count every attempt")
    after = worker_counters(cluster)
    yield dict(receiver=r, names=names, before=before, after=after,
               planned_requests=planned_requests, answers=list(r.answers))
    r.stop()


# ------------------------------------------------------------------ tests

def test_callback_metrics_agree_with_receiver(cluster, mixed_run):
    answers = mixed_run["answers"]
    names = mixed_run["names"]
    exp = expected_from_answers(answers)

    # the receiver saw what was planned
    for (path, etype), (ok, flaky, bad) in PLAN.items():
        e = exp.get((path, etype), dict(total_calls=0, delivered=0, failed_attempts=0, dead=0))
        assert e == dict(total_calls=ok + 2 * flaky + bad, delivered=ok + flaky,
                         failed_attempts=flaky + bad, dead=bad), (path, etype, e)

    # the whole view, as the closing note shows it (only the mixed run has
    # delivered in this module's cluster so far)
    all_cols, all_rows = metrics_rows(cluster)
    table = format_table(all_cols, all_rows)
    # kept in the test output (stdout, junit property), not in a file
    record_figure("SELECT * FROM callback.callback_metrics after the mixed run "
                  "(plan per endpoint/type: ok, 500-then-200, 400 dead = %r; endpoints %r):"
                  "\n%s\n(%d rows)" % (sorted(PLAN.items()), names, table, len(all_rows)))

    cols, rows = metrics_rows(cluster, "WHERE endpoint IN ('metrics_a', 'metrics_b')")

    got = {}
    for row in rows:
        d = dict(zip(cols, row))
        got[(d["endpoint"], d["event_type"])] = d
    assert set(got) == {(names[p], t) for p, t in PLAN}, sorted(got)

    for (path, etype), e in exp.items():
        d = got[(names[path], etype)]
        for k in ("total_calls", "delivered", "failed_attempts", "dead"):
            assert d[k] == e[k], "%s/%s %s: view %r, receiver %r" % (names[path], etype, k, d[k], e[k])
        assert d["pending"] == 0
        assert d["oldest_pending_age"] is None
        assert float(d["success_rate"]) == pytest.approx(
            round(100.0 * e["delivered"] / e["total_calls"], 2), abs=0.006)
        p50, p95, p99, mx, avg = (float(d[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms"))
        assert 0 <= p50 <= p95 <= p99 <= mx, (p50, p95, p99, mx)
        assert 0 < avg <= mx + 0.01, (avg, mx)
        if e["failed_attempts"]:
            assert d["last_error"] and d["last_error"].startswith("HTTP "), d["last_error"]

    # the attempt history says the same, row by row
    hist = {(n, t): c for n, t, c in cluster.query(
        "SELECT e.name, a.event_type, count(*) FROM callback.callback_attempts a "
        "  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
        " WHERE e.name IN ('metrics_a', 'metrics_b') GROUP BY 1, 2")}
    for (path, etype), e in exp.items():
        assert hist[(names[path], etype)] == e["total_calls"]


# ------------------------------------------------------------------ percentiles

HIST_BASE_MS = 0.125   # src/metrics.h: bucket 0 is [0, 0.125), bucket i [0.125 * 2^(i-1), 0.125 * 2^i)
SLOW_MS = 300          # injected at the receiver: bucket [256, 512)


def hist_bucket(ms):
    """[lo, hi] of the power-of-two bucket holding ms (src/metrics.c, bucket_of)."""
    if ms < HIST_BASE_MS:
        return 0.0, HIST_BASE_MS
    i = int(math.floor(math.log2(ms / HIST_BASE_MS))) + 1
    return HIST_BASE_MS * 2 ** (i - 1), HIST_BASE_MS * 2 ** i


class DelayReceiver(Receiver):
    """Answers each request after the delay its event asks for
    ({"delay_ms": n}): the latencies are injected, known in advance."""

    def __init__(self):
        super().__init__(host="127.0.0.1", port=0)
        self._tl = threading.local()

    def _record(self, method, target, path, headers, body):
        self._tl.body = body
        super()._record(method, target, path, headers, body)

    def _response_for(self, path):
        status, headers, body, _ = super()._response_for(path)
        try:
            delay = json.loads(getattr(self._tl, "body", b""))["data"]["delay_ms"] / 1000.0
        except Exception:
            delay = 0.0
        return status, headers, body, delay


def test_percentiles_match_injected_latencies(cluster, endpoint_factory):
    """p50 / p95 / p99 against latencies injected at the receiver: 20
    attempts per event type, some answered at once and some after 300 ms.
    Each percentile must lie in the power-of-two bucket of the true
    (nearest-rank) percentile of the attempts' latencies, and on the known
    side of 256 ms: "mostly slow" (6 fast, 14 slow) has every percentile in
    the slow bucket; "mostly fast" (14 fast, 6 slow) a fast p50 and slow
    p95 / p99.  An order check alone would pass swapped or constant
    percentiles."""
    r = DelayReceiver().start()
    try:
        endpoint_factory("metrics_lat", r.url("/lat"), event_types="{lat.*}", timeout=30)
        mix = {"lat.mostly_slow": (6, 14), "lat.mostly_fast": (14, 6)}
        conn = cluster.connect()
        try:
            cur = conn.cursor()
            cur.execute("BEGIN")
            for etype, (fast, slow) in mix.items():
                for i in range(fast + slow):
                    cur.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', %s, "
                                "'delay_ms', %s))", (etype, i, SLOW_MS if i >= fast else 0))
            cur.execute("COMMIT")
        finally:
            conn.close()
        assert r.wait_for(40, "/lat", timeout=60), r.count("/lat")
        cluster.wait_until(lambda: cluster.scalar(
            "SELECT sum(total_calls) = 40 AND sum(pending) = 0 FROM callback.callback_metrics "
            " WHERE endpoint = 'metrics_lat'"), timeout=60, what="40 attempts in callback_metrics")
    finally:
        r.stop()

    for etype, (fast, slow) in mix.items():
        lat = sorted(float(x) for (x,) in cluster.query(
            "SELECT a.latency_ms FROM callback.callback_attempts a "
            "  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
            " WHERE e.name = 'metrics_lat' AND a.event_type = %s", (etype,)))
        assert len(lat) == fast + slow
        # the recorded latencies are the injected ones
        assert all(x >= SLOW_MS for x in lat[fast:]), lat
        assert all(x < 256 for x in lat[:fast]), lat
        row = cluster.query(
            "SELECT p50_ms, p95_ms, p99_ms, max_ms FROM callback.callback_metrics "
            " WHERE endpoint = 'metrics_lat' AND event_type = %s", (etype,))
        assert len(row) == 1, row
        est = dict(zip((0.50, 0.95, 0.99), (float(x) for x in row[0][:3])))
        record_figure("percentiles, %s (%d at ~0 ms, %d at %d ms): p50 %.2f, p95 %.2f, p99 %.2f "
                      "ms; true %s" % (etype, fast, slow, SLOW_MS, est[0.5], est[0.95], est[0.99],
                                       ", ".join("%.2f" % lat[math.ceil(p * len(lat)) - 1]
                                                 for p in est)))
        for p, got in est.items():
            true = lat[math.ceil(p * len(lat)) - 1]
            lo, hi = hist_bucket(true)
            assert lo - 0.01 <= got <= hi + 0.01, \
                "%s p%d: %.2f ms, but the true value %.2f ms is in the bucket [%g, %g)" \
                % (etype, round(p * 100), got, true, lo, hi)
        slow_side = {p: got >= 256 for p, got in est.items()}
        want = {0.50: slow > fast, 0.95: True, 0.99: True}
        assert slow_side == want, "%s: percentiles %r on the slow side %r, want %r" \
            % (etype, est, slow_side, want)


def test_worker_stats_counters_move_with_the_receiver(cluster, mixed_run):
    before, after = mixed_run["before"], mixed_run["after"]
    answers = mixed_run["answers"]
    n = len(answers)
    ok = sum(1 for a in answers if 200 <= a[3] < 300)
    dead = sum(1 for a in answers if a[3] == 400)
    assert after["workers"] >= 1
    # only this module's cluster and only the mixed run delivered meanwhile
    assert after["sent"] - before["sent"] == n
    assert after["delivered"] - before["delivered"] == ok
    assert after["failed"] - before["failed"] == n - ok
    assert after["dead"] - before["dead"] == dead
    row = cluster.query("SELECT database, state, inflight, pid FROM callback.callback_worker_stats")
    assert any(r[0] == cluster.dbname and r[1] in ("idle", "delivering") and r[3] > 0 for r in row), row


def test_health_ok_for_a_healthy_endpoint(cluster, receiver, endpoint_factory):
    endpoint_factory("health_ok", receiver.url("/ok"), event_types="{h.ok}")
    cluster.execute("SELECT callback.enqueue('h.ok', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 20) g")
    assert receiver.wait_for(20, "/ok", timeout=30)
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT backlog = 0 AND success_rate IS NOT NULL FROM callback.callback_health "
        " WHERE endpoint = 'health_ok'"), timeout=30, what="health_ok settled")
    status, reason, rate, avg, backlog = cluster.query(
        "SELECT status, reason, success_rate, avg_ms, backlog FROM callback.callback_health "
        " WHERE endpoint = 'health_ok'")[0]
    assert (status, reason) == ("ok", ""), (status, reason, rate, avg, backlog)
    assert float(rate) == 100.0 and backlog == 0


def test_health_thresholds_warn_and_alert_with_the_figure(cluster, receiver, endpoint_factory,
                                                         mixed_run):
    # a paused endpoint with 5 pending deliveries
    endpoint_factory("health_paused", receiver.url("/p"), event_types="{h.paused}")
    cluster.execute("SELECT callback.pause_endpoint('health_paused')")
    cluster.execute("SELECT callback.enqueue('h.paused', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 5) g")
    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT status, reason, backlog FROM callback.callback_health "
                    " WHERE endpoint = 'health_paused'")
        status, reason, backlog = cur.fetchone()
        assert backlog == 5
        assert status == "warn" and "paused" in reason, (status, reason)
        # the metrics view counts the same backlog as pending, with its age
        cur.execute("SELECT total_calls, pending, oldest_pending_age IS NOT NULL "
                    "  FROM callback.callback_metrics WHERE endpoint = 'health_paused'")
        assert cur.fetchall() == [(0, 5, True)]
        assert "backlog" not in reason, reason  # 5 < default 1000

        cur.execute("SET callback.health_max_backlog = 1")
        cur.execute("SELECT status, reason FROM callback.callback_health "
                    " WHERE endpoint = 'health_paused'")
        status, reason = cur.fetchone()
        assert status == "warn", (status, reason)
        assert "backlog 5 >= 1" in reason, reason

        # 10x past the threshold is an alert
        cur.execute("SET callback.health_max_backlog = 0")
        cur.execute("SELECT status, reason FROM callback.callback_health "
                    " WHERE endpoint = 'health_paused'")
        status, reason = cur.fetchone()
        assert status == "alert" and "backlog 5 >= 0" in reason, (status, reason)
        cur.execute("RESET callback.health_max_backlog")

        # the mixed run's endpoints are far below 99.5 %: alert with the figure
        exp = expected_from_answers(mixed_run["answers"])
        for path, name in mixed_run["names"].items():
            calls = sum(e["total_calls"] for (p, _), e in exp.items() if p == path)
            ok = sum(e["delivered"] for (p, _), e in exp.items() if p == path)
            rate = round(100.0 * ok / calls, 2)
            cur.execute("SELECT status, reason, success_rate FROM callback.callback_health "
                        " WHERE endpoint = %s", (name,))
            status, reason, got_rate = cur.fetchone()
            assert float(got_rate) == pytest.approx(rate, abs=0.006), (name, got_rate, rate)
            assert status == "alert", (name, status, reason)
            assert re.search(r"alert: success rate %s%% < 99\.5%%" % re.escape(str(got_rate)),
                             reason), reason
            # a lower threshold (settable) makes it a warn, then ok
            cur.execute("SET callback.health_min_success_rate = %s", (float(got_rate) + 1,))
            cur.execute("SELECT status, reason FROM callback.callback_health WHERE endpoint = %s",
                        (name,))
            status, reason = cur.fetchone()
            assert status == "warn" and "warn: success rate" in reason, (status, reason)
            cur.execute("SET callback.health_min_success_rate = %s", (float(got_rate) - 1,))
            cur.execute("SELECT status, reason FROM callback.callback_health WHERE endpoint = %s",
                        (name,))
            assert cur.fetchone() == ("ok", ""), name
            cur.execute("RESET callback.health_min_success_rate")

        # average latency threshold, settable: tiny -> alert naming the average
        cur.execute("SET callback.health_max_avg_ms = 0.0001")
        cur.execute("SELECT status, reason, avg_ms FROM callback.callback_health "
                    " WHERE endpoint = 'metrics_a'")
        status, reason, avg = cur.fetchone()
        assert status == "alert" and ("alert: average %s ms" % avg) in reason, (status, reason)
        cur.execute("RESET callback.health_max_avg_ms")
    finally:
        conn.close()


def test_worker_stats_readable_by_pg_monitor_member(cluster):
    cluster.execute("DROP ROLE IF EXISTS pgcb_mon_only")
    cluster.execute("CREATE ROLE pgcb_mon_only LOGIN")
    cluster.execute("GRANT pg_monitor TO pgcb_mon_only")
    try:
        conn = psycopg2.connect(**dict(cluster.dsn(), user="pgcb_mon_only"))
        conn.autocommit = True
        try:
            cur = conn.cursor()
            cur.execute("SELECT pg_has_role('pgcb_mon_only', 'callback_monitor', 'MEMBER'), "
                        "       pg_has_role('pgcb_mon_only', 'pg_monitor', 'MEMBER')")
            assert cur.fetchone() == (False, True)
            try:
                cur.execute("SELECT count(*), sum(sent) FROM callback.callback_worker_stats")
                n, sent = cur.fetchone()
            except psycopg2.Error as e:
                pytest.fail("a pg_monitor member cannot read callback.callback_worker_stats: %s"
                            % str(e).strip())
            assert n >= 1 and sent is not None
            # and the Prometheus text, granted to pg_monitor as well
            cur.execute("SELECT callback.prometheus_metrics()")
            promparse.parse(cur.fetchone()[0])
        finally:
            conn.close()
    finally:
        cluster.execute("DROP ROLE IF EXISTS pgcb_mon_only")


def test_prom_label_escaping(cluster):
    nasty = 'back\\slash "quoted"\nnew line \\n literal, {brace}=ü'
    got = cluster.scalar("SELECT callback._prom_label(%s)", (nasty,))
    assert got == 'back\\\\slash \\"quoted\\"\\nnew line \\\\n literal, {brace}=ü', got
    assert "\n" not in got
    assert promparse.unescape_label(got) == nasty
    # and it parses as a label value in a sample line
    text = ("# HELP x_total t\n# TYPE x_total counter\n"
            'x_total{endpoint="%s"} 1\n' % got)
    fam = promparse.parse(text)["x_total"]
    assert fam.samples[0].labels == {"endpoint": nasty}
    assert cluster.scalar("SELECT callback._prom_label(NULL)") == ""


FAMILY_COLUMNS = {
    "pg_callback_calls_total": "total_calls",
    "pg_callback_delivered_total": "delivered",
    "pg_callback_failed_attempts_total": "failed_attempts",
    "pg_callback_dead_total": "dead",
    "pg_callback_pending": "pending",
}


def prom_and_view(cluster):
    """The exposition and the view, read in one statement (one snapshot)."""
    text, view, health, workers = cluster.query(
        "SELECT callback.prometheus_metrics(), "
        "       (SELECT json_agg(m) FROM callback.callback_metrics m), "
        "       (SELECT json_agg(h) FROM callback.callback_health h), "
        "       (SELECT json_agg(w) FROM (SELECT w.*, d.datname FROM callback.worker_stats() w "
        "          LEFT JOIN pg_database d ON d.oid = w.database) w)")[0]
    return text, view or [], health or [], workers or []


def test_prometheus_exposition_is_strict_and_equals_the_view(cluster, mixed_run, receiver,
                                                            endpoint_factory):
    # besides the mixed run's history: a paused endpoint with 3 deliveries
    # waiting and no attempt yet (a row with no latency figures)
    endpoint_factory("prom_waiting", receiver.url("/w"), event_types="{p.wait}")
    cluster.execute("SELECT callback.pause_endpoint('prom_waiting')")
    cluster.execute("SELECT callback.enqueue('p.wait', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 3) g")
    cluster.execute("UPDATE callback.callback_queue SET created_at = now() - interval '90 seconds' "
                    " WHERE endpoint_id = (SELECT id FROM callback.callback_endpoints "
                    "                       WHERE name = 'prom_waiting')")
    text, view, health, workers = prom_and_view(cluster)
    assert text is not None, "prometheus_metrics() returned NULL"
    fams = promparse.parse(text)
    for name, fam in fams.items():
        assert name.startswith("pg_callback_"), name
    for name in list(FAMILY_COLUMNS) + ["pg_callback_latency_seconds",
                                         "pg_callback_endpoint_health", "pg_callback_worker_inflight",
                                         "pg_callback_worker_sent_total"]:
        assert name in fams, "family %s missing" % name
    assert fams["pg_callback_calls_total"].type == "counter"
    assert fams["pg_callback_pending"].type == "gauge"
    assert fams["pg_callback_latency_seconds"].type == "histogram"

    names = set(mixed_run["names"].values())
    checked = 0
    for row in view:
        if row["endpoint"] not in names:
            continue
        lab = {"endpoint": row["endpoint"], "event_type": row["event_type"]}
        for fam, col in FAMILY_COLUMNS.items():
            assert fams[fam].value(**lab) == pytest.approx(float(row[col])), (fam, lab)
        assert fams["pg_callback_oldest_pending_seconds"].value(**lab) == 0
        lat = fams["pg_callback_latency_seconds"]
        assert lat.value("pg_callback_latency_seconds_bucket", le="+Inf", **lab) == row["total_calls"]
        assert lat.value("pg_callback_latency_seconds_count", **lab) == row["total_calls"]
        assert lat.value("pg_callback_latency_seconds_sum", **lab) * 1000 / row["total_calls"] == \
            pytest.approx(float(row["avg_ms"]), abs=0.006)
        checked += 1
    assert checked == len(PLAN)

    # the counter families agree with the receiver, too
    exp = expected_from_answers(mixed_run["answers"])
    for (path, etype), e in exp.items():
        lab = {"endpoint": mixed_run["names"][path], "event_type": etype}
        assert fams["pg_callback_calls_total"].value(**lab) == e["total_calls"]
        assert fams["pg_callback_dead_total"].value(**lab) == e["dead"]

    wl = {"endpoint": "prom_waiting", "event_type": "p.wait"}
    assert fams["pg_callback_pending"].value(**wl) == 3
    assert fams["pg_callback_calls_total"].value(**wl) == 0
    assert 90 <= fams["pg_callback_oldest_pending_seconds"].value(**wl) < 300
    assert fams["pg_callback_latency_seconds"].value("pg_callback_latency_seconds_count", **wl) == 0
    assert fams["pg_callback_endpoint_health"].value(endpoint="prom_waiting") == 1  # warn: paused

    codes = {"ok": 0, "warn": 1, "alert": 2}
    for h in health:
        assert fams["pg_callback_endpoint_health"].value(endpoint=h["endpoint"]) == codes[h["status"]]
    for w in workers:
        assert fams["pg_callback_worker_sent_total"].value(
            slot=str(w["slot"]), database=w["datname"]) == w["sent"]


def test_prometheus_stays_valid_after_endpoints_are_dropped(cluster, receiver):
    """Dropping an endpoint either removes its history or keeps it under a
    label that still says which endpoint it was; either way the exposition
    stays valid (one series per label set) and the view has no row without
    an endpoint."""
    for name in ("prom_gone_1", "prom_gone_2"):
        make_endpoint(cluster, name, receiver.url("/gone"), event_types="{p.gone}")
    cluster.execute("SELECT callback.enqueue('p.gone', '{}'::jsonb)")
    assert receiver.wait_for(2, "/gone", timeout=30)
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_metrics "
        " WHERE endpoint IN ('prom_gone_1', 'prom_gone_2') AND delivered = 1 AND pending = 0") == 2,
        timeout=30, what="both deliveries in callback_metrics")
    for name in ("prom_gone_1", "prom_gone_2"):
        cluster.execute("SELECT callback.drop_endpoint(%s)", (name,))

    rows = cluster.query("SELECT endpoint, event_type, total_calls FROM callback.callback_metrics "
                         " WHERE event_type = 'p.gone'")
    text = cluster.scalar("SELECT callback.prometheus_metrics()")
    assert text is not None, "prometheus_metrics() returned NULL"
    try:
        promparse.parse(text)
    except promparse.ParseError as e:
        pytest.fail("invalid exposition after two endpoints were dropped: %s\n"
                    "callback_metrics rows for them: %r" % (e, rows))
    assert all(r[0] for r in rows), \
        "callback_metrics rows of dropped endpoints have no endpoint: %r" % rows
    assert len({r[0] for r in rows}) == len(rows), rows


@pytest.mark.parametrize("text, why", [
    ("", "empty exposition"),
    ("\n", "empty line"),
    ("a 1\n", "outside its family"),
    ("# HELP a_total t\n# TYPE a_total counter\na_total 1\na_total 2\n", "duplicate series"),
    ('# HELP a t\n# TYPE a gauge\na{x="1",x="2"} 1\n', "repeated"),
    ('# HELP a t\n# TYPE a gauge\na{x="\\q"} 1\n', "invalid escape"),
    ('# HELP a t\n# TYPE a gauge\na{x="1",} 1\n', "trailing comma"),
    ("# TYPE a gauge\na 1\n", "HELP and TYPE"),
    ("# HELP a t\na 1\n", "HELP and TYPE"),
    ("# HELP a t\n# TYPE a gauge\na 1", "newline"),
    ("# HELP a t\n# TYPE a gauge\na 1 1700000000\n", "after the value"),
    ("# HELP a t\n# TYPE a gauge\nb 1\n", "outside its family"),
    ("# HELP a t\n# TYPE a gauge\na 1\n# HELP a again\n", "after the family's samples"),
    ("# HELP a t\n# TYPE a gauge\n\na 1\n", "empty line"),
    ("# HELP a t\n# TYPE a summary\na 1\n", "quantile"),
    ("# HELP a t\n# TYPE a gauge\na one\n", "not a number"),
    ("# a comment\n# HELP a t\n# TYPE a gauge\na 1\n", "neither HELP nor TYPE"),
    ('# HELP a t\n# TYPE a gauge\na{x="1"} 1\n# HELP b t\n# TYPE b gauge\nb 1\na{x="2"} 1\n',
     "outside its family"),
])
def test_promparse_rejects_what_a_scraper_may_reject(text, why):
    """The strict parser itself can fail: each of these is refused, for the
    stated reason."""
    with pytest.raises(promparse.ParseError) as ei:
        promparse.parse(text)
    assert why in str(ei.value), str(ei.value)


def test_promparse_accepts_a_valid_exposition():
    text = ('# HELP a_total t with \\\\ and \\n\n# TYPE a_total counter\n'
            'a_total{endpoint="x\\"y",event_type="e"} 3\na_total{endpoint="z",event_type="e"} 1e3\n'
            '# HELP l t\n# TYPE l summary\nl{quantile="0.5"} NaN\nl_sum 2.5\nl_count 2\n')
    fams = promparse.parse(text)
    assert fams["a_total"].help == "t with \\ and \n"
    assert fams["a_total"].value(endpoint='x"y', event_type="e") == 3
    assert fams["a_total"].value(endpoint="z", event_type="e") == 1000
    assert fams["l"].value("l_count") == 2
