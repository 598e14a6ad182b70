"""End-to-end: a backlog in the inbox moves in consecutive worker cycles,
not one per poll_interval (found by the review of 2460217).

callback._move_inbox(max_events) moves about half of what waits when more
than 2,000 events wait, and the worker goes on at once while a call returns
2,000 or more: worker.c sets ls.woken, and the loop then does not wait.  It
used to wait up to callback.poll_interval although ls.woken was set; with
the move counting events, 18,000 events of one statement take 4 calls, so
with poll_interval at 60 s and nothing else to wake the worker (the endpoint
is paused: nothing is due) they took three poll intervals.

Real parts only: a throwaway cluster, its worker; every wait is bounded.
"""

import time

CLUSTER_CONF = {"callback.inbox": True, "callback.poll_interval": "60s"}
EVENTS = 18000


def test_a_backlog_moves_without_waiting_poll_intervals(cluster, receiver, endpoint_factory):
    name = "bl_rev"
    endpoint_factory(name, receiver.url("/" + name), event_types="{blrev.*}")
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    cluster.execute("CREATE TABLE bl_rev_t (id int PRIMARY KEY, note text)")
    cluster.execute("CREATE TRIGGER cb AFTER INSERT ON bl_rev_t REFERENCING NEW TABLE AS n "
                    "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('blrev')")
    conn = cluster.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SET callback.inbox = on")
        cur.execute("INSERT INTO bl_rev_t SELECT g, 'x' FROM generate_series(1, %s) g", (EVENTS,))
        # a paused endpoint's events do not wake the worker (event.c): its
        # commit does here, so that the first move runs at once
        cur.execute("SELECT callback.wake_worker()")
        conn.commit()
    finally:
        conn.close()
    rows = cluster.scalar("SELECT count(*) FROM callback.callback_inbox")
    assert rows < EVENTS // 5, "%d inbox rows for %d events: not packed" % (rows, EVENTS)
    t0 = time.monotonic()
    # the commit wakes the worker; a move of 18,000 events takes well under
    # a second here, so 40 s is generous for back-to-back cycles and far
    # below even one further poll interval (60 s) plus the first
    cluster.wait_until(
        lambda: cluster.scalar("SELECT count(*) FROM callback.callback_queue q "
                               "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
                               " WHERE e.name = %s", (name,)) == EVENTS,
        timeout=40, interval=0.2,
        what="%d events moved from the inbox into the queue (%d pack rows) in consecutive cycles"
             % (EVENTS, rows))
    assert cluster.scalar("SELECT count(*) FROM callback.callback_inbox") == 0
    print("moved in %.1f s" % (time.monotonic() - t0))
    cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
