"""End-to-end: the write-back finds a delivery's row at the TID its claim
wrote (src/queue_write_back.c, find_row), and only when that version still
is the delivery: otherwise it falls back to the primary key.

- the claimed row is deleted while its request is in flight, VACUUM frees
  the claimed version's line pointer and an operator's insert (the same
  event re-queued for a paused endpoint) takes that very TID: the outcome
  must be dropped, never written on the row now at that TID (a TID trusted
  on the event id alone would write it there);
- the claimed row is updated by an operator (a non-key column) while its
  request is in flight, so its live version sits at another TID: the
  outcome must still land on it, once (without the fallback it is dropped,
  the lease runs out and the event is sent again).

Each test runs for a one-event endpoint (its claim is C, queue_claim.c), a
batch endpoint and an ordered one (their claims are SQL, src/batch.c and
queue.c's PLAN_CLAIM_ORDERED, and return the TID they wrote as well).

The receiver holds each answer for a fixed time; what the test does inside
that window is checked to have finished before it ran out.  Every wait is a
bounded poll.
"""

import re
import time

import pytest

from faults_util import diagnostics

HOLD_S = 10.0        # the claimed delivery's answer is held this long
SENTINEL_S = 14.0    # a second delivery's, answered after it: the write-back ran by then


# the endpoint under test's options: each kind has a claim of its own
CLAIMS = pytest.mark.parametrize("options", [{}, {"batch_size": 2}, {"ordered": True}],
                                 ids=["single", "batch", "ordered"])


def _label(request, suffix):
    return re.sub(r"[^A-Za-z0-9]", "", "tid%s%s" % (request.node.name[-16:], suffix))[:40]


def _sending_row(cluster, eid):
    rows = cluster.query(
        "SELECT id, event_id::text, ctid::text FROM callback.callback_queue "
        " WHERE endpoint_id = %s AND status = 'sending'", (eid,))
    assert len(rows) == 1, "one claimed row of endpoint %s: %r" % (eid, rows)
    return rows[0]


@CLAIMS
def test_reused_tid_never_takes_the_outcome(request, cluster, receiver, endpoint_factory,
                                            options):
    gone, sent, held = (_label(request, s) for s in ("gone", "sent", "held"))
    receiver.set_delay("/" + gone, HOLD_S)
    receiver.set_delay("/" + sent, SENTINEL_S)
    g = endpoint_factory(gone, receiver.url("/" + gone), event_types=[gone + ".*"],
                         timeout=60, max_attempts=3, **options)
    s = endpoint_factory(sent, receiver.url("/" + sent), event_types=[sent + ".*"],
                         timeout=60, max_attempts=3)
    p = endpoint_factory(held, receiver.url("/" + held), event_types=[held + ".*"])
    cluster.execute("SELECT callback.pause_endpoint(%s)", (held,))
    cluster.execute("SELECT callback.enqueue(%s, '{\"x\": 1}'::jsonb)", (gone + ".ev",))
    cluster.execute("SELECT callback.enqueue(%s, '{\"x\": 2}'::jsonb)", (sent + ".ev",))
    assert receiver.wait_for(1, "/" + gone, timeout=60), "the delivery was sent"
    assert receiver.wait_for(1, "/" + sent, timeout=60), "the sentinel was sent"
    [rec_g] = receiver.requests("/" + gone)
    [rec_s] = receiver.requests("/" + sent)
    assert rec_s.monotonic + SENTINEL_S > rec_g.monotonic + HOLD_S + 2, \
        "premise: the sentinel is answered well after the delivery"
    did, event_id, tid = _sending_row(cluster, g)

    # the operator deletes the claimed row; VACUUM frees its line pointers
    assert cluster.query("DELETE FROM callback.callback_queue WHERE id = %s AND status = 'sending' "
                         "RETURNING id", (did,)) == [(did,)], "deleted while in flight"
    cluster.execute("VACUUM (INDEX_CLEANUP ON) callback.callback_queue")
    # ... and re-queues the event for another endpoint until a row lands on that TID
    taker = None
    for _ in range(400):
        nid, ntid = cluster.query(
            "INSERT INTO callback.callback_queue (event_id, endpoint_id, event_type, body) "
            "VALUES (%s::uuid, %s, %s, '{\"x\": 1}') RETURNING id, ctid::text",
            (event_id, p, held + ".ev"))[0]
        if ntid == tid:
            taker = nid
            break
    assert taker is not None, "premise: an inserted row took the claimed version's TID %s" % tid
    assert time.monotonic() < rec_g.monotonic + HOLD_S - 0.5, \
        "premise: the TID was reused before the delivery's answer (too slow here)"

    def sentinel_written():
        return cluster.scalar(
            "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
            "   AND status = 'delivered'", (s,)) == 1
    try:
        cluster.wait_until(sentinel_written, timeout=90, interval=0.1,
                           what="the sentinel delivered (written after the delivery's outcome)")
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, s)) from None

    # the outcome was dropped with its row: the row at the TID is untouched
    [row] = cluster.query(
        "SELECT status::text, attempts, last_attempt_at IS NULL, finished_at IS NULL, ctid::text "
        "  FROM callback.callback_queue WHERE id = %s", (taker,))
    assert row == ("pending", 0, True, True, tid), \
        "the row now at the claimed TID took the outcome of delivery %s: %r" % (did, row)
    assert cluster.scalar(
        "SELECT count(*) FROM callback.callback_attempts WHERE event_id = %s::uuid", (event_id,)) == 0
    assert cluster.scalar(
        "SELECT count(*) FROM callback.callback_queue WHERE endpoint_id = %s "
        "   AND (attempts <> 0 OR status <> 'pending')", (p,)) == 0
    assert receiver.count("/" + gone) == 1


@CLAIMS
def test_row_updated_since_the_claim_takes_the_outcome(request, cluster, receiver,
                                                      endpoint_factory, options):
    label = _label(request, "upd")
    receiver.set_delay("/" + label, HOLD_S / 2)
    eid = endpoint_factory(label, receiver.url("/" + label), event_types=[label + ".*"],
                           timeout=60, max_attempts=3, **options)
    cluster.execute("SELECT callback.enqueue(%s, '{\"x\": 3}'::jsonb)", (label + ".ev",))
    assert receiver.wait_for(1, "/" + label, timeout=60), "the delivery was sent"
    did, _, tid = _sending_row(cluster, eid)

    # the operator changes a column the write-back does not: a new version elsewhere
    [(moved,)] = cluster.query(
        "UPDATE callback.callback_queue SET tracestate = 'operator=1' "
        " WHERE id = %s AND status = 'sending' RETURNING ctid::text", (did,))
    assert moved != tid, "premise: the live version moved from the claimed TID"

    def finished():
        return cluster.scalar("SELECT status::text FROM callback.callback_queue WHERE id = %s",
                              (did,)) == "delivered"
    try:
        cluster.wait_until(finished, timeout=60, interval=0.05, what="the delivery written back")
    except AssertionError as e:
        raise AssertionError(str(e) + diagnostics(cluster, eid)) from None
    [row] = cluster.query(
        "SELECT attempts, tracestate, claimed_by IS NULL, lease_expires_at IS NULL "
        "  FROM callback.callback_queue WHERE id = %s", (did,))
    assert row == (1, "operator=1", True, True), row
    assert cluster.query(
        "SELECT attempt, outcome::text FROM callback.callback_attempts WHERE delivery_id = %s",
        (did,)) == [(1, "delivered")]
    assert receiver.count("/" + label) == 1, "sent once: the outcome was not lost"
