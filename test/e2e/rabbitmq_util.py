"""A private RabbitMQ broker (Debian's rabbitmq-server) on 127.0.0.1 for the
amqp:// tests and the bench: its own AMQP, distribution and epmd ports, its
node name, data and logs in a temporary directory made here, removed by
close().  Started and stopped as often as a test needs (the data survives a
stop), and consumed with pika.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from cluster import free_port

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port():
    """A port free now, below the kernel's ephemeral range.  A port the
    kernel picked (bind to 0) was free when picked, but any outgoing
    connection could take it before the broker bound it: one took a
    broker's distribution port that way, and the broker did not start."""
    hi = _ephemeral_low()
    lo = max(1024, hi - 8000)
    # from a place of this process's own, so that two test runs seldom meet
    start = lo + os.getpid() * 61 % (hi - lo)
    try:
        return free_port(start, hi)
    except RuntimeError:
        return free_port(lo, start)


def _alive(pid):
    """A process that exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def available():
    return os.path.exists(RABBITMQ_SERVER)


def _make_certs(d):
    """A CA and a server certificate for localhost (and 127.0.0.1) signed by it."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgcb test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    for f in ("ca.key", "server.key"):
        os.chmod(os.path.join(d, f), 0o644)   # the broker may run as another user
    return os.path.join(d, "ca.pem")


class Broker:
    def __init__(self, name="pgcb", tls=False):
        self.dir = tempfile.mkdtemp(prefix="pgcb-rabbitmq-", dir="/tmp")
        os.chmod(self.dir, 0o755)   # the CA file is read by postgres
        self.port = _free_port()
        self.tls_port = _free_port() if tls else None
        self.ca_file = _make_certs(self.dir) if tls else None
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = "%s%d@localhost" % (name, os.getpid())
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\n" % self.port)
            f.write("loopback_users = none\n")
            # the disk alarm would stop publishers on a full shared /tmp
            f.write("disk_free_limit.absolute = 1MB\n")
            if tls:
                f.write("listeners.ssl.1 = 127.0.0.1:%d\n" % self.tls_port)
                for k, v in (("cacertfile", "ca.pem"), ("certfile", "server.pem"),
                             ("keyfile", "server.key")):
                    f.write("ssl_options.%s = %s\n" % (k, os.path.join(self.dir, v)))
                f.write("ssl_options.verify = verify_none\n")
                f.write("ssl_options.fail_if_no_peer_cert = false\n")
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        self.env = dict(os.environ)
        self.env.update({
            "HOME": self.dir,   # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "enabled_plugins"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbitmq.pid"),
        })
        self.proc = None
        self.out = None

    def url(self, vhost="%2F", query="", user="guest", password="guest"):
        return "amqp://%s:%s@127.0.0.1:%d/%s%s" % (user, password, self.port, vhost,
                                                   ("?" + query) if query else "")

    def start(self, timeout=120.0):
        assert self.proc is None
        self.out = open(os.path.join(self.dir, "server.out"), "ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("rabbitmq-server exited: %s" % self.log_tail())
            try:
                self.connect().close()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("rabbitmq-server not up after %.0fs: %s"
                                       % (timeout, self.log_tail()))
            time.sleep(0.25)  # poll interval of a bounded wait

    def _beam_pid(self):
        try:
            with open(self.env["RABBITMQ_PID_FILE"]) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout=60.0):
        """SIGTERM to the node (a clean stop: what it confirmed stays)."""
        if self.proc is None:
            return
        beam = self._beam_pid()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        self.out.close()
        # the Erlang VM is the group leader's child: wait until it is gone
        deadline = time.monotonic() + timeout
        while ((beam is not None and _alive(beam)) or self._port_open()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)

    def _port_open(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.5).close()
            return True
        except OSError:
            return False

    def close(self):
        self.stop()
        # the epmd this node started, on its own port
        subprocess.run(["epmd", "-kill"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=30):
        text = ""
        try:
            with open(os.path.join(self.dir, "server.out"), errors="replace") as f:
                text = f.read()
        except OSError:
            pass
        return "\n".join(text.splitlines()[-n:])

    def connect(self):
        import pika
        params = pika.ConnectionParameters(host="127.0.0.1", port=self.port,
                                           credentials=pika.PlainCredentials("guest", "guest"),
                                           connection_attempts=1, socket_timeout=5,
                                           blocked_connection_timeout=30)
        return pika.BlockingConnection(params)

    def declare(self, exchange, queue, binding="#", queue_args=None):
        """A durable topic exchange and a durable queue bound to it."""
        conn = self.connect()
        ch = conn.channel()
        ch.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        ch.queue_declare(queue=queue, durable=True, arguments=queue_args)
        ch.queue_bind(queue=queue, exchange=exchange, routing_key=binding)
        conn.close()

    def drain(self, queue, n, timeout):
        """Consume queue into a list of (method, properties, body) until n
        distinct message_ids have come or timeout seconds pass; reconnects if
        the broker drops the connection."""
        got = []
        ids = set()
        deadline = time.monotonic() + timeout
        while len(ids) < n and time.monotonic() < deadline:
            try:
                conn = self.connect()
            except Exception:
                time.sleep(0.25)  # poll interval of a bounded wait for the broker
                continue
            try:
                ch = conn.channel()
                # no ack per message: pika would be the slowest part by far
                for method, props, body in ch.consume(queue, auto_ack=True,
                                                      inactivity_timeout=0.5):
                    if method is not None:
                        got.append((method, props, body))
                        ids.add(props.message_id)
                    if len(ids) >= n or time.monotonic() >= deadline:
                        break
                ch.cancel()
                conn.close()
            except Exception:
                pass
        return got

    def count(self, queue):
        conn = self.connect()
        try:
            return conn.channel().queue_declare(queue=queue, durable=True,
                                                passive=True).method.message_count
        finally:
            conn.close()
