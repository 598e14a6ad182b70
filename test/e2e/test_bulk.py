"""End-to-end: the statement-level trigger's set-based queue insert with
fan-out.  One INSERT ... SELECT of 2,500 rows (the queue rows of one
trigger call written together, 1,000 at a time) to two endpoints, a second
statement rolled back to a savepoint, a third committed: each endpoint
receives every committed row exactly once, with the row trigger's body and
the same event (webhook-id) as the other endpoint, and nothing of the
statement rolled back.

Real parts only: a throwaway cluster, the worker, test/receiver.py on
loopback.  Every wait is bounded.
"""

from test_pipeline import ROWS_SQL, check_insert_requests, diagnostics, wait_delivered

BULK_DDL = """
DROP TABLE IF EXISTS public.orders;
CREATE TABLE public.orders (id int PRIMARY KEY, item text, qty int, note text);
CREATE TRIGGER orders_callback_i AFTER INSERT ON public.orders REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('order');
"""


def test_statement_with_fan_out_arrives_once_per_endpoint(cluster, receiver, endpoint_factory):
    cluster.execute(BULK_DDL)
    eids = {}
    for path in ("/bulk_a", "/bulk_b"):
        eid = endpoint_factory("e2e_bulk" + path.replace("/", "_"), receiver.url(path),
                               event_types="{order.*}")
        secret = cluster.scalar("SELECT secret FROM callback.callback_endpoints WHERE id = %s", (eid,))
        eids[path] = (eid, secret)

    conn = cluster.connect()
    try:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(ROWS_SQL, (1, 2500))
        # the statement's rows are in the queue for the next statement
        cur.execute("SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = ANY(%s)",
                    ([e[0] for e in eids.values()],))
        assert cur.fetchone()[0] == 5000
        cur.execute("SAVEPOINT s")
        cur.execute(ROWS_SQL, (5001, 5500))
        cur.execute("ROLLBACK TO SAVEPOINT s")
        cur.execute(ROWS_SQL, (2501, 3000))
        cur.execute("COMMIT")
    finally:
        conn.close()

    n = 3000
    ids_by_path = {}
    for path, (eid, secret) in eids.items():
        assert receiver.wait_for(n, path, timeout=120), \
            "only %d of %d requests arrived at %s" % (receiver.count(path), n, path) \
            + diagnostics(cluster, eid)
        wait_delivered(cluster, eid, n, timeout=120)
        reqs = receiver.requests(path)
        assert len(reqs) == n, "%d requests for %d events at %s" % (len(reqs), n, path)
        check_insert_requests(cluster, eid, secret, reqs, range(1, n + 1))
        ids_by_path[path] = {r.headers["webhook-id"] for r in reqs}
    # one event per row, fanned out: the same webhook-ids at both endpoints
    assert ids_by_path["/bulk_a"] == ids_by_path["/bulk_b"]
    assert len(ids_by_path["/bulk_a"]) == n
