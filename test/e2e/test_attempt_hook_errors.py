"""End-to-end: a failed on_response is noted on the attempt it ran after,
and on no other (queue.c, PLAN_HOOK_ERROR).  The write-back says whether it
wrote that attempt's row (callback.attempt_history); the row is then
updated, found by its delivery, attempt, event and start, or written.

- a delivery id used again (TRUNCATE ... RESTART IDENTITY, a sequence set
  back): the old delivery's attempt 1 must not take the new hook error, and
  with `failures` the new first-try success gets its own row;
- a redriven dead letter starts again at attempt 1: its new hook error must
  not overwrite the one of its first life's attempt 1 (`all` and `failures`);
- an operator keeps callback_attempts append-only (a BEFORE UPDATE trigger
  that skips): no second row for the same attempt, under the default `all`.

Each asserts what an operator must be able to rely on: one row per attempt,
its own hook error on it, nobody else's.  (Found in review: with the row
found by (delivery_id, attempt) alone, and written when no row matched,
each of these failed.)
"""

import pytest

from conftest import make_endpoint
from faults_util import enqueue_many as enqueue
from test_attempt_history import history, name_of, redrive_delivered, wait_stats
from test_batches import wait_finished as wait_final
from test_hooks import OWNER, SETUP as HOOKS_SETUP, as_role

# an on_response that fails, saying which event and which answer it ran for
STATUS_ERROR = """
SET ROLE hk_app;
CREATE FUNCTION app.rv_fail(delivery_id bigint, event jsonb, status int, headers jsonb, body text)
RETURNS void LANGUAGE plpgsql AS $f$
BEGIN RAISE EXCEPTION 'hook failed for % after HTTP %', event->>'type', status; END $f$;
RESET ROLE;
"""


@pytest.fixture
def hooks(cluster):
    cluster.execute(HOOKS_SETUP)
    cluster.execute(STATUS_ERROR)
    made = []

    def owned(name, url, **kw):
        eid = as_role(cluster, OWNER, lambda c: make_endpoint(c, name, url, event_types=[name + ".*"],
                                                             on_response="app.rv_fail", **kw))
        made.append(name)
        return eid
    yield owned
    for name in made:
        cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))


@pytest.fixture(params=["all", "failures"])
def setting(request, cluster):
    history(cluster, request.param)
    yield request.param
    history(cluster, "all")


def rows_of(cluster, eid):
    return cluster.query(
        "SELECT a.delivery_id, a.event_type, a.attempt, a.outcome::text, a.status_code, a.hook_error "
        "  FROM callback.callback_attempts a WHERE a.endpoint_id = %s ORDER BY a.started_at", (eid,))


def test_a_reused_delivery_id_keeps_each_hook_error_on_its_own_attempt(request, cluster, receiver,
                                                                      hooks):
    history(cluster, "failures")
    try:
        name = name_of(request)
        eid = hooks(name, receiver.url("/" + name))
        enqueue(cluster, name + ".first", 1)
        wait_final(cluster, eid, 1)
        wait_stats(cluster, eid, 1)
        [(did, _, _, _, _, first_error)] = rows_of(cluster, eid)
        assert "hook failed for %s.first" % name in first_error

        # the id is given again, as after TRUNCATE callback_queue RESTART
        # IDENTITY; set back by one only if no later id was ever given
        seq = cluster.scalar("SELECT pg_get_serial_sequence('callback.callback_queue', 'id')")
        assert cluster.scalar("SELECT last_value FROM %s" % seq) == did, \
            "premise: the first delivery took the sequence's last id"
        cluster.execute("DELETE FROM callback.callback_queue WHERE id = %s", (did,))
        cluster.execute("SELECT setval(%s, %s, false)", (seq, did))
        enqueue(cluster, name + ".second", 1)
        assert cluster.scalar("SELECT id FROM callback.callback_queue WHERE endpoint_id = %s",
                              (eid,)) == did, "premise: the second delivery took the same id"
        wait_final(cluster, eid, 1)
        wait_stats(cluster, eid, 2)

        rows = rows_of(cluster, eid)
        by_type = {r[1]: r for r in rows}
        assert set(by_type) == {name + ".first", name + ".second"}, \
            "the second delivery's failed on_response left no attempt row: %r" % rows
        assert "hook failed for %s.first" % name in by_type[name + ".first"][5], \
            "the first delivery's attempt took another delivery's hook error: %r" % rows
        assert "hook failed for %s.second" % name in by_type[name + ".second"][5], rows
    finally:
        history(cluster, "all")


def test_a_redriven_dead_letter_keeps_its_first_life_hook_error(request, cluster, receiver, hooks,
                                                               setting):
    name = name_of(request, setting[0])
    receiver.script("/" + name, [(500, {}, "down")])
    eid = hooks(name, receiver.url("/" + name), max_attempts=1)
    enqueue(cluster, name + ".ev", 1)
    wait_final(cluster, eid, 1, status="dead")
    wait_stats(cluster, eid, 1)
    [(did, _, attempt, outcome, code, dead_error)] = rows_of(cluster, eid)
    assert (attempt, outcome, code) == (1, "dead", 500)
    assert "after HTTP 500" in dead_error, dead_error

    redrive_delivered(cluster, did)
    wait_stats(cluster, eid, 2)
    rows = rows_of(cluster, eid)
    assert [r[2:5] for r in rows] == [(1, "dead", 500), (1, "delivered", 204)], rows
    assert "after HTTP 500" in rows[0][5], \
        "the dead attempt's hook error was overwritten by the redriven attempt's: %r" % rows
    assert "after HTTP 204" in rows[1][5], rows


def test_an_append_only_attempt_table_never_gets_two_rows_for_one_attempt(request, cluster,
                                                                         receiver, hooks):
    name = name_of(request)
    trigger = "rv_append_only_" + name.lower()
    cluster.execute("CREATE FUNCTION public.%s() RETURNS trigger LANGUAGE plpgsql "
                    "AS $f$ BEGIN RETURN NULL; END $f$" % trigger)
    cluster.execute("CREATE TRIGGER %s BEFORE UPDATE ON callback.callback_attempts "
                    "FOR EACH ROW EXECUTE FUNCTION public.%s()" % (trigger, trigger))
    try:
        assert cluster.scalar("SELECT current_setting('callback.attempt_history')") == "all"
        eid = hooks(name, receiver.url("/" + name))
        enqueue(cluster, name + ".ev", 1)
        wait_final(cluster, eid, 1)
        wait_stats(cluster, eid, 1)
        rows = rows_of(cluster, eid)
        assert len(rows) == 1, "one attempt, %d attempt rows: %r" % (len(rows), rows)
    finally:
        cluster.execute("DROP TRIGGER %s ON callback.callback_attempts" % trigger)
        cluster.execute("DROP FUNCTION public.%s()" % trigger)
