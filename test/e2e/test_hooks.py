"""End-to-end: an endpoint's SQL hooks (issue 12, items 2 and 4).

transform: the worker applies it to the event body for its endpoint only,
before signing, as the endpoint's owner; the receiver gets (and the
signature covers) the transformed bytes.  on_response: run once per final
outcome (delivered or dead) in the write-back, as the owner, with the
response status, headers and body; an application table is updated from it.

Hooks that fail, loop past callback.hook_timeout or try to escalate are each
a recorded failure (callback_attempts.error for a transform, .hook_error for
an on_response), the worker stays the same process and other endpoints
keep being delivered.  A hook that catches its own cancel ends the worker
one hook_timeout later (only the worker restarts, not the cluster), and
its next call for that delivery is recorded as that failure instead.  Bad hooks are refused at create time with a SQLSTATE
and nothing written.
"""

import base64
import hashlib
import hmac
import json
import time

import psycopg2
import pytest

from conftest import make_endpoint, record_figure

HOOK_TIMEOUT_MS = 400
CLUSTER_CONF = {"callback.hook_timeout": "%dms" % HOOK_TIMEOUT_MS}

OWNER = "hk_app"        # creates endpoints; not a superuser, not callback_admin

SETUP = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hk_app') THEN
    CREATE ROLE hk_app NOSUPERUSER;
  END IF;
END $$;
GRANT USAGE ON SCHEMA callback TO hk_app;
GRANT EXECUTE ON FUNCTION callback.create_endpoint(text,text,text[],jsonb,interval,text,integer,
    interval[],double precision,integer,integer,interval,boolean,text,text,integer,interval) TO hk_app;
GRANT EXECUTE ON FUNCTION callback.alter_endpoint(text,text,text[],jsonb,interval,integer,interval[],
    double precision,integer,integer,interval,boolean,boolean,boolean,text,text,integer,interval,
    boolean,boolean) TO hk_app;
-- may drain, so that only the guard against re-entering the engine refuses it from a hook
GRANT EXECUTE ON FUNCTION callback.process_callbacks(integer) TO hk_app;
DROP SCHEMA IF EXISTS app CASCADE;
CREATE SCHEMA app AUTHORIZATION hk_app;
SET ROLE hk_app;
CREATE TABLE app.orders (id int PRIMARY KEY, shipped boolean NOT NULL DEFAULT false,
                         supplier_ack text, ack_status int, ack_header text);
CREATE TABLE app.hook_calls (delivery_id bigint, status int, event_type text);
CREATE TABLE app.leftovers (note text);

-- a transform: reshape the event for this endpoint
CREATE FUNCTION app.shape(e jsonb) RETURNS jsonb LANGUAGE sql
    AS $f$ SELECT jsonb_build_object('shaped', true, 'kind', e->>'type', 'order', e->'data') $f$;

-- on a batch endpoint a transform gets the batch, a JSON array of events
CREATE FUNCTION app.count_batch(e jsonb) RETURNS jsonb LANGUAGE sql
    AS $f$ SELECT jsonb_build_object('events', jsonb_array_length(e),
                                     'ids', jsonb_path_query_array(e, '$[*].data.i')) $f$;

-- order shipped -> supplier acknowledged
CREATE FUNCTION app.ack(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO app.hook_calls VALUES (delivery_id, status, event->>'type');
    UPDATE app.orders o SET supplier_ack = body, ack_status = status,
                            ack_header = headers->>'x-supplier-ack'
     WHERE o.id = (event->'data'->>'id')::int;
END $f$;

-- failing, looping and escalating hooks
CREATE FUNCTION app.t_error(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN RAISE EXCEPTION 'shape rejected: %', e->>'type'; END $f$;
CREATE FUNCTION app.t_loop(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN LOOP END LOOP; END $f$;
-- catches its own cancel, for ever
CREATE FUNCTION app.t_catch(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN
    LOOP
        BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN query_canceled THEN NULL; END;
    END LOOP;
END $f$;
-- the same under another name, for the batch test (a hook that ended the
-- worker is set aside for a while)
CREATE FUNCTION app.t_catch_b(e jsonb) RETURNS jsonb LANGUAGE sql
    AS $f$ SELECT app.t_catch(e) $f$;
CREATE FUNCTION app.r_catch(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    LOOP
        BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN query_canceled THEN NULL; END;
    END LOOP;
END $f$;
CREATE FUNCTION app.t_superuser(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN ALTER ROLE hk_app SUPERUSER; RETURN e; END $f$;
CREATE FUNCTION app.t_secret(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN RETURN (SELECT jsonb_build_object('s', secret) FROM callback.callback_endpoints LIMIT 1); END $f$;
CREATE FUNCTION app.t_set_role(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN PERFORM set_config('role', 'hk_app', false); RETURN e; END $f$;
CREATE FUNCTION app.t_queue(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN UPDATE callback.callback_queue SET status = 'delivered'; RETURN e; END $f$;
CREATE FUNCTION app.t_definer(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN PERFORM callback.purge('0 seconds'); RETURN e; END $f$;
CREATE FUNCTION app.t_drain(e jsonb) RETURNS jsonb LANGUAGE plpgsql AS $f$
BEGIN PERFORM callback.process_callbacks(10); RETURN e; END $f$;
CREATE FUNCTION app.t_dropped(e jsonb) RETURNS jsonb LANGUAGE sql AS $f$ SELECT e $f$;
CREATE FUNCTION app.r_error(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO app.leftovers VALUES ('written before the error');
    RAISE EXCEPTION 'handler broke on %', delivery_id;
END $f$;
CREATE FUNCTION app.r_loop(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO app.leftovers VALUES ('before the loop'); PERFORM pg_sleep(3600); END $f$;
CREATE FUNCTION app.r_superuser(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$ BEGIN ALTER ROLE hk_app SUPERUSER; END $f$;

-- bad shapes, for the create-time checks
CREATE FUNCTION app.wrong_args(e text) RETURNS jsonb LANGUAGE sql AS $f$ SELECT '{}'::jsonb $f$;
CREATE FUNCTION app.wrong_result(e jsonb) RETURNS text LANGUAGE sql AS $f$ SELECT 'x' $f$;
CREATE FUNCTION app.many(e jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $f$ SELECT e $f$;
RESET ROLE;
-- a function hk_app may not execute
DROP FUNCTION IF EXISTS public.hk_private(jsonb);
CREATE FUNCTION public.hk_private(e jsonb) RETURNS jsonb LANGUAGE sql AS $f$ SELECT e $f$;
REVOKE EXECUTE ON FUNCTION public.hk_private(jsonb) FROM PUBLIC;
"""


@pytest.fixture(scope="module")
def app(cluster):
    cluster.execute(SETUP)
    return OWNER


@pytest.fixture
def owned(cluster, app):
    """create_endpoint as hk_app (the hooks' owner); dropped at the end."""
    made = []

    def factory(name, url, **kw):
        eid = as_role(cluster, app, lambda c: make_endpoint(c, name, url, **kw))
        made.append(name)
        return eid

    yield factory
    for name in made:
        try:
            cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
        except Exception:
            pass


class _RoleConn:
    """Just enough of the cluster API for make_endpoint, on one connection
    that has SET ROLE."""

    def __init__(self, conn):
        self.conn = conn

    def scalar(self, sql, params=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]


def as_role(cluster, role, fn):
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE %s" % role)
        return fn(_RoleConn(conn))
    finally:
        conn.close()


def spec_signature(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret[len("whsec_"):])
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def final_status(cluster, eid, n=1, timeout=60):
    """Wait until n deliveries of eid are finished; returns [(status, last_error)]."""
    def done():
        rows = cluster.query("SELECT status::text, last_error FROM callback.callback_queue "
                             "WHERE endpoint_id = %s AND status IN ('delivered', 'dead') "
                             "ORDER BY id", (eid,))
        return rows if len(rows) >= n else None
    return cluster.wait_until(done, timeout=timeout, what="%d final deliveries of %s" % (n, eid))


def attempts(cluster, eid):
    return cluster.query("SELECT attempt, status_code, error, outcome::text, hook_error "
                         "FROM callback.callback_attempts WHERE endpoint_id = %s "
                         "ORDER BY delivery_id, attempt", (eid,))


# ------------------------------------------------------------------ transform

def test_transform_reshapes_body_for_its_endpoint_only(cluster, receiver, owned, endpoint_factory):
    shaped = owned("hk_shaped", receiver.url("/shaped"), event_types="{ship.*}",
                   transform="app.shape")
    plain = endpoint_factory("hk_plain", receiver.url("/plain"), event_types="{ship.*}")
    secret = cluster.scalar("SELECT secret FROM callback.callback_endpoints WHERE id = %s", (shaped,))
    assert cluster.scalar("SELECT owner FROM callback.callback_endpoints WHERE id = %s",
                          (shaped,)) == OWNER

    cluster.execute("SELECT callback.enqueue('ship.created', '{\"id\": 7, \"sku\": \"A-1\"}')")
    assert receiver.wait_for(1, path="/shaped", timeout=60), attempts(cluster, shaped)
    assert receiver.wait_for(1, path="/plain", timeout=60), attempts(cluster, plain)

    rec = receiver.requests("/shaped")[0]
    got = json.loads(rec.body)
    assert got == {"shaped": True, "kind": "ship.created", "order": {"id": 7, "sku": "A-1"}}, got
    # the signature covers the bytes received, the transformed ones
    sig = spec_signature(secret, rec.headers["webhook-id"], rec.headers["webhook-timestamp"], rec.body)
    assert sig in rec.headers["webhook-signature"].split(" "), rec.headers
    assert cluster.scalar("SELECT callback.verify_signature(%s, %s, %s, %s, %s)",
                          (secret, rec.headers["webhook-id"], int(rec.headers["webhook-timestamp"]),
                           rec.body.decode(), rec.headers["webhook-signature"]))

    # the other endpoint gets the event as queued, untouched
    body = cluster.scalar("SELECT body FROM callback.callback_queue WHERE endpoint_id = %s", (plain,))
    assert receiver.requests("/plain")[0].body == body.encode()
    assert "shaped" not in json.loads(body)
    final_status(cluster, shaped)


def test_transform_of_a_batch(cluster, receiver, owned):
    eid = owned("hk_batch", receiver.url("/batch"), event_types="{hkbatch.*}",
                transform="app.count_batch", batch_size=3, batch_window=5)
    secret = cluster.scalar("SELECT secret FROM callback.callback_endpoints WHERE id = %s", (eid,))
    cluster.execute("SELECT callback.enqueue('hkbatch.e', jsonb_build_object('i', g)) "
                    "FROM generate_series(1, 3) g")
    assert receiver.wait_for(1, path="/batch", timeout=60), attempts(cluster, eid)
    rec = receiver.requests("/batch")[0]
    got = json.loads(rec.body)
    assert got["events"] == 3 and sorted(got["ids"]) == [1, 2, 3], got
    sig = spec_signature(secret, rec.headers["webhook-id"], rec.headers["webhook-timestamp"], rec.body)
    assert sig in rec.headers["webhook-signature"].split(" ")
    assert [r[0] for r in final_status(cluster, eid, n=3)] == ["delivered"] * 3


def test_transform_cost_figure(cluster, receiver, owned, endpoint_factory):
    """How long N events take through a transform endpoint, beside a plain one
    (a figure; the assertion is only that all arrive, transformed)."""
    n = 300
    owned("hk_cost_t", receiver.url("/cost_t"), event_types="{cost_t.*}", transform="app.shape")
    endpoint_factory("hk_cost_p", receiver.url("/cost_p"), event_types="{cost_p.*}")
    took = {}
    for kind in ("p", "t"):
        t0 = time.monotonic()
        cluster.execute("SELECT callback.enqueue('cost_%s.e', jsonb_build_object('i', g)) "
                        "FROM generate_series(1, %d) g" % (kind, n))
        assert receiver.wait_for(n, path="/cost_%s" % kind, timeout=120)
        took[kind] = time.monotonic() - t0
    assert all(json.loads(r.body)["shaped"] for r in receiver.requests("/cost_t"))
    record_figure("hooks: %d events delivered in %.2f s plain, %.2f s through a SQL transform"
                  % (n, took["p"], took["t"]))


# ------------------------------------------------------------------ on_response

def test_on_response_acknowledges_once_per_final_outcome(cluster, receiver, owned):
    cluster.execute("DELETE FROM app.orders; DELETE FROM app.hook_calls; "
                    "INSERT INTO app.orders (id, shipped) VALUES (1, true), (2, true), (3, true)")
    # order 1: 200 at once; order 2: 500 then 200 (one call, after the 200); order 3: 400 (dead)
    receiver.script("/supplier/1", [(200, {"X-Supplier-Ack": "ack-1"}, "received order 1")])
    receiver.script("/supplier/2", [(500, {}, "busy"),
                                    (200, {"X-Supplier-Ack": "ack-2"}, "received order 2")])
    receiver.script("/supplier/3", [(400, {"X-Supplier-Ack": "no"}, "unknown order")])
    eids = {}
    for i in (1, 2, 3):
        eids[i] = owned("hk_supplier_%d" % i, receiver.url("/supplier/%d" % i),
                        event_types="{order%d.shipped}" % i, on_response="app.ack",
                        retry_schedule=[0.2], max_attempts=3)
    for i in (1, 2, 3):
        cluster.execute("SELECT callback.enqueue(%s, %s)",
                        ("order%d.shipped" % i, json.dumps({"id": i})))
    for i in (1, 2, 3):
        final_status(cluster, eids[i])

    def acked():
        rows = cluster.query("SELECT id, supplier_ack, ack_status, ack_header FROM app.orders ORDER BY id")
        return rows if all(r[1] is not None for r in rows) else None
    rows = cluster.wait_until(acked, timeout=30, what="acknowledgements")
    assert rows == [(1, "received order 1", 200, "ack-1"),
                    (2, "received order 2", 200, "ack-2"),
                    (3, "unknown order", 400, "no")], rows
    calls = cluster.query("SELECT event_type, status, count(*) FROM app.hook_calls "
                          "GROUP BY 1, 2 ORDER BY 1")
    # once per final outcome: not for the 500 that was retried
    assert calls == [("order1.shipped", 200, 1), ("order2.shipped", 200, 1),
                     ("order3.shipped", 400, 1)], calls
    assert [a[1] for a in attempts(cluster, eids[2])] == [500, 200]
    for i in (1, 2, 3):
        assert all(a[4] is None for a in attempts(cluster, eids[i]))
    # nothing more comes later (the hook is not run again)
    n_before = cluster.scalar("SELECT count(*) FROM app.hook_calls")
    cluster.execute("SELECT callback.wake_worker()")
    cluster.execute("SELECT callback.enqueue('order1.shipped', '{\"id\": 99}')")
    final_status(cluster, eids[1], n=2)
    cluster.wait_until(lambda: cluster.scalar("SELECT count(*) FROM app.hook_calls") == n_before + 1,
                       timeout=30, what="one more hook call")
    assert cluster.scalar("SELECT count(*) FROM app.hook_calls") == n_before + 1


# ------------------------------------------------------------------ failures

TRANSFORM_FAILURES = [
    # (function, what the recorded error must say)
    ("app.t_error", "shape rejected: bad.t_error"),
    ("app.t_loop", "did not finish within callback.hook_timeout (%d ms)" % HOOK_TIMEOUT_MS),
    ("app.t_superuser", "must be superuser to alter superuser roles"),
    ("app.t_secret", "permission denied for table callback_endpoints"),
    ("app.t_set_role", "cannot set parameter \"role\" within security-definer function"),
    ("app.t_queue", "permission denied for table callback_queue"),
    ("app.t_definer", "permission denied for function purge"),
    ("app.t_drain", "process_callbacks() cannot be called from an endpoint's transform"),
    ("app.t_dropped", "does not exist with the arguments of a transform (SQLSTATE 42883)"),
]


def test_failing_transforms_are_recorded_worker_survives(cluster, receiver, owned, endpoint_factory):
    pid = cluster.running_worker_pid()
    eids = {}
    for fn, _ in TRANSFORM_FAILURES:
        short = fn.split(".")[1]
        eids[fn] = owned("hk_%s" % short, receiver.url("/%s" % short),
                         event_types="{bad.%s}" % short, transform=fn,
                         retry_schedule=[0.1], max_attempts=2)
    healthy = endpoint_factory("hk_healthy", receiver.url("/healthy"), event_types="{bad.*}")
    # dropped after the endpoint was created: found missing at the attempt
    cluster.execute("DROP FUNCTION app.t_dropped(jsonb)")

    t0 = time.monotonic()
    for fn, _ in TRANSFORM_FAILURES:
        cluster.execute("SELECT callback.enqueue(%s, '{}')", ("bad.%s" % fn.split(".")[1],))
    assert receiver.wait_for(len(TRANSFORM_FAILURES), path="/healthy", timeout=90), \
        attempts(cluster, healthy)
    for fn, want in TRANSFORM_FAILURES:
        rows = final_status(cluster, eids[fn], timeout=90)
        assert rows[0][0] == "dead", (fn, rows)
        atts = attempts(cluster, eids[fn])
        # retried per policy: two attempts, both failed with the function's error, no HTTP
        assert [(a[0], a[1], a[3]) for a in atts] == [(1, None, "pending"), (2, None, "dead")], (fn, atts)
        for a in atts:
            assert want in a[2], (fn, a[2])
            assert a[2].startswith("transform %s" % fn), (fn, a[2])
        assert receiver.count("/%s" % fn.split(".")[1]) == 0, fn
    elapsed = time.monotonic() - t0
    record_figure("hooks: %d failing transforms (one looping, %d ms timeout) x 2 attempts "
                  "recorded in %.1f s" % (len(TRANSFORM_FAILURES), HOOK_TIMEOUT_MS, elapsed))

    assert cluster.worker_pid() == pid
    assert not cluster.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'hk_app'")
    # nothing stuck: the worker still delivers
    cluster.execute("SELECT callback.enqueue('bad.after', '{}')")
    assert receiver.wait_for(len(TRANSFORM_FAILURES) + 1, path="/healthy", timeout=60)


def test_failing_on_response_keeps_the_outcome(cluster, receiver, owned, endpoint_factory):
    pid = cluster.running_worker_pid()
    cluster.execute("DELETE FROM app.leftovers")
    eids = {}
    for fn in ("app.r_error", "app.r_loop", "app.r_superuser"):
        short = fn.split(".")[1]
        eids[fn] = owned("hk_%s" % short, receiver.url("/%s" % short),
                         event_types="{resp.%s}" % short, on_response=fn)
    healthy = endpoint_factory("hk_healthy2", receiver.url("/healthy2"), event_types="{resp.*}")
    for fn in eids:
        cluster.execute("SELECT callback.enqueue(%s, '{}')", ("resp.%s" % fn.split(".")[1],))
    want = {"app.r_error": "handler broke on",
            "app.r_loop": "did not finish within callback.hook_timeout",
            "app.r_superuser": "must be superuser to alter superuser roles"}
    for fn, eid in eids.items():
        assert final_status(cluster, eid)[0][0] == "delivered", fn

        def hook_error():
            return [a[4] for a in attempts(cluster, eid) if a[4]]
        errs = cluster.wait_until(hook_error, timeout=30, what="hook_error of %s" % fn)
        assert len(errs) == 1 and want[fn] in errs[0] and errs[0].startswith("on_response " + fn), errs
        assert [a[3] for a in attempts(cluster, eid)] == ["delivered"]
    # the failed hooks' own writes were undone
    assert cluster.scalar("SELECT count(*) FROM app.leftovers") == 0
    assert receiver.wait_for(3, path="/healthy2", timeout=60)
    assert cluster.worker_pid() == pid
    assert not cluster.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'hk_app'")


ESCALATED = ("did not stop within callback.hook_timeout (%d ms) after its cancel; "
             "the worker was restarted" % HOOK_TIMEOUT_MS)


def _session(cluster):
    """Another backend's connection and its pid: a cluster restart would end it."""
    conn = cluster.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return conn, cur.fetchone()[0]


def _same_session(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_transform_catching_its_cancel_ends_the_worker(cluster, receiver, owned, endpoint_factory):
    """The looping transform would hold the worker (every endpoint of the
    database) for ever.  One hook_timeout after its cancel the worker ends
    itself; its successor counts the delivery's attempt as failed with what
    happened, retried per policy, dead after max_attempts; the endpoint
    beside it keeps being delivered throughout, and the cluster does not
    restart."""
    other, other_pid = _session(cluster)
    pid = cluster.wait_until(cluster.worker_pid, timeout=60, what="the worker")
    a = owned("hk_catch", receiver.url("/catch"), event_types="{esc.a}",
              transform="app.t_catch", retry_schedule=[0.1], max_attempts=2)
    endpoint_factory("hk_beside", receiver.url("/beside"), event_types="{esc.b}")
    cluster.execute("SELECT callback.enqueue('esc.a', '{}')")

    def a_dead():
        return cluster.scalar("SELECT status::text FROM callback.callback_queue "
                              "WHERE endpoint_id = %s", (a,)) == "dead"
    t0 = time.monotonic()
    sent = 0
    # one event beside at a time, each within a bound, until A is dead (and one after)
    while True:
        done = a_dead()
        cluster.execute("SELECT callback.enqueue('esc.b', jsonb_build_object('n', %s))", (sent,))
        sent += 1
        assert receiver.wait_for(sent, path="/beside", timeout=30), \
            ("event %d beside the looping transform not delivered" % sent, attempts(cluster, a))
        if done:
            break
        assert time.monotonic() - t0 < 120, ("A never dead", attempts(cluster, a))
    elapsed = time.monotonic() - t0

    atts = attempts(cluster, a)
    assert [(x[0], x[1], x[3]) for x in atts] == [(1, None, "pending"), (2, None, "dead")], atts
    for x in atts:
        assert x[2].startswith("transform app.t_catch " + ESCALATED), x[2]
    assert receiver.count("/catch") == 0
    assert cluster.worker_pid() not in (None, pid)
    # only the worker restarted: another backend's session lives on
    assert _same_session(other) == other_pid
    other.close()
    # the worker ended once: the second attempt found the transform set aside
    assert cluster.log_text().count("the worker ended itself: transform app.t_catch did not stop "
                                     "within callback.hook_timeout after its cancel") == 1
    assert "the transform is not called until" in atts[1][2], atts
    record_figure("hooks: a transform catching its cancel (%d ms timeout): dead after 2 attempts "
                  "in %.1f s, %d events beside it delivered meanwhile" % (HOOK_TIMEOUT_MS, elapsed, sent))


def test_batch_transform_catching_its_cancel(cluster, receiver, owned):
    """A batch's transform gets the batch: the whole batch is the failed
    attempt recorded after the worker ended."""
    pid = cluster.wait_until(cluster.worker_pid, timeout=60, what="the worker")
    eid = owned("hk_bcatch", receiver.url("/bcatch"), event_types="{esc.batch}",
                transform="app.t_catch_b", batch_size=2, batch_window=5, max_attempts=1)
    cluster.execute("SELECT callback.enqueue('esc.batch', jsonb_build_object('i', g)) "
                    "FROM generate_series(1, 2) g")
    rows = final_status(cluster, eid, n=2, timeout=90)
    assert [r[0] for r in rows] == ["dead", "dead"], rows
    for r in rows:
        assert r[1].startswith("transform app.t_catch_b " + ESCALATED), rows
    assert [(x[0], x[3]) for x in attempts(cluster, eid)] == [(1, "dead"), (1, "dead")]
    assert receiver.count("/bcatch") == 0
    assert cluster.worker_pid() not in (None, pid)


# a schema and function names long enough that the stored, quoted name
# passes 2 x NAMEDATALEN + 1 bytes: two names alike but for their last
# character must not be taken for one hook
LONG_SCHEMA = '"Hook_' + "x" * 58 + '"'    # 63 bytes
LONG_LOOP = LONG_SCHEMA + '."' + "t" * 62 + '1"'
LONG_OK = LONG_SCHEMA + '."' + "t" * 62 + '2"'


def test_set_aside_is_that_hook_not_a_name_prefix(cluster, receiver, owned):
    """The looping hook is set aside; a healthy one whose stored name has
    the same first 129 bytes still runs."""
    assert len(LONG_LOOP) == 131 and LONG_LOOP[:129] == LONG_OK[:129]
    cluster.execute("DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s AUTHORIZATION hk_app; "
                    "SET ROLE hk_app; "
                    "CREATE FUNCTION %s(e jsonb) RETURNS jsonb LANGUAGE sql AS $f$ SELECT app.t_catch(e) $f$; "
                    "CREATE FUNCTION %s(e jsonb) RETURNS jsonb LANGUAGE sql "
                    "    AS $f$ SELECT jsonb_build_object('ok', true) $f$; RESET ROLE"
                    % (LONG_SCHEMA, LONG_SCHEMA, LONG_LOOP, LONG_OK))
    pid = cluster.wait_until(cluster.worker_pid, timeout=60, what="the worker")
    bad = owned("hk_long_loop", receiver.url("/longloop"), event_types="{long.a}",
                transform=LONG_LOOP, max_attempts=1)
    owned("hk_long_ok", receiver.url("/longok"), event_types="{long.b}", transform=LONG_OK)
    cluster.execute("SELECT callback.enqueue('long.a', '{}')")
    rows = final_status(cluster, bad, timeout=90)
    assert rows[0][0] == "dead" and ESCALATED in rows[0][1], rows
    assert cluster.worker_pid() not in (None, pid)
    cluster.execute("SELECT callback.enqueue('long.b', '{}')")
    assert receiver.wait_for(1, path="/longok", timeout=30), \
        cluster.query("SELECT attempt, error, hook_error FROM callback.callback_attempts a "
                      "JOIN callback.callback_endpoints e ON e.id = a.endpoint_id "
                      "WHERE e.name = 'hk_long_ok'")
    assert json.loads(receiver.requests("/longok")[0].body) == {"ok": True}
    cluster.execute("DROP SCHEMA %s CASCADE" % LONG_SCHEMA)


def test_set_aside_is_the_function_not_its_spelling(cluster, receiver, owned):
    """What is set aside is the function: the same function named another
    way is not run (the worker does not end again), and a function made
    later under the dropped one's name runs."""
    cluster.execute("SET ROLE hk_app; CREATE FUNCTION app.t_catch_c(e jsonb) RETURNS jsonb "
                    "LANGUAGE sql AS $f$ SELECT app.t_catch(e) $f$; RESET ROLE")
    pid = cluster.wait_until(cluster.worker_pid, timeout=60, what="the worker")
    first = owned("hk_spell_1", receiver.url("/spell1"), event_types="{spell.a}",
                  transform="app.t_catch_c", max_attempts=1)
    cluster.execute("SELECT callback.enqueue('spell.a', '{}')")
    assert final_status(cluster, first, timeout=90)[0][0] == "dead"
    pid = cluster.wait_until(lambda: (lambda p: p if p not in (None, pid) else None)(cluster.worker_pid()),
                             timeout=60, what="the restarted worker")
    other = owned("hk_spell_2", receiver.url("/spell2"), event_types="{spell.b}",
                  transform="APP.T_CATCH_C", max_attempts=1)
    cluster.execute("SELECT callback.enqueue('spell.b', '{}')")
    rows = final_status(cluster, other, timeout=60)
    assert rows[0][0] == "dead" and "the transform is not called until" in rows[0][1], rows
    assert cluster.worker_pid() == pid, "the worker ended again for another spelling"
    # dropped and made again: another function, not set aside
    cluster.execute("SET ROLE hk_app; DROP FUNCTION app.t_catch_c(jsonb); "
                    "CREATE FUNCTION app.t_catch_c(e jsonb) RETURNS jsonb LANGUAGE sql "
                    "    AS $f$ SELECT jsonb_build_object('again', true) $f$; RESET ROLE")
    cluster.execute("SELECT callback.enqueue('spell.a', '{}')")
    assert receiver.wait_for(1, path="/spell1", timeout=30), attempts(cluster, first)
    assert json.loads(receiver.requests("/spell1")[0].body) == {"again": True}


def test_on_response_catching_its_cancel_ends_the_worker(cluster, receiver, owned):
    """The same in the write-back: the outcome and the hook's run are undone
    with the worker, the delivery is sent again (at least once), and its
    outcome stands with the hook's failure as its hook_error."""
    other, other_pid = _session(cluster)
    pid = cluster.wait_until(cluster.worker_pid, timeout=60, what="the worker")
    r = owned("hk_rcatch", receiver.url("/rcatch"), event_types="{esc.r}", on_response="app.r_catch")
    cluster.execute("SELECT callback.enqueue('esc.r', '{}')")
    assert final_status(cluster, r, timeout=90)[0][0] == "delivered"
    atts = attempts(cluster, r)
    assert [(x[1], x[3]) for x in atts] == [(204, "delivered")], atts
    assert atts[0][4].startswith("on_response app.r_catch " + ESCALATED), atts
    assert receiver.count("/rcatch") == 2
    assert cluster.worker_pid() not in (None, pid)
    assert _same_session(other) == other_pid
    other.close()


# ------------------------------------------------------------------ create-time checks

BAD_HOOKS = [
    # (role, kwargs, SQLSTATE)
    (OWNER, {"transform": "shape"}, "22023"),                    # unqualified
    (OWNER, {"transform": "app.shape(jsonb)"}, "22023"),         # arguments are implied
    (OWNER, {"transform": "app.nope"}, "42883"),                 # unknown
    (OWNER, {"transform": "app.wrong_args"}, "42883"),           # (text), not (jsonb)
    (OWNER, {"transform": "app.wrong_result"}, "42809"),         # returns text
    (OWNER, {"transform": "app.many"}, "42809"),                 # SETOF
    (OWNER, {"on_response": "app.shape"}, "42883"),              # a transform's signature
    (OWNER, {"transform": "public.hk_private"}, "42501"),        # not executable by the creator
    (None, {"transform": "app.shape"}, "0P000"),                 # superuser owner
    (None, {"on_response": "app.ack"}, "0P000"),
]


@pytest.mark.parametrize("role,kw,sqlstate", BAD_HOOKS)
def test_bad_hooks_refused_at_create(cluster, receiver, app, role, kw, sqlstate):
    before = cluster.scalar("SELECT count(*) FROM callback.callback_endpoints")

    def create(c):
        return make_endpoint(c, "hk_bad", receiver.url("/bad"), **kw)
    with pytest.raises(psycopg2.Error) as e:
        if role is None:
            create(cluster)
        else:
            as_role(cluster, role, create)
    assert e.value.pgcode == sqlstate, (kw, e.value.pgcode, e.value.pgerror)
    assert e.value.diag.message_hint, e.value.pgerror
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints") == before


def test_bad_hook_refused_at_alter(cluster, receiver, owned):
    owned("hk_alter", receiver.url("/alter"), event_types="{alter.*}", transform="app.shape")
    for kw, sqlstate in (({"transform": "app.nope"}, "42883"),
                         ({"on_response": "public.hk_private"}, "42883"),
                         ({"transform": "public.hk_private"}, "42501")):
        with pytest.raises(psycopg2.Error) as e:
            as_role(cluster, OWNER, lambda c: c.scalar(
                "SELECT callback.alter_endpoint('hk_alter', %s => %%s)" % list(kw)[0],
                (list(kw.values())[0],)))
        assert e.value.pgcode == sqlstate, (kw, e.value.pgerror)
    assert cluster.query("SELECT transform, on_response FROM callback.callback_endpoints "
                         "WHERE name = 'hk_alter'") == [("app.shape", None)]


def test_hooks_changed_only_by_their_owner(cluster, receiver, owned):
    """Hooks run as the endpoint's owner: another admin who is not a member
    of that role may not set or remove them (or his function would run with
    the owner's rights); other settings he may still change."""
    owned("hk_theirs", receiver.url("/theirs"), event_types="{theirs.*}", transform="app.shape")
    cluster.execute("""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hk_other') THEN
            CREATE ROLE hk_other NOSUPERUSER IN ROLE callback_admin;
          END IF;
        END $$;
        CREATE OR REPLACE FUNCTION public.hk_other_fn(e jsonb) RETURNS jsonb
            LANGUAGE sql AS $f$ SELECT e $f$;
        GRANT EXECUTE ON FUNCTION public.hk_other_fn(jsonb) TO PUBLIC;
        ALTER FUNCTION public.hk_other_fn(jsonb) OWNER TO hk_other;""")
    for kw in ({"transform": "public.hk_other_fn"}, {"remove_transform": True},
               {"url": receiver.url("/elsewhere")}):
        with pytest.raises(psycopg2.Error) as e:
            as_role(cluster, "hk_other", lambda c: c.scalar(
                "SELECT callback.alter_endpoint('hk_theirs', %s => %%s)" % list(kw)[0],
                (list(kw.values())[0],)))
        assert e.value.pgcode == "42501", (kw, e.value.pgerror)
        assert "only the owner" in e.value.pgerror and e.value.diag.message_hint
    as_role(cluster, "hk_other", lambda c: c.scalar(
        "SELECT callback.alter_endpoint('hk_theirs', max_attempts => 3)"))
    assert cluster.query("SELECT transform, owner::text, max_attempts FROM callback.callback_endpoints "
                         "WHERE name = 'hk_theirs'") == [("app.shape", OWNER, 3)]


def test_hook_of_another_role_refused_through_security_definer(cluster, receiver):
    """The review's attack: mallory (a callback_admin) owns a transform that
    reads what only its runner may read, and a SECURITY DEFINER function
    that creates an endpoint naming it.  When alice calls that function the
    endpoint would be alice's (the calling role outside SECURITY DEFINER),
    and the transform would run as alice.  A hook must be its owner's own
    code: refused (42501), nothing created."""
    cluster.execute("""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hk_mallory') THEN
            CREATE ROLE hk_mallory NOSUPERUSER IN ROLE callback_admin;
          END IF;
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hk_alice') THEN
            CREATE ROLE hk_alice NOSUPERUSER IN ROLE callback_admin;
          END IF;
        END $$;
        DROP SCHEMA IF EXISTS hk_m CASCADE;
        CREATE SCHEMA hk_m AUTHORIZATION hk_mallory;
        GRANT USAGE ON SCHEMA hk_m TO PUBLIC;
        DROP TABLE IF EXISTS public.hk_alice_secret;
        CREATE TABLE public.hk_alice_secret (v text);
        INSERT INTO public.hk_alice_secret VALUES ('alice-only-data');
        ALTER TABLE public.hk_alice_secret OWNER TO hk_alice;""")
    cluster.execute("""
        SET ROLE hk_mallory;
        CREATE FUNCTION hk_m.evil(e jsonb) RETURNS jsonb LANGUAGE sql AS
            $f$ SELECT jsonb_build_object('ran_as', current_user,
                                          'stolen', (SELECT v FROM public.hk_alice_secret)) $f$;
        CREATE FUNCTION hk_m.helper() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS
            $f$ BEGIN PERFORM callback.create_endpoint('hk_stolen', %s, transform => 'hk_m.evil'); END $f$;
        GRANT EXECUTE ON FUNCTION hk_m.evil(jsonb), hk_m.helper() TO PUBLIC;
        RESET ROLE;""" % ("'" + receiver.url("/stolen") + "'"))
    with pytest.raises(psycopg2.Error) as e:
        as_role(cluster, "hk_alice", lambda c: c.scalar("SELECT hk_m.helper()"))
    assert e.value.pgcode == "42501", e.value.pgerror
    assert "does not own" in e.value.pgerror, e.value.pgerror
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints "
                          "WHERE name = 'hk_stolen'") == 0
    cluster.execute("DROP SCHEMA hk_m CASCADE; DROP TABLE public.hk_alice_secret")


# ------------------------------------------------------------------ README

def test_readme_example_runs(cluster, receiver):
    """The README's Hooks example, as written but for the URL and role names."""
    import os
    import re
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme[readme.index("## Hooks: transforms and responses"):]
    sql = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    sql = sql.replace("https://supplier.example.com/hooks", receiver.url("/readme"))
    cluster.execute("DROP SCHEMA IF EXISTS app CASCADE")
    cluster.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_owner') "
                    "THEN CREATE ROLE app_owner IN ROLE callback_admin; END IF; END $$")
    receiver.script("/readme", [(200, {}, "got it")])
    try:
        cluster.execute(sql.replace("CREATE ROLE app_owner IN ROLE callback_admin;", ""))
        assert receiver.wait_for(1, path="/readme", timeout=60)
        assert json.loads(receiver.requests("/readme")[0].body) == {"kind": "order.shipped", "order": 7}
        cluster.wait_until(lambda: cluster.scalar("SELECT supplier_ack FROM app.orders WHERE id = 7"),
                           timeout=30, what="supplier_ack")
        assert cluster.scalar("SELECT supplier_ack FROM app.orders WHERE id = 7") == "200 got it"
    finally:
        cluster.execute("RESET ROLE")
        cluster.execute("SELECT callback.drop_endpoint('supplier', force => true)")
        cluster.execute("DROP SCHEMA IF EXISTS app CASCADE")
