"""Part 1, drain: the way out.  100,000 signed events queued while the
endpoint is paused (then ANALYZEd, as autovacuum would have done for a
backlog that built up), resume_endpoint(), and the time until the last one is
recorded as delivered.  Beside it: wrk against the same nginx at the same
concurrency (the ceiling), and the CPU that postgres spent per delivery (the
worker, and the worker plus every other postgres process).  Each run drains
the same backlog a second time with the endpoint at batch_size 100 (one JSON
array of 100 bodies per request), against the same nginx and wrk.  And the
floor: bench/lib/curl_floor.c, a libcurl client that signs and sends the
same bodies the way the worker does (one multi handle, epoll, reused
handles, the same headers, the same concurrency) with no queue at all, so
that "CPU per delivery" can be set against what one request costs any
libcurl client here; and bench/lib/raw_floor.c, the same requests byte for
byte over the same kept-alive connections without libcurl's transfers (one
write and one read per request), what a request costs at all, on
connections of its own and on connections libcurl made (CONNECT_ONLY,
curl_easy_send/recv).  The drains run with callback.http_engine as
installed (native by default); each run drains the backlog once more with
callback.http_engine = libcurl (a libcurl transfer per request, as 1.0
sent), the same run's baseline for the HTTP engine."""

import json
import os
import re
import time

from lib.cpu import CpuMeter
from lib.perf import perf_start, perf_stop
from lib.util import fmt, log, median, plural, step, verdict

GOAL = {
    "per_s": 20000,         # the 1.0 target
    "cpu_us": 40.0,         # issue 10: CPU us per delivery, worker + backends
    "wrk_ratio": 0.30,      # issue 10: deliveries/s >= 0.30 of wrk, one worker
}
BASELINE_WORKER_US = 107    # issue 10: worker CPU per delivery before 1.1
# the same drain with this batch_size too, beside the same wrk: a request's own
# cost (libcurl, the kernel's loopback, nginx) is then paid once per BATCHED events
BATCHED = 100


def payload_sql():
    # a ~200-byte signed body: {"type":"bench.event","timestamp":"...","data":{...}}
    return ("jsonb_build_object('order_id', g, 'customer_id', 10000 + g % 90000, "
            "'amount_cents', (g * 7919) % 1000000, 'currency', 'EUR', 'status', 'paid', "
            "'sku', 'SKU-' || lpad((g % 1000000)::text, 7, '0'), 'qty', 1 + g % 5, "
            "'note', 'pg_callback drain benchmark')")


def run(env):
    n = env.args.drain_events or (20000 if env.quick else 100000)
    wrk_s = 5 if env.quick else 10
    step("1. drain: %d queued signed events, then resume (%s); wrk -c %d"
         % (n, plural(env.runs, "run"), env.inflight))
    res = {"events": n, "concurrency": env.inflight, "runs": [], "wrk": [], "batched": [],
           "batch_size": BATCHED, "libcurl": []}
    floor_bin = build_floor(env, "curl_floor", ["-lcurl", "-lcrypto"])
    raw_bin = build_floor(env, "raw_floor", ["-lcurl", "-lcrypto"])
    floors = (("floor", [floor_bin], "libcurl floor (bench/lib/curl_floor.c)"),
              ("raw_floor", [raw_bin], "raw floor (bench/lib/raw_floor.c)"),
              ("conn_floor", [raw_bin, "--curl-connections"],
               "raw floor on libcurl's connections (raw_floor.c --curl-connections)"))
    for key, _, _ in floors:
        res[key] = []
    # A first drain, not counted: a worker that has run a while has touched
    # shared buffers (its page tables), its caches and its connections, and
    # no counted run should be the first after a start (whether that is
    # what made one first run dearer is not settled: drain-warmup.md).
    # Under perf with --profile, so that no counted run is.
    w = drain_once(env, n, profile=True)
    res["warm_up"] = {k: w[k] for k in ("delivered", "seconds", "per_s", "worker_us_per_delivery",
                                        "pg_us_per_delivery")}
    log("warm-up drain, not counted: %d in %.2f s -> %.0f deliveries/s (CPU per delivery: "
        "worker %.1f us, worker + other postgres %.1f us)"
        % (w["delivered"], w["seconds"], w["per_s"] or 0, w["worker_us_per_delivery"] or -1,
           w["pg_us_per_delivery"] or -1))
    for r in range(env.runs):
        one = drain_once(env, n)
        res["runs"].append(one)
        c = one["cpu"]
        log("run %d: %d in %.2f s -> %.0f deliveries/s  (first HTTP at %.0f ms; CPU per delivery: "
            "worker %.1f us, worker + other postgres %.1f us; worker %.1f s, other postgres %.1f s, "
            "nginx %.1f s; nginx saw %d requests, %d signed, on %d connections)"
            % (r + 1, one["delivered"], one["seconds"], one["per_s"] or 0, one["first_ms"] or -1,
               one["worker_us_per_delivery"] or -1, one["pg_us_per_delivery"] or -1,
               c["worker"], c["pg_other"], c["nginx"],
               one["nginx_log"]["requests"], one["nginx_log"]["signed"],
               one["nginx_log"]["connections"]))
        b = drain_batched(env, n, r)
        res["batched"].append(b)
        log("run %d, batch_size %d: %d in %.2f s -> %.0f deliveries/s (nginx saw %d requests; CPU per "
            "delivery: worker %.1f us, worker + other postgres %.1f us)"
            % (r + 1, BATCHED, b["delivered"], b["seconds"], b["per_s"] or 0,
               b["nginx_log"]["requests"], b["worker_us_per_delivery"] or -1,
               b["pg_us_per_delivery"] or -1))
        e = drain_engine(env, n, "libcurl")
        res["libcurl"].append(e)
        log("run %d, callback.http_engine = libcurl: %d in %.2f s -> %.0f deliveries/s (CPU per "
            "delivery: worker %.1f us, worker + other postgres %.1f us)"
            % (r + 1, e["delivered"], e["seconds"], e["per_s"] or 0,
               e["worker_us_per_delivery"] or -1, e["pg_us_per_delivery"] or -1))
        w = wrk_once(env, one["body"], wrk_s)
        res["wrk"].append(w)
        log("run %d: wrk -t1 -c%d %ds: %.0f requests/s (%d connections, nginx CPU %.1f s)"
            % (r + 1, env.inflight, wrk_s, w["per_s"] or 0, w["nginx_log"]["connections"],
               w["cpu"]["nginx"]))
        for key, cmd, what in floors:
            fl = floor_once(env, cmd, one["body"], n)
            res[key].append(fl)
            log("run %d: %s, %d signed requests at %d in flight: "
                "%.0f requests/s, CPU %.1f us per request (user %.1f, system %.1f)"
                % (r + 1, what, fl["requests"], env.inflight, fl["per_s"], fl["cpu_us_per_request"],
                   fl["user_us"] / fl["requests"], fl["sys_us"] / fl["requests"]))
    res["per_s"] = median([x["per_s"] for x in res["runs"]])
    res["wrk_per_s"] = median([x["per_s"] for x in res["wrk"]])
    res["ratio"] = res["per_s"] / res["wrk_per_s"] if res["per_s"] and res["wrk_per_s"] else None
    res["worker_us_per_delivery"] = median([x["worker_us_per_delivery"] for x in res["runs"]])
    res["pg_us_per_delivery"] = median([x["pg_us_per_delivery"] for x in res["runs"]])
    res["batched_per_s"] = median([x["per_s"] for x in res["batched"]])
    res["batched_ratio"] = (res["batched_per_s"] / res["wrk_per_s"]
                            if res["batched_per_s"] and res["wrk_per_s"] else None)
    res["batched_worker_us"] = median([x["worker_us_per_delivery"] for x in res["batched"]])
    res["batched_pg_us"] = median([x["pg_us_per_delivery"] for x in res["batched"]])
    res["batched_requests"] = median([x["nginx_log"]["requests"] for x in res["batched"]])
    res["libcurl_per_s"] = median([x["per_s"] for x in res["libcurl"]])
    res["libcurl_ratio"] = (res["libcurl_per_s"] / res["wrk_per_s"]
                            if res["libcurl_per_s"] and res["wrk_per_s"] else None)
    res["libcurl_pg_us"] = median([x["pg_us_per_delivery"] for x in res["libcurl"]])
    res["libcurl_worker_us"] = median([x["worker_us_per_delivery"] for x in res["libcurl"]])
    res["body_bytes"] = res["runs"][0]["body_bytes"]
    # each floor: <key>_us, <key>_per_s, <key>_ratio (of wrk), over_<key> (CPU per delivery over it)
    for key, _, _ in floors:
        us = res[key + "_us"] = median([x["cpu_us_per_request"] for x in res[key]])
        per_s = res[key + "_per_s"] = median([x["per_s"] for x in res[key]])
        res[key + "_ratio"] = per_s / res["wrk_per_s"] if per_s and res["wrk_per_s"] else None
        res["over_" + key] = res["pg_us_per_delivery"] / us if res["pg_us_per_delivery"] and us else None
    res["goal"] = GOAL
    for x in res["runs"] + res["batched"] + res["libcurl"]:
        x.pop("body", None)
    return res


def drain_batched(env, n, r):
    """drain_once with the endpoint at batch_size BATCHED, put back after."""
    env.q("SELECT callback.alter_endpoint('bench', batch_size => %s)", (BATCHED,))
    try:
        return drain_once(env, n)
    finally:
        env.q("SELECT callback.alter_endpoint('bench', batch_size => 1)")


def drain_engine(env, n, engine):
    """drain_once with callback.http_engine = engine (the worker applies the
    reload before the backlog is queued and resumed), put back after."""
    env.q("ALTER SYSTEM SET callback.http_engine = %s", (engine,))
    env.q("SELECT pg_reload_conf()")
    try:
        return drain_once(env, n)
    finally:
        env.q("ALTER SYSTEM RESET callback.http_engine")
        env.q("SELECT pg_reload_conf()")


def drain_once(env, n, profile=False):
    env.reset_queue()
    env.q("SELECT callback.pause_endpoint('bench')")
    t = time.time()
    env.q("SELECT count(callback.enqueue('bench.event', " + payload_sql().replace("%", "%%")
          + ")) FROM generate_series(1, %s) g", (n,))
    enqueue_s = time.time() - t
    body_bytes = env.q1("SELECT round(avg(octet_length(body))) FROM callback.callback_queue")
    body = env.q1("SELECT body FROM callback.callback_queue LIMIT 1")
    env.q("ANALYZE callback.callback_queue")
    env.q("CHECKPOINT")
    off = env.log_offset()
    d0, f0, x0 = env.worker_counters()
    # the bench's own polling session is measured apart, not charged to deliveries
    cpu = CpuMeter(env, exclude=[env.backend_pid("mon")])
    c0 = cpu.snap()
    prof = perf_start(env, "drain", env.worker_pid()) if profile else None
    t0 = time.time()
    env.q("SELECT callback.resume_endpoint('bench')")
    curve = [(0.0, 0)]
    first_ms = None
    t_end = None
    deadline = t0 + max(120.0, n / 200.0)
    recorded = 0
    while time.time() < deadline:
        time.sleep(0.1)
        d, f, x = env.worker_counters()
        now = time.time()
        curve.append((round(now - t0, 3), d - d0))
        if first_ms is None and d > d0:
            first_ms = (now - t0) * 1000
        if d - d0 >= n:
            # every HTTP answer is in; now wait until the table says so
            while time.time() < deadline:
                recorded = env.q1("SELECT count(*) FROM callback.callback_queue "
                                  "WHERE status = 'delivered'", name="mon")
                if recorded >= n:
                    t_end = time.time()
                    break
                time.sleep(0.02)
            break
    c1 = cpu.snap()
    perf_stop(env, prof)
    d, f, x = env.worker_counters()
    if t_end is None:
        recorded = env.q1("SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'")
        log("drain did not finish: %d of %d recorded as delivered" % (recorded, n))
    secs = (t_end or time.time()) - t0
    curve.append((round(secs, 3), recorded))
    lat = env.q("SELECT round(avg(latency_ms)::numeric, 2), "
                "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric, 2), "
                "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::numeric, 2) "
                "FROM callback.callback_attempts")[0]
    cpu_d = CpuMeter.delta(c0, c1)
    per = (lambda s: s * 1e6 / recorded) if recorded else (lambda s: None)
    return {
        "delivered": recorded, "finished": t_end is not None, "seconds": round(secs, 3),
        "per_s": recorded / secs if t_end else None,
        "first_ms": first_ms, "enqueue_s": round(enqueue_s, 2), "body_bytes": int(body_bytes),
        "failed_attempts": f - f0, "dead": x - x0, "curve": curve,
        "attempt_latency_ms": {"avg": float(lat[0] or 0), "p50": float(lat[1] or 0),
                               "p99": float(lat[2] or 0)},
        "batches": int(env.q1("SELECT coalesce(sum(batches), 0) FROM callback.worker_stats()")),
        "cpu": cpu_d,
        "worker_us_per_delivery": per(cpu_d["worker"]),
        "pg_us_per_delivery": per(cpu_d["worker"] + cpu_d["pg_other"]),
        "nginx_log": env.log_since(off), "body": body,
    }


def wrk_once(env, body, seconds):
    lua = os.path.join(env.tmp, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write("wrk.body = %s\n" % json.dumps(body))
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write('wrk.headers["User-Agent"] = "pg_callback/1.0"\n')
        f.write('wrk.headers["webhook-id"] = "msg_0123456789abcdef0123456789abcdef"\n')
        f.write('wrk.headers["webhook-timestamp"] = "%d"\n' % int(time.time()))
        f.write('wrk.headers["webhook-signature"] = '
                '"v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="\n')
    off = env.log_offset()
    cpu = CpuMeter(env)
    c0 = cpu.snap()
    out = env.run(["wrk", "-t1", "-c%d" % env.inflight, "-d%ds" % seconds, "--latency",
                   "-s", lua, env.hook_url], capture_output=True, text=True).stdout
    c1 = cpu.snap()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"per_s": float(m.group(1)) if m else None, "cpu": CpuMeter.delta(c0, c1),
            "nginx_log": env.log_since(off), "output": out}


def build_floor(env, name, libs):
    """bench/lib/<name>.c, compiled into the bench's temporary directory."""
    src = os.path.join(env.repo, "bench", "lib", name + ".c")
    out = os.path.join(env.tmp, name)
    env.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", out, src] + libs, check=True)
    return out


def floor_once(env, cmd, body, n):
    """A floor: n signed requests of body to the same nginx, env.inflight at a
    time; its own CPU (getrusage) per request."""
    off = env.log_offset()
    proc = env.run(cmd + [env.hook_url, str(n), str(env.inflight), body],
                   capture_output=True, text=True, check=False)
    try:
        res = json.loads(proc.stdout)
    except ValueError:
        res = None
    if not isinstance(res, dict) or "failures" not in res:
        raise RuntimeError("%s exited %d without its figures: %s"
                           % (os.path.basename(cmd[0]), proc.returncode, proc.stderr.strip()[-500:]))
    res["nginx_log"] = env.log_since(off)
    if proc.returncode != 0 or res["failures"] or res["nginx_log"]["requests"] != n:
        raise RuntimeError("%s exited %d: %d failures, nginx saw %d of %d requests"
                           % (os.path.basename(cmd[0]), proc.returncode, res["failures"],
                              res["nginx_log"]["requests"], n))
    return res


def rows(d):
    ok = (lambda v, good: None if v is None else good(v))
    return [
        ("1. Drain %s signed events (deliveries/s)" % format(d["events"], ","),
         fmt(d["per_s"]), ">= %s" % format(GOAL["per_s"], ","), "~200 (default) / ~970 (batch 1000)",
         verdict(ok(d["per_s"], lambda v: v >= GOAL["per_s"]))),
        ("   nginx raw capacity, wrk -t1 -c%d (req/s)" % d["concurrency"],
         fmt(d["wrk_per_s"]), "ceiling", "~65,000 (issue)", ""),
        ("   drain / wrk against the same nginx", fmt(d["ratio"], "{:.3f}"),
         ">= %.2f" % GOAL["wrk_ratio"], "", verdict(ok(d["ratio"], lambda v: v >= GOAL["wrk_ratio"]))),
        ("   CPU us per delivery, worker + other postgres", fmt(d["pg_us_per_delivery"], "{:.1f}"),
         "<= %.0f" % GOAL["cpu_us"], "",
         verdict(ok(d["pg_us_per_delivery"], lambda v: v <= GOAL["cpu_us"]))),
        ("   CPU us per delivery, worker alone", fmt(d["worker_us_per_delivery"], "{:.1f}"), "",
         "%d (issue 10, 1.0)" % BASELINE_WORKER_US, ""),
        ("   the warm-up drain before the runs, not counted: CPU us per delivery, worker + other postgres",
         fmt((d.get("warm_up") or {}).get("pg_us_per_delivery"), "{:.1f}"), "", "", ""),
        ("   same drain, callback.http_engine = libcurl (1.0's transfers): deliveries/s, of wrk",
         "%s, %s" % (fmt(d.get("libcurl_per_s")), fmt(d.get("libcurl_ratio"), "{:.3f}")), "", "", ""),
        ("   same drain, callback.http_engine = libcurl: CPU us per delivery, worker + other postgres "
         "(worker alone)", "%s (%s)" % (fmt(d.get("libcurl_pg_us"), "{:.1f}"),
                                        fmt(d.get("libcurl_worker_us"), "{:.1f}")), "", "", ""),
        ("   same drain at batch_size %d (deliveries/s; requests nginx saw)" % d["batch_size"],
         "%s (%s)" % (fmt(d["batched_per_s"]), fmt(d["batched_requests"])), "", "", ""),
        ("   batch_size %d: deliveries/s / wrk's requests/s" % d["batch_size"],
         fmt(d["batched_ratio"], "{:.3f}"), ">= %.2f" % GOAL["wrk_ratio"], "",
         verdict(ok(d["batched_ratio"], lambda v: v >= GOAL["wrk_ratio"]))),
        ("   batch_size %d: CPU us per delivery, worker + other postgres (worker alone)" % d["batch_size"],
         "%s (%s)" % (fmt(d["batched_pg_us"], "{:.1f}"), fmt(d["batched_worker_us"], "{:.1f}")),
         "<= %.0f" % GOAL["cpu_us"], "",
         verdict(ok(d["batched_pg_us"], lambda v: v <= GOAL["cpu_us"]))),
        ("   body bytes (signed, 3 webhook headers)", fmt(d["body_bytes"]), "~200", "", ""),
        ("   libcurl floor, no queue (curl_floor.c): CPU us per request (requests/s)",
         "%s (%s)" % (fmt(d.get("floor_us"), "{:.1f}"), fmt(d.get("floor_per_s"))), "",
         "~19 (issue 10)", ""),
        ("   libcurl floor / wrk against the same nginx", fmt(d.get("floor_ratio"), "{:.3f}"),
         "", "", ""),
        ("   CPU per delivery (worker + other postgres) / the floor's per request",
         fmt(d.get("over_floor"), "{:.2f}"), "", "", ""),
        ("   raw floor, no libcurl (raw_floor.c): CPU us per request (requests/s)",
         "%s (%s)" % (fmt(d.get("raw_floor_us"), "{:.1f}"), fmt(d.get("raw_floor_per_s"))), "", "", ""),
        ("   raw floor / wrk against the same nginx", fmt(d.get("raw_floor_ratio"), "{:.3f}"), "", "", ""),
        ("   raw floor on libcurl's connections (raw_floor.c --curl-connections): CPU us per request "
         "(requests/s)", "%s (%s)" % (fmt(d.get("conn_floor_us"), "{:.1f}"), fmt(d.get("conn_floor_per_s"))),
         "", "", ""),
        ("   CPU per delivery (worker + other postgres) / the raw floor's per request",
         fmt(d.get("over_raw_floor"), "{:.2f}"), "", "", ""),
    ]
