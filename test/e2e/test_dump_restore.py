"""End-to-end: pg_dump / pg_restore keep the endpoints and the undelivered
work, and the restored database delivers exactly the events that were not
delivered at dump time, with their original webhook-ids.

Two real clusters: the source (its worker delivers from callback_test) and
the target (its worker delivers from the database "restored", made and
dropped by each test).  A real receiver on loopback counts every request.
The dumps are written into the source cluster's temporary directory.
"""

import os
import subprocess

import pytest

from cluster import PG_BIN, running_cluster

# pg_cron is left out: its own extension refuses a restore outside
# cron.database_name, which is pg_cron's business, not ours.
CONF = {"shared_preload_libraries": "pg_callback", "cron.database_name": None}
TARGET_DB = "restored"


@pytest.fixture(scope="module")
def source():
    with running_cluster("dumpsrc", extra_conf=CONF, optional_extensions=()) as c:
        yield c


@pytest.fixture(scope="module")
def target():
    conf = dict(CONF, **{"callback.database_name": TARGET_DB})
    with running_cluster("dumpdst", extra_conf=conf, dbname="postgres",
                         required_extensions=(), optional_extensions=()) as c:
        yield c


@pytest.fixture
def target_db(target):
    """An empty database "restored" in the target cluster, dropped afterwards."""
    target.execute('DROP DATABASE IF EXISTS "%s"' % TARGET_DB)
    target.execute('CREATE DATABASE "%s"' % TARGET_DB)
    yield TARGET_DB
    target.close_connections()
    target.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % TARGET_DB)


@pytest.fixture
def source_endpoints(source):
    """Names of endpoints made in the source; dropped (force) afterwards, so
    that each test dumps only its own."""
    made = []
    yield made
    for name in made:
        source.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
    source.execute("DELETE FROM callback.callback_queue")


def tool(cluster, name, *args, check=True):
    """Run a PostgreSQL client program against cluster (as postgres when
    root); returns the CompletedProcess (stdout and stderr together)."""
    p = cluster._run([os.path.join(PG_BIN, name), "-h", cluster.socket_dir,
                      "-p", str(cluster.port), "-U", "postgres"] + list(args), check=False)
    if check:
        assert p.returncode == 0, "%s %s failed (exit %d):\n%s" % (
            name, " ".join(args), p.returncode, p.stdout)
    return p


def dump(source, fmt, *extra):
    """pg_dump of callback_test in format fmt ('custom' or 'plain'); the path."""
    path = os.path.join(source.base_dir, "dump-%s%s.%s" % (
        fmt, "".join(e.strip("-") for e in extra), "fc" if fmt == "custom" else "sql"))
    tool(source, "pg_dump", "-F", fmt[0], "-f", path, *extra, source.dbname)
    return path


def restore(target, path, *extra, check=True):
    """Restore a dump into TARGET_DB: pg_restore for custom, psql for plain.
    Stops at the first error; returns the CompletedProcess."""
    if path.endswith(".fc"):
        return tool(target, "pg_restore", "--exit-on-error", "-d", TARGET_DB, *extra, path,
                    check=check)
    return tool(target, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", TARGET_DB,
                *extra, "-f", path, check=check)


def webhook_id(event_id):
    return "msg_" + str(event_id).replace("-", "")


def ids_received(receiver, since=0):
    return [r.headers["webhook-id"] for r in receiver.requests()[since:]]


def undelivered(cluster, endpoint, dbname=None):
    return {webhook_id(r[0]) for r in cluster.query(
        "SELECT q.event_id FROM callback.callback_queue q "
        "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
        " WHERE e.name = %s AND q.status IN ('pending', 'sending')", (endpoint,), dbname=dbname)}


def status_counts(cluster, dbname=None):
    return dict(cluster.query("SELECT status::text, count(*) FROM callback.callback_queue "
                              "GROUP BY 1", dbname=dbname))


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_restore_delivers_what_was_pending_and_nothing_delivered(
        fmt, source, target, target_db, receiver, source_endpoints):
    ep, dead_ep = "dr_%s" % fmt, "dr_dead_%s" % fmt
    source_endpoints += [ep, dead_ep]
    source.execute("SELECT callback.create_endpoint(%s, %s, event_types => '{dr.*}')",
                   (ep, receiver.url("/live")))
    source.execute("SELECT callback.create_endpoint(%s, %s, event_types => '{gone.*}')",
                   (dead_ep, receiver.url("/dead")))

    # 20 events delivered by the source, and written back as delivered
    source.execute("SELECT callback.enqueue('dr.before', jsonb_build_object('i', g)) "
                   "  FROM generate_series(1, 20) g")
    source.wait_until(lambda: status_counts(source).get("delivered") == 20
                      and receiver.count("/live") == 20,
                      what="20 deliveries in the source, written back")
    delivered_before = set(ids_received(receiver))
    assert len(delivered_before) == 20

    # one dead letter (a 400 goes straight to the dead letters)
    receiver.script("/dead", [400])
    source.execute("SELECT callback.enqueue('gone.x', '{}')")
    source.wait_until(lambda: status_counts(source).get("dead") == 1, what="a dead letter")
    dead_id = webhook_id(source.scalar("SELECT event_id FROM callback.callback_queue "
                                       " WHERE status = 'dead'"))

    # 30 more held back, one of them claimed (in flight) at dump time
    source.execute("SELECT callback.pause_endpoint(%s)", (ep,))
    source.execute("SELECT callback.enqueue('dr.after', jsonb_build_object('i', g)) "
                   "  FROM generate_series(1, 30) g")
    source.execute("UPDATE callback.callback_queue SET status = 'sending', claimed_by = 5, "
                   "       lease_expires_at = now() + interval '3 seconds' "
                   " WHERE id = (SELECT max(id) FROM callback.callback_queue)")
    pending = undelivered(source, ep)
    assert len(pending) == 30 and not pending & delivered_before
    endpoints_src = source.query("SELECT id, name, url, secret, paused FROM "
                                 "callback.callback_endpoints ORDER BY id")
    last_id_src = source.scalar("SELECT max(id) FROM callback.callback_queue")
    n_before = receiver.count()

    path = dump(source, fmt)
    # the claimed row is in the dump as it was: 'sending', with its lease
    text = tool(source, "pg_restore", "-f", "-", path).stdout if fmt == "custom" else \
        open(path).read()
    claimed = [line for line in text.splitlines() if line.startswith("%d\t" % last_id_src)]
    assert len(claimed) == 1 and "\tsending\t" in claimed[0], claimed
    p = restore(target, path)
    assert "ERROR" not in p.stdout, p.stdout

    # what came back: the endpoints with their secrets, the undelivered work
    # and the dead letter; no delivered history
    assert target.query("SELECT id, name, url, secret, paused FROM callback.callback_endpoints "
                        "ORDER BY id", dbname=target_db) == endpoints_src
    counts = status_counts(target, target_db)
    assert counts.get("pending", 0) + counts.get("sending", 0) == 30, counts
    assert counts.get("dead") == 1 and "delivered" not in counts, counts
    assert undelivered(target, ep, target_db) == pending

    target.execute("SELECT callback.resume_endpoint(%s)", (ep,), dbname=target_db)
    target.wait_until(lambda: status_counts(target, target_db).get("delivered") == 30,
                      timeout=60, what="the restored database delivering the 30 pending events")
    got = ids_received(receiver, n_before)
    assert sorted(got) == sorted(pending), (
        "delivered by the restored database: %d requests, %d distinct; missing %r; extra %r"
        % (len(got), len(set(got)), pending - set(got), set(got) - pending))
    assert not set(got) & delivered_before

    # the dead letter is still there to redrive, with its webhook-id
    assert target.scalar("SELECT callback.redrive(%s)", (dead_ep,), dbname=target_db) == 1
    target.wait_until(lambda: dead_id in ids_received(receiver, n_before),
                      what="the redriven dead letter")

    # ids continue after the restored ones
    target.execute("SELECT callback.enqueue('dr.new', '{}')", dbname=target_db)
    assert target.scalar("SELECT max(id) FROM callback.callback_queue",
                         dbname=target_db) == last_id_src + 1


def test_schema_only_then_data_only(source, target, target_db, receiver, source_endpoints):
    source_endpoints.append("dr_parts")
    source.execute("SELECT callback.create_endpoint('dr_parts', %s, event_types => '{p.*}')",
                   (receiver.url("/parts"),))
    source.execute("SELECT callback.pause_endpoint('dr_parts')")
    source.execute("SELECT callback.enqueue('p.x', '{}') FROM generate_series(1, 10)")
    pending = undelivered(source, "dr_parts")

    # --schema-only: the extension, empty
    restore(target, dump(source, "custom", "--schema-only"))
    assert target.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_callback'",
                         dbname=target_db) is not None
    assert target.scalar("SELECT count(*) FROM callback.callback_endpoints",
                         dbname=target_db) == 0
    assert status_counts(target, target_db) == {}

    # --data-only into it: the rows go in without a duplicate-key error
    for fmt in ("custom", "plain"):
        data = dump(source, fmt, "--data-only")
        if fmt == "plain":
            # the same file again needs an empty extension: start over
            target.execute("DROP EXTENSION pg_callback", dbname=target_db)
            target.execute("CREATE EXTENSION pg_callback", dbname=target_db)
        p = restore(target, data)
        assert "ERROR" not in p.stdout, p.stdout
        assert target.scalar("SELECT count(*) FROM callback.callback_endpoints",
                             dbname=target_db) == 1
        assert undelivered(target, "dr_parts", target_db) == pending

    # once more into a database that already holds those rows: refused as a
    # whole (--single-transaction), nothing changed
    before = status_counts(target, target_db)
    p = restore(target, data, "--single-transaction", check=False)
    assert p.returncode != 0 and "duplicate key" in p.stdout, p.stdout
    assert status_counts(target, target_db) == before


def test_restore_into_database_with_extension(source, target, target_db, receiver,
                                              source_endpoints):
    """CREATE EXTENSION already run in the target (say, from template1, with
    an endpoint of its own).  A plain full restore stops at CREATE SCHEMA
    callback (the schema is the control file's, not a member of the
    extension, so pg_dump writes it); --clean --if-exists replaces the
    target's pg_callback with the dumped one, without an error."""
    source_endpoints.append("dr_pre")
    source.execute("SELECT callback.create_endpoint('dr_pre', %s, event_types => '{pre.*}')",
                   (receiver.url("/pre"),))
    source.execute("SELECT callback.pause_endpoint('dr_pre')")
    source.execute("SELECT callback.enqueue('pre.x', '{}') FROM generate_series(1, 5)")
    pending = undelivered(source, "dr_pre")

    for fmt in ("custom", "plain"):
        target.execute("DROP EXTENSION IF EXISTS pg_callback", dbname=target_db)
        target.execute("DROP SCHEMA IF EXISTS callback", dbname=target_db)
        target.execute("CREATE EXTENSION pg_callback", dbname=target_db)
        target.execute("SELECT callback.create_endpoint('local', 'http://127.0.0.1:1/')",
                       dbname=target_db)

        p = restore(target, dump(source, fmt), check=False)
        assert p.returncode != 0 and 'schema "callback" already exists' in p.stdout, p.stdout
        assert target.query("SELECT name FROM callback.callback_endpoints",
                            dbname=target_db) == [("local",)]

        if fmt == "custom":
            p = restore(target, dump(source, fmt), "--clean", "--if-exists")
        else:
            p = restore(target, dump(source, fmt, "--clean", "--if-exists"))
        assert "ERROR" not in p.stdout, p.stdout
        assert target.query("SELECT name FROM callback.callback_endpoints",
                            dbname=target_db) == [("dr_pre",)]
        assert undelivered(target, "dr_pre", target_db) == pending


def test_inbox_rows_survive_a_dump(source, target, target_db, receiver, source_endpoints):
    """callback.inbox: deliveries committed into callback_inbox and not yet
    moved by the worker at dump time are in the dump, and the restored
    database moves and delivers each of them once, with its webhook-id."""
    ep = "dr_inbox"
    source_endpoints.append(ep)
    source.execute("SELECT callback.create_endpoint(%s, %s, event_types => '{inbox.*}')",
                   (ep, receiver.url("/inbox")))
    # paused: the source never sends them (the dump carries the pause; the
    # target resumes)
    source.execute("SELECT callback.pause_endpoint(%s)", (ep,))
    # the worker's move takes this lock conditionally (src/inbox.c): held
    # here, nothing moves until we let go
    holder = source.connect(autocommit=False)
    try:
        holder.cursor().execute("LOCK TABLE callback.callback_inbox IN SHARE UPDATE EXCLUSIVE MODE")
        writer = source.connect()
        cur = writer.cursor()
        cur.execute("SET callback.inbox = on")
        cur.execute("SELECT callback.enqueue('inbox.x', jsonb_build_object('i', g)) "
                    "  FROM generate_series(1, 25) g")
        writer.close()
        waiting = {webhook_id(r[0]) for r in source.query(
            "SELECT event_id FROM callback.callback_inbox")}
        assert len(waiting) == 25
        assert source.scalar("SELECT count(*) FROM callback.callback_queue q "
                             "  JOIN callback.callback_endpoints e ON e.id = q.endpoint_id "
                             " WHERE e.name = %s", (ep,)) == 0
        path = dump(source, "custom", "--no-sync")
    finally:
        holder.rollback()
        holder.close()
    n_before = receiver.count()
    p = restore(target, path)
    assert "ERROR" not in p.stdout, p.stdout
    target.execute("SELECT callback.resume_endpoint(%s)", (ep,), dbname=target_db)

    target.wait_until(lambda: receiver.count("/inbox") >= 25
                      and target.scalar("SELECT count(*) FROM callback.callback_inbox",
                                        dbname=target_db) == 0,
                      timeout=60, what="the restored inbox moved and delivered")
    got = ids_received(receiver, n_before)
    assert sorted(got) == sorted(waiting), (
        "delivered by the restored database: %d requests; missing %r; extra %r"
        % (len(got), waiting - set(got), set(got) - waiting))
    # the source's worker moves them into its queue, paused, for the
    # fixture's drop_endpoint(force) to discard
    source.wait_until(lambda: source.scalar("SELECT count(*) FROM callback.callback_inbox") == 0,
                      what="the source's inbox moved")
