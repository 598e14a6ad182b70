"""End-to-end: the Prometheus surface, checked with Prometheus's own tools.

After a mixed run (deliveries, 500-then-retried failures, 400 dead letters)
delivered by the real worker to a real receiver:

- callback.prometheus_metrics() passes `promtool check metrics`; the latency
  histogram is in seconds, cumulative, with +Inf = _count, and equals the
  buckets counted from callback_attempts; _sum is the exact sum of the
  attempts' latencies; the counters equal the attempts recorded;
- purge() does not make any counter (or histogram series) go down: what it
  removes from callback_stats is folded into callback_stats_purged; later
  deliveries add on top; drop_endpoint() still removes everything;
- Debian's prometheus-postgres-exporter, started for this module on a free
  loopback port with deploy/prometheus/queries.yaml and connected over the
  Unix socket as a role that is only in pg_monitor, serves the same
  pg_callback series with the same values, and its scrape passes promtool;
- deploy/prometheus/alerts.yml (the rules README.md shows) passes
  `promtool check rules`, has one rule per callback_health threshold at the
  setting's default, and fires where callback_health would (promtool test
  rules); deploy/prometheus/scrape.yml passes `promtool check config`.

Every wait is a bounded poll.
"""

import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import make_endpoint
from receiver import Receiver
import promparse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy", "prometheus")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
EXPORTER = shutil.which("prometheus-postgres-exporter") or "/usr/bin/prometheus-postgres-exporter"
MONITOR_ROLE = "pgcb_prom_exporter"

# endpoint -> receiver path: /ok answers 204, /flaky 500 a few times first,
# /dead 400 (a dead letter at the first attempt)
ENDPOINTS = {
    "pm_ok": "/ok",
    "pm_flaky": "/flaky",
    "pm_dead": "/dead",
}
EVENTS = {"pm.a": 10, "pm.b": 5}
FLAKY_500S = 6
COUNTERS = ("pg_callback_calls_total", "pg_callback_delivered_total",
            "pg_callback_failed_attempts_total", "pg_callback_dead_total")


def promtool(*args, stdin=None):
    p = subprocess.run([PROMTOOL] + list(args), input=stdin, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout + p.stderr


def prom_text(cluster):
    text = cluster.scalar("SELECT callback.prometheus_metrics()")
    assert text is not None, "prometheus_metrics() returned NULL"
    return text


def settled(cluster, names):
    return cluster.scalar(
        "SELECT count(*) = 0 FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = ANY (%s) AND q.status IN ('pending', 'sending')", (list(names),))


def deliver(cluster, receiver, per_type, flaky_500s=0, dead=True):
    """Queue per_type events of each type to every pm_* endpoint and wait
    until each is delivered or dead and counted in callback_stats."""
    names = [n for n in ENDPOINTS if n != "pm_dead" or dead]
    receiver.script("/flaky", [500] * flaky_500s)
    if dead:
        receiver.script("/dead", [400] * sum(per_type.values()))
    before = cluster.scalar("SELECT count(*) FROM callback.callback_attempts a "
                            "  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
                            " WHERE e.name = ANY (%s)", (names,))
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            for etype, n in per_type.items():
                cur.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                            "  FROM generate_series(1, %s) g", (etype, n))
        conn.commit()
    finally:
        conn.close()
    n = sum(per_type.values())
    expected = before + n * len(names) + flaky_500s
    cluster.wait_until(lambda: settled(cluster, names), timeout=90, what="pm_* settled")
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT (SELECT count(*) FROM callback.callback_attempts a "
        "          JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
        "         WHERE e.name = ANY (%s)) = %s", (names, expected)),
        timeout=60, what="%d attempts recorded" % expected)


@pytest.fixture(scope="module")
def mixed(cluster):
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")
    r = Receiver(host="127.0.0.1", port=0).start()
    for name, path in ENDPOINTS.items():
        make_endpoint(cluster, name, r.url(path), event_types="{pm.*}",
                      retry_schedule=["100 milliseconds"], max_attempts=5,
                      failure_threshold=1000000)
    deliver(cluster, r, EVENTS, flaky_500s=FLAKY_500S)
    yield r
    r.stop()


def truth(cluster):
    """Per (endpoint, event type), from callback_attempts: counts, the exact
    latency sum in seconds and the cumulative bucket counts (the histogram's
    buckets are [lo, hi): a latency on a bound counts above it)."""
    rows = cluster.query(
        "SELECT e.name, a.event_type, a.outcome, a.latency_ms "
        "  FROM callback.callback_attempts a "
        "  JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
        " WHERE e.name LIKE 'pm\\_%%'")
    out = {}
    for ep, et, outcome, ms in rows:
        e = out.setdefault((ep, et), dict(calls=0, delivered=0, failed=0, dead=0, ms=[]))
        e["calls"] += 1
        e["delivered"] += outcome == "delivered"
        e["failed"] += outcome != "delivered"
        e["dead"] += outcome == "dead"
        e["ms"].append(ms)
    for e in out.values():
        e["sum"] = math.fsum(e["ms"]) / 1000
        e["buckets"] = [sum(1 for ms in e["ms"] if ms < 0.125 * 2 ** k) for k in range(23)]
    return out


def series(fams, prefix="pg_callback_", drop_labels=()):
    """{(sample name, frozenset(labels)): value} of every pg_callback sample."""
    out = {}
    for name, fam in fams.items():
        if not name.startswith(prefix):
            continue
        for s in fam.samples:
            labels = {k: v for k, v in s.labels.items() if k not in drop_labels}
            key = (s.name, frozenset(labels.items()))
            assert key not in out, "duplicate series %r" % (key,)
            out[key] = s.value
    return out


def monotonic_series(fams):
    """Every sample that must never go down: counters and histogram series."""
    out = {}
    for name, fam in fams.items():
        if fam.type in ("counter", "histogram") and name.startswith("pg_callback_") \
                and not name.startswith("pg_callback_worker_"):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


# ------------------------------------------------------------------ the exposition

def test_prometheus_metrics_passes_promtool_and_is_exact(cluster, mixed):
    text = prom_text(cluster)
    rc, out = promtool("check", "metrics", stdin=text)
    assert rc == 0 and out.strip() == "", "promtool check metrics:\n%s" % out
    fams = promparse.parse(text)
    for fam in fams.values():
        assert fam.help and fam.type, fam
    assert fams["pg_callback_latency_seconds"].type == "histogram"
    for name in COUNTERS:
        assert fams[name].type == "counter"
    # no abbreviated units, no figure that PromQL derives from the others
    assert not [n for n in fams if re.search(r"_(ms|avg|max|ratio)(_|$)", n)], sorted(fams)

    exp = truth(cluster)
    assert len(exp) == len(ENDPOINTS) * len(EVENTS)
    lat = fams["pg_callback_latency_seconds"]
    bounds = [0.000125 * 2 ** k for k in range(23)]
    for (ep, et), e in exp.items():
        lab = {"endpoint": ep, "event_type": et}
        assert fams["pg_callback_calls_total"].value(**lab) == e["calls"]
        assert fams["pg_callback_delivered_total"].value(**lab) == e["delivered"]
        assert fams["pg_callback_failed_attempts_total"].value(**lab) == e["failed"]
        assert fams["pg_callback_dead_total"].value(**lab) == e["dead"]
        assert fams["pg_callback_pending"].value(**lab) == 0
        buckets = [(s.labels["le"], s.value) for s in lat.samples
                   if s.name.endswith("_bucket")
                   and {k: v for k, v in s.labels.items() if k != "le"} == lab]
        assert buckets[-1][0] == "+Inf"
        assert [float(le) for le, _ in buckets[:-1]] == pytest.approx(bounds, rel=1e-12)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), "buckets not cumulative: %r" % counts
        assert counts[:-1] == e["buckets"], (lab, counts, e["buckets"])
        assert counts[-1] == lat.value("pg_callback_latency_seconds_count", **lab) == e["calls"]
        # the true sum (not average x count), to the last bit a double carries
        assert lat.value("pg_callback_latency_seconds_sum", **lab) == \
            pytest.approx(e["sum"], rel=1e-12, abs=0)
    # the planned mix happened
    per_ep = {n: {k: sum(e[k] for (ep, _), e in exp.items() if ep == n)
                  for k in ("calls", "delivered", "failed", "dead")} for n in ENDPOINTS}
    n = sum(EVENTS.values())
    assert per_ep["pm_ok"] == dict(calls=n, delivered=n, failed=0, dead=0)
    assert per_ep["pm_flaky"] == dict(calls=n + FLAKY_500S, delivered=n, failed=FLAKY_500S, dead=0)
    assert per_ep["pm_dead"] == dict(calls=n, delivered=0, failed=n, dead=n)

    health = dict(cluster.query("SELECT endpoint, status FROM callback.callback_health"))
    codes = {"ok": 0, "warn": 1, "alert": 2}
    for ep, status in health.items():
        assert fams["pg_callback_endpoint_health"].value(endpoint=ep) == codes[status]
    assert health["pm_dead"] == "alert"  # success rate 0%


def test_purge_never_lowers_a_counter(cluster, mixed):
    before = monotonic_series(promparse.parse(prom_text(cluster)))
    exp_before = truth(cluster)
    # age the mixed run's history by two days, then purge one day
    cluster.execute("UPDATE callback.callback_stats SET minute = minute - interval '2 days' "
                    " WHERE endpoint_id IN (SELECT id FROM callback.callback_endpoints "
                    "                        WHERE name LIKE 'pm\\_%%')")
    cluster.execute("UPDATE callback.callback_attempts SET started_at = started_at - interval '2 days' "
                    " WHERE endpoint_id IN (SELECT id FROM callback.callback_endpoints "
                    "                        WHERE name LIKE 'pm\\_%%')")
    cluster.execute("UPDATE callback.callback_queue SET finished_at = finished_at - interval '2 days' "
                    " WHERE endpoint_id IN (SELECT id FROM callback.callback_endpoints "
                    "                        WHERE name LIKE 'pm\\_%%')")
    purged = cluster.scalar("SELECT callback.purge('1 day')")
    assert purged > 0
    assert cluster.scalar("SELECT count(*) FROM callback.callback_stats s "
                          "  JOIN callback.callback_endpoints e ON e.id = s.endpoint_id "
                          " WHERE e.name LIKE 'pm\\_%%'") == 0, "purge left rollup rows"
    after = monotonic_series(promparse.parse(prom_text(cluster)))
    lowered = {k: (v, after.get(k)) for k, v in before.items()
               if after.get(k) is None or after[k] < v}
    assert not lowered, "series that went down or vanished after purge(): %r" % lowered
    assert after == before  # nothing new was delivered: the very same figures

    # later deliveries add on top of the purged history, exactly
    deliver(cluster, mixed, {"pm.a": 3}, flaky_500s=2)
    fams = promparse.parse(prom_text(cluster))
    later = monotonic_series(fams)
    assert not {k for k, v in before.items() if later.get(k, -1) < v}
    exp_new = truth(cluster)  # only the new attempts are left in callback_attempts
    lat = fams["pg_callback_latency_seconds"]
    for (ep, et), e in exp_before.items():
        lab = {"endpoint": ep, "event_type": et}
        new = exp_new.get((ep, et), dict(calls=0, sum=0, dead=0))
        assert fams["pg_callback_calls_total"].value(**lab) == e["calls"] + new["calls"]
        assert fams["pg_callback_dead_total"].value(**lab) == e["dead"] + new["dead"]
        assert lat.value("pg_callback_latency_seconds_count", **lab) == e["calls"] + new["calls"]
        assert lat.value("pg_callback_latency_seconds_sum", **lab) == \
            pytest.approx(e["sum"] + new["sum"], rel=1e-12, abs=0)

    # drop_endpoint still removes an endpoint's history, folded part included
    eid = cluster.scalar("SELECT id FROM callback.callback_endpoints WHERE name = 'pm_dead'")
    assert cluster.scalar("SELECT count(*) FROM callback.callback_stats_purged "
                          " WHERE endpoint_id = %s", (eid,)) == len(EVENTS)
    cluster.execute("SELECT callback.drop_endpoint('pm_dead', force => true)")
    assert cluster.scalar("SELECT count(*) FROM callback.callback_stats_purged "
                          " WHERE endpoint_id = %s", (eid,)) == 0
    text = prom_text(cluster)
    assert 'endpoint="pm_dead"' not in text
    assert promtool("check", "metrics", stdin=text)[0] == 0


# ------------------------------------------------------------------ the exporter

def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return resp.read().decode()


@pytest.fixture(scope="module")
def exporter(cluster, mixed):
    """prometheus-postgres-exporter for this module: our own process on a
    free loopback port (the Debian service is not used), connected over the
    cluster's Unix socket as a login role that is only in pg_monitor."""
    cluster.execute("DROP ROLE IF EXISTS %s" % MONITOR_ROLE)
    cluster.execute("CREATE ROLE %s LOGIN IN ROLE pg_monitor" % MONITOR_ROLE)
    tmp = tempfile.mkdtemp(prefix="pgcb-exporter-")
    log_path = os.path.join(tmp, "exporter.log")
    env = dict(os.environ)
    env["DATA_SOURCE_NAME"] = ("host=%s port=%d user=%s dbname=%s sslmode=disable"
                               % (cluster.socket_dir, cluster.port, MONITOR_ROLE, cluster.dbname))
    proc = url = None
    for _ in range(3):  # the port may be taken between choosing and binding it
        port = free_loopback_port()
        url = "http://127.0.0.1:%d/metrics" % port
        log = open(log_path, "a")
        proc = subprocess.Popen(
            [EXPORTER, "--web.listen-address=127.0.0.1:%d" % port,
             "--extend.query-path=%s" % os.path.join(DEPLOY, "queries.yaml"),
             "--disable-default-metrics", "--disable-settings-metrics",
             "--no-collector.database", "--no-collector.bgwriter", "--log.level=warn"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        log.close()
        deadline = time.monotonic() + 30
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if "pg_callback_calls_total" in scrape(url, timeout=2):
                    up = True
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if up:
            break
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        proc = None
    if proc is None:
        with open(log_path) as f:
            pytest.fail("the exporter did not serve pg_callback series:\n%s" % f.read()[-3000:])
    yield dict(url=url, proc=proc, log=log_path)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


def test_exporter_serves_the_same_series(cluster, mixed, exporter):
    # a quiet moment: nothing in flight, so both reads see the same figures
    cluster.wait_until(lambda: settled(cluster, list(ENDPOINTS)), timeout=30, what="settled")
    text = prom_text(cluster)
    body = scrape(exporter["url"])
    rc, out = promtool("check", "metrics", stdin=body)
    assert rc == 0 and out.strip() == "", "promtool check metrics on the scrape:\n%s" % out
    ours = promparse.parse(text)
    # the exporter's own families are not ours to check strictly; ours are
    lines = body.splitlines()
    keep = [ln for ln in lines
            if re.match(r"(# (HELP|TYPE) )?pg_callback_", ln)]
    got = promparse.parse("\n".join(keep) + "\n")
    assert set(got) == set(ours), (sorted(got), sorted(ours))
    for name, fam in ours.items():
        assert got[name].type == fam.type, name
    # health and backlog are read per session: compare the rest exactly
    # (the exporter may add a "server" label; drop it)
    a = series(ours)
    b = series(got, drop_labels=("server",))
    canon = lambda d: {(n, frozenset((k, str(float(v)) if k == "le" and v != "+Inf" else v)
                                     for k, v in labels)): val
                       for (n, labels), val in d.items()}
    a, b = canon(a), canon(b)
    assert set(a) == set(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    diff = {k: (a[k], b[k]) for k in a
            if not k[0].startswith("pg_callback_oldest_pending_seconds")
            and a[k] != pytest.approx(b[k], rel=1e-12, abs=0)}
    assert not diff, diff
    assert any(n == "pg_callback_latency_seconds_bucket" and ("le", "+Inf") in labels
               for n, labels in b)


# ------------------------------------------------------------------ rules and config

def test_alert_rules_pass_promtool_and_match_the_thresholds(cluster):
    rules = os.path.join(DEPLOY, "alerts.yml")
    rc, out = promtool("check", "rules", rules)
    assert rc == 0 and "SUCCESS: 3 rules found" in out, out
    # one rule per callback_health threshold, at the setting's default
    with open(rules) as f:
        src = f.read()
    defaults = dict(cluster.query(
        "SELECT name, boot_val FROM pg_settings WHERE name IN "
        "('callback.health_min_success_rate', 'callback.health_max_avg_ms', "
        " 'callback.health_max_backlog', 'callback.health_window')"))
    blocks = re.split(r"\n\s*- alert: ", src)[1:]
    assert len(blocks) == 3
    found = {}
    for b in blocks:
        m = re.search(r"setting: (callback\.health_\w+)", b)
        assert m, b
        found[m.group(1)] = b
    assert set(found) == {"callback.health_min_success_rate", "callback.health_max_avg_ms",
                          "callback.health_max_backlog"}
    window = defaults["callback.health_window"]  # '15min' -> PromQL '15m'
    assert window == "15min"
    assert "[15m]" in found["callback.health_min_success_rate"]
    assert "< %s" % defaults["callback.health_min_success_rate"] in \
        found["callback.health_min_success_rate"]
    assert ">= %g" % (float(defaults["callback.health_max_avg_ms"]) / 1000) in \
        found["callback.health_max_avg_ms"]
    assert ">= %s" % defaults["callback.health_max_backlog"] in found["callback.health_max_backlog"]
    # ... and they fire where callback_health would (promtool's rule unit tests)
    rc, out = promtool("test", "rules", os.path.join(DEPLOY, "alerts_test.yml"))
    assert rc == 0 and "SUCCESS" in out, out


def test_readme_shows_the_shipped_rules_and_scrape_config():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert "deploy/prometheus/alerts.yml" in readme
    assert "deploy/prometheus/queries.yaml" in readme
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    with open(os.path.join(DEPLOY, "alerts.yml")) as f:
        alerts = f.read()
    with open(os.path.join(DEPLOY, "scrape.yml")) as f:
        scrape_cfg = f.read()
    rules_in_readme = [b for b in blocks if "groups:" in b]
    assert rules_in_readme, "README shows no alert rules"
    strip = lambda s: "\n".join(ln for ln in s.splitlines()
                                if ln.strip() and not ln.lstrip().startswith("#"))
    assert strip(rules_in_readme[0]) == strip(alerts), "README's rules differ from alerts.yml"
    assert any(strip(b) == strip(scrape_cfg) for b in blocks if "scrape_configs:" in b), \
        "README's scrape config differs from scrape.yml"
    # the README's copy itself passes promtool
    with tempfile.TemporaryDirectory(prefix="pgcb-rules-") as d:
        p = os.path.join(d, "rules.yml")
        with open(p, "w") as f:
            f.write(rules_in_readme[0])
        rc, out = promtool("check", "rules", p)
        assert rc == 0, out


def test_scrape_config_passes_promtool():
    rc, out = promtool("check", "config", os.path.join(DEPLOY, "scrape.yml"))
    assert rc == 0 and "SUCCESS" in out, out
