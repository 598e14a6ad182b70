"""End-to-end: W3C trace context on events, against a real cluster and the
real receiver on loopback.

- enqueue(traceparent => ..., tracestate => ...) and SET LOCAL
  callback.traceparent / callback.tracestate (row trigger, statement
  trigger, enqueue without arguments) reach the receiver as `traceparent`
  and `tracestate` headers;
- every attempt sends the event's trace-id and flags with a parent-id of
  its own (a retry gets another one), never the stored one, never zero;
- a SET LOCAL ends with its transaction: the next event carries nothing;
- the W3C format rules, as a table of good and bad values: each bad one is
  refused with 22023, a message and a hint, by enqueue() and by SET, and
  nothing is queued.

Every wait is bounded.
"""

import re

import psycopg2
import pytest

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TP = "00-%s-%s-01" % (TRACE_ID, PARENT_ID)
HDR = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Ep:
    """An endpoint of its own, by event type prefix and receiver path."""

    def __init__(self, request, receiver, endpoint_factory, **kw):
        self.etype = "tc" + re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:40]
        self.path = "/" + self.etype
        self.id = endpoint_factory("tc_" + self.etype, receiver.url(self.path),
                                   event_types=[self.etype + ".*"], **kw)


def _queued(cluster):
    return cluster.scalar("SELECT count(*) FROM callback.callback_queue")


def _parse(header):
    m = HDR.match(header or "")
    assert m, "traceparent header %r is not version 00" % header
    return m.groups()


def test_enqueue_trace_context_reaches_receiver_new_parent_per_attempt(
        request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory, retry_schedule=["200 milliseconds"])
    receiver.script(ep.path, [500])          # the first attempt fails, the retry succeeds
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    cluster.execute("SELECT callback.enqueue(%s, '{\"n\": 1}', traceparent => %s, tracestate => %s)",
                    (ep.etype + ".x", TP, state))
    assert receiver.wait_for(2, ep.path, timeout=60), "no retry arrived"
    reqs = receiver.requests(ep.path)[:2]
    parents = []
    for r in reqs:
        trace, parent, flags = _parse(r.headers.get("traceparent"))
        assert (trace, flags) == (TRACE_ID, "01")
        assert parent != PARENT_ID and parent != "0" * 16
        assert r.headers.get("tracestate") == state
        parents.append(parent)
    assert parents[0] != parents[1], "a retry must send a new parent-id: %r" % parents
    assert cluster.query(
        "SELECT traceparent, tracestate FROM callback.callback_queue WHERE endpoint_id = %s",
        (ep.id,)) == [(TP, state)]


def test_no_trace_context_no_header(request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory)
    cluster.execute("SELECT callback.enqueue(%s, '{}')", (ep.etype + ".x",))
    assert receiver.wait_for(1, ep.path, timeout=30)
    h = receiver.requests(ep.path)[0].headers
    assert "traceparent" not in h and "tracestate" not in h


def test_set_local_reaches_receiver_from_row_and_statement_triggers_and_enqueue(
        request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory)
    cluster.execute("DROP TABLE IF EXISTS tc_rows, tc_stmt")
    cluster.execute("CREATE TABLE tc_rows (id int)")
    cluster.execute("CREATE TABLE tc_stmt (id int)")
    cluster.execute("CREATE TRIGGER t AFTER INSERT ON tc_rows FOR EACH ROW "
                    "EXECUTE FUNCTION callback.trigger(%s)", (ep.etype + ".row",))
    cluster.execute("CREATE TRIGGER t AFTER INSERT ON tc_stmt REFERENCING NEW TABLE AS n "
                    "FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger(%s)", (ep.etype + ".stmt",))
    trace2 = "0af7651916cd43dd8448eb211c80319c"
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL callback.traceparent = %s", ("00-%s-b7ad6b7169203331-00" % trace2,))
            cur.execute("SET LOCAL callback.tracestate = 'vendor=v1'")
            cur.execute("INSERT INTO tc_rows VALUES (1)")
            cur.execute("INSERT INTO tc_stmt SELECT g FROM generate_series(1, 2) g")
            cur.execute("SELECT callback.enqueue(%s, '{}')", (ep.etype + ".enq",))
            # an argument wins over the setting, and takes no tracestate from it
            cur.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s)", (ep.etype + ".arg", TP))
        conn.commit()
        # SET LOCAL ended with the transaction
        with conn.cursor() as cur:
            cur.execute("INSERT INTO tc_rows VALUES (2)")
        conn.commit()
    finally:
        conn.close()
    assert receiver.wait_for(6, ep.path, timeout=60)
    by_type = {}
    for r in receiver.requests(ep.path):
        body = r.json()
        key = body["type"] + ("" if body["type"] != ep.etype + ".row.insert"
                              else ":%d" % body["data"]["new"]["id"])
        by_type.setdefault(key, []).append(r.headers)
    for key in (ep.etype + ".row.insert:1", ep.etype + ".stmt.insert", ep.etype + ".enq"):
        for h in by_type[key]:
            assert _parse(h.get("traceparent"))[0] == trace2, key
            assert _parse(h.get("traceparent"))[2] == "00", key
            assert h.get("tracestate") == "vendor=v1", key
    assert len(by_type[ep.etype + ".stmt.insert"]) == 2
    [h] = by_type[ep.etype + ".arg"]
    assert _parse(h["traceparent"])[0] == TRACE_ID and "tracestate" not in h
    [h] = by_type[ep.etype + ".row.insert:2"]
    assert "traceparent" not in h and "tracestate" not in h


def test_future_version_is_sent_as_version_00(request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory)
    future = "cc-%s-%s-09-what-the-future-adds" % (TRACE_ID, PARENT_ID)
    cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s)", (ep.etype + ".x", future))
    assert receiver.wait_for(1, ep.path, timeout=30)
    trace, parent, flags = _parse(receiver.requests(ep.path)[0].headers.get("traceparent"))
    assert (trace, flags) == (TRACE_ID, "09") and parent != PARENT_ID


# (value, why it is bad); each must be refused with 22023 and queue nothing
BAD_TRACEPARENTS = [
    ("", "empty"),
    ("00-%s-%s-01 " % (TRACE_ID, PARENT_ID), "56 characters at version 00"),
    ("00-%s-%s-1" % (TRACE_ID, PARENT_ID), "54 characters"),
    ("00-%s-%s-01-x" % (TRACE_ID, PARENT_ID), "version 00 with more fields"),
    ("ff-%s-%s-01" % (TRACE_ID, PARENT_ID), "version ff"),
    ("0g-%s-%s-01" % (TRACE_ID, PARENT_ID), "version not hex"),
    ("00-%s-%s-01" % ("0" * 32, PARENT_ID), "all-zero trace-id"),
    ("00-%s-%s-01" % (TRACE_ID, "0" * 16), "all-zero parent-id"),
    ("00-%s-%s-01" % (TRACE_ID.upper(), PARENT_ID), "uppercase trace-id"),
    ("00-%s-%s-01" % (TRACE_ID, PARENT_ID.upper()), "uppercase parent-id"),
    ("00-%s-%s-0A" % (TRACE_ID, PARENT_ID), "uppercase flags"),
    ("00_%s_%s_01" % (TRACE_ID, PARENT_ID), "wrong separators"),
    ("00-%s-%s-01" % (TRACE_ID[:31] + "z", PARENT_ID), "trace-id not hex"),
    ("00-%s-%s-x1" % (TRACE_ID, PARENT_ID), "flags not hex"),
    ("01-%s-%s-01x" % (TRACE_ID, PARENT_ID), "later version without '-' after 55"),
    ("00-" + "a" * 600, "too long"),
]
GOOD_TRACEPARENTS = [
    TP,
    "00-%s-%s-00" % (TRACE_ID, PARENT_ID),
    "00-%s-%s-ff" % (TRACE_ID, PARENT_ID),
    "01-%s-%s-01" % (TRACE_ID, PARENT_ID),
    "fe-%s-%s-01-future" % (TRACE_ID, PARENT_ID),
]
BAD_TRACESTATES = [
    ("Rojo=1", "uppercase key"),
    ("rojo", "no '='"),
    ("rojo=", "empty value"),
    ("rojo=a,b", "member without '='"),
    ("rojo=a=b", "'=' in value"),
    ("rojo=1,rojo=2", "duplicate key"),
    ("1rojo=1", "simple key starting with a digit"),
    ("t@Sys=1", "uppercase system-id"),
    ("t@abcdefghijklmno=1", "system-id of 15 characters"),
    ("k" * 257 + "=1", "key of 257 characters"),
    ("rojo=" + "v" * 257, "value of 257 characters"),
    ("rojo=caf\u00e9", "non-ASCII value"),
    (",".join("k%d=v" % i for i in range(33)), "33 members"),
    ("rojo=" + "v" * 200 + ",congo=" + "v" * 200 + ",a=" + "v" * 100, "over 512 characters"),
]
GOOD_TRACESTATES = [
    "rojo=00f067aa0ba902b7",
    "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
    "tenant1@sys=x",
    "a_b-c*d/e=va lue",
    " rojo=1 ,, congo=2 ",
    ",".join("k%d=v" % i for i in range(32)),
]


@pytest.mark.parametrize("value,why", BAD_TRACEPARENTS, ids=[w for _, w in BAD_TRACEPARENTS])
def test_bad_traceparent_refused_nothing_queued(request, cluster, receiver, endpoint_factory,
                                                value, why):
    ep = Ep(request, receiver, endpoint_factory)
    before = _queued(cluster)
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s)", (ep.etype + ".x", value))
    e = ei.value
    assert e.pgcode == "22023", (why, e.pgcode, e.pgerror)
    assert "invalid traceparent" in e.diag.message_primary and e.diag.message_hint, e.pgerror
    # the setting refuses it when set, so no event can take it later
    if value:
        with pytest.raises(psycopg2.Error) as ei:
            cluster.execute("SET callback.traceparent = %s", (value,))
        assert ei.value.pgcode == "22023", (why, ei.value.pgerror)
        assert ei.value.diag.message_hint
    assert _queued(cluster) == before


@pytest.mark.parametrize("value,why", BAD_TRACESTATES, ids=[w for _, w in BAD_TRACESTATES])
def test_bad_tracestate_refused_nothing_queued(request, cluster, receiver, endpoint_factory,
                                               value, why):
    ep = Ep(request, receiver, endpoint_factory)
    before = _queued(cluster)
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s, tracestate => %s)",
                        (ep.etype + ".x", TP, value))
    e = ei.value
    assert e.pgcode == "22023", (why, e.pgcode, e.pgerror)
    assert "invalid tracestate" in e.diag.message_primary and e.diag.message_hint, e.pgerror
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute("SET callback.tracestate = %s", (value,))
    assert ei.value.pgcode == "22023", (why, ei.value.pgerror)
    assert _queued(cluster) == before


def test_tracestate_without_traceparent_refused(request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory)
    before = _queued(cluster)
    with pytest.raises(psycopg2.Error) as ei:
        cluster.execute("SELECT callback.enqueue(%s, '{}', tracestate => 'rojo=1')", (ep.etype + ".x",))
    assert ei.value.pgcode == "22023" and ei.value.diag.message_hint
    assert _queued(cluster) == before


def test_good_values_accepted_and_stored(request, cluster, receiver, endpoint_factory):
    ep = Ep(request, receiver, endpoint_factory)
    cluster.execute("SELECT callback.pause_endpoint(%s)", ("tc_" + ep.etype,))
    for tp in GOOD_TRACEPARENTS:
        cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s)", (ep.etype + ".x", tp))
        cluster.execute("SET callback.traceparent = %s", (tp,))
    for ts in GOOD_TRACESTATES:
        cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s, tracestate => %s)",
                        (ep.etype + ".y", TP, ts))
        cluster.execute("SET callback.tracestate = %s", (ts,))
    cluster.execute("RESET callback.traceparent")
    cluster.execute("RESET callback.tracestate")
    rows = cluster.query("SELECT traceparent, tracestate FROM callback.callback_queue "
                         "WHERE endpoint_id = %s ORDER BY id", (ep.id,))
    assert [r[0] for r in rows] == GOOD_TRACEPARENTS + [TP] * len(GOOD_TRACESTATES)
    assert [r[1] for r in rows] == [None] * len(GOOD_TRACEPARENTS) + GOOD_TRACESTATES


def test_row_written_by_hand_with_a_bad_traceparent_sends_none(request, cluster, receiver,
                                                               endpoint_factory):
    # enqueue() and SET refuse it; an admin's UPDATE does not: the worker
    # checks again and sends no trace context rather than a broken header
    ep = Ep(request, receiver, endpoint_factory)
    name = "tc_" + ep.etype
    cluster.execute("SELECT callback.pause_endpoint(%s)", (name,))
    cluster.execute("SELECT callback.enqueue(%s, '{}', traceparent => %s, tracestate => 'a=b')",
                    (ep.etype + ".x", TP))
    cluster.execute("UPDATE callback.callback_queue SET traceparent = '00-ab\r\nx: y' "
                    "WHERE endpoint_id = %s", (ep.id,))
    cluster.execute("SELECT callback.resume_endpoint(%s)", (name,))
    assert receiver.wait_for(1, ep.path, timeout=30)
    h = receiver.requests(ep.path)[0].headers
    assert "traceparent" not in h and "tracestate" not in h and "x" not in h
