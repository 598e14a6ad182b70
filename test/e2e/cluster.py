"""A real, throwaway PostgreSQL 15 cluster for pg_callback's end-to-end tests.

PostgreSQL refuses to run as root: when these tests run as root, initdb,
pg_ctl and postgres run as the postgres user (runuser -u postgres --) in a
temporary directory owned by postgres; otherwise they run directly.  The
cluster listens only on a Unix socket in that directory.

The only waiting done here is a bounded poll (wait_until); a condition that is
not met in time raises AssertionError saying what was awaited and what was
last seen.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import psycopg2

PG_BIN = os.environ.get("PGCB_PG_BIN", "/usr/lib/postgresql/15/bin")
TEST_DB = "callback_test"
SUPERUSER = "postgres"  # initdb -U postgres, whoever runs it

WORKER_BACKEND_TYPE = "pg_callback worker"
LAUNCHER_BACKEND_TYPE = "pg_callback launcher"

_IS_ROOT = os.geteuid() == 0
_claimed_ports = set()

# A server log line saying that a process crashed: a failed assertion (an
# assert-enabled build, scripts/test-cassert.sh), a fault, an abort, a
# PANIC; the pattern is test/crash_line.ere, which scripts/test.sh reads
# for its pg_regress cluster too.  The crash tests kill with SIGKILL
# (signal 9, not a crash here), and only test_harness.py crashes a process
# on purpose; the postmaster restarts what crashed, so a test that waits
# for deliveries could pass over one: running_cluster fails it.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash_line.ere")) as _f:
    CRASH_LINE = re.compile(_f.read().strip())


def free_port(start=55500, end=56500):
    """The first port from start that no local TCP listener nor a socket file
    in /tmp uses, and that this process has not handed out already."""
    for port in range(start, end):
        if port in _claimed_ports:
            continue
        if os.path.exists("/tmp/.s.PGSQL.%d" % port) or \
                os.path.exists("/var/run/postgresql/.s.PGSQL.%d" % port):
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _claimed_ports.add(port)
        return port
    raise RuntimeError("no free port between %d and %d" % (start, end))


def _conf_value(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return str(v)
    return "'%s'" % str(v).replace("'", "''")


class ClusterError(RuntimeError):
    pass


class ConnectionLost(ClusterError):
    """The server closed the connection (restart, crash); the next call reconnects."""


def _connection_lost(conn, err):
    """Whether err means the session is gone (server restart, crash,
    termination) rather than an SQL error in a live session."""
    if conn.closed:
        return True
    code = getattr(err, "pgcode", None)
    if code is None:
        # libpq-level failure ("server closed the connection unexpectedly"):
        # no SQLSTATE, raised as a bare DatabaseError / OperationalError.
        return type(err) in (psycopg2.DatabaseError, psycopg2.OperationalError,
                             psycopg2.InterfaceError)
    return code.startswith("57P")  # admin_shutdown, crash_shutdown, cannot_connect_now


class Cluster:
    """initdb / start / stop / query a private PostgreSQL cluster."""

    def __init__(self, name="pgcb", port=None, extra_conf=None,
                 required_extensions=("pg_callback",), optional_extensions=("pg_cron",),
                 dbname=TEST_DB, statement_timeout_ms=120000):
        self.name = name
        self.port = port or free_port()
        self.dbname = dbname
        self.required_extensions = tuple(required_extensions)
        self.optional_extensions = tuple(optional_extensions)
        self.statement_timeout_ms = statement_timeout_ms
        self.base_dir = tempfile.mkdtemp(prefix="pgcb-%s-" % name, dir="/tmp")
        os.chmod(self.base_dir, 0o700)
        if _IS_ROOT:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
        self.data_dir = os.path.join(self.base_dir, "data")
        self.socket_dir = self.base_dir
        self.log_file = os.path.join(self.base_dir, "postgres.log")
        self.conf = {
            "listen_addresses": "",
            "unix_socket_directories": self.socket_dir,
            "port": self.port,
            # pg_cron only where a module asks for it (test_pgcron.py)
            "shared_preload_libraries": "pg_callback",
            "callback.database_name": dbname,
            "callback.ssrf_allowlist": "127.0.0.0/8, ::1/128",
            "callback.poll_interval": "200ms",
            "log_min_messages": "info",
            "fsync": True,
            "synchronous_commit": True,
            "max_worker_processes": 16,
            "log_line_prefix": "%m [%p] %b ",
        }
        self.conf.update(extra_conf or {})
        self._initialized = False
        self._db_ready = False
        self._conns = {}

    # ------------------------------------------------------------ processes

    def _run(self, args, check=True, timeout=120):
        cmd = list(args)
        if _IS_ROOT:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, cwd=self.base_dir)
        if check and p.returncode != 0:
            raise ClusterError("%s failed (exit %d):\n%s\n--- server log (tail) ---\n%s" % (
                " ".join(args), p.returncode, p.stdout, self.log_tail()))
        return p

    def _bin(self, name):
        return os.path.join(PG_BIN, name)

    def init(self):
        self._run([self._bin("initdb"), "-D", self.data_dir, "-A", "trust", "-E", "UTF8",
                   "--no-sync", "-U", SUPERUSER, "--locale=C"])
        self.write_conf()
        self._initialized = True
        return self

    def write_conf(self):
        """(Re)write the included configuration file from self.conf."""
        path = os.path.join(self.data_dir, "pgcb_test.conf")
        lines = ["# written by test/e2e/cluster.py"]
        for k, v in self.conf.items():
            if v is None:
                continue
            lines.append("%s = %s" % (k, _conf_value(v)))
        text = "\n".join(lines) + "\n"
        main = os.path.join(self.data_dir, "postgresql.conf")
        # written as root into a postgres-owned dir: fix ownership afterwards
        with open(path, "w") as f:
            f.write(text)
        with open(main) as f:
            has_include = "include_if_exists = 'pgcb_test.conf'" in f.read()
        if not has_include:
            with open(main, "a") as f:
                f.write("\ninclude_if_exists = 'pgcb_test.conf'\n")
        if _IS_ROOT:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def set_conf(self, **kw):
        """Change settings in the file (takes effect on reload or restart)."""
        self.conf.update(kw)
        self.write_conf()

    def reload(self):
        self._run([self._bin("pg_ctl"), "-D", self.data_dir, "reload"])

    def start(self, timeout=60):
        if not self._initialized and not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            self.init()
        self._run([self._bin("pg_ctl"), "-D", self.data_dir, "-l", self.log_file,
                   "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 30)
        if not self._db_ready:
            self._setup_database()
        return self

    def _setup_database(self):
        exists = self.scalar("SELECT count(*) FROM pg_database WHERE datname = %s",
                             (self.dbname,), dbname="postgres")
        if not exists:
            self.execute('CREATE DATABASE "%s"' % self.dbname, dbname="postgres")
        available = {r[0] for r in self.query("SELECT name FROM pg_available_extensions")}
        preload = {x.strip() for x in
                   self.scalar("SELECT current_setting('shared_preload_libraries')").split(",")}
        for ext in self.required_extensions:
            if ext not in available:
                raise ClusterError("extension %s is not installed in %s (run make install)"
                                   % (ext, PG_BIN))
            self.execute('CREATE EXTENSION IF NOT EXISTS "%s"' % ext)
        for ext in self.optional_extensions:
            # pg_cron can only be created where it is preloaded
            if ext in available and ext in preload:
                self.execute('CREATE EXTENSION IF NOT EXISTS "%s"' % ext)
        self._db_ready = True

    def stop(self, mode="fast", timeout=60):
        self.close_connections()
        if not self.is_running():
            return self
        self._run([self._bin("pg_ctl"), "-D", self.data_dir, "-m", mode, "-w",
                   "-t", str(int(timeout)), "stop"], timeout=timeout + 30)
        return self

    def restart(self, mode="fast", timeout=60):
        self.stop(mode, timeout)
        return self.start(timeout)

    def is_running(self):
        if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return False
        p = self._run([self._bin("pg_ctl"), "-D", self.data_dir, "status"], check=False)
        return p.returncode == 0

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def postmaster_alive(self):
        """Whether the postmaster of postmaster.pid runs: not gone, and not a
        zombie (a postmaster a test killed is reparented to PID 1, which
        need not reap it, and pg_ctl would wait for it to stop)."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def cleanup(self):
        try:
            if self.is_running():
                self.stop("immediate")
        except Exception:
            pid = self.postmaster_pid()
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.close_connections()
        if os.environ.get("PGCB_KEEP_CLUSTER"):
            return
        shutil.rmtree(self.base_dir, ignore_errors=True)
        _claimed_ports.discard(self.port)

    # ------------------------------------------------------------ SQL

    def dsn(self, dbname=None):
        return dict(host=self.socket_dir, port=self.port, user=SUPERUSER,
                    dbname=dbname or self.dbname, connect_timeout=10,
                    options="-c statement_timeout=%d" % self.statement_timeout_ms,
                    application_name="pgcb-e2e")

    def connect(self, dbname=None, autocommit=True):
        """A new connection (autocommit on); the caller closes it."""
        conn = psycopg2.connect(**self.dsn(dbname))
        conn.autocommit = autocommit
        return conn

    def _conn(self, dbname):
        dbname = dbname or self.dbname
        c = self._conns.get(dbname)
        if c is None or c.closed:
            c = self.connect(dbname)
            self._conns[dbname] = c
        return c

    def close_connections(self):
        for c in self._conns.values():
            try:
                c.close()
            except Exception:
                pass
        self._conns = {}

    def _cursor_run(self, sql, params, dbname, fetch):
        c = self._conn(dbname)
        try:
            with c.cursor() as cur:
                cur.execute(sql, params)
                if fetch and cur.description is not None:
                    return cur.fetchall()
                return None
        except psycopg2.Error as e:
            # A server restart or crash broke the cached connection: drop it,
            # so that the next call reconnects.  Never retried here, since the
            # statement may have run.
            if _connection_lost(c, e):
                self._conns.pop(dbname or self.dbname, None)
                try:
                    c.close()
                except Exception:
                    pass
                raise ConnectionLost("connection lost: %s" % str(e).strip()) from e
            raise

    def query(self, sql, params=None, dbname=None):
        """All rows, as a list of tuples."""
        return self._cursor_run(sql, params, dbname, True) or []

    def scalar(self, sql, params=None, dbname=None):
        rows = self.query(sql, params, dbname)
        return rows[0][0] if rows else None

    def execute(self, sql, params=None, dbname=None):
        self._cursor_run(sql, params, dbname, False)

    # ------------------------------------------------------------ observing

    def log_text(self):
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_until(self, fn, timeout=30.0, interval=0.05, what="condition"):
        """Poll fn() until it returns a truthy value, at most timeout seconds;
        returns that value.  Connection errors count as "not yet" (the server
        may be restarting).  Raises AssertionError naming `what` and the last
        value seen."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = fn()
                if last:
                    return last
            except (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionLost) as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError("timed out after %.1fs waiting for %s; last value: %r"
                                     % (timeout, what, last))
            time.sleep(interval)  # the poll interval of a bounded poll

    def _pids(self, backend_type):
        return [r[0] for r in self.query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = %s ORDER BY backend_start",
            (backend_type,), dbname="postgres")]

    def worker_pids(self):
        return self._pids(WORKER_BACKEND_TYPE)

    def worker_pid(self):
        """The pid of the pg_callback background worker, or None."""
        pids = self.worker_pids()
        return pids[0] if pids else None

    def running_worker_pid(self, timeout=60, other_than=None):
        """The worker's pid, waiting for it (bounded): a test that is first
        in its module may start before the launcher has started the worker
        of the database the module's cluster just created.  other_than: a
        pid that no longer counts (the worker before a restart)."""
        def pid():
            p = self.worker_pid()
            return p if p and p != other_than else None
        return self.wait_until(pid, timeout=timeout, interval=0.1,
                               what="the worker of %s (other than pid %s)" % (self.dbname, other_than))

    def launcher_pid(self):
        pids = self._pids(LAUNCHER_BACKEND_TYPE)
        return pids[0] if pids else None

    def kill(self, pid, sig=signal.SIGTERM):
        os.kill(pid, sig)

    def crashes(self):
        """The server log's lines that say a process crashed (CRASH_LINE)."""
        return [line for line in self.log_text().splitlines() if CRASH_LINE.search(line)]

    def __repr__(self):
        return "Cluster(%s, port=%d, dir=%s)" % (self.name, self.port, self.base_dir)


@contextlib.contextmanager
def running_cluster(name, **kwargs):
    """A Cluster initialised and started on a free port, removed afterwards
    (also when it fails to start).  When what ran in it ends without an
    error, the cluster is stopped as an operator would (fast: the worker's
    and the launcher's exits run too), and its server log must record no
    crash (CRASH_LINE)."""
    c = Cluster(name=name, port=free_port(55500), **kwargs)
    try:
        c.init()
        c.start()
        yield c
        if c.postmaster_alive():
            c.stop("fast")
        crashed = c.crashes()
        assert not crashed, "the server log of %s records a crash:\n%s" % (c.name, "\n".join(crashed[:20]))
    finally:
        c.cleanup()
