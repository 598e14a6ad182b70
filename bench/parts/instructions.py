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
     "events as logical messages" lever of issue 10);
  2. one INSERT ... SELECT of --instr-rows rows, a session per statement:
     its backend's cost minus that of a session running only SELECT 1;
  3. the worker draining N and 3N events queued by callback.enqueue()
     (endpoint paused while they are queued, then resumed) to
     test/receiver.py answering 204, a fresh worker for each drain:
     (cost(3N) - cost(N)) / 2N per delivery, and the functions below it by
     inclusive cost per delivery (callgrind_annotate --inclusive=yes).

The cluster runs with wal_level = logical (for pg_logical_emit_message),
synchronous_commit = off, autovacuum off and a checkpoint before each
measured session, so that no variant pays another's full-page writes."""

import os
import re
import subprocess
import time

import psycopg2

from lib.env import Env
from lib.util import fmt, free_port, log, step
from parts import drain, trigger

# part 1's variants: (name, table, what it is); 'row' is the 1-endpoint fan-out
SINGLE = [
    ("plain", "t_plain", "no trigger"),
    ("row", "t_row", "`callback.trigger()` FOR EACH ROW, 1 paused endpoint matching"),
    ("stmt", "t_stmt", "`callback.trigger()` FOR EACH STATEMENT, REFERENCING NEW TABLE"),
    ("outbox", "t_outbox", "PL/pgSQL outbox (`INSERT INTO outbox ... to_jsonb(NEW)`)"),
    ("lm", "t_lm", "PL/pgSQL `pg_logical_emit_message(true, 'pg_callback', to_jsonb(NEW)::text)`"),
    ("fan3", "t_fan3", "`callback.trigger()` FOR EACH ROW, 3 paused endpoints matching"),
    ("fan10", "t_fan10", "`callback.trigger()` FOR EACH ROW, 10 paused endpoints matching"),
]
BULK = ["plain", "row", "stmt", "outbox"]
TABLE = {name: table for name, table, _ in SINGLE}
LABEL = {name: label for name, _, label in SINGLE}
EVENTS_PER_ROW = dict(trigger.EVENTS_PER_ROW, lm=0)
# functions whose inclusive cost per insert part 1 reports beside the total
TRIGGER_FNS = ("callback_trigger", "plpgsql_exec_trigger")
# worker functions always listed in part 3 (when present), beside the top ones
WORKER_FNS = ("pgcb_delivery_cycle", "pgcb_queue_claim", "pgcb_queue_write_back", "pgcb_http_wait",
              "start_request", "SPI_execute_plan", "ExecInsertIndexTuples", "heap_insert",
              "heap_update", "curl_multi_perform")
TOP = 15
EVENTS_WARNING = " **(warning: events queued != rows x endpoints matching)**"

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
    trigger.prepare(g)


def setup(g):
    g.q("SELECT callback.create_endpoint('bench', %s, '{bench.*}')", (g.hook_url,))
    trigger.setup(g)  # the trigger part's tables, outbox and paused fan-out endpoints
    g.q(LM_DDL)
    why = trigger.stmt_unavailable(g)
    g.q("SELECT callback.create_endpoint('drain', %s, '{drain.*}')", (g.hook_url,))
    g.q("SELECT callback.pause_endpoint('drain')")
    return why


def warm_up(g):
    """One session touching every table and trigger function: the first
    session after a start writes the relcache init file and reads pages in."""
    prepare(g)
    g.cost(g.session(["INSERT INTO %s (v) VALUES ('x')" % t for t in TABLE.values()]))


def single_rows(g, variants, n):
    """Part 1: per-insert instructions of each variant."""
    out = {}
    for v in variants:
        table = TABLE[v]
        cost, inc = {}, {}
        for m in (1, 3):
            prepare(g)
            pid = g.session("INSERT INTO %s (v) VALUES ('x')" % table for _ in range(m * n))
            cost[m] = g.cost(pid)
            inc[m] = g.inclusive(pid) if v != "plain" else {}
        ok = not EVENTS_PER_ROW[v] or trigger.check_events(g, table, EVENTS_PER_ROW[v])
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
    out = {"session_select1": base}
    for v in variants:
        prepare(g)
        pid = g.session(["INSERT INTO %s (v) SELECT 'x' FROM generate_series(1, %d)" % (TABLE[v], rows)])
        c = g.cost(pid)
        ok = not EVENTS_PER_ROW[v] or trigger.check_events(g, TABLE[v], EVENTS_PER_ROW[v])
        out[v] = {"cost": c, "per_row": (c - base) / float(rows), "events_ok": ok}
        log("%-6s %9.0f instructions per row (session %s, SELECT 1 session %s)"
            % (v, out[v]["per_row"], format(c, ","), format(base, ",")))
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
    """A fresh worker drains n events; its pid once it has ended."""
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
    return pid


def worker(g, n):
    """Part 3: instructions of the worker per delivery, and below it."""
    pids = {m: drain_once(g, m * n) for m in (1, 3)}
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
    top += [(f, fns[f]) for f in WORKER_FNS if f in fns and f not in dict(top)]
    top.sort(key=lambda kv: -kv[1])
    trips = {m: g.calls(pids[m], ROUND_TRIPS) for m in (1, 3)}
    log("worker: %.0f instructions per delivery (drains of %d and %d: %s and %s; calls of %s: %s and %s)"
        % (per, n, 3 * n, format(cost[1], ","), format(cost[3], ","), " / ".join(ROUND_TRIPS),
           " / ".join(str(trips[1][f]) for f in ROUND_TRIPS),
           " / ".join(str(trips[3][f]) for f in ROUND_TRIPS)))
    for f, x in top:
        log("   %10.0f  %s" % (x, f))
    return {"cost_n": cost[1], "cost_3n": cost[3], "per_delivery": per, "calls_n": trips[1],
            "calls_3n": trips[3], "top": [[f, round(x)] for f, x in top]}


def run(env):
    a = env.args
    n = a.instr_n or (300 if env.quick else 2000)
    rows = a.instr_rows or (2000 if env.quick else 10000)
    step("9. instructions (callgrind): %d and %d single-row INSERTs per variant; one INSERT of %s rows; "
         "drains of %d and %d events" % (n, 3 * n, format(rows, ","), n, 3 * n))
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
        single_v = [v for v, _, _ in SINGLE if v != "stmt" or not why]
        res = {"n": n, "rows": rows, "stmt_available": why is None, "stmt_unavailable_reason": why,
               "variants": LABEL, "conf": GRIND_CONF}
        res["timing_s"] = {"start": round(time.time() - t0, 1)}
        for key, fn in (("single", lambda: single_rows(g, single_v, n)),
                        ("bulk", lambda: bulk(g, [v for v in BULK if v in single_v], rows)),
                        ("worker", lambda: worker(g, n))):
            t = time.time()
            res[key] = fn()
            res["timing_s"][key] = round(time.time() - t, 1)
            log("(%s: %.0f s)" % (key, res["timing_s"][key]))
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
    out.append(("   plain / row trigger, statement path, outbox, logical message",
                " / ".join(fmt(s[v]["plain_over"], "{:.2f}") if v in s else "-"
                           for v in ("row", "stmt", "outbox", "lm")), "", "", ""))
    out.append(("   plain / row trigger, 1 / 3 / 10 endpoints matching",
                " / ".join(fmt(s[v]["plain_over"], "{:.2f}") for v in ("row", "fan3", "fan10")),
                "", "", ""))
    out.append(("   one INSERT of %s rows, plain per row" % format(t["rows"], ","),
                fmt(b["plain"]["per_row"]), "", "", ""))
    out.append(("   same, plain / row trigger, statement path, outbox",
                " / ".join(fmt(b[v]["plain_over"], "{:.2f}") if v in b else "-"
                           for v in ("row", "stmt", "outbox")), "", "", ""))
    out.append(("   worker instructions per delivery", fmt(w["per_delivery"]), "", "", ""))
    return out


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
          "| of which inside the trigger function (`callback_trigger` or `plpgsql_exec_trigger`) |",
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
    return md
