"""Events as logical messages, in C (bench/lib/message_emitter.c): built
into the bench's temporary directory, installed into a bench cluster as
the trigger of t_lmc, and checked in the WAL with pg_walinspect (the
messages are written at any wal_level, so part 2's cluster can run it).

The variant is the bench's, not pg_callback's: it measures what a business
write would pay if events were transactional logical messages (issue 10's
optional lever), with pg_callback's own routing, body and event id, and
nothing reading the messages afterwards."""

import os
import re
import subprocess
import time

from lib.util import log

# the variant's name in parts 2 and 9, its table and its label
NAME = "lmc"
TABLE = "t_lmc"
LABEL = ("C trigger writing each event as a transactional logical message (`bench/lib/message_emitter.c`, "
         "**bench only**: pg_callback's routing, body and event id; nothing reads the messages)")
SHORT = "logical message in C (bench only)"

DDL = """
CREATE EXTENSION IF NOT EXISTS pg_walinspect;
CREATE TABLE t_lmc (id bigserial PRIMARY KEY, v text);
CREATE FUNCTION bench_message_trigger() RETURNS trigger LANGUAGE C AS %s, 'bench_message_trigger';
CREATE TRIGGER lmc AFTER INSERT ON t_lmc FOR EACH ROW EXECUTE FUNCTION bench_message_trigger('bench');
"""

# one logical message record's description (PostgreSQL 15's logicalmsg_desc)
MESSAGE = re.compile(r'^transactional, prefix "pg_callback"; payload \((\d+) bytes\): ([0-9A-F ]*)$')
# what every message's body holds, for a row inserted by the bench
BODY_MARK = b'"type":"bench.insert"'


def build(env):
    """The emitter as a loadable module in env.tmp (once per bench run),
    compiled with the server's flags against src/'s headers."""
    out = os.path.join(env.tmp, "message_emitter.so")
    if os.path.exists(out):
        return out
    pg_config = os.environ.get("PG_CONFIG", "pg_config")

    def cfg(flag):
        return subprocess.run([pg_config, flag], capture_output=True, text=True, check=True).stdout.split()
    env.run(["gcc"] + cfg("--cflags") + cfg("--cflags_sl")
            + ["-Werror", "-shared", "-I" + cfg("--includedir-server")[0],
               "-I" + os.path.join(env.repo, "src"), "-o", out,
               os.path.join(env.repo, "bench", "lib", "message_emitter.c")], check=True)
    return out


def setup(env):
    """t_lmc and its trigger in env's bench database (pg_callback loaded)."""
    env.q(DDL % ("'%s'" % build(env)))


def lsn_int(lsn):
    """A pg_lsn's text ("16/B374D848") as an integer."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(n):
    return "%X/%X" % (n >> 32, n & 0xFFFFFFFF)


def wal_lsn(env):
    return env.q1("SELECT pg_current_wal_insert_lsn()::text", name="mon")


def check(env, since, rows):
    """Whether the WAL written since LSN `since` holds one logical message
    per row of t_lmc (`rows` of them: nothing else in the bench writes
    logical messages), the first ones transactional pg_callback messages
    with the event's body; else a warning.  Reads every record since
    `since`, outside the timed runs."""
    until = wal_lsn(env)
    # pg_walinspect reads only flushed WAL: a transaction that writes WAL
    # and commits with synchronous_commit on flushes up to its commit,
    # past `until` (its message, another prefix, lies after the range read)
    env.q("BEGIN; SET LOCAL synchronous_commit = on; "
          "SELECT pg_catalog.pg_logical_emit_message(true, 'pg_callback_bench_flush', ''); COMMIT",
          name="mon")
    deadline = time.time() + 30
    while not env.q1("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (until,), name="mon"):
        if time.time() > deadline:
            raise RuntimeError("WAL up to %s not flushed after 30 s" % until)
        time.sleep(0.05)
    count = env.q1("SELECT coalesce(sum(count), 0) FROM pg_get_wal_stats(%s, %s) "
                   "WHERE \"resource_manager/record_type\" = 'LogicalMessage'", (since, until), name="mon")
    # the bodies of a few, decoded from the records' descriptions; the
    # function keeps every record of its range, so only the last 256 kB are
    # read (a one-statement INSERT's row triggers fire after all its rows)
    descs = env.q("SELECT description FROM pg_get_wal_records_info(%s, %s) "
                  "WHERE resource_manager = 'LogicalMessage' LIMIT 3",
                  (lsn_text(max(lsn_int(since), lsn_int(until) - 262144)), until), name="mon")
    bodies_ok = bool(descs)
    for (d,) in descs:
        m = MESSAGE.match(d)
        bodies_ok = bodies_ok and m is not None and BODY_MARK in bytes.fromhex(m.group(2))
    if count != rows or not bodies_ok:
        log("warning: %s: %d rows inserted, %d logical messages written%s"
            % (TABLE, rows, count, "" if bodies_ok else ", not holding the event's body"))
        return False
    return True
