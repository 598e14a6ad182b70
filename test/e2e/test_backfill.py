"""End-to-end: CALL callback.backfill() queues one <prefix>.backfill event
per existing row for one endpoint, and a real receiver gets each row
exactly once, with the body the row trigger builds for that row; a cancel
in the middle and a second CALL still deliver every row exactly once.

Real parts only: a throwaway PostgreSQL 15 cluster, the worker, libcurl
and test/receiver.py on loopback.  Every wait is a bounded poll.
"""

import json
import re
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import record_figure

# Column types that take every path of the body builder: numbers, text
# that needs escaping, booleans, timestamps, jsonb, NULLs, and an array
# (which goes through row_to_json itself).
TABLE_DDL = """
DROP TABLE IF EXISTS public.{t} CASCADE;
CREATE TABLE public.{t} (
    id int PRIMARY KEY, item text, qty int, price numeric(10,2), paid boolean,
    at timestamptz, meta jsonb, tags text[]);
"""

ROWS_SQL = """
INSERT INTO public.{t}
SELECT g, 'item "' || g || E'" \\\\ \u00fc \u20ac', g %% 7, g * 1.25,
       g %% 2 = 0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       jsonb_build_object('g', g, 'odd', g %% 2 = 1),
       CASE WHEN g %% 5 = 0 THEN NULL ELSE ARRAY['a' || g, 'b'] END
  FROM generate_series(%s, %s) g
"""

TS = re.compile(r'"timestamp":"[^"]*"')


def make_table(cluster, name, nrows, trigger_endpoint=False):
    cluster.execute(TABLE_DDL.format(t=name))
    if trigger_endpoint:
        cluster.execute("CREATE TRIGGER %s_cb AFTER INSERT OR UPDATE OR DELETE ON public.%s "
                        "FOR EACH ROW EXECUTE FUNCTION callback.trigger('order')" % (name, name))
    cluster.execute(ROWS_SQL.format(t=name), (1, nrows))
    cluster.execute("ANALYZE public.%s" % name)


def call_backfill(cluster, *args, conn=None, **kw):
    """CALL callback.backfill(...) in a connection of its own; returns the
    NOTICEs it sent."""
    own = conn is None
    conn = conn or cluster.connect()
    try:
        names = ["%s"] * len(args) + ["%s => %%s" % k for k in kw]
        with conn.cursor() as cur:
            cur.execute("CALL callback.backfill(%s)" % ", ".join(names),
                        list(args) + list(kw.values()))
        return [n.strip() for n in conn.notices]
    finally:
        if own:
            conn.close()


def received_by_id(receiver, path):
    """{row id: [body text, ...]} of the requests received at path."""
    got = {}
    for rec in receiver.requests(path):
        body = rec.json()
        got.setdefault(body["data"]["new"]["id"], []).append(rec.text())
    return got


def wait_received(cluster, receiver, path, n, timeout):
    cluster.wait_until(lambda: receiver.count(path) >= n, timeout=timeout, interval=0.2,
                       what="%d requests at %s (have %d)" % (n, path, receiver.count(path)))


def progress(cluster, relation, endpoint):
    rows = cluster.query(
        "SELECT rows_queued, batches, state, walk_by, last_key FROM callback.callback_backfills "
        " WHERE relation = %s::regclass AND endpoint = %s", (relation, endpoint))
    return rows[0] if rows else None


# ------------------------------------------------------------------ tests

def test_backfill_25000_rows_exactly_once_with_the_trigger_body(cluster, receiver, endpoint_factory):
    n = 25000
    # the trigger's events go to an endpoint that is paused: their bodies
    # stay in the queue to compare with
    trig = endpoint_factory("bf_trigger_side", receiver.url("/trigger"), event_types="{order.*}")
    cluster.execute("SELECT callback.pause_endpoint('bf_trigger_side')")
    make_table(cluster, "bf_orders", n, trigger_endpoint=True)
    # patterns that match nothing: backfill names its endpoint, routing is not asked
    endpoint_factory("bf_target", receiver.url("/bf"), event_types="{nothing.at.all}")

    t0 = time.monotonic()
    notices = call_backfill(cluster, "public.bf_orders", "bf_target", None, 1000, "order")
    queued_s = time.monotonic() - t0

    counts = [int(m.group(1)) for m in
              (re.search(r"(\d+) queued in all", x) for x in notices) if m]
    assert counts == [1000 * i for i in range(1, 26)] + [25000], notices
    assert notices[-1].endswith("finished"), notices
    assert progress(cluster, "public.bf_orders", "bf_target")[:4] == (25000, 26, "finished", "primary key")

    wait_received(cluster, receiver, "/bf", n, timeout=600)
    received_s = time.monotonic() - t0
    got = received_by_id(receiver, "/bf")
    assert sorted(got) == list(range(1, n + 1))
    dup = {k: len(v) for k, v in got.items() if len(v) != 1}
    assert not dup, "rows received more than once: %r" % list(dup.items())[:5]

    trigger_bodies = {json.loads(b)["data"]["new"]["id"]: b for (b,) in cluster.query(
        "SELECT body FROM callback.callback_queue WHERE endpoint_id = %s", (trig,))}
    assert len(trigger_bodies) == n
    differ = []
    for rid, (body,) in got.items():
        want = TS.sub('"timestamp":""', trigger_bodies[rid]) \
            .replace('"type":"order.insert"', '"type":"order.backfill"', 1) \
            .replace('"data":{"op":"INSERT"', '"data":{"op":"BACKFILL"', 1)
        if TS.sub('"timestamp":""', body) != want:
            differ.append((rid, body, trigger_bodies[rid]))
    assert not differ, "%d bodies differ from the trigger's, first: %r" % (len(differ), differ[0])
    # none of the trigger's events reached the receiver, none leaked to /bf
    assert receiver.count("/trigger") == 0
    record_figure("backfill: %d rows, batch_size 1000: queued in %.2f s (%.0f rows/s), "
                  "all received exactly once after %.1f s" % (n, queued_s, n / queued_s, received_s))


def test_cancel_in_the_middle_then_resume_queues_every_row_once(cluster, receiver, endpoint_factory):
    n = 20000
    make_table(cluster, "bf_cancel", n)
    endpoint_factory("bf_cancel_ep", receiver.url("/cancel"), event_types="{nothing}")
    # The where clause lets every row through; at row 10001 it waits for an
    # advisory lock the test holds, so the CALL stops there, in its 21st
    # batch (500 rows each), after 20 committed ones.
    cluster.execute("""
        CREATE OR REPLACE FUNCTION public.bf_gate(id int) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF id = 10001 THEN
                PERFORM pg_advisory_xact_lock_shared(4242);
            END IF;
            RETURN true;
        END $$""")
    where = "public.bf_gate(id)"
    holder = cluster.connect()
    runner = cluster.connect()
    result = {}
    try:
        holder.cursor().execute("SELECT pg_advisory_lock(4242)")
        runner_pid = runner.get_backend_pid()

        def run():
            try:
                call_backfill(cluster, "public.bf_cancel", "bf_cancel_ep", where, 500, conn=runner)
                result["outcome"] = "returned"
            except psycopg2.Error as e:
                result["outcome"] = e

        th = threading.Thread(target=run, daemon=True)
        th.start()
        cluster.wait_until(
            lambda: cluster.scalar("SELECT wait_event = 'advisory' FROM pg_stat_activity WHERE pid = %s",
                                   (runner_pid,)),
            timeout=120, what="the backfill waiting at row 10001")
        mid = progress(cluster, "public.bf_cancel", "bf_cancel_ep")
        assert mid[:3] == (10000, 20, "running"), mid
        assert cluster.scalar("SELECT pg_cancel_backend(%s)", (runner_pid,))
        th.join(60)
        assert not th.is_alive()
        assert isinstance(result.get("outcome"), psycopg2.errors.QueryCanceled), result
        stopped = progress(cluster, "public.bf_cancel", "bf_cancel_ep")
        assert stopped[:3] == (10000, 20, "stopped"), stopped
        assert stopped[4] == ["10000"], stopped
        # the batch in flight rolled back: exactly the committed rows are queued
        assert cluster.scalar(
            "SELECT count(*) FROM callback.callback_queue q JOIN callback.callback_endpoints e "
            "  ON e.id = q.endpoint_id WHERE e.name = 'bf_cancel_ep'") == 10000
    finally:
        holder.close()
        runner.close()

    # the same CALL again goes on after row 10000
    notices = call_backfill(cluster, "public.bf_cancel", "bf_cancel_ep", where, 500)
    assert re.search(r": 500 rows in this batch, 10500 queued in all$", notices[0]), notices
    assert re.search(r"20000 queued in all, finished$", notices[-1]), notices
    done = progress(cluster, "public.bf_cancel", "bf_cancel_ep")
    assert done[0] == n and done[2] == "finished", done

    wait_received(cluster, receiver, "/cancel", n, timeout=600)
    got = received_by_id(receiver, "/cancel")
    assert sorted(got) == list(range(1, n + 1))
    assert all(len(v) == 1 for v in got.values()), \
        [(k, len(v)) for k, v in got.items() if len(v) != 1][:5]

    # finished: a third CALL is refused with a hint, nothing queued
    with pytest.raises(psycopg2.errors.ObjectNotInPrerequisiteState) as ei:
        call_backfill(cluster, "public.bf_cancel", "bf_cancel_ep", where, 500)
    assert "restart => true" in ei.value.diag.message_hint
    assert receiver.count("/cancel") == n


def test_where_clause_filters_and_ctid_walk(cluster, receiver, endpoint_factory):
    make_table(cluster, "bf_filter", 3000)
    endpoint_factory("bf_filter_ep", receiver.url("/filter"), event_types="{nothing}")
    want = sorted(r[0] for r in cluster.query("SELECT id FROM public.bf_filter WHERE qty = 3"))
    assert 0 < len(want) < 3000
    call_backfill(cluster, "public.bf_filter", "bf_filter_ep", "qty = 3", 100)
    wait_received(cluster, receiver, "/filter", len(want), timeout=300)
    got = received_by_id(receiver, "/filter")
    assert sorted(got) == want
    assert all(json.loads(v[0])["data"]["new"]["qty"] == 3 for v in got.values())
    assert all(json.loads(v[0])["type"] == "bf_filter.backfill" for v in got.values())

    # no primary key: walked by ctid, every row once
    cluster.execute("ALTER TABLE public.bf_filter DROP CONSTRAINT bf_filter_pkey")
    receiver.clear()
    notices = call_backfill(cluster, "public.bf_filter", "bf_filter_ep", "qty <> 3", 700)
    assert notices[-1].endswith("finished"), notices
    p = progress(cluster, "public.bf_filter", "bf_filter_ep")
    assert p[3] == "ctid"
    want = sorted(r[0] for r in cluster.query("SELECT id FROM public.bf_filter WHERE qty <> 3"))
    assert p[0] == len(want)
    wait_received(cluster, receiver, "/filter", len(want), timeout=300)
    got = received_by_id(receiver, "/filter")
    assert sorted(got) == want and all(len(v) == 1 for v in got.values())


def test_a_role_without_select_is_refused(cluster, receiver, endpoint_factory):
    make_table(cluster, "bf_secret", 50)
    endpoint_factory("bf_secret_ep", receiver.url("/secret"), event_types="{nothing}")
    cluster.execute("DROP ROLE IF EXISTS bf_nosel")
    cluster.execute("CREATE ROLE bf_nosel IN ROLE callback_producer")
    try:
        before = cluster.scalar("SELECT count(*) FROM callback.callback_queue")
        conn = cluster.connect()
        try:
            conn.cursor().execute("SET ROLE bf_nosel")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege) as ei:
                call_backfill(cluster, "public.bf_secret", "bf_secret_ep", conn=conn)
            assert "permission denied for table public.bf_secret" in ei.value.diag.message_primary
            assert "GRANT SELECT" in ei.value.diag.message_hint
            # the same role with SELECT: queued
            cluster.execute("GRANT SELECT ON public.bf_secret TO bf_nosel")
            call_backfill(cluster, "public.bf_secret", "bf_secret_ep", conn=conn)
        finally:
            conn.close()
        assert cluster.scalar("SELECT count(*) FROM callback.callback_queue") == before + 50
        assert cluster.scalar("SELECT started_by::text FROM callback.callback_backfills "
                              " WHERE endpoint = 'bf_secret_ep'") == "bf_nosel"
        wait_received(cluster, receiver, "/secret", 50, timeout=120)
    finally:
        cluster.execute("DROP TABLE IF EXISTS public.bf_secret")
        cluster.execute("DROP ROLE IF EXISTS bf_nosel")
