"""Part 5, metrics: callback_metrics, callback_health and
prometheus_metrics() over 1,000,000 attempts (one week of per-minute
rollups, 4 endpoints x 3 event types) in a database of their own."""

import os
import time

from lib.util import fmt, log, median, step


def run(env):
    m = env.args.metrics_attempts or (100000 if env.quick else 1000000)
    step("5. metrics: views over %d attempts (database bench_metrics, one week of minutes, "
         "4 endpoints x 3 event types)" % m)
    env.q("CREATE DATABASE bench_metrics")
    db = "bench_metrics"
    t = time.time()
    env.q("CREATE EXTENSION pg_callback", db=db)
    env.q("SELECT callback.create_endpoint('m' || i, 'http://127.0.0.1:9/hook') "
           "FROM generate_series(1, 4) i", db=db)
    env.q("SELECT callback.pause_endpoint('m' || i) FROM generate_series(1, 4) i", db=db)
    eps = env.q1("SELECT array_agg(id ORDER BY id) FROM callback.callback_endpoints", db=db)
    # attempts: like the worker's write-back (98.5% 2xx, 1% HTTP 500, 0.5% timeouts)
    env.q("""
    INSERT INTO callback.callback_attempts
        (delivery_id, event_id, endpoint_id, event_type, attempt, started_at, latency_ms,
         status_code, error, response_body, outcome)
    SELECT g, md5(g::text)::uuid, (%s::int[])[1 + g %% 4],
           (ARRAY['order.insert', 'order.update', 'user.created'])[1 + (g / 4) %% 3],
           CASE WHEN r < 0.985 THEN 1 ELSE 2 END,
           now() - r2 * interval '7 days',
           CASE WHEN r < 0.995 THEN 0.4 + 40 * r3 ^ 6 ELSE 5000 END,
           CASE WHEN r < 0.985 THEN 200 WHEN r < 0.995 THEN 500 END,
           CASE WHEN r < 0.985 THEN NULL WHEN r < 0.995 THEN 'HTTP 500'
                ELSE 'Operation timed out after 5000 milliseconds with 0 bytes received' END,
           NULL,
           (CASE WHEN r < 0.985 THEN 'delivered' WHEN r < 0.999 THEN 'pending' ELSE 'dead' END)
               ::callback.delivery_status
      FROM (SELECT g, random() AS r, random() AS r2, random() AS r3
              FROM generate_series(1, %s) g) s
    """, (eps, m), db=db)
    # the rollup, computed exactly as the write-back does
    env.q("""
    INSERT INTO callback.callback_stats AS s
        (minute, endpoint_id, event_type, attempts, delivered, failed, dead,
         latency_sum_ms, latency_max_ms, latency_hist, last_error)
    SELECT date_trunc('minute', a.started_at), a.endpoint_id, a.event_type, count(*),
           count(*) FILTER (WHERE a.outcome = 'delivered'),
           count(*) FILTER (WHERE a.outcome <> 'delivered'),
           count(*) FILTER (WHERE a.outcome = 'dead'),
           sum(a.latency_ms), max(a.latency_ms), callback.latency_histogram(a.latency_ms),
           (array_agg(a.error ORDER BY a.started_at DESC) FILTER (WHERE a.error IS NOT NULL))[1]
      FROM callback.callback_attempts a GROUP BY 1, 2, 3
    """, db=db)
    # the queue: one row per delivery (finished), plus a live backlog
    env.q("""
    INSERT INTO callback.callback_queue
        (id, event_id, endpoint_id, event_type, body, status, attempts, created_at,
         next_attempt_at, last_attempt_at, last_status_code, last_error, finished_at)
    OVERRIDING SYSTEM VALUE
    SELECT a.delivery_id, a.event_id, a.endpoint_id, a.event_type,
           '{"type":"' || a.event_type || '","timestamp":"' || a.started_at
             || '","data":{"op":"INSERT","schema":"public","table":"orders","new":{"id":'
             || a.delivery_id || ',"customer_id":42,"amount_cents":1999,"status":"paid"},"old":null}}',
           CASE WHEN a.outcome = 'dead' THEN 'dead' ELSE 'delivered' END::callback.delivery_status,
           a.attempt, a.started_at, a.started_at, a.started_at, a.status_code, a.error,
           a.started_at + a.latency_ms * interval '1 millisecond'
      FROM callback.callback_attempts a
    """, db=db)
    # the rows above were given their ids: move the identity past them
    env.q("SELECT setval(pg_get_serial_sequence('callback.callback_queue', 'id'), "
           "(SELECT max(id) FROM callback.callback_queue))", db=db)
    env.q("""
    INSERT INTO callback.callback_queue (event_id, endpoint_id, event_type, body, status, created_at,
                                         lease_expires_at, claimed_by)
    SELECT gen_random_uuid(), (%s::int[])[1 + g %% 4], 'order.insert', '{"type":"order.insert"}',
           CASE WHEN g %% 20 = 0 THEN 'sending' ELSE 'pending' END::callback.delivery_status,
           now() - g * interval '100 milliseconds',
           CASE WHEN g %% 20 = 0 THEN now() + interval '1 minute' END,
           CASE WHEN g %% 20 = 0 THEN 0 END
      FROM generate_series(1, 2000) g
    """, (eps,), db=db)
    env.q("VACUUM ANALYZE callback.callback_attempts, callback.callback_stats, callback.callback_queue",
           db=db)
    gen_s = time.time() - t
    sizes = env.q("SELECT (SELECT count(*) FROM callback.callback_attempts), "
                   "(SELECT count(*) FROM callback.callback_stats), "
                   "(SELECT count(*) FROM callback.callback_queue), "
                   "pg_size_pretty(pg_total_relation_size('callback.callback_queue') + "
                   "pg_total_relation_size('callback.callback_attempts'))", db=db)[0]
    log("generated in %.0f s: %d attempts, %d stats rows, %d queue rows (%s)"
        % (gen_s, sizes[0], sizes[1], sizes[2], sizes[3]))
    queries = [
        ("callback_metrics", "SELECT * FROM callback.callback_metrics"),
        ("callback_health", "SELECT * FROM callback.callback_health"),
        ("prometheus_metrics()", "SELECT callback.prometheus_metrics()"),
    ]
    res = {"attempts": sizes[0], "stats_rows": sizes[1], "queue_rows": sizes[2],
           "generate_s": round(gen_s, 1), "views": {}}
    reps = 3 if env.quick else 5
    explain = []
    for name, sql in queries:
        env.q(sql, db=db)  # warm
        times = []
        rows = None
        for _ in range(reps * env.runs):
            t = time.perf_counter()
            out = env.q(sql, db=db)
            times.append((time.perf_counter() - t) * 1000)
            rows = len(out)
        res["views"][name] = {"median_ms": median(times), "min_ms": min(times), "max_ms": max(times),
                              "rows": rows, "samples_ms": [round(x, 2) for x in times]}
        log("%-22s median %8.1f ms  (min %.1f, max %.1f, %d rows)"
            % (name, median(times), min(times), max(times), rows))
        plan = env.q("EXPLAIN (ANALYZE, BUFFERS) " + sql, db=db)
        explain.append("### %s\n%s\n" % (name, "\n".join(r[0] for r in plan)))
    with open(os.path.join(env.out, "metrics_explain.txt"), "w") as f:
        f.write("\n".join(explain))
    return res



def rows(M):
    return [("5. %s over %s attempts (ms)" % (name, format(M["attempts"], ",")),
             fmt(v["median_ms"], "{:,.1f}"), "", "", "")
            for name, v in M["views"].items()]
