"""End-to-end: one launcher serves every database where pg_callback is
installed (issue 11, part 1).

Two real clusters of this module's own, with callback.database_name empty
(every database) and a real receiver on loopback, one path per database:

- three databases, each with its own endpoint, table and trigger, receive
  exactly their own events: at the receiver, the webhook-ids on a
  database's path are exactly the event ids of that database's queue
  (duplicates counted apart), and each body names its database;
- CREATE EXTENSION in a database while the server runs starts delivery
  there within 5 s, from the commit of CREATE EXTENSION to the first
  arrival;
- DROP DATABASE (no FORCE) of a served database returns within 2 s, and
  the other databases go on delivering;
- with callback.max_workers = 2 and three databases, callback_databases
  says which one waits (and the log says it once); after DROP EXTENSION in
  a served one its worker stops for good (no restart, one log line) and
  the waiting database gets the slot and delivers what it had queued;
- a database whose extension was there before the server started is found
  by the launcher's probe; callback.database_name filters at a reload; a
  template is never served, and a database made from it is found before
  any event; DROP + CREATE EXTENSION back to back never leaves a database
  without its worker.
"""

import time

import pytest

from conftest import record_figure
from receiver import Receiver
from cluster import running_cluster

CONF = {
    "shared_preload_libraries": "pg_callback",
    "cron.database_name": None,
    "callback.database_name": "",
    "max_worker_processes": 16,
}

TABLE_SQL = """
CREATE TABLE public.items (id int PRIMARY KEY, db text NOT NULL);
CREATE TRIGGER items_callback AFTER INSERT ON public.items
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('item');
"""


@pytest.fixture(scope="module")
def mc():
    """A cluster that serves every database (no filter)."""
    with running_cluster("databases", extra_conf=CONF, dbname="postgres",
                         required_extensions=(), optional_extensions=()) as c:
        yield c


@pytest.fixture(scope="module")
def capped():
    """The same, with room for two delivery workers only."""
    conf = dict(CONF, **{"callback.max_workers": 2})
    with running_cluster("dbcapped", extra_conf=conf, dbname="postgres",
                         required_extensions=(), optional_extensions=()) as c:
        yield c


@pytest.fixture(scope="module")
def rcv():
    r = Receiver(host="127.0.0.1", port=0).start()
    yield r
    r.stop()


def forget_connection(c, name):
    conn = c._conns.pop(name, None)
    if conn is not None:
        conn.close()


def drop_db(c, name, force=True):
    forget_connection(c, name)
    c.execute('DROP DATABASE IF EXISTS "%s"%s' % (name, " WITH (FORCE)" if force else ""),
              dbname="postgres")


def create_db(c, name):
    drop_db(c, name)
    c.execute('CREATE DATABASE "%s"' % name, dbname="postgres")


def install(c, name, rcv):
    """pg_callback, an endpoint for item.* at /<name>, a table with the trigger.
    Returns the time CREATE EXTENSION had committed (time.monotonic())."""
    c.execute("CREATE EXTENSION pg_callback", dbname=name)
    committed = time.monotonic()
    c.execute("SELECT callback.create_endpoint(name => %s, url => %s, event_types => '{item.*}')",
              (name + "_ep", rcv.url("/" + name)), dbname=name)
    c.execute(TABLE_SQL, dbname=name)
    return committed


def insert(c, name, first, last):
    c.execute("INSERT INTO public.items SELECT g, %s FROM generate_series(%s, %s) g",
              (name, first, last), dbname=name)


def view_from(c, db):
    return {r[0]: (r[1], r[2], r[3]) for r in c.query(
        "SELECT database, state, worker_pid, detail FROM callback.callback_databases",
        dbname=db)}


def workers_by_db(c, db):
    """callback_worker_stats, read from db: [(database, pid)]."""
    return sorted(c.query("SELECT database, pid FROM callback.callback_worker_stats", dbname=db))


def account(c, name, rcv):
    """The webhook-ids that arrived on /<name> are exactly the event ids of
    name's queue; every body names name.  Returns (events, duplicates)."""
    expected = {"msg_" + r[0].replace("-", "") for r in c.query(
        "SELECT event_id::text FROM callback.callback_queue", dbname=name)}
    reqs = rcv.requests("/" + name)
    got = [r.headers.get("webhook-id") for r in reqs]
    assert set(got) == expected, "database %s: %d ids arrived, %d queued, %d foreign, %d missing" % (
        name, len(set(got)), len(expected), len(set(got) - expected), len(expected - set(got)))
    for r in reqs:
        assert r.json()["data"]["new"]["db"] == name, "a body of %s arrived at /%s" % (r.json(), name)
    return len(expected), len(got) - len(set(got))


def wait_arrivals(c, rcv, name, n, timeout=30):
    c.wait_until(lambda: len({r.headers.get("webhook-id") for r in rcv.requests("/" + name)}) >= n,
                 timeout=timeout, what="%d distinct events at /%s" % (n, name))


def log_count(c, text):
    return c.log_text().count(text)


# ------------------------------------------------------------------ tests

THREE = ["app_a", "app_b", "app_c"]


@pytest.fixture(scope="module")
def three(mc, rcv):
    """Three served databases, kept for the module: the tests after the
    first add and drop databases while these run."""
    for name in THREE:
        create_db(mc, name)
        install(mc, name, rcv)
    yield THREE
    for name in THREE:
        drop_db(mc, name)


def still_delivering(c, rcv, names, start):
    """Ten more events in each of names arrive (ids from start)."""
    for name in names:
        have = len({r.headers.get("webhook-id") for r in rcv.requests("/" + name)})
        insert(c, name, start, start + 9)
        wait_arrivals(c, rcv, name, have + 10)


def test_three_databases_receive_exactly_their_own_events(mc, rcv, three):
    names = three
    sizes = {"app_a": 300, "app_b": 200, "app_c": 100}
    for name in names:
        insert(mc, name, 1, sizes[name])
    for name in names:
        wait_arrivals(mc, rcv, name, sizes[name])
    for name in names:
        mc.wait_until(lambda: mc.scalar(
            "SELECT count(*) FROM callback.callback_queue WHERE status <> 'delivered'",
            dbname=name) == 0, what="queue of %s delivered" % name)
    total_dups = 0
    for name in names:
        events, dups = account(mc, name, rcv)
        assert events == sizes[name]
        total_dups += dups
    paths = {r.path for r in rcv.requests()}
    assert paths <= {"/" + n for n in names}, paths

    # one worker per database, each named in callback_worker_stats, and
    # the same from any of the databases
    for name in names:
        workers = workers_by_db(mc, name)
        assert [w[0] for w in workers] == names, workers
        assert len({w[1] for w in workers}) == 3
    view = view_from(mc, "app_a")
    assert {n: view[n][0] for n in names} == {n: "served" for n in names}, view
    assert {w[1] for w in workers_by_db(mc, "app_a")} == {view[n][1] for n in names}
    record_figure("databases: 3 databases, %d events, each at its own endpoint only; "
                  "duplicates %d" % (sum(sizes.values()), total_dups))


def test_create_extension_while_running_starts_delivery_within_5s(mc, rcv, three):
    assert {k: v[0] for k, v in view_from(mc, "app_a").items()} == \
        {n: "served" for n in three}
    create_db(mc, "app_d")
    try:
        # the launcher has seen the database (and probed it: no extension)
        # before the extension comes
        time_probed = time.monotonic()
        mc.wait_until(lambda: "pg_callback probe" not in {
            r[0] for r in mc.query("SELECT backend_type FROM pg_stat_activity", dbname="postgres")},
            what="no probe running")
        committed = install(mc, "app_d", rcv)
        # served before any event (the commit of CREATE EXTENSION told the
        # launcher; a probe would come only after minutes)
        mc.wait_until(lambda: view_from(mc, "app_d").get("app_d", (None,))[0] == "served",
                      timeout=5, interval=0.02, what="app_d served")
        served = time.monotonic() - committed
        insert(mc, "app_d", 1, 10)
        wait_arrivals(mc, rcv, "app_d", 10, timeout=15)
        first = min(r.monotonic for r in rcv.requests("/app_d"))
        delay = first - committed
        record_figure("databases: CREATE EXTENSION commit -> served %.3f s, -> first arrival "
                      "%.3f s (database made %.1f s before)" % (served, delay, committed - time_probed))
        assert delay <= 5.0, "first event arrived %.2f s after CREATE EXTENSION" % delay
        assert account(mc, "app_d", rcv)[0] == 10
        assert view_from(mc, "app_d")["app_d"][0] == "served"
        still_delivering(mc, rcv, three, 1001)
        for name in three + ["app_d"]:
            account(mc, name, rcv)
    finally:
        drop_db(mc, "app_d")


def test_drop_database_of_a_served_database_is_immediate(mc, rcv, three):
    for name in ("app_e", "app_f"):
        create_db(mc, name)
        install(mc, name, rcv)
    try:
        mc.wait_until(lambda: {k: v[0] for k, v in view_from(mc, "app_f").items()
                               if k in ("app_e", "app_f")} == {"app_e": "served", "app_f": "served"},
                      what="app_e and app_f served")
        insert(mc, "app_e", 1, 5)
        wait_arrivals(mc, rcv, "app_e", 5)
        worker_e = view_from(mc, "app_f")["app_e"][1]
        assert worker_e

        forget_connection(mc, "app_e")
        t0 = time.monotonic()
        mc.execute('DROP DATABASE "app_e"', dbname="postgres")   # no FORCE
        took = time.monotonic() - t0
        record_figure("databases: DROP DATABASE of a served database took %.3f s" % took)
        assert took < 2.0, "DROP DATABASE took %.2f s" % took

        # the others go on; the dropped one is forgotten, and not restarted
        insert(mc, "app_f", 1, 20)
        wait_arrivals(mc, rcv, "app_f", 20)
        assert account(mc, "app_f", rcv)[0] == 20
        still_delivering(mc, rcv, three, 2001)
        for name in three:
            account(mc, name, rcv)
        mc.wait_until(lambda: "app_e" not in view_from(mc, "app_f") and None not in view_from(mc, "app_f"),
                      what="app_e gone from callback_databases")
        assert worker_e not in [w[1] for w in workers_by_db(mc, "app_f")]
        assert "app_e" not in [w[0] for w in workers_by_db(mc, "app_f")]
        assert log_count(mc, 'installed in database "app_e"') == 0, mc.log_tail()
    finally:
        for name in ("app_e", "app_f"):
            drop_db(mc, name)


def test_max_workers_waiting_database_gets_the_freed_slot(capped, rcv):
    c = capped
    names = ["cap_1", "cap_2", "cap_3"]
    for name in names:
        create_db(c, name)
    try:
        for name in names:
            install(c, name, rcv)
            # in this order: the third is the one that waits
            c.wait_until(lambda: name in view_from(c, name), what="%s known to the launcher" % name)

        def settled():
            v = {k: s[0] for k, s in view_from(c, "cap_1").items()}
            return v if sorted(v.values()) == ["served", "served", "waiting"] else None
        states = c.wait_until(settled, what="two served, one waiting")
        assert states == {"cap_1": "served", "cap_2": "served", "cap_3": "waiting"}, states
        detail = view_from(c, "cap_1")["cap_3"][2]
        assert "callback.max_workers" in detail, detail
        waits_line = 'database "cap_3" waits for a delivery worker'
        c.wait_until(lambda: log_count(c, waits_line) == 1, what="the log says cap_3 waits")
        assert len(workers_by_db(c, "cap_1")) == 2

        # cap_3's events wait in its queue
        insert(c, "cap_3", 1, 30)
        insert(c, "cap_1", 1, 5)
        wait_arrivals(c, rcv, "cap_1", 5)
        assert rcv.count("/cap_3") == 0
        assert c.scalar("SELECT count(*) FROM callback.callback_queue WHERE status = 'pending'",
                        dbname="cap_3") == 30

        # DROP EXTENSION in a served database: its worker stops for good, and
        # cap_3 gets the slot
        c.execute("DROP EXTENSION pg_callback CASCADE", dbname="cap_1")
        wait_arrivals(c, rcv, "cap_3", 30, timeout=15)
        assert account(c, "cap_3", rcv)[0] == 30
        v = view_from(c, "cap_2")
        assert {k: s[0] for k, s in v.items()} == {"cap_2": "served", "cap_3": "served"}, v
        assert [w[0] for w in workers_by_db(c, "cap_2")] == ["cap_2", "cap_3"]
        assert log_count(c, 'not installed in database "cap_1"; its worker stops') == 1
        assert log_count(c, 'worker started in database "cap_1"') == 1
        assert log_count(c, waits_line) == 1
        assert log_count(c, 'database "cap_3" has a delivery worker now') == 1

        # created again: known again, and now it is cap_1 that waits
        c.execute("CREATE EXTENSION pg_callback", dbname="cap_1")
        c.wait_until(lambda: view_from(c, "cap_2").get("cap_1", (None,))[0] == "waiting",
                     what="cap_1 waiting again")
        assert log_count(c, 'worker started in database "cap_1"') == 1
    finally:
        for name in names:
            drop_db(c, name)


def test_extension_installed_before_start_is_found_by_a_probe(mc, rcv):
    """No commit tells the launcher after a restart: its probes find the
    database, and the events queued while the server was down go out."""
    create_db(mc, "app_g")
    try:
        install(mc, "app_g", rcv)
        mc.wait_until(lambda: view_from(mc, "app_g").get("app_g", (None,))[0] == "served",
                      what="app_g served")
        mc.stop()
        mc.start()
        mc.wait_until(lambda: view_from(mc, "app_g").get("app_g", (None,))[0] == "served",
                      timeout=10, what="app_g served again after a restart")
        insert(mc, "app_g", 1, 5)
        wait_arrivals(mc, rcv, "app_g", 5)
        assert log_count(mc, 'worker started in database "app_g"') == 2
    finally:
        drop_db(mc, "app_g")


def test_database_name_filter_applies_at_reload(mc, rcv):
    names = ["app_h", "app_i"]
    for name in names:
        create_db(mc, name)
        install(mc, name, rcv)
    try:
        mc.wait_until(lambda: {k: v[0] for k, v in view_from(mc, "app_h").items()
                               if k in names} == {"app_h": "served", "app_i": "served"},
                      what="both served")
        mc.set_conf(**{"callback.database_name": "app_h"})
        mc.reload()
        mc.wait_until(lambda: view_from(mc, "app_h")["app_i"][0] == "excluded" and
                      [w[0] for w in workers_by_db(mc, "app_h")] == ["app_h"],
                      what="app_i excluded, its worker stopped")
        assert "callback.database_name" in view_from(mc, "app_h")["app_i"][2]
        insert(mc, "app_i", 1, 3)
        insert(mc, "app_h", 1, 3)
        wait_arrivals(mc, rcv, "app_h", 3)
        assert rcv.count("/app_i") == 0
        mc.set_conf(**{"callback.database_name": ""})
        mc.reload()
        wait_arrivals(mc, rcv, "app_i", 3)
        assert log_count(mc, 'installed in database "app_i", which callback.database_name leaves out') == 1
    finally:
        mc.set_conf(**{"callback.database_name": ""})
        mc.reload()
        for name in names:
            drop_db(mc, name)


def test_drop_and_create_extension_at_once_keeps_delivering(mc, rcv):
    """DROP EXTENSION and CREATE EXTENSION back to back, five times: the
    worker may see the extension gone just before it comes back; it must
    then go on (or be started again), never stop for good."""
    create_db(mc, "app_j")
    try:
        install(mc, "app_j", rcv)
        for round_ in range(5):
            path = "app_j"
            mc.execute("DROP EXTENSION pg_callback CASCADE; DROP TABLE public.items", dbname=path)
            committed = install(mc, path, rcv)
            insert(mc, path, round_ * 10 + 1, round_ * 10 + 10)
            wait_arrivals(mc, rcv, path, (round_ + 1) * 10, timeout=10)
            last = max(r.monotonic for r in rcv.requests("/" + path))
            assert last - committed <= 5.0, "round %d: %.2f s" % (round_, last - committed)
        assert view_from(mc, "app_j")["app_j"][0] == "served"
        assert len([w for w in workers_by_db(mc, "app_j") if w[0] == "app_j"]) == 1
    finally:
        drop_db(mc, "app_j")


def test_template_is_not_served_and_its_copy_is_found(mc, rcv):
    """A template with the extension is left out (a session in it would make
    CREATE DATABASE from it fail); a database made from it has the
    extension without any CREATE EXTENSION, and the launcher's probe of the
    new database finds it before any event is queued."""
    create_db(mc, "tmpl_src")
    try:
        install(mc, "tmpl_src", rcv)
        mc.wait_until(lambda: view_from(mc, "tmpl_src").get("tmpl_src", (None,))[0] == "served",
                      what="tmpl_src served")
        forget_connection(mc, "tmpl_src")
        mc.execute('ALTER DATABASE "tmpl_src" IS_TEMPLATE true', dbname="postgres")
        mc.wait_until(lambda: "tmpl_src" not in [r[0] for r in mc.query(
            "SELECT datname FROM pg_stat_activity WHERE backend_type = 'pg_callback worker'",
            dbname="postgres")], what="tmpl_src's worker gone")
        t0 = time.monotonic()
        mc.execute('CREATE DATABASE "app_k" TEMPLATE "tmpl_src"', dbname="postgres")
        made = time.monotonic() - t0
        mc.wait_until(lambda: view_from(mc, "app_k").get("app_k", (None,))[0] == "served",
                      timeout=5, interval=0.05, what="app_k served without CREATE EXTENSION")
        found = time.monotonic() - t0
        v = view_from(mc, "app_k")
        assert v["tmpl_src"][0] == "excluded" and "template" in v["tmpl_src"][2], v
        mc.execute("SELECT callback.alter_endpoint('tmpl_src_ep', url => %s)",
                   (rcv.url("/app_k"),), dbname="app_k")
        insert(mc, "app_k", 1, 7)
        wait_arrivals(mc, rcv, "app_k", 7)
        assert rcv.count("/tmpl_src") == 0
        assert log_count(mc, 'installed in database "tmpl_src", which is a template') == 1
        record_figure("databases: CREATE DATABASE from a template with pg_callback took %.2f s; "
                      "served %.2f s after it started" % (made, found))
    finally:
        drop_db(mc, "app_k")
        mc.execute('ALTER DATABASE "tmpl_src" IS_TEMPLATE false', dbname="postgres")
        drop_db(mc, "tmpl_src")
