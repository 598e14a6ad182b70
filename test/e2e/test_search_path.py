"""End-to-end: no SQL that pg_callback runs with raised privileges can be
hijacked through search_path.

An attacker role - no superuser, CREATE on public, owner of a schema named
after the worker's user ("postgres", the "$user" entry of the default
search_path) and of its own schema attacker_s - puts, in each of those
schemas, functions, aggregates and operators shadowing every name that the
worker's, process_callbacks()'s and callback.trigger()'s SQL uses: exact-typed
overloads, which beat pg_catalog's polymorphic ones (unnest(interval[]) over
unnest(anyarray), = on callback.delivery_status over anyenum = anyenum, ...),
and same-signature copies of the others.  coalesce, greatest, extract and
casts are parsed to fixed catalog entries and cannot be shadowed.  Each shadow
records that it ran (attacker_s.hijack_log) and tries to make the attacker
superuser, then gives the right answer, so that an attack is silent.

Then events travel every path that runs SQL as the extension's owner:
- the delivery worker (restarted after the shadows exist, so that nothing it
  planned before is reused), with a 2xx, a 500 that opens the breaker and a
  410 that disables its endpoint;
- callback.trigger() fired by the attacker, with its own schema first in its
  search_path;
- callback.process_callbacks() called by a callback_admin member with the
  attacker's schema first in its search_path, in a second database that has
  no worker.
Every test asserts that delivery worked, that the attacker is not superuser
and that no shadow ran.

This module's own queries run with search_path = pg_catalog (safe_query), so
that only pg_callback's SQL can meet the shadows.
"""

import psycopg2
import pytest

from cluster import TEST_DB
from conftest import make_endpoint

DRAIN_DB = "pgcb_sp_drain"
SHADOW_SCHEMAS = ("postgres", "public", "attacker_s")
# one attacker per database, so that a hijack in one does not fail the other's tests
ATTACKER = {TEST_DB: "attacker", DRAIN_DB: "attacker_d"}

# element types of the arrays the worker's statements unnest
UNNEST_TYPES = ("interval", "integer", "bigint", "text", "double precision",
                "timestamptz", "uuid", "callback.delivery_status")

# (name, left, right, result, the pg_catalog expression it delegates to)
OPERATORS = [
    ("=", "callback.delivery_status", "callback.delivery_status", "boolean",
     "$1::text OPERATOR(pg_catalog.=) $2::text"),
    ("<>", "callback.delivery_status", "callback.delivery_status", "boolean",
     "$1::text OPERATOR(pg_catalog.<>) $2::text"),
    ("*", "numeric", "integer", "numeric", "$1 OPERATOR(pg_catalog.*) $2::numeric"),
    ("||", "text", "timestamptz", "text", "$1 OPERATOR(pg_catalog.||) $2::text"),
    ("=", "bigint", "bigint", "boolean", "$1 OPERATOR(pg_catalog.=) $2"),
    ("=", "integer", "integer", "boolean", "$1 OPERATOR(pg_catalog.=) $2"),
    ("=", "uuid", "uuid", "boolean", "$1 OPERATOR(pg_catalog.=) $2"),
    ("=", "text", "text", "boolean", "$1 OPERATOR(pg_catalog.=) $2"),
    ("<>", "text", "text", "boolean", "$1 OPERATOR(pg_catalog.<>) $2"),
    ("<=", "timestamptz", "timestamptz", "boolean", "$1 OPERATOR(pg_catalog.<=) $2"),
    ("<", "timestamptz", "timestamptz", "boolean", "$1 OPERATOR(pg_catalog.<) $2"),
    (">", "timestamptz", "timestamptz", "boolean", "$1 OPERATOR(pg_catalog.>) $2"),
    ("+", "integer", "integer", "integer", "$1 OPERATOR(pg_catalog.+) $2"),
    ("+", "bigint", "bigint", "bigint", "$1 OPERATOR(pg_catalog.+) $2"),
    ("+", "double precision", "double precision", "double precision",
     "$1 OPERATOR(pg_catalog.+) $2"),
    ("+", "timestamptz", "interval", "timestamptz", "$1 OPERATOR(pg_catalog.+) $2"),
    ("*", "double precision", "interval", "interval", "$1 OPERATOR(pg_catalog.*) $2"),
    ("||", "text", "text", "text", "$1 OPERATOR(pg_catalog.||) $2"),
]

# (signature, returns, body delegating to pg_catalog)
FUNCTIONS = [
    ("date_trunc(text, timestamptz)", "timestamptz", "SELECT pg_catalog.date_trunc($1, $2)"),
    ("date_trunc(varchar, timestamptz)", "timestamptz",
     "SELECT pg_catalog.date_trunc($1::text, $2)"),
    ("now()", "timestamptz", "SELECT pg_catalog.now()"),
    ("jsonb_each_text(jsonb, OUT key text, OUT value text)", "SETOF record",
     "SELECT * FROM pg_catalog.jsonb_each_text($1)"),
]

# (name, argument, state type, step body) of aggregates
AGGREGATES = [
    ("array_agg", "text", "text[]", "SELECT pg_catalog.array_append($1, $2)"),
    ("count", "*", "bigint", "SELECT $1 OPERATOR(pg_catalog.+) 1"),
    ("sum", "double precision", "double precision",
     "SELECT COALESCE($1, 0) OPERATOR(pg_catalog.+) $2"),
    ("max", "double precision", "double precision", "SELECT GREATEST($1, $2)"),
]


def safe_query(cluster, sql, params=None, dbname=TEST_DB, user="postgres", fetch=True):
    """sql on a fresh connection whose search_path is pg_catalog only."""
    dsn = cluster.dsn(dbname)
    dsn["user"] = user
    dsn["options"] += " -c search_path=pg_catalog"
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if fetch and cur.description else None
    finally:
        conn.close()


def _shadow_sql():
    """The attacker's script: every shadow in every schema of SHADOW_SCHEMAS."""
    out = []
    for s in SHADOW_SCHEMAS:
        for t in UNNEST_TYPES:
            out.append(
                "CREATE FUNCTION %(s)s.unnest(%(t)s[]) RETURNS SETOF %(t)s LANGUAGE plpgsql AS $f$"
                " BEGIN PERFORM attacker_s.pwn('%(s)s.unnest(%(t)s[])');"
                " RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END $f$;" % {"s": s, "t": t})
        for sig, ret, body in FUNCTIONS:
            label = "%s.%s" % (s, sig)
            ret_stmt = "RETURN QUERY %s;" % body if ret.startswith("SETOF") \
                else "RETURN (%s);" % body
            out.append("CREATE FUNCTION %s.%s RETURNS %s LANGUAGE plpgsql AS $f$ "
                       "BEGIN PERFORM attacker_s.pwn('%s'); %s END $f$;"
                       % (s, sig, ret, label, ret_stmt))
        for i, (op, left, right, ret, body) in enumerate(OPERATORS):
            fn = "%s.op_%d" % (s, i)
            label = "%s.OPERATOR(%s)(%s, %s)" % (s, op, left, right)
            out.append("CREATE FUNCTION %s(%s, %s) RETURNS %s LANGUAGE plpgsql AS $f$ "
                       "BEGIN PERFORM attacker_s.pwn('%s'); RETURN %s; END $f$;"
                       % (fn, left, right, ret, label, body))
            out.append("CREATE OPERATOR %s.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s);"
                       % (s, op, left, right, fn))
        for name, arg, stype, step in AGGREGATES:
            label = "%s.%s(%s)" % (s, name, arg)
            sargs = stype if arg == "*" else "%s, %s" % (stype, arg)
            out.append("CREATE FUNCTION %s.%s_step(%s) RETURNS %s LANGUAGE plpgsql AS $f$ "
                       "BEGIN PERFORM attacker_s.pwn('%s'); RETURN (%s); END $f$;"
                       % (s, name, sargs, stype, label, step))
            out.append("CREATE AGGREGATE %s.%s(%s) (SFUNC = %s.%s_step, STYPE = %s%s);"
                       % (s, name, arg, s, name, stype,
                          ", INITCOND = '0'" if name == "count" else ""))
    return "\n".join(out)


ATTACKER_SETUP = """
DO $d$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '@ROLE@') THEN
        CREATE ROLE @ROLE@ LOGIN NOSUPERUSER;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'drainer') THEN
        CREATE ROLE drainer LOGIN NOSUPERUSER IN ROLE callback_admin;
    END IF;
END $d$;
GRANT callback_producer TO @ROLE@;
GRANT CREATE ON SCHEMA public TO @ROLE@;
CREATE SCHEMA postgres AUTHORIZATION @ROLE@;
CREATE SCHEMA attacker_s AUTHORIZATION @ROLE@;
"""

ATTACKER_OBJECTS = """
CREATE TABLE attacker_s.hijack_log (what text, as_role text, at timestamptz DEFAULT pg_catalog.now());
GRANT USAGE ON SCHEMA attacker_s, postgres TO PUBLIC;
GRANT INSERT, SELECT ON attacker_s.hijack_log TO PUBLIC;
CREATE FUNCTION attacker_s.pwn(what text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    -- the attacker running its own code gains nothing: only others count
    IF current_user::text OPERATOR(pg_catalog.=) '@ROLE@' THEN
        RETURN;
    END IF;
    INSERT INTO attacker_s.hijack_log (what, as_role) VALUES (what, pg_catalog.current_user());
    BEGIN
        EXECUTE 'ALTER ROLE @ROLE@ SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $f$;
CREATE TABLE attacker_s.orders (id int PRIMARY KEY, item text);
CREATE TRIGGER orders_callback AFTER INSERT OR UPDATE OR DELETE ON attacker_s.orders
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('order');
"""


def _install_attacker(cluster, dbname):
    role = ATTACKER[dbname]
    safe_query(cluster, ATTACKER_SETUP.replace("@ROLE@", role), dbname=dbname, fetch=False)
    safe_query(cluster, ATTACKER_OBJECTS.replace("@ROLE@", role), dbname=dbname, user=role,
               fetch=False)
    safe_query(cluster, _shadow_sql(), dbname=dbname, user=role, fetch=False)


def hijacks(cluster, dbname):
    return safe_query(cluster, "SELECT what, as_role FROM attacker_s.hijack_log ORDER BY at",
                      dbname=dbname)


def attacker_is_superuser(cluster, dbname):
    return safe_query(cluster, "SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                      (ATTACKER[dbname],))[0][0]


def assert_not_hijacked(cluster, dbname):
    log = hijacks(cluster, dbname)
    su = attacker_is_superuser(cluster, dbname)
    assert not su and log == [], \
        "%s is superuser: %s; shadows that ran (%d): %r" % (
            ATTACKER[dbname], su, len(log), sorted(set(log)))


def as_attacker(cluster, sql, params=None, dbname=TEST_DB):
    """sql as the attacker, with its own schemas first in its search_path."""
    dsn = cluster.dsn(dbname)
    dsn["user"] = ATTACKER[dbname]
    dsn["options"] += " -c search_path=attacker_s,postgres,public"
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def attacked(cluster):
    """Both databases with the attacker's shadows; the worker restarted
    after they exist."""
    safe_query(cluster, 'CREATE DATABASE "%s"' % DRAIN_DB, dbname="postgres", fetch=False)
    safe_query(cluster, "CREATE EXTENSION pg_callback", dbname=DRAIN_DB, fetch=False)
    for db in (TEST_DB, DRAIN_DB):
        _install_attacker(cluster, db)
    # shadows are in place and nothing ran them yet
    for db in (TEST_DB, DRAIN_DB):
        assert hijacks(cluster, db) == []
        assert not attacker_is_superuser(cluster, db)

    old = cluster.wait_until(cluster.worker_pid, timeout=30, what="the delivery worker")
    safe_query(cluster, "SELECT pg_terminate_backend(%s)", (old,), dbname="postgres")
    cluster.wait_until(lambda: cluster.worker_pid() not in (None, old), timeout=60,
                       what="a new delivery worker")
    return cluster


def _queue_by_status(cluster, dbname, eid):
    return dict(safe_query(
        cluster, "SELECT status::text, count(*) FROM callback.callback_queue "
                 " WHERE endpoint_id = %s GROUP BY 1", (eid,), dbname=dbname))


def test_worker_runs_no_shadow(attacked, receiver):
    c = attacked
    ok = make_endpoint(c, "sp_ok", receiver.url("/ok"), event_types="{order.*}",
                       retry_schedule=[1, 1, 1])
    failing = make_endpoint(c, "sp_500", receiver.url("/fail"), event_types="{order.*}",
                            retry_schedule=[0.2], max_attempts=2, failure_threshold=1,
                            breaker_cooldown=0.2)
    gone = make_endpoint(c, "sp_410", receiver.url("/gone"), event_types="{order.*}")
    receiver.script("/fail", [(500, {}, b"no")] * 1000)
    receiver.script("/gone", [(410, {}, b"gone")])

    # the trigger, fired by the attacker with its own schemas first
    as_attacker(c, "INSERT INTO attacker_s.orders SELECT g, 'item ' || g "
                   "FROM pg_catalog.generate_series(1, 5) g")
    as_attacker(c, "SELECT callback.enqueue('order.manual', '{\"x\": 1}')")

    assert receiver.wait_for(6, path="/ok", timeout=30), \
        "delivered %d of 6 to /ok; queue %r; %s" % (
            receiver.count("/ok"), _queue_by_status(c, TEST_DB, ok), c.log_tail(20))
    c.wait_until(lambda: _queue_by_status(c, TEST_DB, failing) == {"dead": 6},
                 timeout=60, what="the 500 endpoint's deliveries to die after 2 attempts")
    assert safe_query(c, "SELECT count(*) FROM callback.callback_attempts "
                         " WHERE endpoint_id = %s AND status_code = 500", (failing,))[0][0] == 12
    c.wait_until(lambda: safe_query(c, "SELECT NOT enabled FROM callback.callback_endpoints "
                                       "WHERE id = %s", (gone,))[0][0],
                 timeout=30, what="the 410 endpoint to be disabled")
    c.wait_until(lambda: safe_query(c, "SELECT count(*) FROM callback.callback_stats "
                                       "WHERE endpoint_id = %s", (ok,))[0][0] > 0,
                 timeout=30, what="the stats rollup")
    assert safe_query(c, "SELECT breaker_state FROM callback.callback_endpoints WHERE id = %s",
                      (failing,))[0][0] in ("open", "half_open", "closed")
    assert _queue_by_status(c, TEST_DB, ok) == {"delivered": 6}
    assert_not_hijacked(c, TEST_DB)


def test_trigger_runs_no_shadow(attacked):
    c = attacked
    safe_query(c, "SELECT callback.create_endpoint('sp_trigger', 'http://127.0.0.1:9/x', "
                  "event_types => '{order.*}')", dbname=DRAIN_DB)
    as_attacker(c, "INSERT INTO attacker_s.orders SELECT g, 'item ' || g "
                   "FROM pg_catalog.generate_series(1, 3) g", dbname=DRAIN_DB)
    as_attacker(c, "UPDATE attacker_s.orders SET item = 'changed'", dbname=DRAIN_DB)
    as_attacker(c, "DELETE FROM attacker_s.orders", dbname=DRAIN_DB)
    assert safe_query(c, "SELECT count(*) FROM callback.callback_queue",
                      dbname=DRAIN_DB)[0][0] == 9
    assert_not_hijacked(c, DRAIN_DB)
    safe_query(c, "SELECT callback.drop_endpoint('sp_trigger', force => true)",
               dbname=DRAIN_DB)


def test_process_callbacks_runs_no_shadow(attacked, receiver):
    c = attacked
    safe_query(c, "SELECT callback.create_endpoint('sp_drain', %s, event_types => '{order.*}')",
               (receiver.url("/drain"),), dbname=DRAIN_DB)
    as_attacker(c, "INSERT INTO attacker_s.orders SELECT g, 'item ' || g "
                   "FROM pg_catalog.generate_series(100, 104) g", dbname=DRAIN_DB)

    dsn = c.dsn(DRAIN_DB)
    dsn["user"] = "drainer"
    dsn["options"] += " -c search_path=attacker_s,postgres,public"
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW search_path")
            assert cur.fetchone()[0].startswith("attacker_s")
            total = 0
            for _ in range(20):  # bounded: each call drains what is due
                cur.execute("SELECT callback.process_callbacks(100)")
                n = cur.fetchone()[0]
                total += n
                if n == 0 and receiver.count("/drain") >= 5:
                    break
    finally:
        conn.close()
    assert receiver.count("/drain") == 5, "drained %d, process_callbacks attempted %d" % (
        receiver.count("/drain"), total)
    assert safe_query(c, "SELECT count(*) FROM callback.callback_queue q "
                         "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
                         " WHERE e.name = 'sp_drain' AND q.status = 'delivered'",
                      dbname=DRAIN_DB)[0][0] == 5
    assert_not_hijacked(c, DRAIN_DB)


def test_extension_refuses_a_callback_schema_owned_by_another_role(cluster):
    """CREATE EXTENSION uses an existing schema named callback whoever owns
    it, and a schema's owner may replace any object in it: the install must
    refuse a schema that a non-superuser owns."""
    db = "pgcb_sp_squat"
    safe_query(cluster, 'CREATE DATABASE "%s"' % db, dbname="postgres", fetch=False)
    safe_query(cluster, "DO $d$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles "
                        "WHERE rolname = 'squatter') THEN CREATE ROLE squatter; END IF; END $d$",
               dbname=db, fetch=False)
    safe_query(cluster, "CREATE SCHEMA callback AUTHORIZATION squatter", dbname=db, fetch=False)
    with pytest.raises(psycopg2.Error) as err:
        safe_query(cluster, "CREATE EXTENSION pg_callback", dbname=db, fetch=False)
    assert err.value.pgcode == "42501", err.value
    assert 'schema "callback" is owned by role "squatter"' in str(err.value), err.value
    assert safe_query(cluster, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_callback'",
                      dbname=db)[0][0] == 0

    # given to a superuser, the same schema is accepted
    safe_query(cluster, "ALTER SCHEMA callback OWNER TO postgres", dbname=db, fetch=False)
    safe_query(cluster, "CREATE EXTENSION pg_callback", dbname=db, fetch=False)
    assert safe_query(cluster, "SELECT extversion FROM pg_extension WHERE extname = 'pg_callback'",
                      dbname=db)[0][0] == "1.1"
