"""The bench's environment: the throwaway PostgreSQL cluster (run by the
postgres user, programs from PGCB_PG_BIN / PG_CONFIG like scripts/lib.sh),
nginx answering 204, the latency receiver, SQL sessions, pgbench, and facts
about the machine.  The parts measure; this file only starts, stops, runs
and reads."""

import os
import platform
import pwd
import re
import signal
import subprocess
import time

import psycopg2

from lib.util import free_port, log, read_pid, step


def pg_bin_dir():
    """Where PostgreSQL's programs are: $PGCB_PG_BIN, else `$PG_CONFIG
    --bindir` (PG_CONFIG defaults to pg_config on PATH), else Debian's 15."""
    if os.environ.get("PGCB_PG_BIN"):
        return os.environ["PGCB_PG_BIN"]
    try:
        out = subprocess.run([os.environ.get("PG_CONFIG", "pg_config"), "--bindir"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except OSError:
        pass
    return "/usr/lib/postgresql/15/bin"


class Env:
    def __init__(self, args, out):
        self.args = args
        self.out = out
        self.tmp = args.tmp
        self.repo = args.repo
        self.quick = args.quick
        self.runs = args.runs or (1 if self.quick else 3)
        self.pg_bin = pg_bin_dir()
        self.pgdir = os.path.join(self.tmp, "pg")
        self.datadir = os.path.join(self.pgdir, "data")
        self.ngxdir = os.path.join(self.tmp, "nginx")
        self.pg_port = free_port(args.port)
        self.ngx_port = free_port(self.pg_port + 80)
        self.rcv_port = free_port(self.ngx_port + 10)
        self.hook_url = "http://127.0.0.1:%d/hook" % self.ngx_port
        self.receiver = None
        self._conns = {}
        self.results = {"runs": self.runs, "quick": self.quick, "parts": {}}
        self.perf_files = []

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
        self.run(self.as_pg([self.pg_bin + "/initdb", "-D", self.datadir, "-U", "postgres",
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
        self.run(self.as_pg([self.pg_bin + "/createdb", "-h", self.pgdir, "-p", str(self.pg_port),
                             "-U", "postgres", "bench"]))
        # the launcher starts a worker for a database once it has the extension
        self.q("CREATE EXTENSION pg_callback")
        self.wait_worker()

    def pg_ctl(self, action):
        self.run(self.as_pg([self.pg_bin + "/pg_ctl", "-D", self.datadir, "-l",
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
            subprocess.run(self.as_pg([self.pg_bin + "/pg_ctl", "-D", self.datadir, "stop",
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

    def conn(self, db="bench", name=None, options=None):
        """A cached autocommit session; `options` are libpq options such as
        "-c synchronous_commit=off"."""
        key = (db, name, options)
        c = self._conns.get(key)
        if c is None or c.closed:
            kw = {"options": options} if options else {}
            c = psycopg2.connect(host=self.pgdir, port=self.pg_port, user="postgres", dbname=db, **kw)
            c.autocommit = True
            self._conns[key] = c
        return c

    def q(self, sql, args=None, db="bench", name=None, options=None):
        with self.conn(db, name, options).cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    def q1(self, sql, args=None, db="bench", name=None, options=None):
        rows = self.q(sql, args, db, name, options)
        return rows[0][0] if rows else None

    def backend_pid(self, name, db="bench"):
        return self.q1("SELECT pg_backend_pid()", db=db, name=name)

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
        # the inbox too (callback.inbox): rows left there would join the queue later.
        # A worker still busy with a backlog may lock them in another order: the
        # deadlock detector then cancels one of us; try again (5 times at most).
        for attempt in range(5):
            try:
                self.q("TRUNCATE callback.callback_queue, callback.callback_inbox, "
                       "callback.callback_attempts, callback.callback_stats RESTART IDENTITY CASCADE")
                return
            except psycopg2.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                log("reset_queue: deadlock with the worker, trying again")

    def queue_counts(self):
        r = self.q("SELECT count(*), count(*) FILTER (WHERE status = 'delivered'), "
                   "count(*) FILTER (WHERE status IN ('pending', 'sending')), "
                   "count(*) FILTER (WHERE status = 'dead') FROM callback.callback_queue", name="mon")[0]
        return {"total": r[0], "delivered": r[1], "backlog": r[2], "dead": r[3]}

    def pgbench(self, name, script, seconds, clients, jobs, sync_commit=None, options=None, rate=None):
        """pgbench -M prepared running `script` (the text of a pgbench
        script); returns (TPS without connection time, transactions).
        `options`: more libpq options for its sessions ("-c callback.inbox=on");
        `rate`: transactions a second (pgbench -R), else as fast as it can."""
        path = os.path.join(self.tmp, "pgbench_%s.sql" % name)
        with open(path, "w") as f:
            f.write(script)
        cmd = [self.pg_bin + "/pgbench", "-h", self.pgdir, "-p", str(self.pg_port), "-U", "postgres",
               "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(jobs, clients))] + \
            (["-R", str(rate)] if rate else []) + ["-T", str(seconds), "-f", path, "bench"]
        env = dict(os.environ)
        opts = (["-c synchronous_commit=%s" % sync_commit] if sync_commit else []) + ([options] if options else [])
        if opts:
            env["PGOPTIONS"] = " ".join(opts)
        out = self.run(cmd, capture_output=True, text=True, env=env, check=False)
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
        n = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
        if out.returncode != 0 or not m:
            raise RuntimeError("pgbench failed:\n%s\n%s" % (out.stdout, out.stderr))
        return float(m.group(1)), int(n.group(1)) if n else None

    # ---------------------------------------------------------- setup

    def setup_schema(self):
        """The extension and the endpoints every part shares: 'bench'
        (nginx, event types bench.*) and 'lat' (the latency receiver)."""
        step("schema: endpoints 'bench' (nginx) and 'lat' (receiver)")
        self.q("SELECT callback.create_endpoint('bench', %s, '{bench.*}')", (self.hook_url,))
        self.q("SELECT callback.create_endpoint('lat', %s, '{lat.*}')",
               ("http://127.0.0.1:%d/lat" % self.rcv_port,))
        # one endpoint: the worker keeps at most this many requests in flight to it
        self.inflight = min(int(self.q1("SHOW callback.max_inflight")),
                            int(self.q1("SHOW callback.max_inflight_per_endpoint")))
        self.results["settings"] = {
            k: self.q1("SHOW " + k) for k in (
                "callback.max_inflight", "callback.max_inflight_per_endpoint", "callback.batch_size",
                "callback.max_connections", "callback.poll_interval", "synchronous_commit",
                "shared_buffers", "server_version")}
        self.results["extension_version"] = self.q1(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_callback'")

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
            "postgres": cmd(self.pg_bin + "/postgres --version"),
            "pg_bin": self.pg_bin,
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

    def machine_line(self):
        m = self.results["machine"]
        return ("%s, %d cores, %.0f GB RAM, %s, kernel %s; %s; %s; %s; %s; disk %s"
                % (m["cpu"], m["cores"], m["ram_gb"], m["os"], m["kernel"], m["postgres"],
                   m["nginx"], m["wrk"], m["libcurl"].split(" (")[0], m["disk"]))
