#!/usr/bin/python3
"""pg_callback benchmark.  Run through bench/run.sh, which installs, builds,
makes the temporary directory and cleans up; this file starts the cluster,
nginx and the receiver (lib/env.py), runs the parts (parts/*.py) and writes
the report (lib/report.py).

Parts:
  1. drain    100,000 queued signed events -> deliveries/s from
              resume_endpoint() until the last is recorded as delivered;
              wrk against the same nginx; CPU us per delivery (worker, and
              worker + every other postgres process).
  2. trigger  what a write pays for its event, synchronous_commit off and on,
              3 rounds, each variant between two plain runs: pgbench single-row
              INSERTs with no trigger, callback.trigger() per row, the
              statement-level path (if the extension has it), a PL/pgSQL
              outbox; one INSERT of 100,000 rows with each; fan-out to 1, 3
              and 10 endpoints.  The targets of issue 10, computed.
  3. keepup   a pgbench insert run with the trigger while the worker
              delivers: enqueued, delivered, backlog at the end, catch-up.
  4. latency  single-row commits 20 ms apart -> commit-to-arrival p50/p99/max
              at test/receiver.py.
  5. metrics  callback_metrics, callback_health, prometheus_metrics() over
              1,000,000 attempts (one week of per-minute rollups).
  7. scaleout the drain with callback.workers_per_database 1, 2 and 4, and
              an ordered endpoint with 1,000 keys (1 and 4 workers).
  8. amqp     publishes/s to a private rabbitmq-server (publisher confirms,
              persistent) beside HTTP deliveries/s to nginx: each alone,
              then both at once, in the same worker.
  9. instructions  deterministic costs, counted by callgrind in a cluster of
              its own (wal_level = logical): instructions per single-row
              INSERT with each trigger variant (and a logical message),
              per row of one INSERT ... SELECT, per delivery of the worker
              and of the functions below it; ratios to plain.
 10. stream   a steady stream of single-row INSERTs with the row trigger
              at a fixed rate, callback.inbox off then on, while the worker
              delivers: its CPU us per delivery and the inbox's pages, per
              10 s window.

Writes bench/out/results.json, results.md and bench.png.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib import report  # noqa: E402
from lib.env import Env  # noqa: E402
from parts import amqp, batch, drain, instructions, keepup, latency, metrics, scaleout, stream, trigger  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
MODULES = {"drain": drain, "trigger": trigger, "keepup": keepup, "latency": latency, "metrics": metrics,
           "batch": batch, "scaleout": scaleout, "amqp": amqp, "instructions": instructions, "stream": stream}


def bench(args):
    os.makedirs(OUT, exist_ok=True)
    parts = args.only.split(",") if args.only else report.ORDER
    unknown = [p for p in parts if p not in MODULES]
    if unknown:
        raise SystemExit("--only: unknown part(s) %s (parts: %s)" % (", ".join(unknown), ", ".join(MODULES)))
    env = Env(args, OUT)
    t0 = time.time()
    try:
        env.machine()
        env.start_nginx()
        env.start_receiver()
        env.start_cluster()
        env.setup_schema()
        env.check_keepalive()
        for p in parts:
            env.results["parts"][p] = MODULES[p].run(env)
        env.results["elapsed_s"] = round(time.time() - t0, 1)
        report.write(env, MODULES)
    finally:
        env.stop_receiver()
        env.stop_cluster()
        env.stop_nginx()
    print("total %.0f s" % (time.time() - t0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 run, small sizes, 1 round of 3 s trigger variants (about 10 minutes)")
    ap.add_argument("--runs", type=int, help="runs of drain, keepup, latency, metrics (default 3, 1 with --quick)")
    ap.add_argument("--only", help="comma-separated parts: drain,trigger,keepup,latency,metrics,batch,scaleout,amqp,"
                    "instructions")
    ap.add_argument("--profile", action="store_true",
                    help="perf record the worker (drain) and the cluster (trigger, keep-up) in the first "
                         "run; reports in bench/out/perf-*.txt")
    ap.add_argument("--trigger-seconds", type=int, help="pgbench seconds per trigger variant per round "
                    "(default 10, 3 with --quick)")
    ap.add_argument("--trigger-rounds", type=int, help="rounds of the trigger part (default 3, 1 with --quick)")
    ap.add_argument("--trigger-clients", type=int, default=4, help="pgbench clients, trigger part (default 4)")
    ap.add_argument("--trigger-jobs", type=int, default=2, help="pgbench threads, trigger part (default 2)")
    ap.add_argument("--trigger-parts", type=trigger.parts_of, help="comma-separated measurements of the "
                    "trigger part: single,bulk,fanout (default all three)")
    ap.add_argument("--trigger-settings", type=trigger.settings_of, help="comma-separated synchronous_commit "
                    "settings of the trigger part: off,on (default both)")
    ap.add_argument("--trigger-variants", type=trigger.variants_of, help="comma-separated variants of the "
                    "trigger part's single-row and bulk runs (plain always runs; default all: %s)"
                    % ",".join(v for v, _, _ in trigger.VARIANTS))
    ap.add_argument("--bulk-rows", type=int,
                    help="rows of the one-statement INSERT (default 100000, 20000 with --quick)")
    ap.add_argument("--stream-rate", type=int, default=3000,
                    help="inserts a second of the steady stream, part 10 (default 3000)")
    ap.add_argument("--stream-seconds", type=int,
                    help="length of each steady stream, part 10 (default 120, 30 with --quick)")
    ap.add_argument("--clients", type=int, default=8, help="pgbench clients, keep-up part (default 8)")
    ap.add_argument("--drain-events", type=int, help="events queued for the drain (default 100000)")
    ap.add_argument("--batch-events", type=int,
                    help="events of each drain of the batch part (default 50000, 10000 with --quick)")
    ap.add_argument("--keepup-seconds", type=int, help="length of the keeping-up run (default 60)")
    ap.add_argument("--catchup-max", type=int,
                    help="longest wait for the backlog to clear after the keeping-up run (default 120 s)")
    ap.add_argument("--metrics-attempts", type=int, help="attempts generated for part 5 (default 1000000)")
    ap.add_argument("--instr-n", type=int, help="instructions part: N, the smaller of the two sessions "
                    "of single-row INSERTs and of the two drains (default 2000, 300 with --quick)")
    ap.add_argument("--instr-rows", type=int, help="instructions part: rows of the one-statement INSERT "
                    "(default 10000, 2000 with --quick)")
    ap.add_argument("--port", type=int, default=55700, help="first port tried for PostgreSQL")
    ap.add_argument("--no-install", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", required=True, help=argparse.SUPPRESS)
    ap.add_argument("--repo", required=True, help=argparse.SUPPRESS)
    bench(ap.parse_args())


if __name__ == "__main__":
    main()
