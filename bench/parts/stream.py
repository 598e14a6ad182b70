"""Part 10, a steady stream: pgbench single-row INSERTs into a table with
callback.trigger() at a fixed rate (default 3,000 a second for 120 s,
synchronous_commit off) while the worker delivers to nginx, once with
callback.inbox off (the direct path: the same run's baseline) and once on.
Every 10 s: deliveries a second, the worker's CPU µs per delivery and the
inbox's pages.  What it shows: whether the worker's cost per delivery stays
flat as the stream goes on.  Each move reads the whole inbox, and only a
vacuum lets its space be used again; before the worker vacuumed the inbox
itself (src/inbox_vacuum.c), the inbox grew by every row written and the
worker's µs per delivery rose window after window."""

import threading

from lib.cpu import proc_cpu_s
from lib.util import fmt, log, median, step, verdict

WINDOW_S = 10
# flat: the last window's µs per delivery within this of the first's
FLAT = 1.25

DDL = """
CREATE TABLE IF NOT EXISTS t_stream (id bigserial PRIMARY KEY, v text);
DROP TRIGGER IF EXISTS cb ON t_stream;
CREATE TRIGGER cb AFTER INSERT ON t_stream FOR EACH ROW EXECUTE FUNCTION callback.trigger('bench');
"""
SCRIPT = "INSERT INTO t_stream(v) VALUES ('x');\n"


def inbox_pages(env):
    return env.q1("SELECT pg_relation_size('callback.callback_inbox') / 8192", name="stream")


def inbox_vacuums(env):
    env.q("SELECT pg_stat_clear_snapshot()", name="stream")
    return env.q1("SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables "
                  " WHERE relid = 'callback.callback_inbox'::regclass", name="stream")


def one(env, inbox, rate, seconds):
    env.q("TRUNCATE t_stream RESTART IDENTITY")
    env.reset_queue()
    env.q("VACUUM callback.callback_inbox")
    env.q("CHECKPOINT")
    windows = []
    stop = threading.Event()
    vac0 = inbox_vacuums(env)

    def sampler():
        pid = env.worker_pid()
        c0, d0 = proc_cpu_s(pid), env.worker_counters()[0]
        while not stop.wait(WINDOW_S):
            c1, d1 = proc_cpu_s(pid), env.worker_counters()[0]
            n = d1 - d0
            windows.append({"delivered_per_s": n / WINDOW_S,
                            "worker_us_per_delivery": 1e6 * (c1 - c0) / n if n else None,
                            "worker_core_share": (c1 - c0) / WINDOW_S,
                            "inbox_pages": inbox_pages(env)})
            c0, d0 = c1, d1

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        tps, n = env.pgbench("stream_%s" % ("inbox" if inbox else "direct"), SCRIPT, seconds, 4, 2,
                             sync_commit="off", options="-c callback.inbox=%s" % ("on" if inbox else "off"),
                             rate=rate)
    finally:
        stop.set()
        th.join()
    cost = [w["worker_us_per_delivery"] for w in windows if w["worker_us_per_delivery"]]
    res = {"inbox": inbox, "tps": tps, "transactions": n, "windows": windows,
           "first_us": cost[0] if cost else None, "last_us": cost[-1] if cost else None,
           "median_us": median(cost) if cost else None,
           "max_pages": max(w["inbox_pages"] for w in windows) if windows else None,
           "vacuums": inbox_vacuums(env) - vac0}
    res["last_over_first"] = (res["last_us"] / res["first_us"]) if cost else None
    log("inbox %s: %.0f inserts/s; worker µs per delivery by window %s; inbox pages by window %s; "
        "%d vacuums of the inbox" % ("on" if inbox else "off", tps,
                                     " ".join("%.0f" % c for c in cost),
                                     " ".join(str(w["inbox_pages"]) for w in windows), res["vacuums"]))
    return res


def run(env):
    rate = env.args.stream_rate
    seconds = env.args.stream_seconds or (30 if env.quick else 120)
    step("10. a steady stream: pgbench -R %d -T %d single-row INSERTs with the row trigger, "
         "synchronous_commit off, callback.inbox off then on, while the worker delivers" % (rate, seconds))
    env.q(DDL)
    env.q("SELECT callback.resume_endpoint('bench')")
    res = {"rate": rate, "seconds": seconds, "window_s": WINDOW_S,
           "direct": one(env, False, rate, seconds), "inbox": one(env, True, rate, seconds)}
    d, i = res["direct"], res["inbox"]
    res["inbox_over_direct"] = (i["median_us"] / d["median_us"]) if d["median_us"] and i["median_us"] else None
    env.reset_queue()
    return res


def rows(s):
    d, i = s["direct"], s["inbox"]

    def us(x):
        return fmt(x, "{:.0f}") if x is not None else "-"
    return [
        ("10. Steady stream, %s inserts/s for %d s: inserts/s, inbox off / on" % (fmt(s["rate"]), s["seconds"]),
         "%s / %s" % (fmt(d["tps"]), fmt(i["tps"])), "", "", ""),
        ("   worker µs per delivery, median of %d s windows, off / on (on / off)" % s["window_s"],
         "%s / %s (%s)" % (us(d["median_us"]), us(i["median_us"]),
                           fmt(s["inbox_over_direct"], "{:.2f}x") if s["inbox_over_direct"] else "-"),
         "", "", ""),
        ("   inbox on: first / last window, µs per delivery",
         "%s / %s" % (us(i["first_us"]), us(i["last_us"])),
         "last <= %.2f x first" % FLAT, "",
         verdict(None if i["last_over_first"] is None else i["last_over_first"] <= FLAT)),
        ("   inbox on: most pages / vacuums of the inbox",
         "%s / %s" % (fmt(i["max_pages"]), fmt(i["vacuums"])), "", "", ""),
    ]
