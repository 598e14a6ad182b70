"""Part 7, scale-out: the drain of part 1 with callback.workers_per_database
= 1, 2 and 4 (deliveries/s, the ratio to wrk against the same nginx, CPU
per delivery of every postgres process), and an ordered endpoint with 1,000
keys beside the unordered one (the same backlog, one worker and four)."""

import time

from parts import drain
from lib.util import fmt, log, step

WORKERS = (1, 2, 4)
KEYS = 1000


def set_workers(env, n):
    env.q("ALTER SYSTEM SET callback.workers_per_database = %s", (n,))
    env.q("SELECT pg_reload_conf()")
    deadline = time.time() + 60
    while time.time() < deadline:
        if env.q1("SELECT count(*) FROM callback.worker_stats() WHERE database = "
                  "(SELECT oid FROM pg_database WHERE datname = 'bench')", name="mon") == n:
            return
        time.sleep(0.2)
    raise RuntimeError("%d workers did not start" % n)


def ordered_once(env, n, keys):
    """n events over `keys` keys to the ordered endpoint, queued paused."""
    env.reset_queue()
    env.q("SELECT callback.pause_endpoint('bench_ord')")
    env.q("SELECT count(callback.enqueue('bench_ord.event', " + drain.payload_sql().replace("%", "%%")
          + ", key => (g %% %s)::text)) FROM generate_series(1, %s) g", (keys, n))
    env.q("ANALYZE callback.callback_queue")
    env.q("CHECKPOINT")
    t0 = time.time()
    env.q("SELECT callback.resume_endpoint('bench_ord')")
    deadline = t0 + max(180.0, n / 100.0)
    done = 0
    while time.time() < deadline:
        time.sleep(0.2)
        done = env.q1("SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'",
                      name="mon")
        if done >= n:
            break
    secs = time.time() - t0
    return {"delivered": done, "seconds": round(secs, 2), "per_s": done / secs if done >= n else None}


def run(env):
    n = env.args.drain_events or (20000 if env.quick else 100000)
    step("7. scale-out: drain of %d with %s workers; ordered endpoint, %d keys"
         % (n, "/".join(map(str, WORKERS)), KEYS))
    res = {"events": n, "keys": KEYS, "drain": {}, "ordered": {}}
    env.q("SELECT callback.create_endpoint('bench_ord', %s, '{bench_ord.*}', ordered => true)",
          (env.hook_url,))
    body = None
    try:
        for w in WORKERS:
            set_workers(env, w)
            one = drain.drain_once(env, n)
            body = one.pop("body")
            res["drain"][w] = {"per_s": one["per_s"], "seconds": one["seconds"],
                               "pg_us_per_delivery": one["pg_us_per_delivery"]}
            log("%d worker(s): %d in %.2f s -> %s deliveries/s, %s us CPU (all postgres) per delivery"
                % (w, one["delivered"], one["seconds"], fmt(one["per_s"]),
                   fmt(one["pg_us_per_delivery"], "{:.1f}")))
        for w in (1, 4):
            set_workers(env, w)
            o = ordered_once(env, n, KEYS)
            res["ordered"][w] = o
            log("ordered, %d keys, %d worker(s): %d in %.2f s -> %s deliveries/s"
                % (KEYS, w, o["delivered"], o["seconds"], fmt(o["per_s"])))
    finally:
        set_workers(env, 1)
        env.q("SELECT callback.drop_endpoint('bench_ord', force => true)")
    wrk = drain.wrk_once(env, body, 5 if env.quick else 10)
    res["wrk_per_s"] = wrk["per_s"]
    log("wrk -t1 -c%d: %s requests/s" % (env.inflight, fmt(wrk["per_s"])))
    return res


def rows(d):
    out = []
    for w, r in sorted(d["drain"].items(), key=lambda x: int(x[0])):
        ratio = r["per_s"] / d["wrk_per_s"] if r["per_s"] and d["wrk_per_s"] else None
        out.append(("7. Drain %s, %s worker(s) (deliveries/s; / wrk; CPU us all postgres)"
                    % (format(d["events"], ","), w),
                    "%s; %s; %s" % (fmt(r["per_s"]), fmt(ratio, "{:.3f}"),
                                    fmt(r["pg_us_per_delivery"], "{:.1f}")), "", "", ""))
    for w, r in sorted(d["ordered"].items(), key=lambda x: int(x[0])):
        out.append(("   ordered endpoint, %s keys, %s worker(s) (deliveries/s)" % (d["keys"], w),
                    fmt(r["per_s"]), "", "", ""))
    return out
