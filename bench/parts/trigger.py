"""Part 2, trigger: what a business write pays for its event (issue 10).

One cluster, one run, for synchronous_commit = off (the CPU decides) and on
(the default: fsync decides), each variant alternated over --trigger-rounds
rounds (the order rotates from round to round), medians reported:

  - pgbench -c4 -j2 single-row `INSERT INTO t(v) VALUES ('x')` into a table
    with a bigserial primary key, for each variant: no trigger (plain),
    callback.trigger() FOR EACH ROW, the statement-level path
    (callback.trigger() FOR EACH STATEMENT REFERENCING NEW TABLE AS
    new_rows, when the installed extension supports it), the PL/pgSQL
    outbox, and a C trigger writing each event as a transactional logical
    message (bench/lib/message_emitter.c, bench only: issue 10's optional
    lever, its messages checked in the WAL, nothing reading them);
  - one INSERT ... SELECT of --bulk-rows rows with each variant, measured as
    the third such INSERT of its session (the first beside it);
  - fan-out: the row trigger with 1, 3 and 10 endpoints matching
    (synchronous_commit = off).

The row trigger and the statement path run a second time each with
callback.inbox on (row_inbox, stmt_inbox; in the fan-out too, the statement
path on tables of its own): pgbench sessions get it through PGOPTIONS, the
bulk session as a connection option.  Their deliveries go into
callback_inbox, and the worker moves them into callback_queue while the
bench runs (endpoints paused or not: a commit for a paused endpoint does not
wake it, so it moves at each callback.poll_interval, and at once again while
a move leaves rows behind).  That move's CPU is part of what an event costs,
and it is part of the measurement: the worker competes for the cores with
pgbench (TPS), the CPU counters are read once the inbox is empty (postgres
CPU per insert, the worker's part beside it), and the bulk INSERT reports
the worker's CPU until the inbox is empty, and a ratio to plain that counts
it, beside the INSERT's own time.  Deliveries queued are counted in
callback_queue + callback_inbox.

Every endpoint is paused, so nothing is delivered while we measure: only the
write path (and, with the inbox, the move) is timed.  In the single-row
runs each round brackets every variant between two plain runs (plain, v1,
plain, v2, ..., plain): a round's ratio is the variant's TPS over the mean
of the two plain runs around it, and a ratio reported is the median of the
rounds'.  (Until 2026-12-02 a round ran each variant once and divided by
the round's one plain run, minutes away: with fsync deciding, the floor's
rounds ran from 0.92 to 1.47, trigger-steady-bulk.md.)  The one-statement INSERTs are bracketed the same way (since
2026-12-03; plain's own 100,000-row INSERT had moved from 0.16 to 0.26 s
between rounds).  Plain's own rounds, each plain run over the mean of the
plain runs two places before and after it, say how much noise a bracket
leaves (noise_rounds).  From 6 rounds on, a ratio has the 95 % interval
of its median beside it (median_ci), and a target whose interval lies on
one side of it is settled in this run (settled()).  Each single-row run
records the cores busy and the share the host stole; the ratios are also
given over the brackets whose plain runs were quiet (quiet()).
--trigger-parts picks single, bulk and fanout; --trigger-settings and
--trigger-variants narrow the run.  The targets of issue 10 are checked
here, from the figures; render_trigger.py reads a results.json again."""

import argparse
import time

import psycopg2

from lib import emitter
from lib.cpu import CpuMeter, core_shares
from lib.perf import perf_start, perf_stop
from lib.util import fmt, log, median, median_ci, plural, rotated, step, verdict

# (name, table, what it is)
VARIANTS = [
    ("plain", "t_plain", "no trigger"),
    ("noop", "t_noop", "`callback.trigger('unrouted')` FOR EACH ROW, **no endpoint matching**: "
                       "the floor of any AFTER ROW trigger (PostgreSQL's trigger machinery, nothing queued)"),
    ("row", "t_row", "`callback.trigger('bench')` FOR EACH ROW"),
    ("stmt", "t_stmt", "`callback.trigger('bench')` FOR EACH STATEMENT, "
                       "REFERENCING NEW TABLE AS new_rows"),
    ("outbox", "t_outbox", "PL/pgSQL outbox: `INSERT INTO outbox(topic, payload) "
                           "VALUES (TG_TABLE_NAME, to_jsonb(NEW))`"),
    (emitter.NAME, emitter.TABLE, emitter.LABEL),
    ("snoop", "t_snoop", "`callback.trigger('unrouted')` FOR EACH STATEMENT, **no endpoint matching**: "
                         "the floor of the statement path (the transition table, nothing queued)"),
    ("row_inbox", "t_row", "`callback.trigger('bench')` FOR EACH ROW, **callback.inbox on**"),
    ("stmt_inbox", "t_stmt", "`callback.trigger('bench')` FOR EACH STATEMENT, **callback.inbox on**"),
]
SHORT = {"plain": "plain", "noop": "row trigger, no endpoint matching", "row": "row trigger",
         "stmt": "statement path", "outbox": "PL/pgSQL outbox",
         "snoop": "statement path, no endpoint matching", "row_inbox": "row trigger, inbox on",
         "stmt_inbox": "statement path, inbox on", emitter.NAME: emitter.SHORT}
TABLE = {name: table for name, table, _ in VARIANTS}
LABEL = {name: label for name, _, label in VARIANTS}
SETTINGS = [("off", "CPU-bound"), ("on", "the default: fsync-bound")]
FANOUT = [1, 3, 10]
# a variant named <x>_inbox is <x> run with callback.inbox on
INBOX = "_inbox"
INBOX_OPTION = "-c callback.inbox=on"
# the variants that queue events, judged against each target of issue 10
CALLBACK = ["row", "stmt", "row_inbox", "stmt_inbox"]
# fan-out kinds: (prefix of the variant, its label); sfanN is the statement path on t_sfanN
FAN_KINDS = [("fan%d", "row trigger"), ("fan%d_inbox", "row trigger, inbox on"),
             ("sfan%d_inbox", "statement path, inbox on")]

# the trigger with nothing routed: what any AFTER trigger costs; nothing may be queued
FLOOR = ("noop", "snoop")

# issue 10, Acceptance
TARGET = {
    "row_off": 0.90,    # single-row, CPU-bound: >= 0.90x plain, and above the outbox
    "row_on": 0.95,     # single-row, fsync-bound: >= 0.95x plain
    "bulk_stmt": 0.70,  # one INSERT of 100,000 rows, statement path: >= 0.70x plain
}

DDL = """
CREATE TABLE t_plain (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_row (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_noop (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_snoop (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_stmt (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_outbox (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_fan1 (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_fan3 (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_fan10 (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_sfan1 (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_sfan3 (id bigserial PRIMARY KEY, v text);
CREATE TABLE t_sfan10 (id bigserial PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON t_row
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('bench');
-- the floor: the same trigger, an event type no endpoint's patterns match
CREATE TRIGGER cb AFTER INSERT ON t_noop
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('unrouted');
CREATE TRIGGER cb AFTER INSERT ON t_fan1
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('fan1');
CREATE TRIGGER cb AFTER INSERT ON t_fan3
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('fan3');
CREATE TRIGGER cb AFTER INSERT ON t_fan10
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('fan10');
-- the hand-written durable outbox a DBA would compare with (issue 10)
CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL);
CREATE FUNCTION outbox_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (topic, payload) VALUES (TG_TABLE_NAME, to_jsonb(NEW));
    RETURN NULL;
END $$;
CREATE TRIGGER outbox AFTER INSERT ON t_outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_trigger();
"""

STMT_TRIGGER = ("CREATE TRIGGER cb AFTER INSERT ON {t} REFERENCING NEW TABLE AS new_rows "
                "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('{name}')")


def setup(env):
    env.q(DDL)
    # fan-out: endpoint i matches fan10.*, the first three fan3.*, the first fan1.*
    for i in range(1, 11):
        types = ["fan10.*"] + (["fan3.*"] if i <= 3 else []) + (["fan1.*"] if i == 1 else [])
        env.q("SELECT callback.create_endpoint(%s, %s, %s)", ("fan%02d" % i, env.hook_url, types))
        env.q("SELECT callback.pause_endpoint(%s)", ("fan%02d" % i,))
    env.q("SELECT callback.pause_endpoint('bench')")
    emitter.setup(env)


def stmt_unavailable(env):
    """None if the installed extension runs callback.trigger() FOR EACH
    STATEMENT with a transition table and queues one event for one row
    inserted; else why not (the trigger is then dropped)."""
    try:
        env.q(STMT_TRIGGER.format(t="t_stmt", name="bench"))
    except psycopg2.Error as e:
        return "CREATE TRIGGER ... FOR EACH STATEMENT failed: %s" % str(e).strip().splitlines()[0]
    env.reset_queue()
    why = None
    try:
        env.q("INSERT INTO t_stmt (v) VALUES ('x')")
        n = env.q1("SELECT count(*) FROM callback.callback_queue")
        if n != 1:
            why = "one row inserted, %d events queued" % n
    except psycopg2.Error as e:
        why = "INSERT failed: %s" % str(e).strip().splitlines()[0]
    if why:
        env.q("DROP TRIGGER IF EXISTS cb ON t_stmt")
    env.q("TRUNCATE t_stmt RESTART IDENTITY")
    env.reset_queue()
    return why


def add_stmt_fanout(env):
    """The statement path on t_sfan1/3/10, routed as t_fan1/3/10, and on
    t_snoop, routed nowhere (once the path is known to work)."""
    env.q(STMT_TRIGGER.format(t="t_snoop", name="unrouted"))
    for n in FANOUT:
        env.q(STMT_TRIGGER.format(t="t_sfan%d" % n, name="fan%d" % n))


def stmt_body_differs(env):
    """The statement path must queue the body the row trigger queues for the
    same row: one row into each, bodies compared without the timestamp and
    the table name.  None if equal, else both bodies."""
    env.reset_queue()
    env.q("INSERT INTO t_row (v) VALUES ('x')")
    env.q("INSERT INTO t_stmt (v) VALUES ('x')")
    b = dict(env.q("SELECT d.table_name, (q.body::jsonb - 'timestamp') #- '{data,table}' "
                   "FROM callback.callback_queue q, LATERAL (SELECT q.body::jsonb #>> '{data,table}' "
                   "AS table_name) d"))
    env.q("TRUNCATE t_row, t_stmt RESTART IDENTITY")
    env.reset_queue()
    if b.get("t_row") is not None and b.get("t_row") == b.get("t_stmt"):
        return None
    return b


def prepare(env):
    """Every variant starts from the same state: empty tables and queue, a
    fresh checkpoint (so none pays more full-page writes than another)."""
    env.q("TRUNCATE t_plain, t_noop, t_snoop, t_row, t_stmt, t_outbox, t_fan1, t_fan3, t_fan10, t_sfan1, t_sfan3, "
          "t_sfan10, outbox, t_lmc RESTART IDENTITY")
    env.reset_queue()
    env.q("CHECKPOINT")


def wait_inbox_empty(env, timeout=300):
    """Poll until the worker has moved every inbox row into the queue (at its
    next cycle: callback.poll_interval, endpoints being paused); seconds
    waited.  Without the inbox it returns at once."""
    t0 = time.time()
    while env.q1("SELECT EXISTS (SELECT FROM callback.callback_inbox)", name="mon"):
        if time.time() - t0 > timeout:
            log("warning: inbox rows still waiting after %d s" % timeout)
            break
        time.sleep(0.05)
    return time.time() - t0


def inbox_inserts(env):
    """Rows ever inserted into callback_inbox, by the cumulative statistics
    (a session's show once it has flushed them: at the latest as it exits)."""
    return env.q1("SELECT pg_stat_get_tuples_inserted('callback.callback_inbox'::regclass)", name="mon")


def check_inbox(env, v, before, timeout=30):
    """An inbox variant's deliveries went through callback_inbox: else the
    setting did not reach its sessions, and it measured the direct path.
    Polls the statistics until they show them (a session flushes them when
    it exits or goes idle), else a warning.  The statement path packs its
    events (several to an inbox row): one row in the inbox shows the
    setting reached its sessions, and each statement's rows all go there."""
    expected = env.q1("SELECT count(*) FROM %s" % table_of(v)) * events_per_row(v)
    if table_of(v).startswith(("t_stmt", "t_sfan")):
        expected = min(expected, 1)
    deadline = time.time() + timeout
    while True:
        got = inbox_inserts(env) - before
        if got >= expected:
            return True
        if time.time() > deadline:
            log("warning: %s: %d of %d deliveries went through callback_inbox" % (v, got, expected))
            return False
        time.sleep(0.1)


def check_events(env, table, per_row):
    """Rows inserted x matching endpoints == deliveries queued (in the queue,
    or the inbox if the worker has not moved them yet), else a warning."""
    rows = env.q1("SELECT count(*) FROM %s" % table)
    queued = env.q1("SELECT (SELECT count(*) FROM callback.callback_queue) "
                    "+ (SELECT coalesce(sum(events), 0) FROM callback.callback_inbox)")
    if queued != rows * per_row:
        log("warning: %s: %d rows inserted, %d deliveries queued (expected %d)"
            % (table, rows, queued, rows * per_row))
        return False
    return True


# emitter.NAME queues nothing: its messages are checked in the WAL (messages_ok)
EVENTS_PER_ROW = {"plain": 0, "noop": 0, "snoop": 0, "row": 1, "stmt": 1, "outbox": 0, emitter.NAME: 0,
                  "fan1": 1, "fan3": 3, "fan10": 10,
                  "sfan1": 1, "sfan3": 3, "sfan10": 10}


def inbox_of(v):
    return v.endswith(INBOX)


def base_of(v):
    """The variant without its inbox: row_inbox -> row."""
    return v[:-len(INBOX)] if inbox_of(v) else v


def table_of(v):
    return TABLE.get(v) or TABLE.get(base_of(v)) or "t_" + base_of(v)


def events_per_row(v):
    return EVENTS_PER_ROW[base_of(v)]


def bracketed(variants, r):
    """Round r's order of slices: plain before and after every other
    variant (those rotated from round to round), so that each variant's
    slice sits between two plain slices: P v1 P v2 P ... vN P."""
    others = rotated([v for v in variants if v != "plain"], r)
    order = ["plain"]
    for v in others:
        order += [v, "plain"]
    return order


def plain_noise(of_slice, higher_is_faster=True, keep=lambda i, j, k: True):
    """Plain against plain in one bracketed round: each plain slice but the
    first and the last over the mean of the plain slices two places before
    and after it (of_slice: a figure per slice, plain at the even places).
    What a bracket leaves of the machine's drift and noise: 1.0 if none.
    keep(i, j, k) says whether the slices i, j and k are counted (quiet())."""
    out = []
    for i in range(2, len(of_slice) - 2, 2):
        around = (of_slice[i - 2] + of_slice[i + 2]) / 2
        if not (around and of_slice[i]) or not keep(i - 2, i, i + 2):
            continue
        out.append(of_slice[i] / around if higher_is_faster else around / of_slice[i])
    return out


# A bracket is quiet when the host stole less than this share of the cores
# in each of its two plain runs.  With synchronous_commit on, this VM's
# plain runs came at about 10,000 TPS with under 1 % stolen and at about
# 2,400 with 45-48 % (bench/results/trigger-fsync-quiet.md): the host's
# load moves them further than a trigger does.
QUIET_STEAL = 0.05


def quiet(steal_of):
    """keep(*slices) for a round: each slice given quiet (QUIET_STEAL).
    Only plain's runs are asked: a guest is stolen from only while it has
    work, so a variant's own run would be judged by its own CPU demand;
    plain's runs judge every variant alike."""
    return lambda *slices: all(steal_of[x] is not None and steal_of[x] < QUIET_STEAL for x in slices)


def messages_ok(env, v, since):
    """The logical messages' variant wrote one message per row since the
    WAL position `since` (emitter.check); any other variant: True."""
    if v != emitter.NAME:
        return True
    return emitter.check(env, since, env.q1("SELECT count(*) FROM %s" % emitter.TABLE, name="mon"))


def pgbench_slice(env, v, setting, cfg, prof_name=None):
    """One variant's pgbench run on emptied tables: its TPS, transactions,
    the CPU counters' delta until the inbox is empty, the cores' busy and
    stolen shares during pgbench, the inbox rows left at its end and the
    seconds the move took after it, the inbox inserts before it, and
    whether its messages are right."""
    prepare(env)
    inbox_before = inbox_inserts(env)
    since = emitter.wal_lsn(env)
    inbox = inbox_of(v)
    script = "INSERT INTO %s (v) VALUES ('x');\n" % table_of(v)
    prof = perf_start(env, prof_name) if prof_name else None
    cpu = CpuMeter(env)
    c0 = cpu.snap()
    tps, n = env.pgbench("trigger_" + v, script, cfg["seconds"], cfg["clients"], cfg["jobs"],
                         sync_commit=setting, options=INBOX_OPTION if inbox else None)
    # the cores busy and stolen while pgbench ran, not while the inbox empties
    busy, steal = core_shares(CpuMeter.delta(c0, cpu.snap()))
    # the inbox: the rows of the last moments move after pgbench; their CPU counts too.
    # How many were left, and how long they took, says whether the move kept up
    # during the run (a move that fell behind would flatter the TPS).
    left = env.q1("SELECT count(*) FROM callback.callback_inbox", name="mon") if inbox else None
    waited = wait_inbox_empty(env)
    c1 = cpu.snap()
    perf_stop(env, prof)
    return {"tps": tps, "n": n, "cpu": CpuMeter.delta(c0, c1), "busy": busy, "steal": steal,
            "left": left, "waited": waited, "inbox_before": inbox_before,
            "messages_ok": messages_ok(env, v, since)}


def pgbench_rounds(env, variants, setting, cfg, profile=()):
    """Single-row pgbench for each variant, alternated over the rounds.

    Each round runs plain before and after every other variant
    (bracketed()); summarize_single() makes the ratios from the rounds'
    TPS.  Each slice also keeps its CPU per insert, the worker's part, and
    the cores busy and stolen."""
    out = {v: {"tps": [], "pg_us": [], "worker_us": [], "busy": [], "steal": [], "inbox_left": [],
               "inbox_wait_s": [], "events_ok": True, "inbox_ok": True}
           for v in variants}
    out["_rounds"] = []
    for r in range(cfg["rounds"]):
        line = []
        order = bracketed(variants, r)
        tps_of = []
        steal_of = []
        for v in order:
            inbox = inbox_of(v)
            prof_name = "trigger-%s-%s" % (v, setting) if (r == 0 and v in profile) else None
            sl = pgbench_slice(env, v, setting, cfg, prof_name)
            tps, n, d = sl["tps"], sl["n"], sl["cpu"]
            tps_of.append(tps)
            steal_of.append(sl["steal"])
            x = out[v]
            x["tps"].append(tps)
            x["pg_us"].append(d["pg_all"] * 1e6 / n if n else None)
            # the worker's share: without the inbox, woken at each commit, it finds nothing due
            # (endpoints paused); with it, it moves the inbox's rows into the queue
            x["worker_us"].append(d["worker"] * 1e6 / n if n else None)
            # near 1.0 the CPU decides, not fsync; stolen: a slow run on a busy host
            x["busy"].append(sl["busy"])
            x["steal"].append(sl["steal"])
            x["inbox_left"].append(sl["left"])
            x["inbox_wait_s"].append(sl["waited"] if inbox else None)
            if (events_per_row(v) or v in FLOOR) and not check_events(env, table_of(v), events_per_row(v)):
                x["events_ok"] = False
            if not sl["messages_ok"]:
                x["events_ok"] = False
            if inbox and not check_inbox(env, v, sl["inbox_before"]):
                x["inbox_ok"] = False
            if v != "plain":
                line.append("%s %.0f (pg CPU %.0f us/insert, worker %.0f, cores busy %.0f%%, stolen %.0f%%%s)"
                            % (v, tps, x["pg_us"][-1] or 0, x["worker_us"][-1] or 0,
                               100 * (sl["busy"] or 0), 100 * (sl["steal"] or 0),
                               "; inbox rows left at the end %d, moved in %.2f s" % (sl["left"], sl["waited"])
                               if inbox else ""))
        out["_rounds"].append({"order": order, "tps": tps_of, "steal": steal_of})
        log("synchronous_commit=%s round %d: TPS plain %s (stolen %s %%); %s"
            % (setting, r + 1, " / ".join("%.0f" % t for t in tps_of[::2]),
               " / ".join("%.0f" % (100 * (q or 0)) for q in steal_of[::2]), ", ".join(line)))
    return summarize_single(out, variants)


def summarize_single(out, variants):
    """The ratios of the single-row runs, from their rounds alone (also
    for a results.json read back: render_trigger.py).  A variant's ratio in
    a round is its TPS over the mean of the two plain slices around it, one
    variant's slice apart, so that drift on the machine cancels; its ratio
    is the median of its rounds', and again of the quiet brackets' alone
    (quiet()).  Plain's TPS is the median of all its slices; its noise,
    each plain slice against the two plain slices around it."""
    for v in variants:
        out[v]["ratio_rounds"], out[v]["quiet_ratio_rounds"] = [], []
    out["plain"]["noise_rounds"], out["plain"]["quiet_noise_rounds"] = [], []
    for rnd in out["_rounds"]:
        order, tps_of = rnd["order"], rnd["tps"]
        is_quiet = quiet(rnd.get("steal") or [None] * len(order))
        # order[i] for odd i is a variant between the plain slices i - 1 and i + 1
        for i in range(1, len(order), 2):
            around = (tps_of[i - 1] + tps_of[i + 1]) / 2
            x = out[order[i]]
            x["ratio_rounds"].append(tps_of[i] / around if around else None)
            if around and is_quiet(i - 1, i + 1):
                x["quiet_ratio_rounds"].append(tps_of[i] / around)
        out["plain"]["noise_rounds"].extend(plain_noise(tps_of))
        out["plain"]["quiet_noise_rounds"].extend(plain_noise(tps_of, keep=is_quiet))
    for v in variants:
        x = out[v]
        x["tps_median"] = median(x["tps"])
        x["pg_us_median"] = median(x["pg_us"])
        x["worker_us_median"] = median(x["worker_us"])
        x["busy_median"] = median(x.get("busy") or [])
        x["steal_median"] = median(x.get("steal") or [])
        x["ratio"] = 1.0 if v == "plain" else median(x["ratio_rounds"])
        x["quiet_ratio"] = None if v == "plain" else median(x["quiet_ratio_rounds"])
    out["plain"]["noise"] = median(out["plain"]["noise_rounds"])
    out["plain"]["quiet_noise"] = median(out["plain"]["quiet_noise_rounds"])
    return out


# the measured INSERT is a session's WARM_INSERTS + 1-th (see bulk_rounds)
WARM_INSERTS = 2


def bulk_slice(env, v, setting, cfg, prof_name=None):
    """One variant's session: the INSERT run WARM_INSERTS times (each
    emptied after), then the one measured.  (seconds, the session's first
    INSERT's seconds, the worker's CPU s until the inbox is empty, events
    right, inbox used.)"""
    opts = "-c synchronous_commit=%s" % setting + (" " + INBOX_OPTION if inbox_of(v) else "")
    insert = "INSERT INTO %s (v) SELECT 'x' FROM generate_series(1, %%s)" % table_of(v)
    # --profile: a session forked after perf started (perf follows the postmaster's new children only)
    prof = perf_start(env, prof_name) if prof_name else None
    name = "bulk-profiled-%s" % v if prof else "bulk"
    first = None
    for i in range(WARM_INSERTS):
        prepare(env)
        t = time.perf_counter()
        env.q(insert, (cfg["bulk_rows"],), name=name, options=opts)
        if i == 0:
            first = time.perf_counter() - t
        wait_inbox_empty(env)
    prepare(env)
    inbox_before = inbox_inserts(env)
    since = emitter.wal_lsn(env)
    cpu = CpuMeter(env)
    c0 = cpu.snap()
    t = time.perf_counter()
    env.q(insert, (cfg["bulk_rows"],), name=name, options=opts)
    secs = time.perf_counter() - t
    perf_stop(env, prof)
    # the inbox: the worker moves the rows after the commit; its CPU until then is their
    # way into the queue (without the inbox: a poll cycle or none)
    wait_inbox_empty(env)
    worker_s = CpuMeter.delta(c0, cpu.snap())["worker"]
    events_ok = not (events_per_row(v) or v in FLOOR) or check_events(env, table_of(v), events_per_row(v))
    events_ok = messages_ok(env, v, since) and events_ok
    # its session ends, and so flushes its statistics for check_inbox
    env.conn(name=name, options=opts).close()
    inbox_ok = not inbox_of(v) or check_inbox(env, v, inbox_before)
    return secs, first, worker_s, events_ok, inbox_ok


def bulk_rounds(env, variants, setting, cfg, profile=()):
    """One INSERT ... SELECT of cfg["bulk_rows"] rows per variant, each
    round bracketed as the single-row runs are (bracketed()): a variant's
    ratio in a round is the mean of the two plain sessions' seconds around
    it over its own, and its ratio the median of its rounds'.

    Every slice is a new session, which runs the same INSERT WARM_INSERTS
    times (each emptied after) before the one measured: a new backend first
    maps the shared buffers it touches and grows its heap, and on this
    machine a session's first INSERT of 100,000 rows took about twice as
    long as its third, its second still 1.1 to 1.3 times, plain's as much
    as the trigger's (a session kept from an earlier round once favoured
    whichever variant kept it).  The third is what a long-lived connection
    pays; the first is reported beside it (first_seconds, first_ratio)."""
    out = {v: {"seconds": [], "first_seconds": [], "worker_s": [], "events_ok": True, "inbox_ok": True,
               "ratio_rounds": [], "first_ratio_rounds": [], "ratio_worker_rounds": []}
           for v in variants}
    out["_rounds"] = []
    for r in range(cfg["rounds"]):
        line = []
        order = bracketed(variants, r)
        got = []
        for v in order:
            prof_name = "bulk-%s-%s" % (v, setting) if (r == 0 and v in profile) else None
            secs, first, worker_s, events_ok, inbox_ok = bulk_slice(env, v, setting, cfg, prof_name)
            got.append((secs, first, worker_s))
            out[v]["seconds"].append(secs)
            out[v]["first_seconds"].append(first)
            out[v]["worker_s"].append(worker_s)
            out[v]["events_ok"] = out[v]["events_ok"] and events_ok
            out[v]["inbox_ok"] = out[v]["inbox_ok"] and inbox_ok
            line.append("%s %.2f s (worker %.2f s; the session's first INSERT %.2f s)"
                        % (v, secs, worker_s, first))
        # as throughput ratios: plain's time (the mean of the two around) over the variant's
        for i in range(1, len(order), 2):
            x = out[order[i]]
            (s, f, w), (s0, f0, w0), (s1, f1, w1) = got[i], got[i - 1], got[i + 1]
            x["ratio_rounds"].append((s0 + s1) / 2 / s)
            x["first_ratio_rounds"].append((f0 + f1) / 2 / f)
            # the same, counting the worker's CPU as time (the move, with the inbox)
            x["ratio_worker_rounds"].append((s0 + w0 + s1 + w1) / 2 / (s + w))
        out["plain"].setdefault("noise_rounds", []).extend(
            plain_noise([g[0] for g in got], higher_is_faster=False))
        out["_rounds"].append({"order": order, "seconds": [g[0] for g in got]})
        log("synchronous_commit=%s round %d: %s rows in one INSERT: %s"
            % (setting, r + 1, format(cfg["bulk_rows"], ","), ", ".join(line)))
    for v in variants:
        x = out[v]
        x["seconds_median"] = median(x["seconds"])
        x["first_seconds_median"] = median(x["first_seconds"])
        x["worker_s_median"] = median(x["worker_s"])
        if v == "plain":
            x["ratio"] = x["first_ratio"] = x["ratio_worker"] = 1.0
        else:
            x["ratio"] = median(x["ratio_rounds"])
            x["first_ratio"] = median(x["first_ratio_rounds"])
            x["ratio_worker"] = median(x["ratio_worker_rounds"])
    out["plain"]["noise"] = median(out["plain"].get("noise_rounds") or [])
    return out


def single_target(setting, single, key="ratio"):
    """The single-row target of issue 10 for a synchronous_commit setting:
    (its text, a test of a ratio to plain); the outbox's ratio is read
    from key too (the quiet brackets': "quiet_ratio")."""
    if setting == "off":
        outbox = single.get("outbox", {}).get(key)
        if outbox is None:
            # not judged without the outbox beside it (--trigger-variants left it out)
            return (">= %.2fx plain and above the outbox (not measured)" % TARGET["row_off"],
                    lambda r: None)
        return (">= %.2fx plain and above the outbox (%.2fx)" % (TARGET["row_off"], outbox),
                lambda r: r is not None and r >= TARGET["row_off"] and r > outbox)
    return ">= %.2fx plain" % TARGET["row_on"], lambda r: r is not None and r >= TARGET["row_on"]


def bulk_ok(r):
    return r is not None and r >= TARGET["bulk_stmt"]


BULK_CHECKS = [("one INSERT of many rows, statement path", "stmt", "ratio"),
               ("one INSERT of many rows, statement path, inbox on", "stmt_inbox", "ratio"),
               ("one INSERT of many rows, statement path, inbox on, counting the worker's move",
                "stmt_inbox", "ratio_worker")]


def settled(x, key, threshold):
    """Whether the median's 95 % interval (median_ci) lies on one side of
    threshold ("settled") or holds it ("undecided"); None below 6 rounds.
    It covers the rounds' noise in this run only, taking the rounds as
    independent: not another run's, nor another machine's."""
    ci = median_ci(x.get(key + "_rounds") or [])
    if ci is None:
        return None
    return "undecided" if ci[0] < threshold <= ci[1] else "settled"


def judge(setting, single, bulk, stmt_ok):
    """The issue's targets for one synchronous_commit setting, computed:
    a list of (what, figure, target, met: True/False/None by the median,
    settled()).  The row trigger and the statement path are judged as the
    issue asks, each with the inbox off and on; the inbox's bulk figure
    also counting the move.  (Above the outbox: by the medians.)"""
    checks = []
    if single is not None:
        text, ok = single_target(setting, single)
        threshold = TARGET["row_off" if setting == "off" else "row_on"]
        for v in [v for v in ("row", "row_inbox") if v in single]:
            checks.append(("single-row, " + SHORT[v], figure(single[v]), text, ok(single[v]["ratio"]),
                           settled(single[v], "ratio", threshold)))
    bulk_text = ">= %.2fx plain" % TARGET["bulk_stmt"]
    for what, v, key in BULK_CHECKS if bulk is not None else ():
        if stmt_ok and v not in bulk:
            continue
        if stmt_ok:
            checks.append((what, figure(bulk[v], key), bulk_text, bulk_ok(bulk[v][key]),
                           settled(bulk[v], key, TARGET["bulk_stmt"])))
        else:
            checks.append((what, "not available", bulk_text, None, None))
    return checks


def check_verdict(c):
    """A check's verdict: by the median, and what its interval says."""
    met, how = c[3], c[4] if len(c) > 4 else None
    if met is None:
        return "not available"
    return verdict(met) + {"settled": " (settled)",
                           "undecided": " (undecided: the median's interval holds the target)"}.get(how, "")


def figure(x, key="ratio"):
    """A ratio judged against a target, with its rounds' lowest and highest:
    a median that meets a target its rounds straddle is read with that."""
    return "%.2fx" % x[key] + rounds_range(x, key, "rounds %.2f-%.2f")


def meets(setting, single, bulk):
    """Which variant meets which target: a list of (target, [variants that
    meet it], [variants that do not]).  Every variant that queues events is
    tried against every target, not only the one the issue names (the
    logical messages' emitter is not pg_callback's: see reference_line)."""
    tests = []
    if single is not None:
        text, ok = single_target(setting, single)
        tests.append((single, "single-row " + text, lambda v: ok(single[v]["ratio"])))
    if bulk is not None:
        tests += [(bulk, "one INSERT of many rows >= %.2fx plain" % TARGET["bulk_stmt"],
                   lambda v: bulk_ok(bulk[v]["ratio"])),
                  (bulk, "the same, counting the worker's CPU (the inbox's move)",
                   lambda v: bulk_ok(bulk[v]["ratio_worker"]))]
    out = []
    for got, target, test in tests:
        vs = [v for v in CALLBACK if v in got]
        if vs and test(vs[0]) is None:
            continue  # not judged (the outbox not measured)
        out.append((target, [v for v in vs if test(v)], [v for v in vs if not test(v)]))
    return out


def reference_line(single, bulk):
    """The bench-only emitter of logical messages beside the targets: a
    reference for issue 10's optional lever, not a pg_callback path that
    meets them (nothing reads its messages), or None if it did not run."""
    got = [(what, x[emitter.NAME]) for what, x in (("single-row", single), ("one INSERT of many rows", bulk))
           if x and emitter.NAME in x]
    if not got:
        return None
    return ("For reference, not a pg_callback path (nothing reads its messages): %s: %s."
            % (emitter.SHORT, "; ".join("%s %s plain%s" % (what, fmt(x["ratio"], "{:.2f}x"), warnings(x))
                                        for what, x in got)))


# fewer quiet brackets than this are not judged (median_ci needs 6)
QUIET_MIN = 6


def quiet_meets_line(setting, single):
    """The single-row target judged over the quiet brackets alone, against
    the outbox's quiet figure (the verdicts above count every round), or
    None if no bracket was quiet.  A check, not the verdict: the quiet
    brackets are those of a calm host, a sample of the run's."""
    if not single or not any(single[v].get("quiet_ratio_rounds") for v in CALLBACK if v in single):
        return None
    text, ok = single_target(setting, single, "quiet_ratio")
    vs = [v for v in CALLBACK if v in single]
    enough = [v for v in vs if len(single[v].get("quiet_ratio_rounds") or []) >= QUIET_MIN]
    few = [v for v in vs if v not in enough]
    if enough and ok(single[enough[0]]["quiet_ratio"]) is None:
        return None
    yes = [v for v in enough if ok(single[v]["quiet_ratio"])]
    no = [v for v in enough if v not in yes]
    line = "Over the quiet brackets alone (the host stole less than %.0f %% in each plain run around) " \
        % (100 * QUIET_STEAL)
    line += "; ".join("%s %s" % (SHORT[v], ratio_cell(single[v], "quiet_ratio")) for v in enough)
    if enough:
        line += ": " + meets_line("single-row " + text, yes, no)
    if few:
        line += (" " if enough else "") + "Too few quiet brackets to judge (fewer than %d): %s." % (
            QUIET_MIN, "; ".join("%s %d" % (SHORT[v], len(single[v].get("quiet_ratio_rounds") or []))
                                 for v in few))
    return line


def meets_line(target, yes, no):
    # the labels hold commas: items apart with semicolons
    line = "%s: met by %s." % (target, "; ".join(SHORT[v] for v in yes) if yes else "none")
    return line + (" Not met by %s." % "; ".join(SHORT[v] for v in no) if no else " Met by all.")


PARTS = ("single", "bulk", "fanout")


def chosen(arg, among):
    """A comma-separated choice among `among` (all if arg is None), in
    among's order.  argparse calls the parsers below, so a wrong value
    stops the bench before anything runs."""
    if arg is None:
        return list(among)
    got = [p.strip() for p in arg.split(",") if p.strip()]
    bad = [p for p in got if p not in among]
    if bad or not got:
        raise argparse.ArgumentTypeError("%s; choose among %s" % (", ".join(bad) or "none given", ", ".join(among)))
    return [p for p in among if p in got]


def parts_of(arg):
    """--trigger-parts: which of the part's three measurements run."""
    return chosen(arg, PARTS)


def settings_of(arg):
    """--trigger-settings: the synchronous_commit settings measured."""
    return chosen(arg, [setting for setting, _ in SETTINGS])


def variants_of(arg):
    """--trigger-variants: the variants of the single-row and bulk runs;
    plain always runs (every other variant's ratio is to it)."""
    return ["plain"] + [v for v in chosen(arg, [v for v, _, _ in VARIANTS]) if v != "plain"]


def run(env):
    a = env.args
    cfg = {
        "seconds": a.trigger_seconds or (3 if env.quick else 10),
        # a smoke run: one round (its plain runs still bracket every variant)
        "rounds": a.trigger_rounds or (1 if env.quick else 3),
        "clients": a.trigger_clients,
        "jobs": a.trigger_jobs,
        "bulk_rows": a.bulk_rows or (20000 if env.quick else 100000),
        "parts": a.trigger_parts or parts_of(None),
        "settings": a.trigger_settings or settings_of(None),
        "variants": a.trigger_variants or variants_of(None),
    }
    measures = {"single": "pgbench -c%d -j%d single-row INSERTs, %d s per variant"
                          % (cfg["clients"], cfg["jobs"], cfg["seconds"]),
                "bulk": "one INSERT of %s rows per variant" % format(cfg["bulk_rows"], ","),
                "fanout": "fan-out 1/3/10 (synchronous_commit off)"}
    step("2. trigger cost: %s; %s, each variant between two plain runs; synchronous_commit %s; "
         "endpoints paused; the callback paths with callback.inbox off and on"
         % ("; ".join(measures[p] for p in cfg["parts"]), plural(cfg["rounds"], "round"),
            " and ".join(cfg["settings"])))
    setup(env)
    why = stmt_unavailable(env)
    if why:
        log("statement-level path: not available (%s)" % why)
    else:
        log("statement-level path: available (one row -> one event)")
        add_stmt_fanout(env)
    differs = None if why else stmt_body_differs(env)
    if differs:
        log("warning: the statement path's body differs from the row trigger's: %r" % (differs,))
    variants = [v for v in cfg["variants"] if base_of(v) not in ("stmt", "snoop") or not why]
    res = dict(cfg, stmt_available=why is None, stmt_unavailable_reason=why, stmt_body_differs=differs,
               variants={v: LABEL[v] for v, _, _ in VARIANTS}, variants_run=variants, settings={},
               target=TARGET)
    for setting, what in [(s, w) for s, w in SETTINGS if s in cfg["settings"]]:
        single = pgbench_rounds(env, variants, setting, cfg, profile=("row", "stmt")) \
            if "single" in cfg["parts"] else None
        bulk = bulk_rounds(env, variants, setting, cfg, profile=("row", "stmt")) \
            if "bulk" in cfg["parts"] else None
        met = meets(setting, single, bulk)
        for target, yes, no in met:
            log("synchronous_commit=%s, target %s" % (setting, meets_line(target, yes, no)))
        reference = reference_line(single, bulk)
        if reference:
            log("synchronous_commit=%s: %s" % (setting, reference))
        res["settings"][setting] = {"what": what, "single": single, "bulk": bulk,
                                    "checks": judge(setting, single, bulk, why is None), "meets": met}
    kinds = [(k, label) for k, label in FAN_KINDS if not k.startswith("sfan") or not why]
    fan = ["plain"] + [k % n for k, _ in kinds for n in FANOUT]
    if "fanout" in cfg["parts"]:
        res["fanout"] = {"setting": "off", "kinds": kinds, "single": pgbench_rounds(env, fan, "off", cfg)}
    prepare(env)
    env.q("SELECT callback.resume_endpoint('bench')")
    return res


# ------------------------------------------------------------------ report

def absent(t, v):
    """Why a variant has no figure: left out of the run, or not available"""
    return "not available" if v in t.get("variants_run", t["variants"]) else "not run"


def ran(t):
    """(setting, its results) for each synchronous_commit setting measured"""
    return [(setting, t["settings"][setting]) for setting, _ in SETTINGS if setting in t["settings"]]


def rows(t):
    """The summary lines for the printed table."""
    out = []
    for setting, s in ran(t):
        single = s["single"] or {}
        bulk = s["bulk"] or {}
        if single:
            out.append(("2. synchronous_commit=%s: plain single-row INSERT, pgbench -c%d (TPS)"
                        % (setting, t["clients"]),
                        fmt(single["plain"]["tps_median"]), "", "", ""))
            out.append(("   plain / plain, bracketed (the noise a bracket leaves)",
                        ratio_cell(single["plain"], "noise"), "", "", ""))
        if bulk:
            out.append(("%splain one INSERT of %s rows (s)"
                        % ("   " if single else "2. synchronous_commit=%s: " % setting, format(t["bulk_rows"], ",")),
                        fmt(bulk["plain"]["seconds_median"], "{:.2f}"), "", "", ""))
            out.append(("   plain / plain, bracketed (the noise a bracket leaves)",
                        ratio_cell(bulk["plain"], "noise"), "", "", ""))
        for v in ("noop", "row", "stmt", "outbox", "row_inbox", "stmt_inbox", emitter.NAME) if single else ():
            out.append(("   single-row, %s / plain" % SHORT[v],
                        fmt(single[v]["ratio"], "{:.2f}x") if v in single else absent(t, v),
                        "", "", ""))
        for v in ("noop", "snoop", "row", "stmt", "outbox", "row_inbox", "stmt_inbox", emitter.NAME):
            if v in bulk:
                out.append(("   one INSERT of %s rows, %s / plain" % (format(t["bulk_rows"], ","), SHORT[v]),
                            fmt(bulk[v]["ratio"], "{:.2f}x"), "", "", ""))
                if inbox_of(v):
                    out.append(("     the same, counting the worker's move",
                                fmt(bulk[v]["ratio_worker"], "{:.2f}x"), "", "", ""))
                out.append(("     the same, a new session's first INSERT",
                            fmt(bulk[v].get("first_ratio"), "{:.2f}x"), "", "", ""))
        for c in s["checks"]:
            out.append(("   target: " + c[0], c[1], c[2].replace(" and above", ", >"), "", check_verdict(c)))
    if "fanout" not in t:
        return out
    f = t["fanout"]["single"]
    for k, label in t["fanout"].get("kinds", FAN_KINDS[:1]):
        out.append(("2. fan-out (sync off): %s / plain, 1/3/10 endpoints" % label,
                    " / ".join(fmt(f[k % n]["ratio"], "{:.2f}") for n in FANOUT), "", "", ""))
    return out


def warnings(x):
    """What the checks found wrong with a variant's runs, for its label."""
    w = ([] if x.get("events_ok", True) else ["deliveries queued != rows x endpoints matching "
                                               "(logical messages: messages written != rows)"]) + \
        ([] if x.get("inbox_ok", True) else ["its deliveries did not all go through callback_inbox"])
    return "".join(" **(warning: %s)**" % m for m in w)


def rounds_range(x, key, form):
    """key's rounds' lowest and highest in form, in brackets ("" for one
    round or none), and from 6 rounds on the median's 95 % confidence
    interval beside them.  Plain's noise has no interval: its brackets
    share plain runs with their neighbours, so they are not independent."""
    rs = [q for q in x.get(key + "_rounds") or [] if q is not None]
    if len(rs) < 2:
        return ""
    text = form % (min(rs), max(rs))
    if key.endswith("noise"):
        return " (%s; %d brackets)" % (text, len(rs))
    ci = median_ci(rs)
    if ci is not None:
        text += "; median's 95%% CI %.2f-%.2f, %d rounds" % (ci[0], ci[1], len(rs))
    return " (%s)" % text


def ratio_cell(x, key="ratio"):
    """the median ratio to plain (or plain's noise: key "noise"), the rounds' lowest and highest beside it"""
    return fmt(x.get(key), "{:.2f}") + rounds_range(x, key, "%.2f–%.2f")


def quiet_cell(x, key="quiet_ratio"):
    """the same over the quiet brackets only (quiet()), if any was"""
    if not x.get(key + "_rounds"):
        return ""
    return "; in quiet brackets %s" % ratio_cell(x, key)


def cpu_cell(x):
    """postgres CPU per insert, the worker's part in brackets"""
    if x.get("pg_us_median") is None:
        return "-"
    cell = "%.0f (worker %.0f)" % (x["pg_us_median"], x.get("worker_us_median") or 0)
    if x.get("busy_median") is not None:
        cell += "; cores busy %.0f %%" % (100 * x["busy_median"])
        if x.get("steal_median"):
            cell += " (stolen by the host %.0f %%)" % (100 * x["steal_median"])
    left = median(x.get("inbox_left") or [])  # None for a variant without the inbox
    if left is not None:
        # the inbox's rows left when pgbench ended: did the move keep up during the run?
        cell += "; inbox rows left at the end %s, moved in %.2f s (medians)" % (
            format(int(left), ","), median(x["inbox_wait_s"]))
    return cell


def markdown(t):
    """A table per synchronous_commit setting with the targets beside the
    figures, which variant meets which target, and the fan-out table."""
    md = []
    stmt_note = "" if t["stmt_available"] else \
        " The statement-level path is **not available** in the installed extension (%s)." \
        % t["stmt_unavailable_reason"]
    if t.get("stmt_body_differs"):
        stmt_note += " **Warning**: the statement path queued another body than the row trigger for the same row."
    for setting, s in ran(t):
        what = s["what"]
        single, bulk = s["single"], s["bulk"]
        checks = {c[0]: c for c in s["checks"]}
        if not (single or bulk):
            continue
        md += ["### Trigger cost, synchronous_commit = %s (%s)" % (setting, what), ""]
        if single:
            md += single_markdown(t, single, checks, stmt_note)
        if bulk:
            md += bulk_markdown(t, bulk, checks)
        if s.get("meets"):
            md += ["", "Which variant meets which target of issue 10 (synchronous_commit = %s):" % setting, ""]
            md += ["- " + meets_line(target, yes, no) for target, yes, no in s["meets"]]
            quiet_line = quiet_meets_line(setting, single)
            if quiet_line:
                md.append("- " + quiet_line)
            reference = reference_line(single, bulk)
            if reference:
                md.append("- " + reference)
        md.append("")
    if "fanout" in t:
        md += fanout_markdown(t)
    return md


def single_markdown(t, single, checks, stmt_note):
    """The single-row table of one synchronous_commit setting."""
    md = ["pgbench -c%d -j%d, single-row `INSERT INTO t(v) VALUES ('x')` (bigserial primary key), "
          "%d s per run, %s; each round runs plain before and after every other variant (plain, v1, "
          "plain, v2, ..., plain; the others' order rotated from round to round), and a round's "
          "ratio is the variant's TPS over the mean of the two plain runs around it. TPS is the "
          "median of the runs, × plain the median of the rounds' ratios (their lowest and "
          "highest in brackets, and from 6 rounds on the median's distribution-free 95 %% confidence "
          "interval); postgres CPU is every postgres process's CPU over the run "
          "divided by the inserts, and the cores busy the whole machine's CPU over it (pgbench's "
          "too) as a share of all its cores: near 100 %% the CPU decides, not fsync; stolen is the "
          "share the host took from the VM's cores, and a quiet bracket one whose two plain runs each "
          "had less than %.0f %% stolen (what the host's load does not decide). Every endpoint "
          "paused: nothing is delivered meanwhile. With "
          "**callback.inbox on**, the worker moves the inbox's rows into the queue during the run "
          "(at each `callback.poll_interval`: a paused endpoint's commit does not wake it): that "
          "CPU is in the figures, the rows of the last moment too (counters read once the inbox "
          "is empty). The plain row's × plain is plain's own rounds: each plain run but a round's "
          "first and last over the mean of the plain runs two places before and after it, what a "
          "bracket leaves of the machine's drift and noise.%s"
          % (t["clients"], t["jobs"], t["seconds"], plural(t["rounds"], "round"), 100 * QUIET_STEAL,
             stmt_note), "",
          "| trigger on t | TPS | × plain | postgres CPU µs / insert (worker's part); the machine's cores busy | target | |",
          "|---|---|---|---|---|---|"]
    for v, _, label in VARIANTS:
        if v == "plain":
            md.append("| %s | %s | 1.00; plain against plain: %s%s | %s | | |"
                      % (label, fmt(single[v]["tps_median"]), ratio_cell(single[v], "noise"),
                         quiet_cell(single[v], "quiet_noise"), cpu_cell(single[v])))
            continue
        if v not in single:
            md.append("| %s | %s | | | | |" % (label, absent(t, v)))
            continue
        x = single[v]
        label += warnings(x)
        target, met = "", ""
        c = checks.get("single-row, " + SHORT[v])
        if c:
            target, met = c[2], check_verdict(c)
        md.append("| %s | %s | %s%s | %s | %s | %s |"
                  % (label, fmt(x["tps_median"]), ratio_cell(x), quiet_cell(x), cpu_cell(x), target, met))
    return md


def bulk_markdown(t, bulk, checks):
    """The one-statement INSERT's table of one synchronous_commit setting."""
    md = ["", "One `INSERT ... SELECT` of %s rows, in a new session for each variant and round, "
          "bracketed as the single-row runs are (plain's session before and after each variant's; "
          "a round's ratio is the mean of the two plain times over the variant's), "
          "measured at the session's INSERT number %d: it has run the same INSERT %d times before "
          "(each emptied after). A new backend first maps the shared buffers it touches and grows "
          "its heap: a session's first such INSERT took about twice as long as its third, plain's "
          "as much as the others'; that first INSERT's seconds and ratio are in the last two "
          "columns. The worker's CPU is counted from the measured INSERT until "
          "the inbox is empty (the move into the queue, with callback.inbox on; otherwise at most an "
          "idle poll cycle); the ratio counting the worker takes it as time added to the statement's "
          "(the worker's CPU is read in ticks of 10 ms: on plain's 0.15 s one tick moves that ratio "
          "by about 6 %%)."
          % (format(t["bulk_rows"], ","), WARM_INSERTS + 1, WARM_INSERTS), "",
          "| one `INSERT ... SELECT` of %s rows | seconds | × plain (plain's time / its time) "
          "| worker CPU s | × plain counting the worker | target | | a new session's first INSERT: "
          "seconds | × plain |" % format(t["bulk_rows"], ","),
          "|---|---|---|---|---|---|---|---|---|"]
    for v, _, label in VARIANTS:
        bc = [c for c in BULK_CHECKS if c[1] == v]
        if v not in bulk:
            md.append("| %s | %s | | | | %s | | | |"
                      % (label, absent(t, v),
                         checks[bc[0][0]][2] if bc and bc[0][0] in checks else ""))
            continue
        x = bulk[v]
        label += warnings(x)
        target = checks[bc[0][0]][2] if bc else ""
        met = "; ".join(("counting the worker: " if key == "ratio_worker" else "")
                        + check_verdict(checks[what]) for what, _, key in bc)
        md.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                  % (label, fmt(x["seconds_median"], "{:.2f}"),
                     ratio_cell(x) if v != "plain" else "1.00; plain against plain: " + ratio_cell(x, "noise"),
                     fmt(x.get("worker_s_median"), "{:.2f}"),
                     ratio_cell(x, "ratio_worker") if v != emitter.NAME else "no reader measured",
                     target, met, fmt(x.get("first_seconds_median"), "{:.2f}"),
                     ratio_cell(x, "first_ratio")))
    return md


def fanout_markdown(t):
    """The fan-out table: 1, 3 and 10 endpoints matching."""
    f = t["fanout"]["single"]
    md = ["### Fan-out: 1, 3 and 10 endpoints matching (synchronous_commit = off)", "",
          "pgbench as above, bracketed by plain the same way, all endpoints paused; each insert queues "
          "one delivery per matching endpoint "
          "(with the inbox: into the inbox, moved by the worker during the run, its CPU included).", "",
          "| trigger | endpoints matching | TPS | × plain | deliveries queued / s "
          "| postgres CPU µs / insert (worker's part) |",
          "|---|---|---|---|---|---|",
          "| none (plain) | | %s | 1.00; plain against plain: %s | | %s |"
          % (fmt(f["plain"]["tps_median"]), ratio_cell(f["plain"], "noise"), cpu_cell(f["plain"]))]
    for k, label in t["fanout"].get("kinds", FAN_KINDS[:1]):
        for n in FANOUT:
            x = f[k % n]
            md.append("| %s | %d | %s | %s | %s | %s |"
                      % (label + warnings(x), n, fmt(x["tps_median"]), ratio_cell(x),
                         fmt(x["tps_median"] * n if x["tps_median"] else None),
                         cpu_cell(x)))
    md.append("")
    return md
