"""Part 3, keeping up: pgbench inserts into a table with callback.trigger()
while the worker delivers to nginx: enqueued, delivered, the backlog at the
end and the time to clear it."""

import statistics
import threading
import time

import psycopg2

from lib.cpu import CpuMeter
from lib.perf import perf_start, perf_stop
from lib.util import fmt, log, median, plural, step, verdict

DDL = """
CREATE TABLE IF NOT EXISTS t_cb (id bigserial PRIMARY KEY, customer_id int NOT NULL,
                                 amount_cents int NOT NULL, status text NOT NULL, note text,
                                 created_at timestamptz NOT NULL DEFAULT now());
DROP TRIGGER IF EXISTS cb ON t_cb;
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON t_cb
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('bench');
"""

SCRIPT = ("\\set cid random(1, 100000)\n\\set amt random(100, 1000000)\n"
          "INSERT INTO t_cb (customer_id, amount_cents, status, note) "
          "VALUES (:cid, :amt, 'new', 'pgbench order');\n")


def run(env):
    seconds = env.args.keepup_seconds or (15 if env.quick else 60)
    catchup_max_s = env.args.catchup_max or (60 if env.quick else 120)
    clients = env.args.clients
    step("3. keeping up: pgbench -c %d -T %d INSERTs with the trigger while the worker delivers (%s)"
         % (clients, seconds, plural(env.runs, "run")))
    env.q(DDL)
    env.q("SELECT callback.resume_endpoint('bench')")
    res = {"seconds": seconds, "clients": clients, "runs": []}
    for r in range(env.runs):
        env.q("TRUNCATE t_cb RESTART IDENTITY")
        env.reset_queue()
        env.q("CHECKPOINT")
        d0 = env.worker_counters()[0]
        samples = []
        stop = threading.Event()

        def sampler():
            t0 = time.time()
            while not stop.wait(1.0):
                try:
                    enq = env.q1("SELECT coalesce(max(id), 0) FROM callback.callback_queue",
                                 name="sampler")
                    dl = env.q1("SELECT coalesce(sum(delivered), 0) FROM callback.worker_stats()",
                                name="sampler")
                    samples.append((round(time.time() - t0, 2), int(enq), int(dl) - d0))
                except psycopg2.Error:
                    pass

        th = threading.Thread(target=sampler, daemon=True)
        cpu = CpuMeter(env)
        c0 = cpu.snap()
        th.start()
        prof = perf_start(env, "keepup") if r == 0 else None
        tps, n = env.pgbench("keepup", SCRIPT, seconds, clients, 2)
        end = env.queue_counts()
        t_end = time.time()
        perf_stop(env, prof)
        c1 = cpu.snap()
        # catch up: until every queued event is recorded as delivered
        caught = None
        deadline = t_end + catchup_max_s
        c = end
        while time.time() < deadline:
            c = env.queue_counts()
            if c["backlog"] == 0:
                caught = time.time() - t_end
                break
            time.sleep(0.1)
        if caught is None:
            # leave the next run (and the next part) an empty queue
            log("backlog not cleared within %d s (%d left); truncating" % (catchup_max_s, c["backlog"]))
            env.reset_queue()
        stop.set()
        th.join()
        run = {"tps": tps, "transactions": n, "enqueued": end["total"], "delivered": end["delivered"],
               "backlog": end["backlog"], "dead": end["dead"],
               "backlog_seconds_of_inserts": end["backlog"] / tps if tps else None,
               "catch_up_s": round(caught, 2) if caught is not None else None,
               "catch_up_limit_s": catchup_max_s,
               "backlog_after_limit": 0 if caught is not None else c["backlog"],
               "delivered_per_s": end["delivered"] / seconds,
               "samples": samples, "cpu": CpuMeter.delta(c0, c1)}
        res["runs"].append(run)
        log("run %d: %.0f inserts/s; enqueued %d, delivered %d, backlog at end %d (%.2f s of inserts), "
            "caught up %s s later; worker CPU %.1f s of %.0f s"
            % (r + 1, tps, run["enqueued"], run["delivered"], run["backlog"],
               run["backlog_seconds_of_inserts"] or 0,
               run["catch_up_s"] if caught is not None else "not", run["cpu"]["worker"], seconds))
    for k in ("tps", "enqueued", "delivered", "backlog", "backlog_seconds_of_inserts", "catch_up_s",
              "delivered_per_s"):
        res[k] = median([x[k] for x in res["runs"]])
    # a run that did not catch up within the limit took longer than any that did
    cu = sorted(x["catch_up_s"] if x["catch_up_s"] is not None else float("inf") for x in res["runs"])
    res["catch_up_s"] = statistics.median(cu)
    if res["catch_up_s"] == float("inf"):
        res["catch_up_s"] = None
    res["catch_up_limit_s"] = catchup_max_s
    return res


def rows(k):
    return [
        ("3. Keeping up, %d s with trigger: inserts/s" % k["seconds"], fmt(k["tps"]), "", "", ""),
        ("   enqueued / delivered during the run",
         "%s / %s" % (fmt(k["enqueued"]), fmt(k["delivered"])), "", "", ""),
        ("   backlog at end (events)", fmt(k["backlog"]),
         "<= %s (1 s of inserts)" % fmt(k["tps"]), "",
         verdict(None if k["backlog"] is None or not k["tps"] else k["backlog"] <= k["tps"])),
        ("   time to clear the backlog after the run (s)",
         fmt(k["catch_up_s"], "{:.2f}") if k["catch_up_s"] is not None
         else "> %d" % k["catch_up_limit_s"], "", "", ""),
    ]
