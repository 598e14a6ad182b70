"""Part 8, amqp: publishes/s to a real RabbitMQ (Debian's rabbitmq-server,
started here on loopback with ports and data of its own) next to HTTP
deliveries/s to nginx, in the same run and the same worker.  Three drains of
n queued signed events each, timed from resume_endpoint() until the last is
recorded as delivered: amqp alone (persistent messages, publisher confirms,
a durable queue bound to a topic exchange), HTTP alone (the 'bench'
endpoint), then both at once."""

import os
import sys
import time

from lib.util import fmt, log, median, step

QUEUE = "bench_amqp"
EXCHANGE = "bench.amqp"


def _broker_module(env):
    sys.path.insert(0, os.path.join(env.repo, "test", "e2e"))
    import rabbitmq_util
    return rabbitmq_util


def _delivered(env, endpoint):
    return env.q1("SELECT count(*) FROM callback.callback_queue q "
                  "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
                  " WHERE e.name = %s AND q.status = 'delivered'", (endpoint,), name="mon")


def _drain(env, endpoints, n, broker):
    """Queue n events for each endpoint (paused), resume them all, and time
    each until its n are delivered."""
    env.reset_queue()
    broker_conn = broker.connect()
    broker_conn.channel().queue_purge(QUEUE)
    broker_conn.close()
    for name, etype in endpoints:
        env.q("SELECT callback.pause_endpoint(%s)", (name,))
        env.q("SELECT count(callback.enqueue(%s, jsonb_build_object('order_id', g, "
              "'amount_cents', (g * 7919) %% 1000000, 'currency', 'EUR', 'status', 'paid', "
              "'note', 'pg_callback amqp benchmark'))) FROM generate_series(1, %s) g",
              (etype, n))
    env.q("ANALYZE callback.callback_queue")
    t0 = time.time()
    for name, _ in endpoints:
        env.q("SELECT callback.resume_endpoint(%s)", (name,))
    done = {}
    deadline = t0 + max(120.0, n / 100.0)
    while len(done) < len(endpoints) and time.time() < deadline:
        time.sleep(0.05)
        for name, _ in endpoints:
            if name not in done and _delivered(env, name) >= n:
                done[name] = time.time() - t0
    out = {}
    for name, _ in endpoints:
        secs = done.get(name)
        out[name] = {"seconds": round(secs, 3) if secs else None,
                     "per_s": n / secs if secs else None,
                     "delivered": _delivered(env, name)}
    return out


def run(env):
    n = 5000 if env.quick else 20000
    step("8. amqp: %d events to RabbitMQ (publisher confirms) beside %d to nginx" % (n, n))
    res = {"events": n, "runs": []}
    rmq = _broker_module(env)
    if not rmq.available():
        log("rabbitmq-server is not installed: part skipped")
        res["skipped"] = True
        return res
    broker = rmq.Broker("pgcbbench")
    try:
        broker.start()
        broker.declare(EXCHANGE, QUEUE)
        env.q("SELECT callback.create_endpoint('bench_amqp', %s, '{bamqp.*}')",
              (broker.url(query="exchange=" + EXCHANGE),))
        for r in range(env.runs):
            one = {
                "amqp_alone": _drain(env, [("bench_amqp", "bamqp.event")], n, broker)["bench_amqp"],
                "http_alone": _drain(env, [("bench", "bench.event")], n, broker)["bench"],
            }
            both = _drain(env, [("bench_amqp", "bamqp.event"), ("bench", "bench.event")], n, broker)
            one["amqp_with_http"] = both["bench_amqp"]
            one["http_with_amqp"] = both["bench"]
            one["queue_depth"] = broker.count(QUEUE)
            res["runs"].append(one)
            log("run %d: amqp alone %s publishes/s, http alone %s deliveries/s; together: amqp %s/s, "
                "http %s/s (RabbitMQ queue depth %d)"
                % (r + 1, fmt(one["amqp_alone"]["per_s"]), fmt(one["http_alone"]["per_s"]),
                   fmt(one["amqp_with_http"]["per_s"]), fmt(one["http_with_amqp"]["per_s"]),
                   one["queue_depth"]))
        env.q("SELECT callback.drop_endpoint('bench_amqp', force => true)")
    finally:
        broker.close()
    for k in ("amqp_alone", "http_alone", "amqp_with_http", "http_with_amqp"):
        res[k] = median([x[k]["per_s"] for x in res["runs"]])
    return res


def rows(a):
    if a.get("skipped"):
        return [("8. AMQP publishes/s", "skipped", "", "", "no rabbitmq-server")]
    return [
        ("8. AMQP drain %s events, alone (publishes/s)" % format(a["events"], ","),
         fmt(a["amqp_alone"]), "", "", ""),
        ("   HTTP drain %s events, alone (deliveries/s)" % format(a["events"], ","),
         fmt(a["http_alone"]), "", "", ""),
        ("   both at once: AMQP publishes/s", fmt(a["amqp_with_http"]), "", "", ""),
        ("   both at once: HTTP deliveries/s", fmt(a["http_with_amqp"]), "", "", ""),
    ]
