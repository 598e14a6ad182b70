#!/usr/bin/python3
"""pg_callback benchmark.  Run through bench/run.sh, which installs, builds,
makes the temporary directory and cleans up; this file does the measuring.

Parts (each the median of --runs runs):
  1. drain    100,000 queued signed events (enqueued while the endpoint is
              paused, then ANALYZEd as autovacuum would have done for a backlog
              that built up) -> deliveries/s from resume_endpoint() until the
              last is recorded as delivered in callback_queue; nginx's raw
              capacity with wrk at the same concurrency; the ratio.
  2. trigger  pgbench single-row inserts: plain table, callback.trigger(),
              and a PL/pgSQL outbox trigger (jsonb into a logged table).
  3. keepup   a pgbench insert run with the trigger while the worker delivers:
              enqueued, delivered, backlog at the end, time to catch up.
  4. latency  single-row commits 20 ms apart -> commit-to-arrival p50/p99/max,
              arrival taken at the receiver (test/receiver.py), commit time
              taken right after COMMIT returns, both time.time().
  5. metrics  callback_metrics, callback_health, prometheus_metrics() over
              1,000,000 attempts (one week of per-minute rollups).

Writes bench/out/results.json, results.md and bench.png.
"""

import argparse
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time

import psycopg2

PG_BIN = "/usr/lib/postgresql/15/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
CLK = os.sysconf("SC_CLK_TCK")

# Figures quoted in the issue, for the table.
BASELINE = {
    "pg_net_drain_default": 200,
    "pg_net_drain_max": 970,
    "pg_net_latency_p50_ms": 515,
    "pg_net_latency_p99_ms": 1000,
    "pg_net_trigger_ratio": 0.48,
    "outbox_trigger_ratio": 0.89,
    "nginx_wrk_ceiling": 65000,
}
TARGET = {
    "drain_per_s": 20000,
    "trigger_ratio": 0.90,
    "latency_p50_ms": 2.0,
    "latency_p99_ms": 20.0,
}


def log(msg):
    print("   " + msg, flush=True)


def step(msg):
    print("== " + msg, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(sorted_xs, p):
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


def free_port(start):
    for port in range(start, start + 200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        if os.path.exists("/tmp/.s.PGSQL.%d" % port):
            continue
        return port
    raise RuntimeError("no free port from %d" % start)


# ------------------------------------------------------------------ CPU accounting

def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def children_of(ppid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        if int(fields[1]) == ppid:
            kids.append(int(d))
    return kids


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK



def read_pid(path):
    """The pid on the first line of a pid file, or None."""
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None

class CpuMeter:
    """CPU seconds used by the worker, the other postgres processes, nginx,
    and the whole machine (other people's work included) over an interval."""

    def __init__(self, bench):
        self.b = bench

    def snap(self):
        pg = self.b.postmaster_pid()
        pg_kids = children_of(pg) if pg else []
        worker = self.b.worker_pid()
        ngx = children_of(self.b.nginx_master_pid()) if self.b.nginx_master_pid() else []
        return {
            "t": time.time(),
            "worker": proc_cpu_s(worker) if worker else 0.0,
            "pg_all": sum(proc_cpu_s(p) for p in pg_kids),
            "nginx": sum(proc_cpu_s(p) for p in ngx),
            "machine": machine_busy_s(),
        }

    @staticmethod
    def delta(a, b):
        d = {k: round(b[k] - a[k], 3) for k in a}
        d["wall"] = d.pop("t")
        d["pg_other"] = round(d["pg_all"] - d["worker"], 3)
        return d


# ------------------------------------------------------------------ perf call chains

def _perf_frame(line):
    """'  5a5e6d RelationIdGetRelation+0x8d (/usr/lib/.../postgres)' -> 'RelationIdGetRelation [postgres]'"""
    p = line.strip().split(None, 1)
    if len(p) < 2:
        return None
    m = re.match(r"(.*?)(\+0x[0-9a-f]+)? \((.*)\)$", p[1])
    if not m:
        return p[1]
    sym, dso = m.group(1), os.path.basename(m.group(3))
    if sym == "[unknown]":
        sym = "0x" + p[0]
    return "%s [%s]" % (sym, dso)


def perf_under(script_text, roots, top=40):
    """For each root function: share of all samples with it on the stack, its
    direct callees, and the functions below it by inclusive share (a function
    counts once per sample), from `perf script` output."""
    samples = []
    for block in script_text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        frames = [_perf_frame(x) for x in lines[1:] if x.startswith(("\t", " "))]
        frames = [x for x in frames if x]
        if frames:
            samples.append(frames)
    out = []
    for root in roots:
        inc, kids, n = {}, {}, 0
        for frames in samples:
            names = [x.split(" [")[0] for x in frames]
            if root not in names:
                continue
            n += 1
            i = names.index(root)
            for x in set(frames[:i]):
                inc[x] = inc.get(x, 0) + 1
            k = frames[i - 1] if i > 0 else "(self)"
            kids[k] = kids.get(k, 0) + 1
        if not n:
            continue
        out.append("### under %s: %d of %d samples (%.1f%%)" % (root, n, len(samples), 100.0 * n / len(samples)))
        out.append("  direct callees:")
        for k, c in sorted(kids.items(), key=lambda kv: -kv[1])[:12]:
            out.append("    %5.1f%%  %s" % (100.0 * c / n, k))
        out.append("  inclusive below it (named functions):")
        shown = 0
        for k, c in sorted(inc.items(), key=lambda kv: -kv[1]):
            if k.startswith("0x"):
                continue
            out.append("    %5.1f%%  %s" % (100.0 * c / n, k))
            shown += 1
            if shown >= top:
                break
        out.append("")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = args.tmp
        self.repo = args.repo
        self.quick = args.quick
        self.runs = args.runs or (1 if self.quick else 3)
        self.pgdir = os.path.join(self.tmp, "pg")
        self.datadir = os.path.join(self.pgdir, "data")
        self.ngxdir = os.path.join(self.tmp, "nginx")
        self.pg_port = free_port(args.port)
        self.ngx_port = free_port(self.pg_port + 80)
        self.rcv_port = free_port(self.ngx_port + 10)
        self.receiver = None
        self._conns = {}
        self.results = {"runs": self.runs, "quick": self.quick, "parts": {}}
        self.perf_files = []

        q = self.quick
        self.n_drain = args.drain_events or (20000 if q else 100000)
        self.wrk_s = 5 if q else 10
        self.pgbench_s = 5 if q else 15
        self.pgbench_clients = args.clients
        self.keepup_s = args.keepup_seconds or (15 if q else 60)
        self.catchup_max_s = args.catchup_max or (60 if q else 120)
        self.n_latency = 50 if q else 200
        self.n_attempts = args.metrics_attempts or (100000 if q else 1000000)

    # ---------------------------------------------------------- processes

    def as_pg(self, cmd):
        return ["runuser", "-u", "postgres", "--"] + cmd

    def run(self, cmd, **kw):
        kw.setdefault("check", True)
        return subprocess.run(cmd, **kw)

    def postmaster_pid(self):
        return read_pid(os.path.join(self.datadir, "postmaster.pid"))

    def nginx_master_pid(self):
        return read_pid(os.path.join(self.ngxdir, "nginx.pid"))

    def start_cluster(self):
        step("cluster: initdb in %s, port %d" % (self.pgdir, self.pg_port))
        os.makedirs(self.pgdir)
        pw = pwd.getpwnam("postgres")
        os.chown(self.pgdir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pgdir, 0o755)
        self.run(self.as_pg([PG_BIN + "/initdb", "-D", self.datadir, "-U", "postgres",
                             "--auth=trust", "-E", "UTF8", "--locale=C"]),
                 stdout=subprocess.DEVNULL)
        conf = {
            "listen_addresses": "''",
            "unix_socket_directories": "'%s'" % self.pgdir,
            "port": str(self.pg_port),
            "max_connections": "100",
            "shared_preload_libraries": "'pg_callback'",
            "callback.database_name": "'bench'",
            "callback.ssrf_allowlist": "'127.0.0.0/8'",
            "synchronous_commit": "on",
            "fsync": "on",
            "shared_buffers": "1GB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "30min",
            "wal_buffers": "16MB",
            "effective_cache_size": "4GB",
            "log_line_prefix": "'%m [%p] %b '",
            "log_min_duration_statement": "-1",
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# pg_callback bench\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        self.results["pg_conf"] = {k: v.strip("'") for k, v in conf.items()
                                   if k not in ("unix_socket_directories", "log_line_prefix")}
        self.pg_ctl("start")
        self.run(self.as_pg([PG_BIN + "/createdb", "-h", self.pgdir, "-p", str(self.pg_port),
                             "-U", "postgres", "bench"]))
        self.wait_worker()

    def pg_ctl(self, action):
        self.run(self.as_pg([PG_BIN + "/pg_ctl", "-D", self.datadir, "-l",
                             os.path.join(self.pgdir, "postgres.log"), "-w", "-t", "60", action]),
                 stdout=subprocess.DEVNULL)

    def stop_cluster(self):
        if self.postmaster_pid():
            for c in self._conns.values():
                try:
                    c.close()
                except Exception:
                    pass
            self._conns = {}
            subprocess.run(self.as_pg([PG_BIN + "/pg_ctl", "-D", self.datadir, "stop",
                                       "-m", "fast", "-t", "30"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_nginx(self):
        step("nginx: 127.0.0.1:%d, return 204 for POST /hook, 1 worker" % self.ngx_port)
        os.makedirs(os.path.join(self.ngxdir, "tmp"))
        os.chmod(os.path.join(self.ngxdir, "tmp"), 0o777)
        t = os.path.join(self.ngxdir, "tmp")
        conf = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    log_format bench '$msec $connection $connection_requests $status $request_length $http_webhook_signature';
    access_log {d}/access.log bench buffer=256k flush=1s;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /hook {{
            client_body_buffer_size 16k;
            client_max_body_size 1m;
            return 204;
        }}
        location / {{ return 404; }}
    }}
}}
""".format(d=self.ngxdir, t=t, port=self.ngx_port)
        path = os.path.join(self.ngxdir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.run(["nginx", "-q", "-p", self.ngxdir, "-c", path, "-t"], stderr=subprocess.DEVNULL)
        self.run(["nginx", "-p", self.ngxdir, "-c", path])
        for _ in range(50):
            if self.nginx_master_pid():
                break
            time.sleep(0.1)
        self.access_log = os.path.join(self.ngxdir, "access.log")

    def stop_nginx(self):
        pid = self.nginx_master_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGQUIT)
            except OSError:
                pass

    def start_receiver(self):
        self.lat_file = os.path.join(self.tmp, "latency.jsonl")
        open(self.lat_file, "w").close()
        step("receiver (latency): test/receiver.py on 127.0.0.1:%d" % self.rcv_port)
        self.receiver = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(self.repo, "test", "receiver.py"),
             "--port", str(self.rcv_port), "--jsonl", self.lat_file],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(os.path.join(self.tmp, "receiver.pid"), "w") as f:
            f.write(str(self.receiver.pid))
        line = self.receiver.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("receiver did not start: %r" % line)

    def stop_receiver(self):
        if self.receiver and self.receiver.poll() is None:
            self.receiver.terminate()
            try:
                self.receiver.wait(10)
            except subprocess.TimeoutExpired:
                self.receiver.kill()

    # ---------------------------------------------------------- SQL

    def conn(self, db="bench", name=None):
        key = (db, name)
        c = self._conns.get(key)
        if c is None or c.closed:
            c = psycopg2.connect(host=self.pgdir, port=self.pg_port, user="postgres", dbname=db)
            c.autocommit = True
            self._conns[key] = c
        return c

    def q(self, sql, args=None, db="bench", name=None):
        with self.conn(db, name).cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    def q1(self, sql, args=None, db="bench", name=None):
        rows = self.q(sql, args, db, name)
        return rows[0][0] if rows else None

    def psql_file(self, path, db="bench"):
        self.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.pgdir, "-p",
                  str(self.pg_port), "-U", "postgres", "-d", db, "-f", path],
                 stdout=subprocess.DEVNULL)

    def worker_pid(self):
        try:
            return self.q1("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_callback worker' "
                           "AND datname = 'bench' LIMIT 1", name="mon")
        except psycopg2.Error:
            return None

    def wait_worker(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.worker_pid():
                return
            time.sleep(0.2)
        raise RuntimeError("the pg_callback worker did not start (see %s/postgres.log)" % self.pgdir)

    def worker_counters(self):
        r = self.q("SELECT coalesce(sum(delivered), 0), coalesce(sum(failed), 0), coalesce(sum(dead), 0) "
                   "FROM callback.worker_stats() WHERE database = (SELECT oid FROM pg_database "
                   "WHERE datname = 'bench')", name="mon")[0]
        return int(r[0]), int(r[1]), int(r[2])

    def reset_queue(self):
        self.q("TRUNCATE callback.callback_queue, callback.callback_attempts, callback.callback_stats "
               "RESTART IDENTITY")

    def queue_counts(self):
        r = self.q("SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), "
                   "count(*) FILTER (WHERE status IN ('pending', 'sending')), "
                   "count(*) FILTER (WHERE status = 'dead') FROM callback.callback_queue", name="mon")[0]
        return {"total": r[0], "delivered": r[1], "backlog": r[2], "dead": r[3]}

    # ---------------------------------------------------------- setup

    def setup_schema(self):
        step("schema: extension, endpoints, bench tables")
        self.q("CREATE EXTENSION pg_callback")
        self.hook_url = "http://127.0.0.1:%d/hook" % self.ngx_port
        self.q("SELECT callback.create_endpoint('bench', %s, '{bench.*}')", (self.hook_url,))
        self.q("SELECT callback.create_endpoint('lat', %s, '{lat.*}')",
               ("http://127.0.0.1:%d/lat" % self.rcv_port,))
        ddl = """
        CREATE TABLE t_plain (id bigserial PRIMARY KEY, customer_id int NOT NULL,
                              amount_cents int NOT NULL, status text NOT NULL, note text,
                              created_at timestamptz NOT NULL DEFAULT now());
        CREATE TABLE t_cb (LIKE t_plain INCLUDING ALL);
        CREATE TABLE t_outbox (LIKE t_plain INCLUDING ALL);
        CREATE TABLE t_lat (LIKE t_plain INCLUDING ALL);
        CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON t_cb
            FOR EACH ROW EXECUTE FUNCTION callback.trigger('bench');
        CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON t_lat
            FOR EACH ROW EXECUTE FUNCTION callback.trigger('lat');
        -- the durable-outbox baseline: a PL/pgSQL trigger, a jsonb row in a logged table
        CREATE TABLE outbox (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL,
                             created_at timestamptz NOT NULL DEFAULT now());
        CREATE FUNCTION outbox_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO outbox (topic, payload)
            VALUES (TG_TABLE_NAME || '.' || lower(TG_OP),
                    jsonb_build_object('op', TG_OP, 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                                       'new', to_jsonb(NEW), 'old', NULL));
            RETURN NULL;
        END $$;
        CREATE TRIGGER outbox AFTER INSERT ON t_outbox
            FOR EACH ROW EXECUTE FUNCTION outbox_trigger();
        """
        self.q(ddl)
        # one endpoint: the worker keeps at most this many requests in flight to it
        self.inflight = min(int(self.q1("SHOW callback.max_inflight")),
                            int(self.q1("SHOW callback.max_inflight_per_endpoint")))
        self.results["settings"] = {
            k: self.q1("SHOW " + k) for k in (
                "callback.max_inflight", "callback.max_inflight_per_endpoint", "callback.batch_size",
                "callback.max_connections", "callback.poll_interval", "synchronous_commit",
                "shared_buffers", "server_version")}

    def machine(self):
        def cmd(c):
            try:
                return subprocess.run(c, capture_output=True, text=True, shell=True).stdout.strip()
            except Exception:
                return ""
        m = {
            "cpu": cmd("lscpu | sed -n 's/^Model name: *//p'") or platform.processor(),
            "cores": os.cpu_count(),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "kernel": platform.release(),
            "os": cmd(". /etc/os-release && echo $PRETTY_NAME"),
            "disk": cmd("df -T %s | awk 'NR==2{print $2\" on \"$1}'" % self.tmp),
            "postgres": cmd(PG_BIN + "/postgres --version"),
            "nginx": cmd("nginx -v 2>&1"),
            "wrk": cmd("wrk -v 2>&1 | head -1").split(" Copyright")[0],
            "libcurl": cmd("curl --version | head -1"),
            "pg_callback_commit": cmd("git -C %s rev-parse --short HEAD" % self.repo) +
            (" (+local changes)" if cmd("git -C %s status --porcelain -- src sql Makefile" % self.repo) else ""),
            "load_before": os.getloadavg(),
        }
        self.results["machine"] = m
        return m

    # ---------------------------------------------------------- nginx log

    def log_offset(self):
        time.sleep(1.2)  # access log buffer flushes every second
        try:
            return os.path.getsize(self.access_log)
        except OSError:
            return 0

    def log_since(self, offset):
        """requests, distinct connections, most requests on one connection, statuses"""
        time.sleep(1.2)
        conns = {}
        statuses = {}
        n = 0
        signed = 0
        with open(self.access_log) as f:
            f.seek(offset)
            for line in f:
                p = line.split()
                if len(p) < 4:
                    continue
                n += 1
                conns[p[1]] = max(conns.get(p[1], 0), int(p[2]))
                statuses[p[3]] = statuses.get(p[3], 0) + 1
                if len(p) > 5 and p[5].startswith("v1,"):
                    signed += 1
        return {"requests": n, "connections": len(conns),
                "max_requests_per_connection": max(conns.values()) if conns else 0,
                "statuses": statuses, "signed": signed}

    # ---------------------------------------------------------- perf

    def perf_start(self, name, pid=None):
        if not self.args.profile or not shutil.which("perf"):
            return None
        data = os.path.join(OUT, "perf-%s.data" % name)
        for f in (data, data + ".old"):
            if os.path.exists(f):
                os.unlink(f)
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-g", "-o", data]
        # without a pid: the postmaster (the backends it forks from now on inherit the
        # counters) and the worker; not -a, which would sample other people's work too
        cmd += ["-p", str(pid) if pid else "%d,%d" % (self.postmaster_pid(), self.worker_pid())]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return (p, name, data, pid)

    def perf_stop(self, h):
        if h is None:
            return
        p, name, data, pid = h
        p.send_signal(signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        txt = os.path.join(OUT, "perf-%s.txt" % name)
        with open(txt, "w") as f:
            base = ["perf", "report", "-i", data, "--stdio", "--no-header"]
            f.write("### by process (comm, pid)\n")
            f.flush()
            subprocess.run(base + ["--no-children", "-g", "none", "--sort", "comm,pid",
                                   "--percent-limit", "1"], stdout=f, stderr=subprocess.DEVNULL)
            wp = pid or self.worker_pid()
            f.write("\n### worker (pid %s): by shared object\n" % wp)
            f.flush()
            subprocess.run(base + ["--no-children", "-g", "none", "--pid", str(wp), "--sort", "dso",
                                   "--percent-limit", "0.5"], stdout=f, stderr=subprocess.DEVNULL)
            f.write("\n### worker (pid %s): self time by symbol\n" % wp)
            f.flush()
            subprocess.run(base + ["--no-children", "-g", "none", "--pid", str(wp), "--sort",
                                   "dso,sym", "--percent-limit", "0.5"], stdout=f,
                           stderr=subprocess.DEVNULL)
            f.write("\n### worker (pid %s): inclusive time by symbol\n" % wp)
            f.flush()
            subprocess.run(base + ["--children", "-g", "none", "--pid", str(wp), "--sort", "sym",
                                   "--percent-limit", "2"], stdout=f, stderr=subprocess.DEVNULL)
            if pid is None:
                f.write("\n### all postgres processes: self time by symbol\n")
                f.flush()
                subprocess.run(base + ["--no-children", "-g", "none", "--comm", "postgres",
                                       "--sort", "dso,sym", "--percent-limit", "0.5"], stdout=f,
                               stderr=subprocess.DEVNULL)
                f.write("\n### all postgres processes: inclusive time by symbol\n")
                f.flush()
                subprocess.run(base + ["--children", "-g", "none", "--comm", "postgres",
                                       "--sort", "sym", "--percent-limit", "2"], stdout=f,
                               stderr=subprocess.DEVNULL)
            # where the time goes under the functions that matter, from the call chains
            roots = ["pgcb_worker_main", "pgcb_queue_claim", "pgcb_queue_write_back"]
            if pid is None:
                roots += ["PostgresMain", "callback_trigger", "outbox_trigger"]
            script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
            f.write("\n" + perf_under(script, roots))
        self.perf_files.append(txt)
        log("perf report: %s" % os.path.relpath(txt, self.repo))

    # ---------------------------------------------------------- 1. drain

    def drain_payload_sql(self):
        # a ~200-byte signed body: {"type":"bench.event","timestamp":"...","data":{...}}
        return ("jsonb_build_object('order_id', g, 'customer_id', 10000 + g % 90000, "
                "'amount_cents', (g * 7919) % 1000000, 'currency', 'EUR', 'status', 'paid', "
                "'sku', 'SKU-' || lpad((g % 1000000)::text, 7, '0'), 'qty', 1 + g % 5, "
                "'note', 'pg_callback drain benchmark')")

    def part_drain(self):
        step("1. drain: %d queued signed events, then resume (%d run%s); wrk -c %d"
             % (self.n_drain, self.runs, "s" if self.runs > 1 else "", self.inflight))
        res = {"events": self.n_drain, "concurrency": self.inflight, "runs": [], "wrk": []}
        for r in range(self.runs):
            run = self.drain_once(r)
            res["runs"].append(run)
            log("run %d: %d in %.2f s -> %.0f deliveries/s  (first HTTP at %.0f ms; worker CPU %.1f s, "
                "nginx %.1f s, other postgres %.1f s; nginx saw %d requests, %d signed, on %d connections)"
                % (r + 1, run["delivered"], run["seconds"], run["per_s"] or 0, run["first_ms"] or -1,
                   run["cpu"]["worker"], run["cpu"]["nginx"], run["cpu"]["pg_other"],
                   run["nginx_log"]["requests"], run["nginx_log"]["signed"],
                   run["nginx_log"]["connections"]))
            w = self.wrk_once(run["body"])
            res["wrk"].append(w)
            log("run %d: wrk -t1 -c%d %ds: %.0f requests/s (%d connections, nginx CPU %.1f s)"
                % (r + 1, self.inflight, self.wrk_s, w["per_s"], w["nginx_log"]["connections"],
                   w["cpu"]["nginx"]))
        res["per_s"] = median([x["per_s"] for x in res["runs"]])
        res["wrk_per_s"] = median([x["per_s"] for x in res["wrk"]])
        res["ratio"] = res["per_s"] / res["wrk_per_s"] if res["wrk_per_s"] else None
        res["body_bytes"] = res["runs"][0]["body_bytes"]
        for x in res["runs"]:
            x.pop("body", None)
        self.results["parts"]["drain"] = res

    def drain_once(self, r):
        n = self.n_drain
        self.reset_queue()
        self.q("SELECT callback.pause_endpoint('bench')")
        t = time.time()
        self.q("SELECT count(callback.enqueue('bench.event', " + self.drain_payload_sql().replace("%", "%%")
               + ")) FROM generate_series(1, %s) g", (n,))
        enqueue_s = time.time() - t
        body_bytes = self.q1("SELECT round(avg(octet_length(body))) FROM callback.callback_queue")
        body = self.q1("SELECT body FROM callback.callback_queue LIMIT 1")
        self.q("ANALYZE callback.callback_queue")
        self.q("CHECKPOINT")
        off = self.log_offset()
        d0, f0, x0 = self.worker_counters()
        cpu = CpuMeter(self)
        c0 = cpu.snap()
        prof = self.perf_start("drain", self.worker_pid()) if r == 0 else None
        prof_all = None
        t0 = time.time()
        self.q("SELECT callback.resume_endpoint('bench')")
        curve = [(0.0, 0)]
        first_ms = None
        t_end = None
        deadline = t0 + max(120.0, n / 200.0)
        recorded = 0
        while time.time() < deadline:
            time.sleep(0.1)
            d, f, x = self.worker_counters()
            now = time.time()
            curve.append((round(now - t0, 3), d - d0))
            if first_ms is None and d > d0:
                first_ms = (now - t0) * 1000
            if d - d0 >= n:
                # every HTTP answer is in; now wait until the table says so
                while time.time() < deadline:
                    recorded = self.q1("SELECT count(*) FROM callback.callback_queue "
                                       "WHERE status = 'delivered'", name="mon")
                    if recorded >= n:
                        t_end = time.time()
                        break
                    time.sleep(0.02)
                break
        c1 = cpu.snap()
        self.perf_stop(prof)
        self.perf_stop(prof_all)
        d, f, x = self.worker_counters()
        if t_end is None:
            recorded = self.q1("SELECT count(*) FROM callback.callback_queue WHERE status = 'delivered'")
            log("drain did not finish: %d of %d recorded as delivered" % (recorded, n))
        secs = (t_end or time.time()) - t0
        curve.append((round(secs, 3), recorded))
        lat = self.q("SELECT round(avg(latency_ms)::numeric, 2), "
                     "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric, 2), "
                     "round(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::numeric, 2) "
                     "FROM callback.callback_attempts")[0]
        return {
            "delivered": recorded, "finished": t_end is not None, "seconds": round(secs, 3),
            "per_s": recorded / secs if t_end else None,
            "first_ms": first_ms, "enqueue_s": round(enqueue_s, 2), "body_bytes": int(body_bytes),
            "failed_attempts": f - f0, "dead": x - x0, "curve": curve,
            "attempt_latency_ms": {"avg": float(lat[0] or 0), "p50": float(lat[1] or 0),
                                   "p99": float(lat[2] or 0)},
            "batches": int(self.q1("SELECT coalesce(sum(batches), 0) FROM callback.worker_stats()")),
            "cpu": CpuMeter.delta(c0, c1), "nginx_log": self.log_since(off), "body": body,
        }

    def wrk_once(self, body):
        lua = os.path.join(self.tmp, "post.lua")
        with open(lua, "w") as f:
            f.write('wrk.method = "POST"\n')
            f.write("wrk.body = %s\n" % json.dumps(body))
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            f.write('wrk.headers["User-Agent"] = "pg_callback/1.0"\n')
            f.write('wrk.headers["webhook-id"] = "msg_0123456789abcdef0123456789abcdef"\n')
            f.write('wrk.headers["webhook-timestamp"] = "%d"\n' % int(time.time()))
            f.write('wrk.headers["webhook-signature"] = '
                    '"v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="\n')
        off = self.log_offset()
        cpu = CpuMeter(self)
        c0 = cpu.snap()
        out = self.run(["wrk", "-t1", "-c%d" % self.inflight, "-d%ds" % self.wrk_s, "--latency",
                        "-s", lua, self.hook_url], capture_output=True, text=True).stdout
        c1 = cpu.snap()
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return {"per_s": float(m.group(1)) if m else None, "cpu": CpuMeter.delta(c0, c1),
                "nginx_log": self.log_since(off), "output": out}

    # ---------------------------------------------------------- 2. trigger overhead

    def pgbench(self, table, seconds, clients=None):
        clients = clients or self.pgbench_clients
        script = os.path.join(self.tmp, "insert_%s.sql" % table)
        with open(script, "w") as f:
            f.write("\\set cid random(1, 100000)\n\\set amt random(100, 1000000)\n")
            f.write("INSERT INTO %s (customer_id, amount_cents, status, note) "
                    "VALUES (:cid, :amt, 'new', 'pgbench order');\n" % table)
        cmd = [PG_BIN + "/pgbench", "-h", self.pgdir, "-p", str(self.pg_port), "-U", "postgres",
               "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients)),
               "-T", str(seconds), "-f", script, "bench"]
        out = self.run(cmd, capture_output=True, text=True)
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
        n = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
        if not m:
            raise RuntimeError("pgbench failed:\n%s\n%s" % (out.stdout, out.stderr))
        return float(m.group(1)), int(n.group(1)) if n else None

    def part_trigger(self):
        step("2. trigger overhead: pgbench -c %d -j 2 -T %d single-row INSERTs (%d run%s); "
             "endpoint paused so only the insert path is measured"
             % (self.pgbench_clients, self.pgbench_s, self.runs, "s" if self.runs > 1 else ""))
        variants = [("plain", "t_plain"), ("callback", "t_cb"), ("outbox", "t_outbox")]
        res = {"clients": self.pgbench_clients, "seconds": self.pgbench_s,
               "runs": {k: [] for k, _ in variants}, "cpu": {k: [] for k, _ in variants}}
        self.q("SELECT callback.pause_endpoint('bench')")
        for r in range(self.runs):
            line = []
            # rotate the order from run to run, so that drift on a shared machine
            # does not always favour the same variant
            for name, table in variants[r % 3:] + variants[:r % 3]:
                self.q("TRUNCATE t_plain, t_cb, t_outbox, outbox RESTART IDENTITY")
                self.reset_queue()
                self.q("CHECKPOINT")
                prof = self.perf_start("trigger") if (r == 0 and name == "callback") else None
                cpu = CpuMeter(self)
                c0 = cpu.snap()
                tps, _ = self.pgbench(table, self.pgbench_s)
                c1 = cpu.snap()
                self.perf_stop(prof)
                res["cpu"][name].append(CpuMeter.delta(c0, c1))
                if name == "callback":
                    queued = self.q1("SELECT count(*) FROM callback.callback_queue")
                    rows = self.q1("SELECT count(*) FROM t_cb")
                    if queued != rows:
                        log("warning: %d rows inserted but %d events queued" % (rows, queued))
                res["runs"][name].append(tps)
                line.append("%s %.0f (worker CPU %.1f s)" % (name, tps, res["cpu"][name][-1]["worker"]))
            log("run %d: TPS %s" % (r + 1, ", ".join(line)))
        self.reset_queue()
        self.q("SELECT callback.resume_endpoint('bench')")
        med = {k: median(v) for k, v in res["runs"].items()}
        res["tps"] = med
        res["ratio_callback"] = med["callback"] / med["plain"]
        res["ratio_outbox"] = med["outbox"] / med["plain"]
        # per-run ratios too: less sensitive to drift between runs
        res["ratio_callback_per_run"] = [c / p for c, p in zip(res["runs"]["callback"], res["runs"]["plain"])]
        res["ratio_outbox_per_run"] = [c / p for c, p in zip(res["runs"]["outbox"], res["runs"]["plain"])]
        self.results["parts"]["trigger"] = res

    # ---------------------------------------------------------- 3. keeping up

    def part_keepup(self):
        step("3. keeping up: pgbench -c %d -T %d INSERTs with the trigger while the worker delivers "
             "(%d run%s)" % (self.pgbench_clients, self.keepup_s, self.runs, "s" if self.runs > 1 else ""))
        res = {"seconds": self.keepup_s, "clients": self.pgbench_clients, "runs": []}
        for r in range(self.runs):
            self.q("TRUNCATE t_cb RESTART IDENTITY")
            self.reset_queue()
            self.q("CHECKPOINT")
            d0 = self.worker_counters()[0]
            samples = []
            stop = threading.Event()

            def sampler():
                t0 = time.time()
                while not stop.wait(1.0):
                    try:
                        enq = self.q1("SELECT coalesce(max(id), 0) FROM callback.callback_queue",
                                      name="sampler")
                        dl = self.q1("SELECT coalesce(sum(delivered), 0) FROM callback.worker_stats()",
                                     name="sampler")
                        samples.append((round(time.time() - t0, 2), int(enq), int(dl) - d0))
                    except psycopg2.Error:
                        pass

            th = threading.Thread(target=sampler, daemon=True)
            cpu = CpuMeter(self)
            c0 = cpu.snap()
            th.start()
            prof = self.perf_start("keepup") if r == 0 else None
            tps, n = self.pgbench("t_cb", self.keepup_s)
            end = self.queue_counts()
            t_end = time.time()
            self.perf_stop(prof)
            c1 = cpu.snap()
            # catch up: until every queued event is recorded as delivered
            caught = None
            deadline = t_end + self.catchup_max_s
            c = end
            while time.time() < deadline:
                c = self.queue_counts()
                if c["backlog"] == 0:
                    caught = time.time() - t_end
                    break
                time.sleep(0.1)
            if caught is None:
                # leave the next run (and the next part) an empty queue
                log("backlog not cleared within %d s (%d left); truncating" % (self.catchup_max_s, c["backlog"]))
                self.reset_queue()
            stop.set()
            th.join()
            run = {"tps": tps, "transactions": n, "enqueued": end["total"], "delivered": end["delivered"],
                   "backlog": end["backlog"], "dead": end["dead"],
                   "backlog_seconds_of_inserts": end["backlog"] / tps if tps else None,
                   "catch_up_s": round(caught, 2) if caught is not None else None,
                   "catch_up_limit_s": self.catchup_max_s,
                   "backlog_after_limit": 0 if caught is not None else c["backlog"],
                   "delivered_per_s": end["delivered"] / self.keepup_s,
                   "samples": samples, "cpu": CpuMeter.delta(c0, c1)}
            res["runs"].append(run)
            log("run %d: %.0f inserts/s; enqueued %d, delivered %d, backlog at end %d (%.2f s of inserts), "
                "caught up %s s later; worker CPU %.1f s of %.0f s"
                % (r + 1, tps, run["enqueued"], run["delivered"], run["backlog"],
                   run["backlog_seconds_of_inserts"] or 0,
                   run["catch_up_s"] if caught is not None else "not", run["cpu"]["worker"], self.keepup_s))
        for k in ("tps", "enqueued", "delivered", "backlog", "backlog_seconds_of_inserts", "catch_up_s",
                  "delivered_per_s"):
            res[k] = median([x[k] for x in res["runs"]])
        # a run that did not catch up within the limit took longer than any that did
        cu = sorted(x["catch_up_s"] if x["catch_up_s"] is not None else float("inf") for x in res["runs"])
        res["catch_up_s"] = statistics.median(cu)
        if res["catch_up_s"] == float("inf"):
            res["catch_up_s"] = None
        res["catch_up_limit_s"] = self.catchup_max_s
        self.results["parts"]["keepup"] = res

    # ---------------------------------------------------------- 4. latency

    def part_latency(self):
        step("4. latency: %d single-row commits 20 ms apart -> arrival at test/receiver.py (%d run%s)"
             % (self.n_latency, self.runs, "s" if self.runs > 1 else ""))
        res = {"commits": self.n_latency, "interval_ms": 20, "runs": []}
        c = psycopg2.connect(host=self.pgdir, port=self.pg_port, user="postgres", dbname="bench")
        try:
            for r in range(self.runs):
                self.q("TRUNCATE t_lat RESTART IDENTITY")
                self.reset_queue()
                open(self.lat_file, "w").close()
                commits = {}
                sent = {}
                cur = c.cursor()
                warm = 10
                nxt = time.time()
                for i in range(-warm, self.n_latency):
                    nxt += 0.02
                    cur.execute("INSERT INTO t_lat (customer_id, amount_cents, status, note) "
                                "VALUES (%s, 100, 'new', 'latency probe')", (i,))
                    sent[i] = time.time()
                    c.commit()
                    commits[i] = time.time()
                    d = nxt - time.time()
                    if d > 0:
                        time.sleep(d)
                arrivals = {}
                deadline = time.time() + 30
                while time.time() < deadline:
                    arrivals = self.read_arrivals()
                    if all(i in arrivals for i in range(self.n_latency)):
                        break
                    time.sleep(0.2)
                # commit time: right after COMMIT returns (the figure); the delivery may even
                # arrive before the client is scheduled again, so a few samples can be < 0.
                # Also kept: from just before COMMIT is sent (an upper bound).
                lat = sorted((arrivals[i] - commits[i]) * 1000.0
                             for i in range(self.n_latency) if i in arrivals)
                lat_sent = sorted((arrivals[i] - sent[i]) * 1000.0
                                  for i in range(self.n_latency) if i in arrivals)
                commit_ms = sorted((commits[i] - sent[i]) * 1000.0 for i in range(self.n_latency))
                run = {"received": len(lat), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
                       "max_ms": lat[-1] if lat else None, "min_ms": lat[0] if lat else None,
                       "from_commit_sent": {"p50_ms": percentile(lat_sent, 50),
                                            "p99_ms": percentile(lat_sent, 99),
                                            "max_ms": lat_sent[-1] if lat_sent else None},
                       "commit_round_trip_ms": {"p50": percentile(commit_ms, 50),
                                                "p99": percentile(commit_ms, 99)},
                       "samples_ms": [round(x, 3) for x in lat]}
                res["runs"].append(run)
                log("run %d: %d/%d arrived; p50 %.2f ms, p99 %.2f ms, max %.2f ms "
                    "(from COMMIT sent: p50 %.2f, p99 %.2f; COMMIT round trip p50 %.2f ms)"
                    % (r + 1, run["received"], self.n_latency, run["p50_ms"] or -1,
                       run["p99_ms"] or -1, run["max_ms"] or -1,
                       run["from_commit_sent"]["p50_ms"] or -1, run["from_commit_sent"]["p99_ms"] or -1,
                       run["commit_round_trip_ms"]["p50"]))
        finally:
            c.close()
        for k in ("p50_ms", "p99_ms", "max_ms"):
            res[k] = median([x[k] for x in res["runs"]])
        self.results["parts"]["latency"] = res

    def read_arrivals(self):
        arrivals = {}
        with open(self.lat_file) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    body = json.loads(rec["body"])
                    i = body["data"]["new"]["customer_id"]
                except (ValueError, KeyError, TypeError):
                    continue
                arrivals.setdefault(i, rec["received_at"])
        return arrivals

    # ---------------------------------------------------------- 5. metrics

    def part_metrics(self):
        m = self.n_attempts
        step("5. metrics: views over %d attempts (database bench_metrics, one week of minutes, "
             "4 endpoints x 3 event types)" % m)
        self.q("CREATE DATABASE bench_metrics")
        db = "bench_metrics"
        t = time.time()
        self.q("CREATE EXTENSION pg_callback", db=db)
        self.q("SELECT callback.create_endpoint('m' || i, 'http://127.0.0.1:9/hook') "
               "FROM generate_series(1, 4) i", db=db)
        self.q("SELECT callback.pause_endpoint('m' || i) FROM generate_series(1, 4) i", db=db)
        eps = self.q1("SELECT array_agg(id ORDER BY id) FROM callback.callback_endpoints", db=db)
        # attempts: like the worker's write-back (98.5% 2xx, 1% HTTP 500, 0.5% timeouts)
        self.q("""
        INSERT INTO callback.callback_attempts
            (delivery_id, event_id, endpoint_id, event_type, attempt, started_at, latency_ms,
             status_code, error, response_body, outcome)
        SELECT g, md5(g::text)::uuid, (%s::int[])[1 + g %% 4],
               (ARRAY['order.insert', 'order.update', 'user.created'])[1 + (g / 4) %% 3],
               CASE WHEN r < 0.985 THEN 1 ELSE 2 END,
               now() - r2 * interval '7 days',
               CASE WHEN r < 0.995 THEN 0.4 + 40 * r3 ^ 6 ELSE 5000 END,
               CASE WHEN r < 0.985 THEN 200 WHEN r < 0.995 THEN 500 END,
               CASE WHEN r < 0.985 THEN NULL WHEN r < 0.995 THEN 'HTTP 500'
                    ELSE 'Operation timed out after 5000 milliseconds with 0 bytes received' END,
               NULL,
               (CASE WHEN r < 0.985 THEN 'delivered' WHEN r < 0.999 THEN 'pending' ELSE 'dead' END)
                   ::callback.delivery_status
          FROM (SELECT g, random() AS r, random() AS r2, random() AS r3
                  FROM generate_series(1, %s) g) s
        """, (eps, m), db=db)
        # the rollup, computed exactly as the write-back does
        self.q("""
        INSERT INTO callback.callback_stats AS s
            (minute, endpoint_id, event_type, attempts, delivered, failed, dead,
             latency_sum_ms, latency_max_ms, latency_hist, last_error)
        SELECT date_trunc('minute', a.started_at), a.endpoint_id, a.event_type, count(*),
               count(*) FILTER (WHERE a.outcome = 'delivered'),
               count(*) FILTER (WHERE a.outcome <> 'delivered'),
               count(*) FILTER (WHERE a.outcome = 'dead'),
               sum(a.latency_ms), max(a.latency_ms), callback.latency_histogram(a.latency_ms),
               (array_agg(a.error ORDER BY a.started_at DESC) FILTER (WHERE a.error IS NOT NULL))[1]
          FROM callback.callback_attempts a GROUP BY 1, 2, 3
        """, db=db)
        # the queue: one row per delivery (finished), plus a live backlog
        self.q("""
        INSERT INTO callback.callback_queue
            (id, event_id, endpoint_id, event_type, body, status, attempts, created_at,
             next_attempt_at, last_attempt_at, last_status_code, last_error, finished_at)
        OVERRIDING SYSTEM VALUE
        SELECT a.delivery_id, a.event_id, a.endpoint_id, a.event_type,
               '{"type":"' || a.event_type || '","timestamp":"' || a.started_at
                 || '","data":{"op":"INSERT","schema":"public","table":"orders","new":{"id":'
                 || a.delivery_id || ',"customer_id":42,"amount_cents":1999,"status":"paid"},"old":null}}',
               CASE WHEN a.outcome = 'dead' THEN 'dead' ELSE 'delivered' END::callback.delivery_status,
               a.attempt, a.started_at, a.started_at, a.started_at, a.status_code, a.error,
               a.started_at + a.latency_ms * interval '1 millisecond'
          FROM callback.callback_attempts a
        """, db=db)
        # the rows above were given their ids: move the identity past them
        self.q("SELECT setval(pg_get_serial_sequence('callback.callback_queue', 'id'), "
               "(SELECT max(id) FROM callback.callback_queue))", db=db)
        self.q("""
        INSERT INTO callback.callback_queue (event_id, endpoint_id, event_type, body, status, created_at,
                                             lease_expires_at, claimed_by)
        SELECT gen_random_uuid(), (%s::int[])[1 + g %% 4], 'order.insert', '{"type":"order.insert"}',
               CASE WHEN g %% 20 = 0 THEN 'sending' ELSE 'pending' END::callback.delivery_status,
               now() - g * interval '100 milliseconds',
               CASE WHEN g %% 20 = 0 THEN now() + interval '1 minute' END,
               CASE WHEN g %% 20 = 0 THEN 0 END
          FROM generate_series(1, 2000) g
        """, (eps,), db=db)
        self.q("VACUUM ANALYZE callback.callback_attempts, callback.callback_stats, callback.callback_queue",
               db=db)
        gen_s = time.time() - t
        sizes = self.q("SELECT (SELECT count(*) FROM callback.callback_attempts), "
                       "(SELECT count(*) FROM callback.callback_stats), "
                       "(SELECT count(*) FROM callback.callback_queue), "
                       "pg_size_pretty(pg_total_relation_size('callback.callback_queue') + "
                       "pg_total_relation_size('callback.callback_attempts'))", db=db)[0]
        log("generated in %.0f s: %d attempts, %d stats rows, %d queue rows (%s)"
            % (gen_s, sizes[0], sizes[1], sizes[2], sizes[3]))
        queries = [
            ("callback_metrics", "SELECT * FROM callback.callback_metrics"),
            ("callback_health", "SELECT * FROM callback.callback_health"),
            ("prometheus_metrics()", "SELECT callback.prometheus_metrics()"),
        ]
        res = {"attempts": sizes[0], "stats_rows": sizes[1], "queue_rows": sizes[2],
               "generate_s": round(gen_s, 1), "views": {}}
        reps = 3 if self.quick else 5
        explain = []
        for name, sql in queries:
            self.q(sql, db=db)  # warm
            times = []
            rows = None
            for _ in range(reps * self.runs):
                t = time.perf_counter()
                out = self.q(sql, db=db)
                times.append((time.perf_counter() - t) * 1000)
                rows = len(out)
            res["views"][name] = {"median_ms": median(times), "min_ms": min(times), "max_ms": max(times),
                                  "rows": rows, "samples_ms": [round(x, 2) for x in times]}
            log("%-22s median %8.1f ms  (min %.1f, max %.1f, %d rows)"
                % (name, median(times), min(times), max(times), rows))
            plan = self.q("EXPLAIN (ANALYZE, BUFFERS) " + sql, db=db)
            explain.append("### %s\n%s\n" % (name, "\n".join(r[0] for r in plan)))
        with open(os.path.join(OUT, "metrics_explain.txt"), "w") as f:
            f.write("\n".join(explain))
        self.results["parts"]["metrics"] = res

    # ---------------------------------------------------------- report

    def table(self):
        P = self.results["parts"]
        rows = []

        def fmt(v, spec="{:,.0f}"):
            return "-" if v is None else spec.format(v)

        def verdict(ok):
            return "" if ok is None else ("MET" if ok else "MISSED")

        if "drain" in P:
            d = P["drain"]
            rows.append(("1. Drain %s signed events (deliveries/s)" % format(d["events"], ","),
                         fmt(d["per_s"]), ">= 20,000", "~200 (default) / ~970 (batch 1000)",
                         verdict(d["per_s"] is not None and d["per_s"] >= TARGET["drain_per_s"])))
            rows.append(("   nginx raw capacity, wrk -t1 -c%d (req/s)" % d["concurrency"],
                         fmt(d["wrk_per_s"]), "ceiling", "~65,000 (issue)", ""))
            rows.append(("   drain / raw capacity", fmt(d["ratio"], "{:.3f}"), "", "", ""))
            rows.append(("   body bytes (signed, 3 webhook headers)", fmt(d["body_bytes"]), "~200", "", ""))
        if "trigger" in P:
            t = P["trigger"]
            rows.append(("2. Plain INSERT, pgbench -c%d (TPS)" % t["clients"], fmt(t["tps"]["plain"]), "",
                         "", ""))
            rows.append(("   INSERT + callback.trigger() (TPS)", fmt(t["tps"]["callback"]), "", "", ""))
            rows.append(("   trigger ratio (callback / plain)", fmt(t["ratio_callback"], "{:.2f}x"),
                         ">= 0.90x", "pg_net 0.48x",
                         verdict(t["ratio_callback"] >= TARGET["trigger_ratio"])))
            rows.append(("   INSERT + PL/pgSQL outbox trigger (TPS)", fmt(t["tps"]["outbox"]), "", "", ""))
            rows.append(("   outbox ratio (outbox / plain)", fmt(t["ratio_outbox"], "{:.2f}x"), "",
                         "0.89x (issue)", ""))
        if "keepup" in P:
            k = P["keepup"]
            rows.append(("3. Keeping up, %d s with trigger: inserts/s" % k["seconds"], fmt(k["tps"]), "", "", ""))
            rows.append(("   enqueued / delivered during the run",
                         "%s / %s" % (fmt(k["enqueued"]), fmt(k["delivered"])), "", "", ""))
            rows.append(("   backlog at end (events)", fmt(k["backlog"]),
                         "<= %s (1 s of inserts)" % fmt(k["tps"]), "",
                         verdict(k["backlog"] is not None and k["tps"] and k["backlog"] <= k["tps"])))
            rows.append(("   time to clear the backlog after the run (s)",
                         fmt(k["catch_up_s"], "{:.2f}") if k["catch_up_s"] is not None
                         else "> %d" % k["catch_up_limit_s"], "", "", ""))
            if "trigger" in P and P["trigger"]["tps"]["plain"]:
                rows.append(("   inserts/s while delivering / plain INSERT",
                             fmt(k["tps"] / P["trigger"]["tps"]["plain"], "{:.2f}x"), "", "", ""))
        if "latency" in P:
            L = P["latency"]
            rows.append(("4. Commit-to-arrival p50 (ms)", fmt(L["p50_ms"], "{:.2f}"), "<= 2", "~515",
                         verdict(L["p50_ms"] is not None and L["p50_ms"] <= TARGET["latency_p50_ms"])))
            rows.append(("   p99 (ms)", fmt(L["p99_ms"], "{:.2f}"), "<= 20", "~1,000",
                         verdict(L["p99_ms"] is not None and L["p99_ms"] <= TARGET["latency_p99_ms"])))
            rows.append(("   max (ms)", fmt(L["max_ms"], "{:.2f}"), "", "", ""))
        if "metrics" in P:
            M = P["metrics"]
            for name, v in M["views"].items():
                rows.append(("5. %s over %s attempts (ms)" % (name, format(M["attempts"], ",")),
                             fmt(v["median_ms"], "{:,.1f}"), "", "", ""))
        head = ("figure", "pg_callback", "target", "baseline (issue)", "")
        w = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
        lines = []
        sep = "+-" + "-+-".join("-" * x for x in w) + "-+"
        lines.append(sep)
        lines.append("| " + " | ".join(str(head[i]).ljust(w[i]) for i in range(5)) + " |")
        lines.append(sep)
        for r in rows:
            lines.append("| " + " | ".join(
                (str(r[i]).rjust(w[i]) if i == 1 else str(r[i]).ljust(w[i])) for i in range(5)) + " |")
        lines.append(sep)
        return "\n".join(lines)

    def machine_line(self):
        m = self.results["machine"]
        return ("%s, %d cores, %.0f GB RAM, %s, kernel %s; %s; %s; %s; %s; disk %s"
                % (m["cpu"], m["cores"], m["ram_gb"], m["os"], m["kernel"], m["postgres"],
                   m["nginx"], m["wrk"], m["libcurl"].split(" (")[0], m["disk"]))

    def plot(self):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        P = self.results["parts"]
        panels = [p for p in ("drain", "latency", "keepup") if p in P]
        if not panels:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6))
        if len(panels) == 1:
            axes = [axes]
        for ax, p in zip(axes, panels):
            if p == "drain":
                d = P["drain"]
                for i, run in enumerate(d["runs"]):
                    xs = [c[0] for c in run["curve"]]
                    ys = [c[1] for c in run["curve"]]
                    ax.plot(xs, ys, label="run %d: %s/s" % (i + 1, format(int(run["per_s"] or 0), ",")))
                tmax = max(run["curve"][-1][0] for run in d["runs"])
                if d["wrk_per_s"]:
                    tt = min(tmax, d["events"] / d["wrk_per_s"])
                    ax.plot([0, tt], [0, d["wrk_per_s"] * tt], "k:", label="nginx raw (wrk) %s/s"
                            % format(int(d["wrk_per_s"]), ","))
                tt = min(tmax, d["events"] / TARGET["drain_per_s"])
                ax.plot([0, tt], [0, TARGET["drain_per_s"] * tt], "r--", lw=0.8, label="target 20,000/s")
                ax.set_xlabel("seconds after resume_endpoint()")
                ax.set_ylabel("deliveries answered")
                ax.set_title("1. Drain of %s signed events" % format(d["events"], ","))
                ax.legend(fontsize=8)
                ax.grid(alpha=0.3)
            elif p == "latency":
                L = P["latency"]
                allx = sorted(x for run in L["runs"] for x in run["samples_ms"])
                if allx:
                    ys = [(i + 1) / len(allx) for i in range(len(allx))]
                    ax.plot(allx, ys, drawstyle="steps-post", label="all runs (%d commits)" % len(allx))
                    ax.axvline(L["p50_ms"], color="g", ls=":", label="p50 %.2f ms" % L["p50_ms"])
                    ax.axvline(L["p99_ms"], color="m", ls=":", label="p99 %.2f ms" % L["p99_ms"])
                    ax.axvline(TARGET["latency_p50_ms"], color="r", ls="--", lw=0.8, label="targets 2 / 20 ms")
                    ax.axvline(TARGET["latency_p99_ms"], color="r", ls="--", lw=0.8)
                    if min(allx) > 0:
                        ax.set_xscale("log")
                ax.set_xlabel("commit-to-arrival (ms)")
                ax.set_ylabel("fraction of commits")
                ax.set_title("4. Latency, commits 20 ms apart")
                ax.legend(fontsize=8, loc="lower right")
                ax.grid(alpha=0.3, which="both")
            elif p == "keepup":
                k = P["keepup"]
                runs = sorted(k["runs"], key=lambda x: x["backlog"])
                run = runs[len(runs) // 2]
                if run["samples"]:
                    xs = [s[0] for s in run["samples"]]
                    ax.plot(xs, [s[1] for s in run["samples"]], label="enqueued")
                    ax.plot(xs, [s[2] for s in run["samples"]], label="delivered (answered)")
                    ax.axvline(k["seconds"], color="k", ls=":", lw=0.8, label="pgbench ends")
                ax.set_xlabel("seconds")
                ax.set_ylabel("events")
                ax.set_title("3. Keeping up: %.0f inserts/s with the trigger" % (run["tps"] or 0))
                ax.legend(fontsize=8)
                ax.grid(alpha=0.3)
        fig.suptitle("pg_callback bench%s - %s" % (" (quick)" if self.quick else "",
                                                   self.machine_line()[:150]), fontsize=8)
        fig.tight_layout()
        path = os.path.join(OUT, "bench.png")
        fig.savefig(path, dpi=110)
        return path

    def write(self):
        table = self.table()
        self.results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.results["load_after"] = os.getloadavg()
        self.results["table"] = table.splitlines()
        self.results["perf_reports"] = [os.path.relpath(p, self.repo) for p in self.perf_files]
        with open(os.path.join(OUT, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)
        png = self.plot()
        md = ["# pg_callback benchmark results", "",
              "`bash bench/run.sh%s`, %s, median of %d run%s." % (
                  " --quick" if self.quick else "", self.results["finished_at"], self.runs,
                  "s" if self.runs > 1 else ""), "",
              "pg_callback at commit %s%s." % (
                  self.results["machine"]["pg_callback_commit"],
                  ", the build already installed (--no-build)" if self.args.no_build
                  else ", built and installed by run.sh"), "",
              "Machine: " + self.machine_line() + ".", "",
              "Load average before / after: %s / %s." % (
                  " ".join("%.2f" % x for x in self.results["machine"]["load_before"]),
                  " ".join("%.2f" % x for x in self.results["load_after"])), "",
              "```", table, "```", ""]
        if png:
            md += ["![drain curve, keeping up and latency distribution](bench.png)", ""]
        with open(os.path.join(OUT, "results.md"), "w") as f:
            f.write("\n".join(md))
        print()
        print("pg_callback bench%s - median of %d run%s" % (" (quick)" if self.quick else "", self.runs,
                                                           "s" if self.runs > 1 else ""))
        print("machine: " + self.machine_line())
        print("load average before %s, after %s (other work on the machine skews the figures)"
              % (" ".join("%.2f" % x for x in self.results["machine"]["load_before"]),
                 " ".join("%.2f" % x for x in self.results["load_after"])))
        print(table)
        print("written: bench/out/results.json, bench/out/results.md" + (", bench/out/bench.png" if png else ""))

    # ---------------------------------------------------------- main

    def main(self):
        os.makedirs(OUT, exist_ok=True)
        parts = self.args.only.split(",") if self.args.only else \
            ["drain", "trigger", "keepup", "latency", "metrics"]
        t0 = time.time()
        try:
            self.machine()
            self.start_nginx()
            self.start_receiver()
            self.start_cluster()
            self.setup_schema()
            self.check_keepalive()
            for p in parts:
                getattr(self, "part_" + p)()
            self.results["elapsed_s"] = round(time.time() - t0, 1)
            self.write()
        finally:
            self.stop_receiver()
            self.stop_cluster()
            self.stop_nginx()
        print("total %.0f s" % (time.time() - t0))

    def check_keepalive(self):
        """nginx must keep POST connections open: one curl, two requests, one connection."""
        off = self.log_offset()
        out = subprocess.run(["curl", "-sv", "-o", "/dev/null", "-o", "/dev/null", "-X", "POST",
                              "-H", "Content-Type: application/json", "-d", '{"x":1}',
                              self.hook_url, self.hook_url], capture_output=True, text=True).stderr
        reused = "Re-using existing connection" in out or "Reusing existing connection" in out
        st = self.log_since(off)
        ok = reused and st["connections"] == 1 and st["requests"] == 2
        self.results["nginx_keepalive_check"] = {"curl_reused": reused, **st, "ok": ok}
        step("nginx keep-alive for POST with a body: %s (%d requests on %d connection%s)"
             % ("ok" if ok else "NOT REUSED", st["requests"], st["connections"],
                "" if st["connections"] == 1 else "s"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 run, small sizes (< ~3 min)")
    ap.add_argument("--runs", type=int, help="runs per part (default 3, or 1 with --quick)")
    ap.add_argument("--only", help="comma-separated parts: drain,trigger,keepup,latency,metrics")
    ap.add_argument("--profile", action="store_true",
                    help="perf record the worker (drain) and the box (trigger, keep-up) in run 1; "
                         "reports in bench/out/perf-*.txt")
    ap.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    ap.add_argument("--drain-events", type=int, help="events queued for the drain (default 100000)")
    ap.add_argument("--keepup-seconds", type=int, help="length of the keeping-up run (default 60)")
    ap.add_argument("--catchup-max", type=int,
                    help="longest wait for the backlog to clear after the keeping-up run (default 120 s)")
    ap.add_argument("--metrics-attempts", type=int, help="attempts generated for part 5 (default 1000000)")
    ap.add_argument("--port", type=int, default=55700, help="first port tried for PostgreSQL")
    ap.add_argument("--no-install", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-build", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", required=True, help=argparse.SUPPRESS)
    ap.add_argument("--repo", required=True, help=argparse.SUPPRESS)
    args = ap.parse_args()
    Bench(args).main()


if __name__ == "__main__":
    main()
