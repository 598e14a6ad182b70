"""Part 4, latency: single-row commits 20 ms apart into a table with
callback.trigger('lat') -> commit-to-arrival at test/receiver.py.  Arrival
is taken at the receiver, commit time right after COMMIT returns, both
time.time()."""

import json
import time

import psycopg2

from lib.util import fmt, log, median, percentile, plural, step, verdict

TARGET = {"p50_ms": 2.0, "p99_ms": 20.0}

DDL = """
CREATE TABLE IF NOT EXISTS t_lat (id bigserial PRIMARY KEY, customer_id int NOT NULL,
                                  amount_cents int NOT NULL, status text NOT NULL, note text,
                                  created_at timestamptz NOT NULL DEFAULT now());
DROP TRIGGER IF EXISTS cb ON t_lat;
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON t_lat
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('lat');
"""


def run(env):
    n_commits = 50 if env.quick else 200
    step("4. latency: %d single-row commits 20 ms apart -> arrival at test/receiver.py (%s)"
         % (n_commits, plural(env.runs, "run")))
    env.q(DDL)
    res = {"commits": n_commits, "interval_ms": 20, "runs": []}
    c = psycopg2.connect(host=env.pgdir, port=env.pg_port, user="postgres", dbname="bench")
    try:
        for r in range(env.runs):
            env.q("TRUNCATE t_lat RESTART IDENTITY")
            env.reset_queue()
            open(env.lat_file, "w").close()
            commits = {}
            sent = {}
            cur = c.cursor()
            warm = 10
            nxt = time.time()
            for i in range(-warm, n_commits):
                nxt += 0.02
                cur.execute("INSERT INTO t_lat (customer_id, amount_cents, status, note) "
                            "VALUES (%s, 100, 'new', 'latency probe')", (i,))
                sent[i] = time.time()
                c.commit()
                commits[i] = time.time()
                d = nxt - time.time()
                if d > 0:
                    time.sleep(d)
            arrivals = {}
            deadline = time.time() + 30
            while time.time() < deadline:
                arrivals = read_arrivals(env)
                if all(i in arrivals for i in range(n_commits)):
                    break
                time.sleep(0.2)
            # commit time: right after COMMIT returns (the figure); the delivery may even
            # arrive before the client is scheduled again, so a few samples can be < 0.
            # Also kept: from just before COMMIT is sent (an upper bound).
            lat = sorted((arrivals[i] - commits[i]) * 1000.0
                         for i in range(n_commits) if i in arrivals)
            lat_sent = sorted((arrivals[i] - sent[i]) * 1000.0
                              for i in range(n_commits) if i in arrivals)
            commit_ms = sorted((commits[i] - sent[i]) * 1000.0 for i in range(n_commits))
            run = {"received": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                   "max_ms": lat[-1] if lat else None, "min_ms": lat[0] if lat else None,
                   "from_commit_sent": {"p50_ms": percentile(lat_sent, 50),
                                        "p99_ms": percentile(lat_sent, 99),
                                        "max_ms": lat_sent[-1] if lat_sent else None},
                   "commit_round_trip_ms": {"p50": percentile(commit_ms, 50),
                                            "p99": percentile(commit_ms, 99)},
                   "samples_ms": [round(x, 3) for x in lat]}
            res["runs"].append(run)
            log("run %d: %d/%d arrived; p50 %.2f ms, p99 %.2f ms, max %.2f ms "
                "(from COMMIT sent: p50 %.2f, p99 %.2f; COMMIT round trip p50 %.2f ms)"
                % (r + 1, run["received"], n_commits, run["p50_ms"] or -1,
                   run["p99_ms"] or -1, run["max_ms"] or -1,
                   run["from_commit_sent"]["p50_ms"] or -1, run["from_commit_sent"]["p99_ms"] or -1,
                   run["commit_round_trip_ms"]["p50"]))
    finally:
        c.close()
    for k in ("p50_ms", "p99_ms", "max_ms"):
        res[k] = median([x[k] for x in res["runs"]])
    return res


def read_arrivals(env):
    arrivals = {}
    with open(env.lat_file) as f:
        for line in f:
            try:
                rec = json.loads(line)
                body = json.loads(rec["body"])
                i = body["data"]["new"]["customer_id"]
            except (ValueError, KeyError, TypeError):
                continue
            arrivals.setdefault(i, rec["received_at"])
    return arrivals


def rows(L):
    ok = (lambda k: None if L[k] is None else L[k] <= TARGET[k])
    return [
        ("4. Commit-to-arrival p50 (ms)", fmt(L["p50_ms"], "{:.2f}"), "<= 2", "~515", verdict(ok("p50_ms"))),
        ("   p99 (ms)", fmt(L["p99_ms"], "{:.2f}"), "<= 20", "~1,000", verdict(ok("p99_ms"))),
        ("   max (ms)", fmt(L["max_ms"], "{:.2f}"), "", "", ""),
    ]
