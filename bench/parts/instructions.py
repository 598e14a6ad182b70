"""Part 9, instructions: deterministic costs, counted by callgrind.

TPS and CPU microseconds swing by +-15 % on a shared machine; the number of
instructions a process runs does not (callgrind counts them: same build,
same input, same count, on any x86-64 machine).  This part starts a cluster
of its own whose postmaster runs under valgrind --tool=callgrind; every
process it forks writes its own file, and only what runs inside
PostgresMain() (a backend) or pgcb_worker_main() (the delivery worker) is
counted, so the postmaster's work before a fork is not inherited by its
children.  Each figure is a difference of two processes that differ only in
the work measured, so start-up and shut-down cancel:

  1. single-row INSERT transactions (autocommit), one backend running N
     and another 3N of them: (cost(3N) - cost(N)) / 2N per insert, for no
     trigger, callback.trigger() per row (1, 3 and 10 paused endpoints
     matching), the statement-level path, the PL/pgSQL outbox, and a
     PL/pgSQL trigger writing a transactional logical message (the
     "events as logical messages" lever of issue 10), and the same lever
     in C with pg_callback's routing, body and event id
     (bench/lib/message_emitter.c, bench only);
  2. one INSERT ... SELECT of --instr-rows rows, a session per statement:
     its backend's cost minus that of a session running only SELECT 1;
  3. the worker draining N and 3N events queued by callback.enqueue()
     (endpoint paused while they are queued, then resumed) to
     test/receiver.py answering 204, a fresh worker for each drain:
     (cost(3N) - cost(N)) / 2N per delivery, and the functions below it by
     inclusive cost per delivery (callgrind_annotate --inclusive=yes); and
     the same again with callback.attempt_history = failures (no attempt
     row for a delivery delivered at its first attempt), and again with
     the endpoint at batch_size 100 (a request per 100 deliveries);
  4. callback.inbox: parts 1 and 2 run the row trigger and the statement
     path a second time with the inbox on (the producer's share), and here
     the rest of an event's way in, its move into callback_queue: the inbox
     filled with N and then 3N row-trigger events (single-row transactions,
     endpoint paused: nothing is delivered), moved by a fresh worker (its
     cycles as they run: about half a backlog of more than 2,000 rows per
     call) and, apart, by one backend calling callback._move_inbox(1000000)
     (one statement):
     (cost(3N) - cost(N)) / (moved(3N) - moved(N)) per moved row.  The
     report adds the worker's figure to the producer's: "producer + move"
     per event beside the direct path's producer cost.

The cluster runs with wal_level = logical (for pg_logical_emit_message),
synchronous_commit = off, autovacuum off and a checkpoint before each
measured session, so that no variant pays another's full-page writes."""

import os
import re
import subprocess
import time

import psycopg2

from lib import emitter
from lib.env import Env
from lib.util import fmt, free_port, log, step
from parts import drain, trigger

# part 1's variants: (name, table, what it is); 'row' is the 1-endpoint fan-out
SINGLE = [
    ("plain", "t_plain", "no trigger"),
    ("noop", "t_noop", "`callback.trigger()` FOR EACH ROW, **no endpoint matching**: the floor of any "
                       "AFTER ROW trigger"),
    ("row", "t_row", "`callback.trigger()` FOR EACH ROW, 1 paused endpoint matching"),
    ("stmt", "t_stmt", "`callback.trigger()` FOR EACH STATEMENT, REFERENCING NEW TABLE"),
    ("snoop", "t_snoop", "`callback.trigger()` FOR EACH STATEMENT, REFERENCING NEW TABLE, **no endpoint "
                         "matching**: the floor of the statement path"),
    ("outbox", "t_outbox", "PL/pgSQL outbox (`INSERT INTO outbox ... to_jsonb(NEW)`)"),
    ("lm", "t_lm", "PL/pgSQL `pg_logical_emit_message(true, 'pg_callback', to_jsonb(NEW)::text)`"),
    (emitter.NAME, emitter.TABLE, emitter.LABEL),
    ("fan3", "t_fan3", "`callback.trigger()` FOR EACH ROW, 3 paused endpoints matching"),
    ("fan10", "t_fan10", "`callback.trigger()` FOR EACH ROW, 10 paused endpoints matching"),
    ("row_inbox", "t_row", "`callback.trigger()` FOR EACH ROW, 1 paused endpoint matching, "
                           "**callback.inbox on** (producer only)"),
    ("stmt_inbox", "t_stmt", "`callback.trigger()` FOR EACH STATEMENT, REFERENCING NEW TABLE, "
                             "**callback.inbox on** (producer only)"),
]
BULK = ["plain", "noop", "snoop", "row", "stmt", "outbox", "row_inbox", "stmt_inbox", emitter.NAME]
TABLE = {name: table for name, table, _ in SINGLE}
LABEL = {name: label for name, _, label in SINGLE}
EVENTS_PER_ROW = dict(trigger.EVENTS_PER_ROW, lm=0)  # emitter.NAME's: checked in the WAL
# the session of an inbox variant starts with this (in both sessions of a difference)
INBOX_SET = "SET callback.inbox = on"
# (inbox variant, the direct path it is compared with)
INBOX_PAIRS = [("row_inbox", "row"), ("stmt_inbox", "stmt")]
# callback._move_inbox's lock (src/inbox.c): held in an open transaction, no one moves
MOVE_LOCK = "LOCK TABLE callback.callback_inbox IN SHARE UPDATE EXCLUSIVE MODE"
# functions of the worker's move reported by inclusive cost per moved row
MOVE_FNS = ("pgcb_inbox_move", "ExecInsertIndexTuples", "heap_insert", "heap_delete", "nextval_internal")
# the worker's calls counted in part 4: how many cycles and moves it took
MOVE_CALLS = ("pgcb_inbox_move", "pgcb_delivery_cycle")
# functions whose inclusive cost per insert part 1 reports beside the total
TRIGGER_FNS = ("callback_trigger", "plpgsql_exec_trigger", "bench_message_trigger")
# worker functions always listed in part 3 (when present), beside the top ones
WORKER_FNS = ("pgcb_delivery_cycle", "pgcb_queue_claim", "pgcb_batch_claim", "pgcb_queue_write_back",
              "pgcb_http_wait", "start_request", "SPI_execute_plan", "ExecInsertIndexTuples", "heap_insert",
              "heap_update", "curl_multi_perform",
              # a statement's set-up, and its constraints' and index predicates' planning
              "pgcb_rows_begin", "ExecPrepareExpr", "ExecPrepareQual", "expression_planner",
              # the endpoints and each one's next due time (PLAN_LOAD)
              "pgcb_queue_load_endpoints")
TOP = 15
EVENTS_WARNING = (" **(warning: events queued != rows x endpoints matching, or, inbox on, not all "
                  "through callback_inbox)**")

LM_DDL = """
CREATE TABLE t_lm (id bigserial PRIMARY KEY, v text);
CREATE FUNCTION lm_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_logical_emit_message(true, 'pg_callback', to_jsonb(NEW)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER lm AFTER INSERT ON t_lm FOR EACH ROW EXECUTE FUNCTION lm_trigger();
"""

# on top of Env.start_cluster's settings; later lines win
GRIND_CONF = {
    "wal_level": "logical",
    "synchronous_commit": "off",
    "autovacuum": "off",
    "jit": "off",
    "shared_buffers": "256MB",
    "checkpoint_timeout": "1h",
    # commits and resume_endpoint() wake the worker; no timed wake in the measured drains
    "callback.poll_interval": "'60s'",
}
CALLGRIND = ["valgrind", "--tool=callgrind", "--dump-instr=no", "--collect-atstart=no",
             "--toggle-collect=PostgresMain", "--toggle-collect=pgcb_worker_main"]
# "  1,234,567 (12.3%)  /path/file.c:function [/path/object.so]"
ANNOTATE_LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?) \[(.*)\]\s*$")
# "fn=(12) name" / "cfn=(12)": a function (a callee with c), named the first time
CG_NAME_LINE = re.compile(r"^(c?)fn=\((\d+)\)(?: (\S+))?")
# the worker's SQL round trips: how many deliveries each carries depends on timing
ROUND_TRIPS = ("pgcb_queue_claim", "pgcb_queue_write_back")


class Grind(Env):
    """A second cluster, this part's alone (in the bench's temporary
    directory, on a port of its own), set up normally and then restarted
    with its postmaster under callgrind."""

    def __init__(self, env):
        Env.__init__(self, env.args, env.out)
        self.pgdir = os.path.join(env.tmp, "cg")
        self.datadir = os.path.join(self.pgdir, "data")
        self.cgdir = os.path.join(self.pgdir, "callgrind")
        self.pg_port = free_port(env.pg_port + 1)
        self.rcv_port = free_port(self.pg_port + 1)
        self.hook_url = "http://127.0.0.1:%d/hook" % self.rcv_port
        self.proc = None

    def start_grind(self):
        """Stop the cluster, add GRIND_CONF, start the postmaster under callgrind."""
        self.stop_cluster()
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# bench part 9, instructions\n")
            for k, v in GRIND_CONF.items():
                f.write("%s = %s\n" % (k, v))
        os.makedirs(self.cgdir)
        self.run(["chown", "postgres:", self.cgdir])
        cmd = CALLGRIND + ["--callgrind-out-file=%s/cg.%%p" % self.cgdir,
                           self.pg_bin + "/postgres", "-D", self.datadir]
        log_path = os.path.join(self.pgdir, "valgrind.log")
        with open(log_path, "w") as lf:
            self.proc = subprocess.Popen(self.as_pg(cmd), stdout=lf, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while True:
            try:
                self.q1("SELECT 1")
                break
            except psycopg2.OperationalError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("postgres under callgrind did not start (see %s)" % log_path)
                time.sleep(0.5)
        self.wait_worker(timeout=300)

    def stop_grind(self):
        self.stop_cluster()
        if self.proc is not None:
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def session(self, statements):
        """A new session runs `statements` (a list, or an iterator), each in
        a transaction of its own, and ends; its pid."""
        c = psycopg2.connect(host=self.pgdir, port=self.pg_port, user="postgres", dbname="bench")
        try:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
                for s in statements:
                    cur.execute(s)
                    # what the last statement returned, for a caller that needs it
                    self.last = cur.fetchall() if cur.description else None
        finally:
            c.close()
        return pid

    def cg_file(self, pid, timeout=300):
        """The callgrind file of a process that is ending, once it is written."""
        path = os.path.join(self.cgdir, "cg.%d" % pid)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not os.path.exists("/proc/%d" % pid) and os.path.exists(path):
                return path
            time.sleep(0.1)
        raise RuntimeError("no callgrind file for process %d after %d s" % (pid, timeout))

    def cost(self, pid):
        """Instructions the process ran inside PostgresMain / pgcb_worker_main."""
        path = self.cg_file(pid)
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    return int(line.split()[1])
        raise RuntimeError("%s has no totals line" % path)

    def calls(self, pid, names):
        """{function: times called} for the functions `names`, read from the
        process's callgrind file (names are given once, then by id)."""
        ids, counts, callee = {}, dict.fromkeys(names, 0), None
        with open(self.cg_file(pid)) as f:
            for line in f:
                m = CG_NAME_LINE.match(line)
                if m:
                    if m.group(3):
                        ids[m.group(2)] = m.group(3)
                    callee = ids.get(m.group(2)) if m.group(1) == "c" else None
                elif callee in counts and line.startswith("calls="):
                    counts[callee] += int(line[6:].split()[0])
        return counts

    def inclusive(self, pid):
        """{function: inclusive instructions} of a process, by callgrind_annotate."""
        out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                              self.cg_file(pid)], capture_output=True, text=True, check=True).stdout
        inc = {}
        for line in out.splitlines():
            m = ANNOTATE_LINE.match(line)
            if not m:
                continue
            fn = m.group(2).rsplit(":", 1)[-1]
            # static functions of a stripped binary are only addresses; recursion levels ('2) apart
            if fn.startswith("0x") or "'" in fn:
                continue
            n = int(m.group(1).replace(",", ""))
            inc[fn] = max(inc.get(fn, 0), n)
        return inc


def per_unit(a, b, units):
    """(b - a) / units for two {function: instructions}: the cost per unit of
    each function present in both."""
    return {fn: (b[fn] - a.get(fn, 0)) / units for fn in b}


def prepare(g):
    """Empty tables and queue, then a checkpoint: each measured session
    starts from the same state and pays the same full-page writes."""
    g.q("TRUNCATE t_lm RESTART IDENTITY")
    trigger.prepare(g)  # t_lmc too


def setup(g):
    g.q("SELECT callback.create_endpoint('bench', %s, '{bench.*}')", (g.hook_url,))
    trigger.setup(g)  # the trigger part's tables, outbox, emitter and paused fan-out endpoints
    g.q(LM_DDL)
    why = trigger.stmt_unavailable(g)
    if not why:
        g.q(trigger.STMT_TRIGGER.format(t="t_snoop", name="unrouted"))
    g.q("SELECT callback.create_endpoint('drain', %s, '{drain.*}')", (g.hook_url,))
    g.q("SELECT callback.pause_endpoint('drain')")
    return why


def warm_up(g):
    """One session touching every table and trigger function, with the inbox
    off and on: the first session after a start writes the relcache init
    file and reads pages in."""
    prepare(g)
    ins = ["INSERT INTO %s (v) VALUES ('x')" % t for t in dict.fromkeys(TABLE.values())]
    g.cost(g.session(ins + [INBOX_SET] + ins))


def events_per_row(v):
    return EVENTS_PER_ROW[trigger.base_of(v)]


def opening(v):
    """What a measured session of variant v runs first."""
    return [INBOX_SET] if trigger.inbox_of(v) else []


def single_rows(g, variants, n):
    """Part 1: per-insert instructions of each variant."""
    out = {}
    for v in variants:
        table = TABLE[v]
        cost, inc = {}, {}
        for m in (1, 3):
            prepare(g)
            before = trigger.inbox_inserts(g)
            since = emitter.wal_lsn(g)
            pid = g.session(opening(v) + ["INSERT INTO %s (v) VALUES ('x')" % table] * (m * n))
            cost[m] = g.cost(pid)
            inc[m] = g.inclusive(pid) if v != "plain" else {}
        ok = not (events_per_row(v) or v in trigger.FLOOR) or trigger.check_events(g, table, events_per_row(v))
        ok = ok and (not trigger.inbox_of(v) or trigger.check_inbox(g, v, before))
        ok = ok and trigger.messages_ok(g, v, since)
        fns = per_unit(inc[1], inc[3], 2 * n)
        out[v] = {"cost_n": cost[1], "cost_3n": cost[3], "per_insert": (cost[3] - cost[1]) / (2.0 * n),
                  "events_ok": ok, "functions": {f: fns[f] for f in TRIGGER_FNS if f in fns}}
        log("%-6s %9.0f instructions per insert (sessions of %d and %d inserts: %s and %s)"
            % (v, out[v]["per_insert"], n, 3 * n, format(cost[1], ","), format(cost[3], ",")))
    plain = out["plain"]["per_insert"]
    for v in variants:
        x = out[v]
        x["plain_over"] = plain / x["per_insert"]
        x["added"] = x["per_insert"] - plain
    return out


def bulk(g, variants, rows):
    """Part 2: per-row instructions of one INSERT ... SELECT per variant."""
    prepare(g)
    base = g.cost(g.session(["SELECT 1"]))
    # the inbox variants' sessions open with a SET: so does their baseline
    base_inbox = g.cost(g.session([INBOX_SET, "SELECT 1"]))
    out = {"session_select1": base, "session_set_select1": base_inbox}
    for v in variants:
        prepare(g)
        before = trigger.inbox_inserts(g)
        since = emitter.wal_lsn(g)
        pid = g.session(opening(v) + ["INSERT INTO %s (v) SELECT 'x' FROM generate_series(1, %d)"
                                      % (TABLE[v], rows)])
        c = g.cost(pid)
        ok = not (events_per_row(v) or v in trigger.FLOOR) or trigger.check_events(g, TABLE[v], events_per_row(v))
        ok = ok and (not trigger.inbox_of(v) or trigger.check_inbox(g, v, before))
        ok = ok and trigger.messages_ok(g, v, since)
        b = base_inbox if trigger.inbox_of(v) else base
        out[v] = {"cost": c, "per_row": (c - b) / float(rows), "events_ok": ok}
        log("%-6s %9.0f instructions per row (session %s, SELECT 1 session %s)"
            % (v, out[v]["per_row"], format(c, ","), format(b, ",")))
    for v in variants:
        out[v]["plain_over"] = out["plain"]["per_row"] / out[v]["per_row"]
    return out


def new_worker(g, old, timeout=180):
    """Stop the worker `old` (its callgrind file is then written) and wait
    for the launcher's next one; its pid."""
    if old:
        g.q("SELECT pg_terminate_backend(%s)", (old,))
        g.cg_file(old)
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = g.worker_pid()
        if pid and pid != old:
            return pid
        time.sleep(0.2)
    raise RuntimeError("no new pg_callback worker after %d s" % timeout)


def drain_once(g, n):
    """A fresh worker drains n events; (its pid once it has ended, the
    attempt rows the drain left)."""
    g.q("SELECT callback.pause_endpoint('drain')")
    g.reset_queue()
    g.q("SELECT count(callback.enqueue('drain.event', " + drain.payload_sql().replace("%", "%%")
        + ")) FROM generate_series(1, %s) g", (n,))
    g.q("ANALYZE callback.callback_queue")
    g.q("CHECKPOINT")
    pid = new_worker(g, g.worker_pid())
    g.q("SELECT callback.resume_endpoint('drain')")
    deadline = time.time() + max(600.0, n / 10.0)
    done = 0
    while time.time() < deadline:
        done = g.q1("SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'", name="mon")
        if done >= n:
            break
        time.sleep(0.2)
    if done < n:
        raise RuntimeError("drain under callgrind: %d of %d delivered in time" % (done, n))
    g.q("SELECT callback.pause_endpoint('drain')")
    g.q("SELECT pg_terminate_backend(%s)", (pid,))
    g.cg_file(pid)
    return pid, g.q1("SELECT count(*) FROM callback.callback_attempts")


def set_attempt_history(g, value):
    """callback.attempt_history in the cluster's configuration, reloaded;
    once a session has it, the postmaster has it, and so will the fresh
    worker of the next drain."""
    if value == "all":
        g.q("ALTER SYSTEM RESET callback.attempt_history")
    else:
        g.q("ALTER SYSTEM SET callback.attempt_history = %s", (value,))
    g.q("SELECT pg_reload_conf()")
    wait_for("callback.attempt_history = %s" % value,
             lambda: g.q1("SELECT current_setting('callback.attempt_history')", name="mon") == value)


def worker(g, n, what="worker", also=()):
    """Part 3: instructions of the worker per delivery, and below it (the
    top functions, WORKER_FNS and `also`)."""
    drains = {m: drain_once(g, m * n) for m in (1, 3)}
    pids = {m: drains[m][0] for m in (1, 3)}
    cost = {m: g.cost(pids[m]) for m in (1, 3)}
    per = (cost[3] - cost[1]) / (2.0 * n)
    inc1, inc3 = g.inclusive(pids[1]), g.inclusive(pids[3])
    fns = per_unit(inc1, inc3, 2 * n)
    # below the worker's main function: its callers (the postmaster's frames
    # before the fork) carry the same inclusive cost, and recursion can inflate
    main = inc3.get("pgcb_worker_main")
    fns = {f: x for f, x in fns.items()
           if f == "pgcb_worker_main" or (main is None or inc3[f] < main) and x <= per}
    top = sorted(fns.items(), key=lambda kv: -kv[1])[:TOP]
    top += [(f, fns[f]) for f in WORKER_FNS + tuple(also) if f in fns and f not in dict(top)]
    top.sort(key=lambda kv: -kv[1])
    trips = {m: g.calls(pids[m], ROUND_TRIPS) for m in (1, 3)}
    log("%s: %.0f instructions per delivery (drains of %d and %d: %s and %s; calls of %s: %s and %s; "
        "attempt rows left: %d and %d)"
        % (what, per, n, 3 * n, format(cost[1], ","), format(cost[3], ","), " / ".join(ROUND_TRIPS),
           " / ".join(str(trips[1][f]) for f in ROUND_TRIPS),
           " / ".join(str(trips[3][f]) for f in ROUND_TRIPS), drains[1][1], drains[3][1]))
    for f, x in top:
        log("   %10.0f  %s" % (x, f))
    return {"cost_n": cost[1], "cost_3n": cost[3], "per_delivery": per, "calls_n": trips[1],
            "calls_3n": trips[3], "top": [[f, round(x)] for f, x in top],
            "attempt_rows_n": drains[1][1], "attempt_rows_3n": drains[3][1]}


def worker_failures(g, n, also):
    """Part 3 again with callback.attempt_history = failures: each delivery
    of the drains succeeds at its first attempt and leaves no attempt row
    (the report says how many were left); the setting is put back after.
    `also`: functions to report whether in its top or not (part 3's)."""
    set_attempt_history(g, "failures")
    try:
        return worker(g, n, "worker, attempt_history = failures", also)
    finally:
        set_attempt_history(g, "all")


def worker_batched(g, n, also):
    """Part 3 again with the endpoint at drain.BATCHED events per request:
    what a delivery costs once a request's cost is shared; put back after."""
    g.q("SELECT callback.alter_endpoint('drain', batch_size => %s)", (drain.BATCHED,))
    try:
        return worker(g, n, "worker, batch_size %d" % drain.BATCHED, also)
    finally:
        g.q("SELECT callback.alter_endpoint('drain', batch_size => 1)")


def fill_inbox(g, m, packed=False):
    """m row-trigger events in the inbox, one single-row transaction each as
    pgbench writes them ('bench' is paused: nothing is delivered), after
    prepare(g) emptied the tables (its TRUNCATE would wait for a held move
    lock); how many wait there.  packed: one INSERT of m rows through the
    statement trigger instead, whose events are packed, several to a row."""
    if packed:
        g.q("INSERT INTO t_stmt (v) SELECT 'x' FROM generate_series(1, %d)" % m, name="fill",
            options="-c callback.inbox=on")
    else:
        g.q("DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO t_row (v) VALUES ('x'); COMMIT; END LOOP; END $$"
            % m, name="fill", options="-c callback.inbox=on")
    g.q("CHECKPOINT")
    return g.q1("SELECT coalesce(sum(events), 0) FROM callback.callback_inbox")


def worker_state(g, pid):
    return g.q1("SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = %s", (pid,), name="mon")


def wait_for(what, cond, timeout=600):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise RuntimeError("instructions, inbox move: %s not seen after %d s" % (what, timeout))
        time.sleep(0.1)


def worker_move_once(g, m, packed=False):
    """A fresh worker moves an inbox of m events (packed: see fill_inbox);
    (its pid once ended, events it moved).  The move's lock is held while the inbox fills and the
    worker starts, so that it moves nothing before its first cycle is over;
    then released, and the worker woken."""
    prepare(g)
    holder = psycopg2.connect(host=g.pgdir, port=g.pg_port, user="postgres", dbname="bench")
    try:
        with holder.cursor() as cur:
            cur.execute(MOVE_LOCK)
            k = fill_inbox(g, m, packed)
            pid = new_worker(g, g.worker_pid())
            # its first cycle (the move finds the lock taken) is over: 'idle'
            wait_for("the fresh worker's first cycle", lambda: worker_state(g, pid) == "idle")
        holder.rollback()
    finally:
        holder.close()
    g.q("SELECT callback.wake_worker()")
    wait_for("an empty inbox", lambda: not g.q1("SELECT EXISTS (SELECT FROM callback.callback_inbox)",
                                                 name="mon"))
    wait_for("the worker idle", lambda: worker_state(g, pid) == "idle")
    moved = g.q1("SELECT count(*) FROM callback.callback_queue")
    if moved != k:
        log("warning: %d events in the inbox, %d in the queue after the move" % (k, moved))
    g.q("SELECT pg_terminate_backend(%s)", (pid,))
    g.cg_file(pid)
    return pid, moved


def backend_move_once(g, m):
    """A session moves an inbox of m events with one call of
    callback._move_inbox(1000000); (its pid, rows it moved)."""
    prepare(g)
    fill_inbox(g, m)
    pid = g.session(["SELECT callback._move_inbox(1000000)"])
    return pid, g.last[0][0]


def move(g, n):
    """Part 4: instructions per row moved from the inbox into the queue, by
    the worker and by one statement."""
    out = {}
    for who, once in (("worker", worker_move_once), ("statement", backend_move_once),
                      ("worker_packed", lambda g, m: worker_move_once(g, m, packed=True))):
        runs = {m: once(g, m * n) for m in (1, 3)}
        pids = {m: runs[m][0] for m in (1, 3)}
        moved = {m: runs[m][1] for m in (1, 3)}
        cost = {m: g.cost(pids[m]) for m in (1, 3)}
        per = (cost[3] - cost[1]) / float(moved[3] - moved[1])
        x = {"moved_n": moved[1], "moved_3n": moved[3], "cost_n": cost[1], "cost_3n": cost[3],
             "per_row": per}
        if who != "statement":
            fns = per_unit(g.inclusive(pids[1]), g.inclusive(pids[3]), moved[3] - moved[1])
            x["functions"] = {f: round(fns[f]) for f in MOVE_FNS if f in fns}
            x["calls_n"], x["calls_3n"] = g.calls(pids[1], MOVE_CALLS), g.calls(pids[3], MOVE_CALLS)
        out[who] = x
        log("inbox move, %s: %.0f instructions per moved row (%s and %s rows: %s and %s)%s"
            % (who, per, moved[1], moved[3], format(cost[1], ","), format(cost[3], ","),
               "; calls of %s: %s and %s" % (" / ".join(MOVE_CALLS),
                                             " / ".join(str(x["calls_n"][f]) for f in MOVE_CALLS),
                                             " / ".join(str(x["calls_3n"][f]) for f in MOVE_CALLS))
               if who != "statement" else ""))
    g.reset_queue()
    return out


def inbox_totals(t):
    """Per event, for each inbox variant: the producer's instructions (per
    single-row INSERT, per row of the bulk INSERT) + the worker's per moved
    row, beside the direct path's producer cost.  A list of dicts."""
    s, b, mv = t["single"], t["bulk"], t.get("move")
    if not mv:
        return []
    out = []
    for what, res, key in (("single-row INSERT", s, "per_insert"),
                           ("one INSERT of %s rows, per row" % format(t["rows"], ","), b, "per_row")):
        plain = res["plain"][key]
        for inbox_v, direct_v in INBOX_PAIRS:
            if inbox_v not in res or direct_v not in res:
                continue
            prod, direct = res[inbox_v][key], res[direct_v][key]
            # the statement path's events wait packed: their move's figure
            per_move = mv["worker"]["per_row"]
            if key == "per_row" and inbox_v == "stmt_inbox" and "worker_packed" in mv:
                per_move = mv["worker_packed"]["per_row"]
            out.append({"what": what, "inbox": inbox_v, "direct": direct_v, "producer": prod,
                        "producer_added": prod - plain, "move": per_move, "total": prod + per_move,
                        "total_added": prod - plain + per_move, "direct_producer": direct,
                        "direct_added": direct - plain, "total_over_direct": (prod + per_move) / direct,
                        "added_over_direct": (prod - plain + per_move) / (direct - plain)})
    return out


def run(env):
    a = env.args
    n = a.instr_n or (300 if env.quick else 2000)
    rows = a.instr_rows or (2000 if env.quick else 10000)
    step("9. instructions (callgrind): %d and %d single-row INSERTs per variant; one INSERT of %s rows; "
         "drains of %d and %d events; inbox moves of %d and %d events"
         % (n, 3 * n, format(rows, ","), n, 3 * n, n, 3 * n))
    t0 = time.time()
    g = Grind(env)
    receiver = None
    try:
        g.start_cluster()
        why = setup(g)
        if why:
            log("statement-level path: not available (%s)" % why)
        log("cluster %s restarted under callgrind (wal_level = logical, synchronous_commit = off)"
            % g.pgdir)
        g.start_grind()
        receiver = subprocess.Popen(["/usr/bin/python3", os.path.join(env.repo, "test", "receiver.py"),
                                     "--host", "127.0.0.1", "--port", str(g.rcv_port), "--status", "204"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if "listening" not in receiver.stdout.readline():
            raise RuntimeError("receiver did not start on port %d" % g.rcv_port)
        warm_up(g)
        single_v = [v for v, _, _ in SINGLE if v not in ("stmt", "snoop") or not why]
        res = {"n": n, "rows": rows, "stmt_available": why is None, "stmt_unavailable_reason": why,
               "variants": LABEL, "conf": GRIND_CONF}
        res["timing_s"] = {"start": round(time.time() - t0, 1)}
        for key, fn in (("single", lambda: single_rows(g, single_v, n)),
                        ("bulk", lambda: bulk(g, [v for v in BULK if v in single_v], rows)),
                        ("worker", lambda: worker(g, n)),
                        ("worker_failures",
                         lambda: worker_failures(g, n, tuple(f for f, _ in res["worker"]["top"]))),
                        ("worker_batched",
                         lambda: worker_batched(g, n, tuple(f for f, _ in res["worker"]["top"]))),
                        ("move", lambda: move(g, n))):
            t = time.time()
            res[key] = fn()
            res["timing_s"][key] = round(time.time() - t, 1)
            log("(%s: %.0f s)" % (key, res["timing_s"][key]))
        res["inbox_totals"] = inbox_totals(res)
        for x in res["inbox_totals"]:
            log("%s, %s: producer %.0f + move %.0f = %.0f instructions per event (direct path: %.0f)"
                % (x["what"], x["inbox"], x["producer"], x["move"], x["total"], x["direct_producer"]))
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(10)
        g.stop_grind()
    res["seconds"] = round(time.time() - t0, 1)
    log("part 9 took %.0f s" % res["seconds"])
    return res


# ------------------------------------------------------------------ report

def rows(t):
    s, b, w = t["single"], t["bulk"], t["worker"]
    out = [("9. instructions per single-row INSERT, plain (callgrind)", fmt(s["plain"]["per_insert"]),
            "", "", "")]
    out.append(("   plain / row trigger, statement path, outbox, logical message (PL/pgSQL; C)",
                " / ".join(fmt(s[v]["plain_over"], "{:.2f}") if v in s else "-"
                           for v in ("row", "stmt", "outbox", "lm", emitter.NAME)), "", "", ""))
    out.append(("   plain / trigger with no endpoint matching (the floor): row, statement path",
                " / ".join(fmt(s[v]["plain_over"], "{:.2f}") if v in s else "-" for v in trigger.FLOOR),
                "", "", ""))
    out.append(("   plain / row trigger, 1 / 3 / 10 endpoints matching",
                " / ".join(fmt(s[v]["plain_over"], "{:.2f}") for v in ("row", "fan3", "fan10")),
                "", "", ""))
    out.append(("   one INSERT of %s rows, plain per row" % format(t["rows"], ","),
                fmt(b["plain"]["per_row"]), "", "", ""))
    out.append(("   same, plain / row trigger, statement path, outbox, logical message in C",
                " / ".join(fmt(b[v]["plain_over"], "{:.2f}") if v in b else "-"
                           for v in ("row", "stmt", "outbox", emitter.NAME)), "", "", ""))
    out.append(("   same, plain / no endpoint matching (the floor): row, statement path",
                " / ".join(fmt(b[v]["plain_over"], "{:.2f}") if v in b else "-" for v in trigger.FLOOR),
                "", "", ""))
    out.append(("   worker instructions per delivery", fmt(w["per_delivery"]), "", "", ""))
    if "worker_failures" in t:
        out.append(("   worker instructions per delivery, attempt_history = failures",
                    fmt(t["worker_failures"]["per_delivery"]), "", "", ""))
    if "worker_batched" in t:
        out.append(("   worker instructions per delivery, batch_size %d" % drain.BATCHED,
                    fmt(t["worker_batched"]["per_delivery"]), "", "", ""))
    if "row_inbox" in s:
        out.append(("   plain / row trigger, statement path, inbox on (producer only)",
                    " / ".join(fmt(s[v]["plain_over"], "{:.2f}") if v in s else "-"
                               for v in ("row_inbox", "stmt_inbox")), "", "", ""))
    if "move" in t:
        out.append(("   inbox: worker instructions per moved row (one statement)",
                    "%s (%s)" % (fmt(t["move"]["worker"]["per_row"]), fmt(t["move"]["statement"]["per_row"])),
                    "", "", ""))
        if "worker_packed" in t["move"]:
            out.append(("   inbox: worker instructions per moved event of a statement (packed)",
                        fmt(t["move"]["worker_packed"]["per_row"]), "", "", ""))
    for x in t.get("inbox_totals", []):
        out.append(("   %s, %s: producer + move (direct path)" % (x["what"], INBOX_SHORT[x["inbox"]]),
                    "%s (%s)" % (fmt(x["total"]), fmt(x["direct_producer"])), "", "", ""))
    return out


INBOX_SHORT = {"row_inbox": "row trigger, inbox on", "stmt_inbox": "statement path, inbox on",
               "row": "row trigger", "stmt": "statement path"}


def markdown(t):
    s, b, w = t["single"], t["bulk"], t["worker"]
    n = t["n"]
    md = ["### Instructions (callgrind): deterministic costs", "",
          "Counted by callgrind in a cluster of this part's own (`wal_level = logical`, needed by the "
          "logical-message variant, for every variant; `synchronous_commit = off`; a checkpoint before "
          "each session), only inside `PostgresMain` / `pgcb_worker_main`. Instruction counts do not "
          "swing with the machine's load (the worker's a little: its batches follow the receiver's "
          "timing); they are not time (no cache misses, no I/O, no lock waits).", "",
          "Single-row `INSERT INTO t(v) VALUES ('x')` transactions, one backend running %s and another "
          "%s: (cost(%s) - cost(%s)) / %s per insert." % (format(n, ","), format(3 * n, ","),
                                                           format(3 * n, ","), format(n, ","),
                                                           format(2 * n, ",")), "",
          "| trigger on t | instructions / insert | plain / variant | added by the trigger "
          "| of which inside the trigger function (`callback_trigger`, `plpgsql_exec_trigger` or `bench_message_trigger`) |",
          "|---|---|---|---|---|"]
    for v, _, label in SINGLE:
        if v not in s:
            md.append("| %s | not available | | | |" % label)
            continue
        x = s[v]
        inside = " / ".join(fmt(x["functions"].get(f)) for f in TRIGGER_FNS if f in x["functions"])
        md.append("| %s%s | %s | %s | %s | %s |"
                  % (label, "" if x["events_ok"] else EVENTS_WARNING,
                     fmt(x["per_insert"]), fmt(x["plain_over"], "{:.2f}"),
                     "" if v == "plain" else fmt(x["added"]), inside))
    md += ["", "One `INSERT ... SELECT` of %s rows, a session per statement, minus a session running "
           "`SELECT 1` (%s instructions):" % (format(t["rows"], ","), fmt(b["session_select1"])), "",
           "| trigger on t | instructions / row | plain / variant |", "|---|---|---|"]
    for v in BULK:
        if v in b:
            md.append("| %s%s | %s | %s |" % (LABEL[v], "" if b[v]["events_ok"] else EVENTS_WARNING,
                                              fmt(b[v]["per_row"]), fmt(b[v]["plain_over"], "{:.2f}")))
    md += ["", "The worker draining %s and %s events queued by `callback.enqueue()` (a fresh worker "
           "for each drain) to test/receiver.py answering 204: **%s instructions per delivery**. "
           "The drains called %s %s and %s times: how many deliveries a claim or a write-back "
           "carries follows the timing of the answers, and moves the figure by a few percent. "
           "Inclusive instructions per delivery of the functions below the worker's main function:"
           % (format(n, ","), format(3 * n, ","), fmt(w["per_delivery"]),
              " / ".join("`%s`" % f for f in ROUND_TRIPS),
              " / ".join(str(w["calls_n"][f]) for f in ROUND_TRIPS),
              " / ".join(str(w["calls_3n"][f]) for f in ROUND_TRIPS)), "",
           "| function | instructions / delivery | share |", "|---|---|---|"]
    # a function the executor re-enters (ExecScan, ...) can be counted once per level
    for f, x in w["top"]:
        md.append("| `%s` | %s | %.0f %% |" % (f, fmt(x), 100.0 * x / w["per_delivery"]))
    md.append("")
    return md + history_markdown(t) + batched_markdown(t) + inbox_markdown(t)


def history_markdown(t):
    """The same drains with callback.attempt_history = failures."""
    w, f = t["worker"], t.get("worker_failures")
    if not f:
        return []
    intro = ("The same drains with `callback.attempt_history = failures` (set with ALTER SYSTEM and "
             "reloaded before the drains' fresh workers start, put back after): every delivery succeeds "
             "at its first attempt, so none writes its `callback_attempts` row (left: %d and %d rows); "
             "the per-minute stats are written as before. **%s instructions per delivery**, against %s "
             "with every attempt kept (%.2f of it):"
             % (f["attempt_rows_n"], f["attempt_rows_3n"], fmt(f["per_delivery"]),
                fmt(w["per_delivery"]), f["per_delivery"] / w["per_delivery"]))
    return beside_markdown(intro, w, f, "all", "failures")


def batched_markdown(t):
    """The same drains at batch_size drain.BATCHED."""
    w, b = t["worker"], t.get("worker_batched")
    if not b:
        return []
    intro = ("The same drains with the endpoint at `batch_size` %d (one request per %d events, each "
             "delivery still claimed, written back and counted on its own): **%s instructions per "
             "delivery**, against %s at one event per request (%.2f of it):"
             % (drain.BATCHED, drain.BATCHED, fmt(b["per_delivery"]), fmt(w["per_delivery"]),
                b["per_delivery"] / w["per_delivery"]))
    return beside_markdown(intro, w, b, "one event per request", "batch_size %d" % drain.BATCHED)


def beside_markdown(intro, w, other, w_label, other_label):
    """Part 3's functions per delivery beside another drain's, with that
    drain's own top functions that part 3's list lacks."""
    md = [intro, "", "| function | instructions / delivery, %s | %s |" % (w_label, other_label),
          "|---|---|---|"]
    theirs = dict(other["top"])
    for fn, x in w["top"]:
        md.append("| `%s` | %s | %s |" % (fn, fmt(x), fmt(theirs.get(fn))))
    ours = dict(w["top"])
    for fn, x in other["top"]:
        if fn not in ours:
            md.append("| `%s` | | %s |" % (fn, fmt(x)))
    md.append("")
    return md


def inbox_markdown(t):
    """callback.inbox: the move per row, and producer + move per event."""
    mv = t.get("move")
    if not mv:
        return []
    w, st = mv["worker"], mv["statement"]
    md = ["#### callback.inbox: an event's whole way in (callgrind)", "",
          "With the inbox on, the producer writes a heap tuple into `callback_inbox` (no index); the "
          "worker then moves it into `callback_queue` (its index entries and identity value). The inbox "
          "was filled with %s and then %s row-trigger events, one single-row transaction each (endpoint "
          "paused: nothing delivered), and moved: by a fresh worker, woken once (its cycles as they "
          "run: oldest written first, about half a backlog of more than 2,000 rows per call; it "
          "called %s %s and %s times), "
          "**%s instructions per moved row**; by one session calling "
          "`callback._move_inbox(1000000)` (one statement), %s per moved row. Each: (cost(%s) - "
          "cost(%s)) / rows moved in between. The worker's figure includes what a cycle with nothing "
          "to deliver costs, an empty cycle more or less between the two moves moving it by a few "
          "instructions per row; it is a backlog's figure (the bench's case: endpoints paused, the "
          "worker moves at each poll): a worker woken at every commit moves a few rows per call and "
          "pays the call's fixed cost on fewer rows."
          % (format(w["moved_n"], ","), format(w["moved_3n"], ","), " / ".join("`%s`" % f for f in MOVE_CALLS),
             " / ".join(str(w["calls_n"][f]) for f in MOVE_CALLS),
             " / ".join(str(w["calls_3n"][f]) for f in MOVE_CALLS), fmt(w["per_row"]), fmt(st["per_row"]),
             format(w["moved_3n"], ","), format(w["moved_n"], ",")), ""]
    if w.get("functions"):
        md += ["| worker function (inclusive) | instructions / moved row |", "|---|---|"]
        md += ["| `%s` | %s |" % (f, fmt(x)) for f, x in w["functions"].items()]
        md.append("")
    wp = mv.get("worker_packed")
    if wp:
        md += ["The statement path's events wait packed (several to an inbox row, "
               "`src/inbox_pack.c`): filled with one INSERT of %s and then %s rows through the "
               "statement trigger and moved by a fresh worker as above, **%s instructions per moved "
               "event** (one queue row each). The statement path's producer + move below uses "
               "this figure." % (format(wp["moved_n"], ","), format(wp["moved_3n"], ","),
                                 fmt(wp["per_row"])), ""]
        if wp.get("functions"):
            md += ["| worker function (inclusive), packed | instructions / moved event |", "|---|---|"]
            md += ["| `%s` | %s |" % (f, fmt(x)) for f, x in wp["functions"].items()]
            md.append("")
    md += ["Producer + move per event, beside the direct path's producer (callback.inbox off); "
           "\"added\" is over plain's instructions for the same INSERT:", "",
           "| per event | inbox on: producer (added) | + move (worker) | = producer + move (added) "
           "| inbox off: producer (added) | inbox on / off: total (added) |", "|---|---|---|---|---|---|"]
    for x in t.get("inbox_totals", []):
        md.append("| %s, %s | %s (%s) | %s | **%s** (%s) | %s (%s) | %.2f (%.2f) |"
                  % (x["what"], INBOX_SHORT[x["direct"]], fmt(x["producer"]), fmt(x["producer_added"]),
                     fmt(x["move"]), fmt(x["total"]), fmt(x["total_added"]), fmt(x["direct_producer"]),
                     fmt(x["direct_added"]), x["total_over_direct"], x["added_over_direct"]))
    md.append("")
    return md
