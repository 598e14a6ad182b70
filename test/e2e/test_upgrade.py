"""End-to-end: upgrading a database from pg_callback 1.0 in place.

A real cluster with this build's library preloaded; the database starts at
1.0 (`CREATE EXTENSION pg_callback VERSION '1.0'`, the shipped script), has
events queued, and is moved on with `ALTER EXTENSION pg_callback UPDATE`.

- the library works with the 1.0 schema until the update, or refuses with a
  message saying to run ALTER EXTENSION ... UPDATE (src/version.h says
  which; both ends of the check are driven here);
- after the update, the queued events are delivered with their webhook-ids;
- the upgraded schema equals a fresh install's, object by object (catalog
  queries: pg_dump --schema-only shows only CREATE EXTENSION for an
  extension's objects).
"""

import difflib
import os
import re
import time

import psycopg2
import pytest

from cluster import running_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONF = {"shared_preload_libraries": "pg_callback", "cron.database_name": None}


def _read(path, pattern):
    with open(os.path.join(ROOT, path)) as f:
        return re.search(pattern, f.read(), re.M).group(1)


DEFAULT_VERSION = _read("pg_callback.control", r"^default_version\s*=\s*'([^']+)'")
SCHEMA_MIN = _read("src/version.h", r'^#define PGCB_SCHEMA_MIN_VERSION "([^"]+)"')


def vnum(v):
    major, minor = v.split(".")
    return int(major), int(minor)


@pytest.fixture(scope="module")
def cluster():
    with running_cluster("upgrade", extra_conf=CONF, required_extensions=(),
                         optional_extensions=()) as c:
        c.execute("CREATE EXTENSION pg_callback VERSION '1.0'")
        yield c


def extversion(cluster, dbname=None):
    return cluster.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_callback'",
                          dbname=dbname)


def webhook_id(event_id):
    return "msg_" + str(event_id).replace("-", "")


def queued_ids(cluster, endpoint):
    return {webhook_id(r[0]) for r in cluster.query(
        "SELECT q.event_id FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = %s AND q.status = 'pending'", (endpoint,))}


def wait_log(cluster, text, since):
    return cluster.wait_until(lambda: text in cluster.log_text()[since:], timeout=30,
                              what="server log line %r" % text)


def set_extversion(cluster, v):
    # Only a test does this: it plays a database on a version this library
    # was not built for, to drive both ends of the check.
    cluster.execute("UPDATE pg_catalog.pg_extension SET extversion = %s "
                    " WHERE extname = 'pg_callback'", (v,))
    cluster.execute("SELECT callback.wake_worker()")


def test_library_and_schema_versions(cluster, receiver):
    """Before the update: the library delivers from the 1.0 schema if it
    supports it (src/version.h), or waits saying what to run; a schema it
    cannot use (older than it supports, or newer than it is) makes the worker
    wait and process_callbacks() refuse, each with a message naming the fix."""
    assert extversion(cluster) == "1.0"
    cluster.execute("SELECT callback.create_endpoint('up_live', %s, event_types => '{live.*}')",
                    (receiver.url("/live"),))

    log_at = len(cluster.log_text())
    cluster.execute("SELECT callback.enqueue('live.a', '{}') FROM generate_series(1, 3)")
    if vnum(SCHEMA_MIN) <= vnum("1.0"):
        cluster.wait_until(lambda: receiver.count("/live") == 3,
                           what="3 deliveries from the 1.0 schema")
    else:
        wait_log(cluster, "cannot use the extension at version 1.0", log_at)
        wait_log(cluster, "Run ALTER EXTENSION pg_callback UPDATE", log_at)
        assert receiver.count("/live") == 0
        return  # the update test below shows these 3 delivered afterwards

    for fake, hint in (("0.9", "Run ALTER EXTENSION pg_callback UPDATE"),
                       ("9.9", "Install pg_callback 9.9 or later")):
        log_at = len(cluster.log_text())
        set_extversion(cluster, fake)
        wait_log(cluster, "pg_callback %s cannot use the extension at version %s in this database"
                 % (DEFAULT_VERSION, fake), log_at)
        wait_log(cluster, hint, log_at)
        assert cluster.scalar("SELECT state FROM callback.callback_worker_stats") == \
            "waiting for ALTER EXTENSION UPDATE"
        cluster.execute("SELECT callback.enqueue('live.b', '{}')")
        with pytest.raises(psycopg2.Error) as err:
            cluster.execute("SELECT callback.process_callbacks(10)")
        assert err.value.pgcode == "55000"
        assert hint in (err.value.diag.message_hint or ""), err.value.diag.message_hint

        n = receiver.count("/live")
        back_at = time.time()
        set_extversion(cluster, "1.0")
        wait_log(cluster, "the extension is now at version 1.0; delivering", log_at)
        cluster.wait_until(lambda: receiver.count("/live") == n + 1,
                           what="the event queued while the schema was refused")
        assert receiver.requests("/live")[-1].received_at >= back_at, \
            "delivered while the worker said it was waiting"


def test_update_delivers_queue_and_equals_fresh_install(cluster, receiver):
    assert extversion(cluster) == "1.0"
    cluster.execute("SELECT callback.create_endpoint('up_held', %s, event_types => '{held.*}')",
                    (receiver.url("/held"),))
    cluster.execute("SELECT callback.pause_endpoint('up_held')")
    cluster.execute("SELECT callback.enqueue('held.x', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 25) g")
    queued = queued_ids(cluster, "up_held")
    assert len(queued) == 25
    # what the previous test queued and the library may still owe comes here
    cluster.execute("SELECT callback.alter_endpoint('up_live', url => %s)",
                    (receiver.url("/live"),))

    cluster.execute("ALTER EXTENSION pg_callback UPDATE")
    assert extversion(cluster) == DEFAULT_VERSION

    # (a) the same objects, definitions, privileges and dependencies as a
    # fresh install of the default version
    cluster.execute("CREATE DATABASE fresh", dbname="postgres")
    cluster.execute("CREATE EXTENSION pg_callback", dbname="fresh")
    upgraded, fresh = schema_snapshot(cluster), schema_snapshot(cluster, "fresh")
    assert len(fresh) > 100, "the snapshot sees too little: %d lines" % len(fresh)
    diff = list(difflib.unified_diff(fresh, upgraded, "fresh install", "1.0 + UPDATE",
                                     lineterm="", n=1))
    assert not diff, "upgraded schema differs from a fresh install:\n" + "\n".join(diff[:200])

    # (b) the events queued on 1.0 are delivered after the update
    cluster.execute("SELECT callback.resume_endpoint('up_held')")
    cluster.wait_until(lambda: receiver.count("/held") >= 25, timeout=60,
                       what="25 events queued before the update")
    got = [r.headers["webhook-id"] for r in receiver.requests("/held")]
    assert sorted(got) == sorted(queued)
    if vnum(SCHEMA_MIN) > vnum("1.0"):
        cluster.wait_until(lambda: receiver.count("/live") == 3,
                           what="the 3 events that waited for the update")


# One line per fact about the extension's objects, by name (never by oid).
SNAPSHOT_SQL = r"""
WITH ext AS (
    SELECT * FROM pg_extension WHERE extname = 'pg_callback'
), mem AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), rel AS (
    SELECT c.* FROM pg_class c JOIN mem ON mem.classid = 'pg_class'::regclass AND mem.objid = c.oid
), fn AS (
    SELECT p.* FROM pg_proc p JOIN mem ON mem.classid = 'pg_proc'::regclass AND mem.objid = p.oid
)
SELECT 'extension ' || extversion || ' relocatable=' || extrelocatable
       || ' schema=' || extnamespace::regnamespace
       || ' config=' || coalesce(extconfig::regclass[]::text, '')
       || ' conditions=' || coalesce(extcondition::text, '') FROM ext
UNION ALL
SELECT 'schema ' || nspname || ' owner=' || nspowner::regrole || ' acl=' || coalesce(nspacl::text, '')
  FROM pg_namespace WHERE nspname = 'callback'
UNION ALL
SELECT 'member ' || (pg_identify_object(classid, objid, 0)).type || ' '
       || (pg_identify_object(classid, objid, 0)).identity FROM mem
UNION ALL
SELECT 'function ' || oid::regprocedure || ' acl=' || coalesce(proacl::text, '')
       || ' comment=' || coalesce(obj_description(oid, 'pg_proc'), '') || E'\n'
       || CASE WHEN prokind = 'a' THEN '' ELSE pg_get_functiondef(oid) END FROM fn
UNION ALL
SELECT 'aggregate ' || a.aggfnoid::regprocedure || ' sfunc=' || a.aggtransfn::regproc
       || ' stype=' || a.aggtranstype::regtype || ' init=' || coalesce(a.agginitval, '')
       || ' final=' || a.aggfinalfn::regproc || ' combine=' || a.aggcombinefn::regproc
  FROM pg_aggregate a JOIN fn ON fn.oid = a.aggfnoid
UNION ALL
SELECT 'relation ' || oid::regclass || ' kind=' || relkind::text || ' persistence=' || relpersistence::text
       || ' owner=' || relowner::regrole || ' acl=' || coalesce(relacl::text, '')
       || ' options=' || coalesce(reloptions::text, '') || ' rls=' || relrowsecurity
       || ' comment=' || coalesce(obj_description(oid, 'pg_class'), '')
       || CASE WHEN relkind = 'v' THEN E'\n' || pg_get_viewdef(oid) ELSE '' END FROM rel
UNION ALL
SELECT 'column ' || a.attrelid::regclass || ' #' || a.attnum || ' ' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
       || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
       || ' collation=' || a.attcollation::regcollation || ' acl=' || coalesce(a.attacl::text, '')
       || ' comment=' || coalesce(col_description(a.attrelid, a.attnum), '')
  FROM pg_attribute a JOIN rel ON rel.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN rel ON rel.oid = c.conrelid
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rel ON rel.oid = i.indrelid
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN rel ON rel.oid = t.tgrelid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.polrelid::regclass || ' ' || p.polname || ' ' || p.polcmd::text
       || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
  FROM pg_policy p JOIN rel ON rel.oid = p.polrelid
UNION ALL
SELECT 'sequence ' || s.seqrelid::regclass || ' ' || s.seqtypid::regtype || ' start=' || s.seqstart
       || ' inc=' || s.seqincrement || ' max=' || s.seqmax || ' min=' || s.seqmin
       || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
  FROM pg_sequence s JOIN rel ON rel.oid = s.seqrelid
UNION ALL
SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text || ' acl=' || coalesce(t.typacl::text, '')
       || ' labels=' || coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                    FROM pg_enum e WHERE e.enumtypid = t.oid), '')
  FROM pg_type t JOIN mem ON mem.classid = 'pg_type'::regclass AND mem.objid = t.oid
UNION ALL
SELECT 'initprivs ' || (pg_identify_object(ip.classoid, ip.objoid, ip.objsubid)).identity
       || ' ' || ip.privtype::text || ' ' || ip.initprivs::text
  FROM pg_init_privs ip
 WHERE (pg_identify_object(ip.classoid, ip.objoid, ip.objsubid)).identity LIKE '%callback%'
UNION ALL
SELECT 'depends ' || (pg_identify_object(d.classid, d.objid, d.objsubid)).type || ' '
       || (pg_identify_object(d.classid, d.objid, d.objsubid)).identity || ' on '
       || (pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid)).type || ' '
       || coalesce((pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid)).identity, '')
       || ' ' || d.deptype::text
  FROM pg_depend d
 WHERE d.classid <> 0 AND d.refclassid <> 'pg_extension'::regclass
   AND ((pg_identify_object(d.classid, d.objid, d.objsubid)).identity LIKE '%callback%'
        OR (pg_identify_object(d.refclassid, d.refobjid, d.refobjsubid)).identity LIKE '%callback%')
"""


def schema_snapshot(cluster, dbname=None):
    rows = cluster.query(SNAPSHOT_SQL, dbname=dbname)
    lines = []
    for (text,) in rows:
        # toast tables are named after an oid
        text = re.sub(r"pg_toast_[0-9]+", "pg_toast_<oid>", text or "<null>")
        lines.extend(text.splitlines())
        lines.append("")
    # sort by fact (a function's definition stays with it)
    facts = "\n".join(lines).split("\n\n")
    return [line for fact in sorted(facts) for line in fact.splitlines() + [""]]
