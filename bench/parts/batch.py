"""Part 6, batches (issue 12.3): the same drain as part 1 (signed events
queued while the endpoint is paused, then resume, until the last one is
recorded as delivered) against the same nginx, once with one event per
request (batch_size 1, the default) and once with batch_size 100, one JSON
array of 100 bodies per request.  Deliveries/s counts events, as
callback_metrics does; nginx's log gives the requests."""

from parts.drain import BATCHED as BATCH, drain_once
from lib.util import fmt, log, median, plural, step


def run(env):
    n = env.args.batch_events or (10000 if env.quick else 50000)
    step("6. batches: drain %d events at batch_size 1 and %d (%s)"
         % (n, BATCH, plural(env.runs, "run")))
    res = {"events": n, "batch_size": BATCH, "single": [], "batched": []}
    try:
        for r in range(env.runs):
            for key, size in (("single", 1), ("batched", BATCH)):
                env.q("SELECT callback.alter_endpoint('bench', batch_size => %s)", (size,))
                one = drain_once(env, n)
                one.pop("body", None)
                one.pop("curve", None)
                res[key].append(one)
                log("run %d, batch_size %d: %d in %.2f s -> %.0f deliveries/s (nginx saw %d "
                    "requests; CPU per delivery: worker %.1f us, worker + other postgres %.1f us)"
                    % (r + 1, size, one["delivered"], one["seconds"], one["per_s"] or 0,
                       one["nginx_log"]["requests"], one["worker_us_per_delivery"] or -1,
                       one["pg_us_per_delivery"] or -1))
    finally:
        env.q("SELECT callback.alter_endpoint('bench', batch_size => 1)")
    for key in ("single", "batched"):
        res[key + "_per_s"] = median([x["per_s"] for x in res[key]])
        res[key + "_pg_us"] = median([x["pg_us_per_delivery"] for x in res[key]])
        res[key + "_requests"] = median([x["nginx_log"]["requests"] for x in res[key]])
    s, b = res["single_per_s"], res["batched_per_s"]
    res["speedup"] = b / s if s and b else None
    return res


def rows(d):
    return [
        ("6. Drain %s events, batch_size 1 (deliveries/s)" % format(d["events"], ","),
         fmt(d["single_per_s"]), "", "", ""),
        ("   same, batch_size %d (deliveries/s)" % d["batch_size"],
         fmt(d["batched_per_s"]), "", "", ""),
        ("   batch_size %d / batch_size 1" % d["batch_size"], fmt(d["speedup"], "{:.1f}"), "", "", ""),
        ("   requests nginx saw, batch_size 1 / %d" % d["batch_size"],
         "%s / %s" % (fmt(d["single_requests"]), fmt(d["batched_requests"])), "", "", ""),
        ("   CPU us per delivery (postgres), batch_size 1 / %d" % d["batch_size"],
         "%s / %s" % (fmt(d["single_pg_us"], "{:.1f}"), fmt(d["batched_pg_us"], "{:.1f}")),
         "", "", ""),
    ]
