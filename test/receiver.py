#!/usr/bin/env python3
"""A real HTTP/1.1 webhook receiver for pg_callback's tests, demo and benchmark.

Standard library only.  A ThreadingHTTPServer (one daemon thread per
connection, keep-alive, Content-Length on every response that may carry a
body) with a lean request parser, so that it keeps up with libcurl sending
thousands of small POSTs a second over hundreds of kept-alive connections.

In-process API (pytest):

    r = Receiver(host="127.0.0.1", port=0); r.start()
    r.url("/hook")                      -> "http://127.0.0.1:PORT/hook"
    r.requests(path=None)               -> [Record(method, path, headers, body,
                                            received_at, monotonic), ...]
    r.count(path=None); r.clear()
    r.connections()                     TCP connections accepted (since start
                                        or the last clear())
    r.open_connections()                connections open now (kept alive)
    r.wait_for(n, path=None, timeout=30.0) -> bool
    r.script(path, [(status, headers, body), ...])   responses, in order
    r.default_status = 204
    r.set_delay(path, seconds)          a slow endpoint
    r.down(); r.up()                    refuse and reset / listen again, same port
    r.stop()

A request is recorded as soon as it has been read, before any delay, so
count() and wait_for() see what reached the server.  Paths are matched
without their query string.

CLI:  python3 test/receiver.py --port 8080 [--host 127.0.0.1] [--status 204]
                               [--jsonl FILE] [--print]
"""

import argparse
import collections
import http
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, NamedTuple, Optional

__all__ = ["Receiver", "Record"]

_MAX_LINE = 65536
_MAX_HEADERS = 200
_MAX_BODY = 64 * 1024 * 1024
_NO_BODY_STATUS = (204, 304)


class Record(NamedTuple):
    method: str
    path: str                 # the request target as sent (with any query string)
    headers: Dict[str, str]   # lower-case names; repeated fields joined with ", "
    body: bytes
    received_at: float        # time.time()
    monotonic: float          # time.monotonic()

    def json(self):
        return json.loads(self.body)

    def text(self):
        return self.body.decode("utf-8")


def _route(target: str) -> str:
    """The path a request is matched on: the target without query or fragment."""
    for sep in ("?", "#"):
        i = target.find(sep)
        if i >= 0:
            target = target[:i]
    return target


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class _BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler with a small, fast parser of its own."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    rbufsize = 65536

    def log_message(self, format, *args):  # silence per-request logging
        pass

    def handle(self):
        self.close_connection = True
        try:
            while self._handle_one():
                pass
        except (OSError, ValueError):
            # Peer went away, or down() shut the socket: nothing to answer.
            pass

    # BaseHTTPRequestHandler.handle() would call this; keep it consistent.
    def handle_one_request(self):
        if not self._handle_one():
            self.close_connection = True

    def _readline(self):
        line = self.rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadRequest(431, "line too long")
        return line

    def _read_chunked(self):
        parts = []
        total = 0
        while True:
            line = self._readline()
            if not line:
                return None
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadRequest(400, "bad chunk size")
            if size == 0:
                # trailers until an empty line
                while True:
                    t = self._readline()
                    if not t or t in (b"\r\n", b"\n"):
                        break
                return b"".join(parts)
            total += size
            if total > _MAX_BODY:
                raise _BadRequest(413, "body too large")
            data = self.rfile.read(size)
            if len(data) < size:
                return None
            parts.append(data)
            self.rfile.readline(3)  # CRLF after the chunk

    def _handle_one(self) -> bool:
        """Serve one request; True when the connection stays open."""
        try:
            line = self._readline()
            if not line:
                return False
            if line in (b"\r\n", b"\n"):
                return True  # tolerate a stray empty line between requests
            parts = line.split()
            if len(parts) != 3:
                raise _BadRequest(400, "bad request line")
            method = parts[0].decode("latin-1")
            target = parts[1].decode("latin-1")
            version = parts[2].decode("latin-1")
            if not version.startswith("HTTP/1."):
                raise _BadRequest(505, "HTTP version not supported")
            headers = {}
            for _ in range(_MAX_HEADERS + 1):
                h = self._readline()
                if not h:
                    return False
                if h in (b"\r\n", b"\n"):
                    break
                name, sep, value = h.partition(b":")
                if not sep:
                    raise _BadRequest(400, "bad header line")
                name = name.strip().decode("latin-1").lower()
                value = value.strip().decode("latin-1")
                if name in headers:
                    headers[name] = headers[name] + ", " + value
                else:
                    headers[name] = value
            else:
                raise _BadRequest(431, "too many header fields")

            conn_tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
            if version == "HTTP/1.0":
                keep_alive = "keep-alive" in conn_tokens
            else:
                keep_alive = "close" not in conn_tokens

            if headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

            te = headers.get("transfer-encoding", "").lower()
            if "chunked" in te:
                body = self._read_chunked()
                if body is None:
                    return False
            elif "content-length" in headers:
                try:
                    n = int(headers["content-length"])
                except ValueError:
                    raise _BadRequest(400, "bad content-length")
                if n < 0:
                    raise _BadRequest(400, "bad content-length")
                if n > _MAX_BODY:
                    raise _BadRequest(413, "body too large")
                body = self.rfile.read(n) if n else b""
                if len(body) < n:
                    return False
            else:
                body = b""
        except _BadRequest as e:
            self._write_response(e.status, {}, str(e).encode(), False, "GET")
            return False

        receiver = self.server.receiver
        path = _route(target)
        receiver._record(method, target, path, headers, body)
        status, rheaders, rbody, delay = receiver._response_for(path)
        if delay > 0:
            # The server itself is slow here; down()/stop() cut the wait short.
            if self.server.closing.wait(delay):
                return False
        self._write_response(status, rheaders, rbody, keep_alive, method)
        return keep_alive

    def _write_response(self, status, headers, body, keep_alive, method):
        if isinstance(body, str):
            body = body.encode("utf-8")
        body = body or b""
        out = ["HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
        given = set()
        for k, v in (headers or {}).items():
            lk = k.lower()
            if lk in ("content-length", "connection", "transfer-encoding"):
                continue
            given.add(lk)
            out.append("%s: %s\r\n" % (k, v))
        no_body = status in _NO_BODY_STATUS or 100 <= status < 200
        if no_body:
            body = b""
        else:
            # Always framed by Content-Length (RFC 9110 forbids it on 1xx/204).
            out.append("Content-Length: %d\r\n" % len(body))
            if body and "content-type" not in given:
                out.append("Content-Type: text/plain; charset=utf-8\r\n")
        if not keep_alive:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        data = "".join(out).encode("latin-1")
        if method != "HEAD":
            data += body
        self.wfile.write(data)  # one write: no Nagle / delayed-ACK stalls


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, addr, receiver):
        self.receiver = receiver
        self.closing = threading.Event()
        self._conns = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def server_bind(self):
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn); skip it.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name = self.server_address[0]
        self.server_port = self.server_address[1]

    def process_request(self, request, client_address):
        with self._conns_lock:
            if self.closing.is_set():
                _hard_close(request)
                return
            self._conns.add(request)
        self.receiver._accepted()
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # no tracebacks for peers that went away

    def close_all_connections(self):
        self.closing.set()
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            _hard_close(s)


def _hard_close(sock):
    """Shut a socket down so that the peer sees a reset, and the handler
    thread blocked on it wakes up."""
    try:
        # linger 0: close sends RST rather than FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Receiver:
    """A threaded HTTP/1.1 receiver recording every request it gets."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep_records: bool = True):
        self.host = host
        self.port = port
        self.default_status = 204
        self.default_headers: Dict[str, str] = {}
        self.default_body = ""
        self.keep_records = keep_records
        self.on_request = None  # optional callable(Record), called outside the lock
        self._cond = threading.Condition()
        self._records = []
        self._total = 0
        self._accepts = 0
        self._counts = collections.Counter()
        self._scripts = {}
        self._delays = {}
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._state_lock = threading.Lock()

    # ----------------------------------------------------------- lifecycle

    def start(self):
        self.up()
        return self

    def up(self, bind_timeout: float = 10.0):
        """Listen (again) on the same port."""
        with self._state_lock:
            if self._server is not None:
                return self
            deadline = time.monotonic() + bind_timeout
            while True:
                try:
                    server = _Server((self.host, self.port), self)
                    break
                except OSError:
                    # Rare: the port was taken meanwhile, e.g. as some client's
                    # ephemeral port.  Bounded retry.
                    if self.port == 0 or time.monotonic() >= deadline:
                        raise
                    threading.Event().wait(0.05)
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name="receiver-%d" % self.port, daemon=True)
            self._thread.start()
        return self

    def down(self):
        """Stop accepting and reset every open connection: clients see
        connection refused (new) or reset (kept alive)."""
        with self._state_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return self
            server.shutdown()          # stop the accept loop
            server.server_close()      # close the listening socket
            server.close_all_connections()
            if thread is not None:
                thread.join(timeout=5.0)
        return self

    def stop(self):
        self.down()

    def is_up(self) -> bool:
        return self._server is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path: str = "/hook") -> str:
        if not path.startswith("/"):
            path = "/" + path
        host = self.host
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d%s" % (host, self.port, path)

    # ----------------------------------------------------------- behaviour

    def script(self, path: str, responses):
        """Answer the next requests on path with these (status, headers, body),
        in order; then the default response."""
        items = []
        for r in responses:
            if isinstance(r, int):
                r = (r, {}, "")
            status, headers, body = (tuple(r) + ({}, ""))[:3]
            items.append((int(status), dict(headers or {}), body or ""))
        with self._cond:
            self._scripts.setdefault(_route(path), collections.deque()).extend(items)

    def set_delay(self, path: Optional[str], seconds: float):
        """Answer requests on path (None: every path) after a delay."""
        with self._cond:
            key = None if path is None else _route(path)
            if seconds and seconds > 0:
                self._delays[key] = float(seconds)
            else:
                self._delays.pop(key, None)

    def _response_for(self, path):
        with self._cond:
            q = self._scripts.get(path)
            if q:
                status, headers, body = q.popleft()
            else:
                status, headers, body = self.default_status, self.default_headers, self.default_body
            delay = self._delays.get(path, self._delays.get(None, 0.0))
        return status, headers, body, delay

    # ----------------------------------------------------------- records

    def _record(self, method, target, path, headers, body):
        rec = Record(method, target, headers, body, time.time(), time.monotonic())
        with self._cond:
            if self.keep_records:
                self._records.append(rec)
            self._total += 1
            self._counts[path] += 1
            self._cond.notify_all()
        cb = self.on_request
        if cb is not None:
            cb(rec)

    def _accepted(self):
        with self._cond:
            self._accepts += 1

    def connections(self) -> int:
        """TCP connections accepted since start() or the last clear(): a
        client that reuses its connections opens few for many requests."""
        with self._cond:
            return self._accepts

    def open_connections(self) -> int:
        """Connections accepted and not yet closed: kept-alive ones too."""
        server = self._server
        if server is None:
            return 0
        with server._conns_lock:
            return len(server._conns)

    def requests(self, path: Optional[str] = None):
        with self._cond:
            recs = list(self._records)
        if path is None:
            return recs
        path = _route(path)
        return [r for r in recs if _route(r.path) == path]

    def count(self, path: Optional[str] = None) -> int:
        with self._cond:
            return self._total if path is None else self._counts[_route(path)]

    def clear(self):
        with self._cond:
            self._records = []
            self._total = 0
            self._accepts = 0
            self._counts.clear()

    def wait_for(self, n: int, path: Optional[str] = None, timeout: float = 30.0) -> bool:
        """Wait, at most timeout seconds, until at least n requests on path."""
        key = None if path is None else _route(path)

        def enough():
            return (self._total if key is None else self._counts[key]) >= n

        with self._cond:
            return self._cond.wait_for(enough, timeout=timeout)


# ----------------------------------------------------------------- CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description="pg_callback test webhook receiver")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--status", type=int, default=204, help="status of every response")
    ap.add_argument("--jsonl", help="append one JSON object per request to this file")
    ap.add_argument("--print", dest="print_", action="store_true",
                    help="print a short line per request")
    args = ap.parse_args(argv)

    r = Receiver(args.host, args.port, keep_records=False)
    r.default_status = args.status
    out_lock = threading.Lock()
    jsonl = open(args.jsonl, "a", encoding="utf-8") if args.jsonl else None

    def on_request(rec):
        line = None
        if jsonl is not None:
            line = json.dumps({"received_at": rec.received_at, "path": rec.path,
                               "headers": rec.headers,
                               "body": rec.body.decode("utf-8", "replace")},
                              ensure_ascii=False)
        with out_lock:
            if line is not None:
                jsonl.write(line + "\n")
                jsonl.flush()
            if args.print_:
                ts = time.strftime("%H:%M:%S", time.localtime(rec.received_at))
                ts += ".%03d" % int((rec.received_at % 1) * 1000)
                body = rec.body[:120].decode("utf-8", "replace")
                sys.stdout.write("%s %s %s %s\n" % (
                    ts, rec.headers.get("webhook-id", "-"), rec.path, body))
                sys.stdout.flush()

    if jsonl is not None or args.print_:
        r.on_request = on_request

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    r.start()
    print("listening on %s" % r.url("/").rstrip("/"), flush=True)
    while not stop.wait(1.0):
        pass
    r.stop()
    with out_lock:
        if jsonl is not None:
            jsonl.close()
    print("received %d requests" % r.count(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
