"""End-to-end: outbound safety of the delivery worker.

This module's cluster starts with callback.ssrf_allowlist EMPTY, so loopback
is refused like any other local address.  Tests that need the receiver on
loopback allowlist it with ALTER SYSTEM + pg_reload_conf() (set_allowlist),
and the SSRF tests put it back to empty, so each test sets the policy it
needs whatever ran before.

  * SSRF: every spelling of a loopback / private / link-local / CGNAT / IPv6
    local address is refused by create_endpoint and alter_endpoint (42501);
    a host name that resolves to loopback passes creation but is refused at
    connect time (recorded, nothing reaches the receiver), and is delivered
    once the allowlist admits loopback, as is every numeric spelling of
    127.0.0.1; other ranges stay refused.  Private addresses are only ever
    given to create/alter in a rolled-back transaction: nothing connects to
    them.  The spellings tried and what each got are printed at the end of
    the module and kept as the junit testsuite property "ssrf_results".
  * Redirects are not followed: a 3xx is a dead letter after one attempt and
    the Location is never requested.
  * The endpoint timeout bounds an attempt; a timeout is retried.
    callback.connect_timeout bounds the connect (a port whose SYNs are
    dropped), inside the endpoint's total timeout.
  * The response body kept is capped at callback.max_response_bytes, and
    follows a change of it.
  * Endpoint headers reach the receiver (an empty value as an empty header);
    CR / LF / NUL in a header is refused by create_endpoint and alter_endpoint.
  * TLS is verified by default; callback.ca_file makes a private CA trusted;
    the host name is checked too.
"""

import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest

from conftest import record_figure

CLUSTER_CONF = {"callback.ssrf_allowlist": ""}

LOOPBACK = "127.0.0.0/8, ::1/128"
QUIET_S = 1.5  # how long "nothing arrives" is watched, after the outcome is recorded


# ------------------------------------------------------------------ helpers

def endpoint_name(request, suffix=""):
    return ("out_" + re.sub(r"[^A-Za-z0-9_.:-]", "_", request.node.name) + suffix)[:100]


def set_system(cluster, name, value):
    """ALTER SYSTEM SET name = value; reload; wait until a new session sees
    it.  New sessions inherit the postmaster's settings, and the postmaster
    signals every child (the delivery worker too) in the same SIGHUP handler
    in which it re-reads the files; the worker re-reads its configuration
    before its next cycle."""
    cluster.execute("ALTER SYSTEM SET %s = %%s" % name, (value,))
    cluster.execute("SELECT pg_reload_conf()")

    def seen():
        conn = cluster.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT current_setting(%s)", (name,))
            return cur.fetchone()[0] == value
        finally:
            conn.close()
    cluster.wait_until(seen, timeout=15, interval=0.05,
                       what="%s = %r in a new session" % (name, value))
    # this session too (it re-reads at its next command)
    cluster.wait_until(lambda: cluster.scalar("SELECT current_setting(%s)", (name,)) == value,
                       timeout=15, interval=0.05, what="%s = %r in this session" % (name, value))


def set_allowlist(cluster, value):
    set_system(cluster, "callback.ssrf_allowlist", value)


def enqueue(cluster, event_type, payload):
    return cluster.scalar("SELECT callback.enqueue(%s, %s::jsonb)::text",
                          (event_type, json.dumps(payload)))


def queue_row(cluster, eid):
    rows = cluster.query(
        "SELECT id, status::text, attempts, last_status_code, last_error, body "
        "  FROM callback.callback_queue WHERE endpoint_id = %s ORDER BY id", (eid,))
    assert len(rows) == 1, "expected one delivery for endpoint %d, got %r" % (eid, rows)
    return dict(zip(("id", "status", "attempts", "last_status_code", "last_error", "body"),
                    rows[0]))


def attempts(cluster, eid):
    return [dict(zip(("attempt", "status_code", "error", "latency_ms", "response_body",
                      "outcome", "started_at"), r)) for r in cluster.query(
        "SELECT attempt, status_code, error, latency_ms, response_body, outcome::text, "
        "       started_at "
        "  FROM callback.callback_attempts WHERE endpoint_id = %s ORDER BY attempt, started_at",
        (eid,))]


def diagnostics(cluster, eid):
    try:
        q = cluster.query(
            "SELECT status::text, attempts, last_status_code, last_error "
            "  FROM callback.callback_queue WHERE endpoint_id = %s", (eid,))
    except Exception as e:
        q = "query failed: %s" % e
    return "\nqueue: %r\n--- server log (tail) ---\n%s" % (q, cluster.log_tail(20))


def wait_status(cluster, eid, status, timeout=30, min_attempts=1):
    def done():
        r = queue_row(cluster, eid)
        return r if r["status"] == status and r["attempts"] >= min_attempts else None
    try:
        return cluster.wait_until(done, timeout=timeout, interval=0.05,
                                  what="endpoint %d's delivery %s" % (eid, status))
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None


def sql_error(cluster, sql, params=None):
    """The psycopg2 error a statement raises (it must raise)."""
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute(sql, params)
    return ei.value


def endpoint_exists(cluster, name):
    return cluster.scalar("SELECT count(*) FROM callback.callback_endpoints WHERE name = %s",
                          (name,)) == 1


# ------------------------------------------------------------------ SSRF
#
# Addresses other than loopback are never connected to from these tests: a
# private, link-local or CGNAT URL is only ever given to create_endpoint /
# alter_endpoint inside a transaction that is rolled back, for an event type
# nothing emits, so that even if it were accepted no delivery could follow.
# Deliveries are made only to the receiver on 127.0.0.1.

SSRF_RESULTS = []  # (spelling, where checked, result), reported at module end


@pytest.fixture(scope="module", autouse=True)
def _report_ssrf_results(record_testsuite_property):
    """The table of spellings goes into the test output (stdout and a junit
    testsuite property), never into a file."""
    yield
    if not SSRF_RESULTS:
        return
    lines = ["| spelling | checked | result |", "| --- | --- | --- |"]
    for spelling, where, result in SSRF_RESULTS:
        lines.append("| `%s` | %s | %s |" % (spelling, where,
                                             result.replace("|", "\\|").replace("\n", " ")))
    table = "\n".join(lines)
    print("\nSSRF spellings tried:\n" + table)
    record_testsuite_property("ssrf_results", table)


def in_rollback(cluster, sql, params=None):
    """Run sql in a transaction that is always rolled back; the psycopg2
    error it raised, or None when it succeeded."""
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
        return None
    except psycopg2.Error as e:
        return e
    finally:
        conn.rollback()
        conn.close()


def short_error(e):
    first = (e.pgerror or "").strip().splitlines()[0] if e.pgerror else str(e)
    return "SQLSTATE %s: %s" % (e.pgcode, first.replace("ERROR:  ", ""))


CREATE_SQL = ("SELECT callback.create_endpoint(name => %s, url => %s, "
              "event_types => '{ssrf.never}')")

SSRF_SPELLINGS = [
    # loopback, in every numeric spelling
    "http://127.0.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f.1:{port}/",
    "http://127.1:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://017700000001:{port}/",
    "http://127.000.000.001:{port}/",
    "http://%31%32%37.0.0.1:{port}/",
    "http://127.255.255.254:{port}/",
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "https://127.0.0.1:{port}/",
    # RFC 1918, CGNAT, link-local (cloud metadata), "this" network
    "http://10.0.0.1:{port}/",
    "http://10.255.255.254/",
    "http://012.0.0.1/",
    "http://172.16.0.1:{port}/",
    "http://172.31.255.254:{port}/",
    "http://192.168.1.1:{port}/",
    "http://0xc0.0xa8.1.1/",
    "http://100.64.0.1:{port}/",
    "http://100.127.255.254:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://169.254.43518/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    # IPv6 ULA, link-local, unspecified, mapped / NAT64 / 6to4 forms of blocked IPv4
    "http://[fc00::1]:{port}/",
    "http://[fd12:3456::1]:{port}/",
    "http://[fe80::1]:{port}/",
    "http://[::]:{port}/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:192.168.1.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
]

# IPv4 spellings of 127.0.0.1 itself: once loopback is allowlisted, each must
# be delivered to the receiver (which listens on 127.0.0.1 only), proving the
# address the policy judged is the one curl connected to.
LOOPBACK_V4_SPELLINGS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001",
    "017700000001", "127.000.000.001", "0x7f.0.0.1",
]

# Private (non-loopback) addresses stay refused when only loopback is allowed.
STILL_REFUSED_WITH_LOOPBACK = [
    "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.1.1/", "http://100.64.0.1/",
    "http://169.254.169.254/", "http://[fc00::1]/", "http://[fe80::1]/",
    "http://[::ffff:10.0.0.1]/", "http://0.0.0.0/",
]


def test_ssrf_spellings_refused_at_creation(request, cluster, receiver):
    set_allowlist(cluster, "")
    failures = []
    for i, tmpl in enumerate(SSRF_SPELLINGS):
        url = tmpl.format(port=receiver.port)
        e = in_rollback(cluster, CREATE_SQL, (endpoint_name(request, "_%d" % i), url))
        if e is None:
            failures.append("%s: ACCEPTED by create_endpoint" % url)
            SSRF_RESULTS.append((url, "create_endpoint, allowlist empty", "**ACCEPTED**"))
            continue
        SSRF_RESULTS.append((url, "create_endpoint, allowlist empty", short_error(e)))
        if e.pgcode != "42501":
            failures.append("%s: %s" % (url, short_error(e)))
        elif "forbidden address" not in (e.diag.message_primary or "") or \
                "callback.ssrf_allowlist" not in (e.diag.message_hint or ""):
            failures.append("%s: message/hint %r" % (url, e.pgerror))
    assert not failures, "SSRF spellings not refused with 42501:\n" + "\n".join(failures)
    # callback.address_allowed() says the same
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "172.20.0.1",
                 "192.168.0.1", "169.254.169.254", "100.64.0.1", "fc00::1", "fd00::1",
                 "fe80::1", "0.0.0.0", "::"):
        assert cluster.scalar("SELECT callback.address_allowed(%s::inet)", (addr,)) is False, addr
    # ...and is not a function that refuses everything
    for addr in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "172.32.0.1",
                 "100.128.0.1", "11.0.0.1"):
        assert cluster.scalar("SELECT callback.address_allowed(%s::inet)", (addr,)) is True, addr
    assert receiver.count() == 0, "%d requests reached the receiver" % receiver.count()


def test_ssrf_alter_endpoint_refused(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, "")
    name = endpoint_name(request)
    # a host name that never resolves (.invalid), for an event nothing emits
    endpoint_factory(name, "https://hooks.example.invalid/hook", event_types="{ssrf.never}")
    for url in ("http://127.1:%d/" % receiver.port, "http://[::ffff:127.0.0.1]/",
                "http://169.254.169.254/", "http://10.0.0.1/", "http://[fc00::1]/"):
        e = in_rollback(cluster, "SELECT callback.alter_endpoint(%s, url => %s)", (name, url))
        assert e is not None, "alter_endpoint accepted %s" % url
        SSRF_RESULTS.append((url, "alter_endpoint, allowlist empty", short_error(e)))
        assert e.pgcode == "42501", (url, e.pgcode, e.pgerror)
    assert cluster.scalar("SELECT url FROM callback.callback_endpoints WHERE name = %s",
                          (name,)) == "https://hooks.example.invalid/hook"


# Host names that resolve to loopback: a name is not resolved at creation
# (DNS can change), so the worker's check of the resolved address before it
# connects must refuse them.
LOOPBACK_NAMES = ["localhost", "LOCALHOST", "LocalHost"]


def test_ssrf_hostname_refused_at_connect_then_allowed(request, cluster, receiver,
                                                       endpoint_factory):
    set_allowlist(cluster, "")
    made = []
    for i, host in enumerate(LOOPBACK_NAMES):
        url = "http://%s:%d/ssrf%d" % (host, receiver.port, i)
        name = endpoint_name(request, "_%d" % i)
        eid = endpoint_factory(name, url, event_types="{out.ssrf%d}" % i, max_attempts=1)
        enqueue(cluster, "out.ssrf%d" % i, {"ssrf": i})
        made.append((i, url, eid))
    rows = {}
    for i, url, eid in made:
        row = wait_status(cluster, eid, "dead")
        rows[i] = row
        err = row["last_error"] or ""
        SSRF_RESULTS.append((url, "delivery (connect time), allowlist empty",
                             "refused, last_error: %s" % err))
        att = attempts(cluster, eid)
        assert len(att) == 1 and att[0]["status_code"] in (None, 0), att
        assert att[0]["error"] and att[0]["error"] in err, att
        assert row["attempts"] == 1 and row["last_status_code"] in (None, 0), row
        # the error names the refused address and its range
        assert re.search(r"(127\.0\.0\.1|::1) is in (127\.0\.0\.0/8|::1/128) \(loopback\)", err), \
            "last_error: %r" % err
    # nothing reached the receiver, watched a while after the outcomes
    assert not receiver.wait_for(1, None, timeout=QUIET_S), \
        "the refused address was connected to: %r" % [r.path for r in receiver.requests()]

    # allowlist loopback: the same deliveries, redriven, now arrive
    set_allowlist(cluster, LOOPBACK)
    ids = [rows[i]["id"] for i, _, _ in made]
    assert cluster.scalar("SELECT callback.redrive(%s::bigint[])", (ids,)) == len(ids)
    for i, url, eid in made:
        assert receiver.wait_for(1, "/ssrf%d" % i, timeout=30), \
            "redriven delivery to %s did not arrive once loopback was allowed" % url + \
            diagnostics(cluster, eid)
        row = wait_status(cluster, eid, "delivered")
        rec = receiver.requests("/ssrf%d" % i)[0]
        assert rec.body == row["body"].encode("utf-8")
        SSRF_RESULTS.append((url, "delivery, allowlist %s" % LOOPBACK, "delivered"))
    set_allowlist(cluster, "")


def test_ssrf_connect_error_names_policy(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, "")
    eid = endpoint_factory(endpoint_name(request), "http://localhost:%d/why" % receiver.port,
                           event_types="{out.why}", max_attempts=1)
    enqueue(cluster, "out.why", {"why": 1})
    err = wait_status(cluster, eid, "dead")["last_error"] or ""
    assert receiver.count() == 0
    assert re.search(r"refus|forbidden|not allowed|blocked|ssrf", err, re.I), err
    assert "callback.ssrf_allowlist" in err, err


def test_ssrf_loopback_spellings_delivered_once_allowed(request, cluster, receiver,
                                                        endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    made = []
    for i, host in enumerate(LOOPBACK_V4_SPELLINGS):
        url = "http://%s:%d/lb%d" % (host, receiver.port, i)
        eid = endpoint_factory(endpoint_name(request, "_%d" % i), url,
                               event_types="{out.lb%d}" % i, max_attempts=1)
        enqueue(cluster, "out.lb%d" % i, {"lb": i})
        made.append((i, url, eid))
    for i, url, eid in made:
        row = wait_status(cluster, eid, "delivered")
        assert receiver.count("/lb%d" % i) == 1, url
        assert receiver.requests("/lb%d" % i)[0].body == row["body"].encode("utf-8")
        SSRF_RESULTS.append((url, "delivery, allowlist %s" % LOOPBACK, "delivered"))
    # IPv6 loopback is accepted at creation too (no IPv6 receiver to deliver to)
    e = in_rollback(cluster, CREATE_SQL, (endpoint_name(request, "_v6"),
                                          "http://[::1]:%d/" % receiver.port))
    assert e is None, short_error(e)
    SSRF_RESULTS.append(("http://[::1]:%d/" % receiver.port,
                         "create_endpoint, allowlist %s" % LOOPBACK, "accepted"))
    # the IPv4-mapped form is judged by the IPv4 address it carries
    # (netpolicy.c, allowlist_admits): 127.0.0.0/8 admits ::ffff:127.0.0.1,
    # as expected/netpolicy.out shows for validate_url; with the allowlist
    # empty it is refused (SSRF_SPELLINGS, test above)
    e = in_rollback(cluster, CREATE_SQL, (endpoint_name(request, "_mapped"),
                                          "http://[::ffff:127.0.0.1]:%d/" % receiver.port))
    SSRF_RESULTS.append(("http://[::ffff:127.0.0.1]:%d/" % receiver.port,
                         "create_endpoint, allowlist %s" % LOOPBACK,
                         "accepted" if e is None else short_error(e)))
    assert e is None, "::ffff:127.0.0.1 refused although 127.0.0.0/8 is allowlisted: %s" \
        % short_error(e)
    # every other blocked range stays refused
    for url in STILL_REFUSED_WITH_LOOPBACK:
        e = in_rollback(cluster, CREATE_SQL, (endpoint_name(request, "_priv"), url))
        assert e is not None and e.pgcode == "42501", \
            "%s with only loopback allowlisted: %s" % (url, e and short_error(e))
        SSRF_RESULTS.append((url, "create_endpoint, allowlist %s" % LOOPBACK, short_error(e)))
    set_allowlist(cluster, "")


def test_ssrf_reload_blocks_new_connections(request, cluster, receiver, endpoint_factory):
    """An endpoint created while loopback was allowed (so create_endpoint let
    it through) is refused at connect time once loopback is taken off the
    allowlist: the numeric URL is checked again before each connection."""
    set_allowlist(cluster, LOOPBACK)
    eid = endpoint_factory(endpoint_name(request), receiver.url("/again"),
                           event_types="{out.again}", max_attempts=1)
    enqueue(cluster, "out.again", {"n": 1})
    assert receiver.wait_for(1, "/again", timeout=30), diagnostics(cluster, eid)
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        "   AND status = 'delivered'", (eid,)) == 1, timeout=30, what="first delivery")
    set_allowlist(cluster, "")
    # reset the kept-alive connection (see the test below): a new one is needed
    receiver.down()
    receiver.up()
    enqueue(cluster, "out.again", {"n": 2})

    def dead():
        return cluster.query("SELECT last_error FROM callback.callback_queue "
                             " WHERE endpoint_id = %s AND status = 'dead'", (eid,))
    try:
        [(err,)] = cluster.wait_until(dead, timeout=30, what="second delivery refused")
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None
    assert "127.0.0.1 is in 127.0.0.0/8 (loopback)" in (err or ""), err
    SSRF_RESULTS.append((receiver.url("/again"),
                         "delivery after the allowlist was emptied (endpoint made while allowed)",
                         "refused, last_error: %s" % err))
    assert not receiver.wait_for(2, "/again", timeout=QUIET_S), \
        "a request reached loopback after it was taken off the allowlist"


def test_ssrf_reload_closes_kept_alive_connections(request, cluster, receiver,
                                                   endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    eid = endpoint_factory(endpoint_name(request), receiver.url("/keep"),
                           event_types="{out.keep}", max_attempts=1)
    enqueue(cluster, "out.keep", {"n": 1})
    assert receiver.wait_for(1, "/keep", timeout=30), diagnostics(cluster, eid)
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        "   AND status = 'delivered'", (eid,)) == 1, timeout=30, what="first delivery")
    # the premise: the first delivery left a kept-alive connection open, the
    # one the second request would otherwise go over
    assert receiver.connections() == 1 and receiver.open_connections() == 1, \
        "no kept-alive connection after the first delivery (%d accepted, %d open)" \
        % (receiver.connections(), receiver.open_connections())
    set_allowlist(cluster, "")
    enqueue(cluster, "out.keep", {"n": 2})
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        "   AND status IN ('delivered', 'dead')", (eid,)) == 2, timeout=30,
        what="second delivery finished")
    assert receiver.count("/keep") == 1, \
        "a request reached loopback over a kept-alive connection after loopback " \
        "was taken off the allowlist"


# ------------------------------------------------------------------ loopback allowed below

@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_not_followed(request, cluster, receiver, endpoint_factory, code):
    set_allowlist(cluster, LOOPBACK)
    path = "/redir%d" % code
    receiver.script(path, [(code, {"Location": receiver.url("/target")}, "moved")] * 3)
    eid = endpoint_factory(endpoint_name(request), receiver.url(path),
                           event_types="{out.redir}", max_attempts=5,
                           retry_schedule=["10 milliseconds"])
    enqueue(cluster, "out.redir", {"redirect": code})
    row = wait_status(cluster, eid, "dead")
    assert row["attempts"] == 1 and row["last_status_code"] == code, row
    assert "redirect" in (row["last_error"] or ""), row
    att = attempts(cluster, eid)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in att] == [(1, code, "dead")], att
    assert not receiver.wait_for(1, "/target", timeout=QUIET_S), "the Location was requested"
    assert receiver.count(path) == 1


def max_response_bytes(cluster):
    return int(cluster.scalar(
        "SELECT setting FROM pg_settings WHERE name = 'callback.max_response_bytes'"))


def test_response_body_capped(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    cap = max_response_bytes(cluster)
    assert cap == 1024, "callback.max_response_bytes default changed: %d" % cap
    big = "x" * 100000
    receiver.script("/big", [(500, {}, big)])
    # multibyte characters straddling the cap: kept as valid text
    receiver.script("/bigu", [(200, {"Content-Type": "text/plain; charset=utf-8"},
                               "a" + "ü€😀" * 20000)])
    e1 = endpoint_factory(endpoint_name(request, "_500"), receiver.url("/big"),
                          event_types="{out.big}", max_attempts=1)
    e2 = endpoint_factory(endpoint_name(request, "_200"), receiver.url("/bigu"),
                          event_types="{out.bigu}", max_attempts=1)
    enqueue(cluster, "out.big", {"big": 1})
    enqueue(cluster, "out.bigu", {"big": 2})
    r1 = wait_status(cluster, e1, "dead")
    r2 = wait_status(cluster, e2, "delivered")
    assert r1["last_status_code"] == 500 and r2["last_status_code"] == 200
    [a1] = attempts(cluster, e1)
    [a2] = attempts(cluster, e2)
    b1 = (a1["response_body"] or "").encode("utf-8")
    b2 = (a2["response_body"] or "").encode("utf-8")
    assert 0 < len(b1) <= cap, "response_body of %d bytes kept (cap %d)" % (len(b1), cap)
    assert b1 == b"x" * len(b1), "the kept part is not the head of the body"
    assert len(b1) == cap
    assert 0 < len(b2) <= cap, "response_body of %d bytes kept (cap %d)" % (len(b2), cap)
    assert b2.decode("utf-8") == ("a" + "ü€😀" * 20000)[:len(b2.decode("utf-8"))]
    assert len(b2) > cap - 4, "more than one character short of the cap: %d" % len(b2)

    # the cap follows the setting (reloaded by the worker), it is not fixed
    set_system(cluster, "callback.max_response_bytes", "100B")
    try:
        receiver.script("/big", [(500, {}, big)])
        e3 = endpoint_factory(endpoint_name(request, "_100"), receiver.url("/big"),
                              event_types="{out.big100}", max_attempts=1)
        enqueue(cluster, "out.big100", {"big": 3})
        wait_status(cluster, e3, "dead")
        [a3] = attempts(cluster, e3)
        assert (a3["response_body"] or "").encode("utf-8") == b"x" * 100, \
            "with callback.max_response_bytes = 100B kept %d bytes" % len(a3["response_body"] or "")
    finally:
        set_system(cluster, "callback.max_response_bytes", "1kB")


def assert_two_timed_out_attempts(att, min_ms, max_ms, what):
    """Attempt 1 left the delivery pending, attempt 2 dead; both without a
    response, recorded as timeouts, each lasting between min_ms and max_ms."""
    assert [(a["attempt"], a["outcome"]) for a in att] == [(1, "pending"), (2, "dead")], att
    for a in att:
        assert a["status_code"] in (None, 0), a
        assert re.search(r"time(d)? ?out", a["error"] or "", re.I), \
            "attempt error does not mention the timeout: %r" % a["error"]
        assert min_ms <= a["latency_ms"] <= max_ms, \
            "attempt latency %.1f ms for a %s" % (a["latency_ms"], what)


def test_timeout(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    receiver.set_delay("/slow", 2.0)
    eid = endpoint_factory(endpoint_name(request), receiver.url("/slow"),
                           event_types="{out.slow}", timeout="200 milliseconds",
                           max_attempts=2, retry_schedule=["300 milliseconds"],
                           failure_threshold=100)
    t0 = time.monotonic()
    enqueue(cluster, "out.slow", {"slow": True})
    row = wait_status(cluster, eid, "dead", timeout=30, min_attempts=2)
    elapsed = time.monotonic() - t0
    att = attempts(cluster, eid)
    assert_two_timed_out_attempts(att, 150, 1500, "200 ms timeout")
    gap = (att[1]["started_at"] - att[0]["started_at"]).total_seconds()
    assert gap >= 0.2 + 0.24 - 0.05, "retried %.3f s after the first start" % gap
    assert elapsed < 10, "two 200 ms attempts took %.1f s end to end" % elapsed
    assert receiver.count("/slow") == 2
    assert row["last_status_code"] in (None, 0)


@pytest.fixture
def blackhole():
    """A port on 127.0.0.1 where a TCP connect hangs: a listener with a
    backlog of 0 that never accepts, its queue filled, so that the kernel
    drops further SYNs.  Yields the port, once a probe connect has been seen
    to hang."""
    import socket
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        hangs = False
        for _ in range(8):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", port))
            except socket.timeout:
                hangs = True
            finally:
                probe.close() if hangs else fillers.append(probe)
            if hangs:
                break
        assert hangs, "could not make a connect to 127.0.0.1:%d hang" % port
        yield port
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def test_connect_timeout(request, cluster, endpoint_factory, blackhole):
    """callback.connect_timeout bounds the connect, well inside the endpoint's
    total timeout; the attempt is recorded as a timeout and retried."""
    set_allowlist(cluster, LOOPBACK)
    set_system(cluster, "callback.connect_timeout", "300ms")
    try:
        eid = endpoint_factory(endpoint_name(request), "http://127.0.0.1:%d/hole" % blackhole,
                               event_types="{out.hole}", timeout=10, max_attempts=2,
                               retry_schedule=["100 milliseconds"], failure_threshold=100)
        t0 = time.monotonic()
        enqueue(cluster, "out.hole", {"hole": True})
        row = wait_status(cluster, eid, "dead", timeout=30, min_attempts=2)
        elapsed = time.monotonic() - t0
        att = attempts(cluster, eid)
        # 300 ms connect timeout, not the 10 s total nor the 2 s default connect timeout
        assert_two_timed_out_attempts(att, 250, 1500, "300 ms connect timeout")
        assert row["last_status_code"] in (None, 0)
        assert elapsed < 8, "two 300 ms connect attempts took %.1f s end to end" % elapsed
        record_figure("outbound: connect timeout 300ms -> attempt latencies %s ms" %
                      ", ".join("%.0f" % a["latency_ms"] for a in att))
    finally:
        set_system(cluster, "callback.connect_timeout", "2s")


def test_custom_headers(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    headers = {"Authorization": "Bearer abc", "X-Empty": "", "X-Tab": "a\tb",
               "X-Spaces": "  padded value  ", "X-Tenant": "t-42"}
    eid = endpoint_factory(endpoint_name(request), receiver.url("/hdr"),
                           event_types="{out.hdr}", headers=headers)
    enqueue(cluster, "out.hdr", {"h": 1})
    assert receiver.wait_for(1, "/hdr", timeout=30), diagnostics(cluster, eid)
    wait_status(cluster, eid, "delivered")
    rec = receiver.requests("/hdr")[0]
    h = rec.headers
    assert h.get("authorization") == "Bearer abc", h
    assert "x-empty" in h, "the empty header did not arrive: %r" % sorted(h)
    assert h["x-empty"] == "", h["x-empty"]
    assert h.get("x-tab") == "a\tb", h.get("x-tab")
    assert h.get("x-tenant") == "t-42"
    # (the receiver strips optional whitespace around values, as HTTP says)
    assert h.get("x-spaces") == "padded value", h.get("x-spaces")
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert h.get(name), name
    assert h.get("content-type", "").startswith("application/json")
    assert not any(k.startswith("x-injected") for k in h)


HEADER_INJECTIONS = [
    ({"X-Evil": "a\r\nX-Injected: 1"}, "22023"),
    ({"X-Evil": "a\nX-Injected: 1"}, "22023"),
    ({"X-Evil": "a\rX-Injected: 1"}, "22023"),
    ({"X-Evil\r\nX-Injected": "1"}, "22023"),
    ({"X-Evil: 1\r\nX-Injected": "1"}, "22023"),
]


def test_header_injection_refused(request, cluster, receiver, endpoint_factory):
    set_allowlist(cluster, LOOPBACK)
    url = receiver.url("/inj")
    for i, (hdrs, code) in enumerate(HEADER_INJECTIONS):
        name = endpoint_name(request, "_c%d" % i)
        e = sql_error(cluster,
                      "SELECT callback.create_endpoint(name => %s, url => %s, headers => %s::jsonb)",
                      (name, url, json.dumps(hdrs)))
        assert e.pgcode == code, (hdrs, e.pgcode, e.pgerror)
        assert e.diag.message_hint, "no hint for %r: %s" % (hdrs, e.pgerror)
        assert not endpoint_exists(cluster, name)
    # NUL: jsonb itself refuses \u0000, so it can never be stored
    e = sql_error(cluster,
                  "SELECT callback.create_endpoint(name => %s, url => %s, headers => %s::jsonb)",
                  (endpoint_name(request, "_nul"), url, '{"X-Nul": "a\\u0000b"}'))
    assert e.pgcode is not None and e.pgcode.startswith("22"), (e.pgcode, e.pgerror)
    assert not endpoint_exists(cluster, endpoint_name(request, "_nul"))

    name = endpoint_name(request, "_alter")
    eid = endpoint_factory(name, url, event_types="{out.inj}", headers={"X-Ok": "1"})
    for hdrs, code in HEADER_INJECTIONS:
        e = sql_error(cluster, "SELECT callback.alter_endpoint(%s, headers => %s::jsonb)",
                      (name, json.dumps(hdrs)))
        assert e.pgcode == code, (hdrs, e.pgcode, e.pgerror)
        assert e.diag.message_hint, "no hint for %r: %s" % (hdrs, e.pgerror)
    e = sql_error(cluster, "SELECT callback.alter_endpoint(%s, headers => %s::jsonb)",
                  (name, '{"X-Nul": "a\\u0000b"}'))
    assert e.pgcode.startswith("22"), (e.pgcode, e.pgerror)
    assert cluster.scalar("SELECT headers::text FROM callback.callback_endpoints WHERE id = %s",
                          (eid,)) == '{"X-Ok": "1"}'
    # what was stored still goes out cleanly
    enqueue(cluster, "out.inj", {"i": 1})
    assert receiver.wait_for(1, "/inj", timeout=30), diagnostics(cluster, eid)
    h = receiver.requests("/inj")[0].headers
    assert h.get("x-ok") == "1" and not any("injected" in k for k in h), h


# ------------------------------------------------------------------ TLS

class _TLSHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        self.request.do_handshake()
        with self.server.lock:
            self.server.alpn.append(self.request.selected_alpn_protocol())
        super().setup()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with self.server.lock:
            self.server.started += 1
        # a request to /hold is answered once the test lets it go (bounded)
        if self.path == "/hold":
            self.server.release.wait(60)
        with self.server.lock:
            self.server.records.append((self.path, dict(self.headers), body))
        self.send_response(204)
        self.end_headers()


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, ctx):
        self.ctx = ctx
        self.records = []
        self.started = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.handshakes_failed = 0
        self.alpn = []          # per connection: the protocol ALPN chose, or None
        super().__init__(("127.0.0.1", 0), _TLSHandler)

    def server_bind(self):
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        with self.lock:
            self.handshakes_failed += 1


def _make_cert(d, stem, cn, san):
    key = os.path.join(d, stem + ".key")
    crt = os.path.join(d, stem + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=" + san,
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return crt, key


@pytest.fixture
def tls_servers():
    """Two local TLS servers with self-signed certificates: "good" for
    127.0.0.1 / localhost, "other" for other.example only; and a CA bundle of
    both, readable by the postgres user."""
    # not a skip: TLS verification is an acceptance check of issue 4
    assert shutil.which("openssl"), "the openssl CLI is not installed (apt-get install openssl)"
    d = tempfile.mkdtemp(prefix="pgcb-tls-")
    os.chmod(d, 0o755)
    servers = {}
    try:
        good = _make_cert(d, "good", "localhost", "IP:127.0.0.1,DNS:localhost")
        other = _make_cert(d, "other", "other.example", "DNS:other.example")
        bundle = os.path.join(d, "bundle.pem")
        with open(bundle, "w") as out:
            for crt, _ in (good, other):
                with open(crt) as f:
                    out.write(f.read())
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        for label, (crt, key) in (("good", good), ("other", other)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(crt, key)
            srv = _TLSServer(ctx)
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
            t.start()
            servers[label] = srv
        yield servers, bundle
    finally:
        for srv in servers.values():
            srv.release.set()
            srv.shutdown()
            srv.server_close()
        shutil.rmtree(d, ignore_errors=True)


def test_tls_verified_by_default_and_ca_file(request, cluster, endpoint_factory, tls_servers):
    servers, bundle = tls_servers
    set_allowlist(cluster, LOOPBACK)
    set_system(cluster, "callback.ca_file", "")
    try:
        good, other = servers["good"], servers["other"]
        e1 = endpoint_factory(endpoint_name(request, "_good"),
                              "https://127.0.0.1:%d/tls" % good.server_port,
                              event_types="{out.tls}", max_attempts=1)
        e2 = endpoint_factory(endpoint_name(request, "_name"),
                              "https://127.0.0.1:%d/tls" % other.server_port,
                              event_types="{out.tlsname}", max_attempts=1)
        enqueue(cluster, "out.tls", {"tls": 1})
        enqueue(cluster, "out.tlsname", {"tls": 2})
        r1 = wait_status(cluster, e1, "dead")
        r2 = wait_status(cluster, e2, "dead")
        for r in (r1, r2):
            assert r["last_status_code"] in (None, 0), r
            assert re.search(r"certificate|SSL|TLS", r["last_error"] or "", re.I), \
                "last_error does not name the TLS failure: %r" % r["last_error"]
        assert good.records == [] and other.records == [], "a request was sent over unverified TLS"

        # trust the private CA: the matching name is delivered
        set_system(cluster, "callback.ca_file", bundle)
        assert cluster.scalar("SELECT callback.redrive(ARRAY[%s, %s]::bigint[])",
                              (r1["id"], r2["id"])) == 2
        r1 = wait_status(cluster, e1, "delivered")
        assert len(good.records) == 1, good.records
        path, headers, body = good.records[0]
        assert path == "/tls" and body == r1["body"].encode("utf-8")
        # ...but the host name is still checked: other.example's cert for 127.0.0.1
        r2 = wait_status(cluster, e2, "dead", min_attempts=1)
        cluster.wait_until(lambda: len(attempts(cluster, e2)) == 2, timeout=30,
                           what="the redriven attempt to the mismatched name")
        r2 = queue_row(cluster, e2)
        assert r2["status"] == "dead", r2
        assert re.search(r"certificate|SSL|subject|name", r2["last_error"] or "", re.I), r2
        assert other.records == [], "sent to a server whose certificate names another host"
    finally:
        set_system(cluster, "callback.ca_file", "")


def test_https_goes_out_over_http_1_1(request, cluster, endpoint_factory):
    """A server that offers HTTP/2 first (ALPN h2, http/1.1) gets HTTP/1.1.
    libcurl 7.88's HTTP/2 loses an answer a server sends before it reads
    the request's body (RFC 9113, 8.1: a 403, 413 or 429 from a front
    door) to a stream error, and retries a request the server has seen:
    seen here against nginx 1.22 answering 204 without reading the body,
    1,287 stream errors in about 21,000 attempts.  This server speaks HTTP/1.1
    only, so a worker that took HTTP/2 fails the delivery as well."""
    d = tempfile.mkdtemp(prefix="pgcb-alpn-")
    os.chmod(d, 0o755)
    srv = None
    try:
        crt, key = _make_cert(d, "alpn", "localhost", "IP:127.0.0.1,DNS:localhost")
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        srv = _TLSServer(ctx)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        set_allowlist(cluster, LOOPBACK)
        set_system(cluster, "callback.ca_file", crt)
        eid = endpoint_factory(endpoint_name(request), "https://127.0.0.1:%d/alpn" % srv.server_port,
                               event_types="{out.alpn}", max_attempts=1)
        enqueue(cluster, "out.alpn", {"alpn": 1})
        r = cluster.wait_until(
            lambda: (lambda q: q if q["status"] in ("delivered", "dead") else None)(
                queue_row(cluster, eid)),
            timeout=30, interval=0.05, what="the delivery over TLS to settle")
        with srv.lock:
            alpn = list(srv.alpn)
        assert alpn and all(p == "http/1.1" for p in alpn), \
            "ALPN chose %r (the worker offered HTTP/2)" % alpn
        assert r["status"] == "delivered", (r, diagnostics(cluster, eid))
        assert len(srv.records) == 1 and srv.records[0][0] == "/alpn", srv.records
    finally:
        set_system(cluster, "callback.ca_file", "")
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        shutil.rmtree(d, ignore_errors=True)


def test_tls_ca_file_dropped_while_in_flight(request, cluster, endpoint_factory, tls_servers):
    """A reload that takes callback.ca_file away applies to the curl handle
    of a request in flight across it too: once that request ends, its
    handle must not go back to the pool still trusting the old CA file, for
    the next request to take it (http.c frees it instead)."""
    servers, bundle = tls_servers
    good = servers["good"]
    set_allowlist(cluster, LOOPBACK)
    set_system(cluster, "callback.ca_file", bundle)
    try:
        held = endpoint_factory(endpoint_name(request, "_held"),
                                "https://127.0.0.1:%d/hold" % good.server_port,
                                event_types="{out.tlshold}", max_attempts=1, timeout=60)
        after = endpoint_factory(endpoint_name(request, "_after"),
                                 "https://127.0.0.1:%d/after" % good.server_port,
                                 event_types="{out.tlsafter}", max_attempts=1)
        # the probe shows when the worker has read the reload: its address
        # leaves the allowlist in the same reload that drops ca_file
        probe = endpoint_factory(endpoint_name(request, "_probe"), "http://127.0.0.2:9/probe",
                                 event_types="{out.tlsprobe}", max_attempts=1)
        enqueue(cluster, "out.tlshold", {"n": 1})
        cluster.wait_until(lambda: good.started >= 1, timeout=30,
                           what="the held request reached the server")

        cluster.execute("ALTER SYSTEM SET callback.ca_file = ''")
        set_allowlist(cluster, "127.0.0.1/32")
        enqueue(cluster, "out.tlsprobe", {"n": 1})
        r = wait_status(cluster, probe, "dead")
        assert "127.0.0.2 is in 127.0.0.0/8" in (r["last_error"] or ""), \
            "the probe did not fail on the policy, the worker may not have reloaded: %r" % r

        # the held request ends (its connection was verified before the reload)
        good.release.set()
        wait_status(cluster, held, "delivered")
        # the next request: no CA file trusts the server's certificate now
        enqueue(cluster, "out.tlsafter", {"n": 2})
        r = wait_status(cluster, after, "dead")
        assert re.search(r"certificate|SSL|TLS", r["last_error"] or "", re.I), r
        assert [p for p, _, _ in good.records] == ["/hold"], \
            "a request was sent trusting the CA file a reload had removed: %r" % good.records
    finally:
        good.release.set()
        set_system(cluster, "callback.ca_file", "")
