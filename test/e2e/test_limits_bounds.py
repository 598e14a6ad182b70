"""End-to-end: a rate limit at or below the bounds does not make the worker
spin.

rate_limit => 1e-300 once passed create_endpoint's "> 0", and the wait for
the next token, (long) ceil(missing / rate * 1000), overflowed to LONG_MIN:
clamped to 1 ms, the worker claimed (a transaction) about 730 times a
second while the events waited.  The SQL now refuses rates below 0.001 per
second (the regression test `bounds`), and the C code bounds the wait
before the cast, which matters for a row that holds such a rate anyway (a
1.0 database; here stored by the superuser behind the functions' back).

Measured: the worker's cycles (callback_worker_stats.batches, one per claim
transaction) over 3 seconds while events wait for a token.  An idle worker
makes about 1000 / callback.poll_interval (200 ms here) of them per second.
"""

import time

import pytest

from conftest import record_figure

WINDOW_S = 3.0
# poll_interval 200ms: about 15 cycles in 3 s when idle, ~2000 when spinning
MAX_CYCLES = 60


def worker_batches(cluster):
    return cluster.scalar("SELECT sum(batches) FROM callback.callback_worker_stats")


def queue_counts(cluster, name):
    return dict(cluster.query(
        "SELECT q.status::text, count(*) FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = %s GROUP BY 1", (name,)))


@pytest.fixture(autouse=True)
def worker_up(cluster):
    cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")


@pytest.mark.parametrize("rate, planted", [(0.001, False), (1e-300, True)],
                         ids=["minimum", "below_minimum_in_table"])
def test_tiny_rate_limit_leaves_worker_idle(cluster, receiver, endpoint_factory, rate, planted):
    name = "tiny_rate_%s" % ("planted" if planted else "min")
    etype = name + ".e"
    endpoint_factory(name, receiver.url("/" + name), event_types=[etype],
                     rate_limit=0.001, rate_burst=1)
    if planted:
        cluster.execute("UPDATE callback.callback_endpoints SET rate_limit = %s WHERE name = %s",
                        (rate, name))
    cluster.execute("SELECT callback.enqueue(%s, jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 3) g", (etype,))
    # the burst's one token lets the first event through; the others wait
    cluster.wait_until(lambda: len(receiver.requests("/" + name)) >= 1, timeout=20,
                       what="the first delivery of %s" % name)
    cluster.wait_until(lambda: queue_counts(cluster, name).get("delivered", 0) == 1,
                       timeout=20, what="the first delivery written back")
    b0 = worker_batches(cluster)
    t0 = time.monotonic()
    time.sleep(WINDOW_S)  # the measuring window itself, not a wait for a condition
    b1 = worker_batches(cluster)
    elapsed = time.monotonic() - t0
    cycles = b1 - b0
    record_figure("rate_limit %g with 2 events waiting: %d worker cycles in %.1f s"
                  % (rate, cycles, elapsed))
    assert queue_counts(cluster, name) == {"delivered": 1, "pending": 2}
    assert len(receiver.requests("/" + name)) == 1
    assert cycles <= MAX_CYCLES, "the worker spins: %d cycles in %.1f s" % (cycles, elapsed)
