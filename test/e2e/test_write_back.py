"""End-to-end: the write-back of outcomes (src/queue_write_back.c, through
the table AM, no SQL statement) writes what the answers call for, and an
operator's triggers on the queue and on the attempt history fire as they
did when the write-back was an UPDATE and an INSERT statement.

For the same answers from the receiver -- a delivery, a retry then a
delivery, a retry then a dead letter, a 400 -- the queue row, the attempt
history and the per-minute stats must be the same with triggers as
without; a row trigger `UPDATE OF finished_at` (a column the write-back
sets and the claim does not) fires once per attempt written, and a
statement trigger on the attempts fires. Every wait is bounded.
"""

import re

from faults_util import diagnostics, queue_status

# (suffix, max_attempts, the receiver's answers in order; 204 after them)
SCENARIOS = [
    ("ok", 3, []),
    ("retry", 3, [(500, {}, "boom")]),
    ("dead", 2, [(503, {}, "down 1"), (503, {}, "down 2")]),
    ("bad", 3, [(400, {}, "no")]),
]


def _label(request, phase, suffix):
    return re.sub(r"[^A-Za-z0-9]", "", "wb%s%s%s" % (request.node.name[-12:], phase, suffix))[:40]


def _run_phase(request, cluster, receiver, endpoint_factory, phase):
    """One endpoint and one event per scenario; returns what each left, by scenario."""
    eps = {}
    for suffix, max_attempts, answers in SCENARIOS:
        label = _label(request, phase, suffix)
        path = "/" + label
        receiver.script(path, answers)
        eid = endpoint_factory(label, receiver.url(path), event_types=[label + ".*"],
                               max_attempts=max_attempts, retry_schedule=[0.1])
        cluster.execute("SELECT callback.enqueue(%s, '{\"x\": 1}'::jsonb)", (label + ".ev",))
        eps[suffix] = eid

    def finished():
        for eid in eps.values():
            st = queue_status(cluster, eid)
            if st.get("delivered", 0) + st.get("dead", 0) != 1:
                return False
        return True
    try:
        cluster.wait_until(finished, timeout=60, interval=0.05,
                           what="every scenario's delivery finished (%s)" % phase)
    except AssertionError as e:
        raise AssertionError(str(e) + "".join(diagnostics(cluster, eid) for eid in eps.values())) \
            from None

    # the stats rollup is written after the outcomes, apart: wait for it too
    def stats_complete():
        return all(cluster.scalar(
            "SELECT coalesce(sum(attempts), 0) FROM callback.callback_stats WHERE endpoint_id = %s",
            (eid,)) == cluster.scalar(
            "SELECT count(*) FROM callback.callback_attempts WHERE endpoint_id = %s", (eid,))
            for eid in eps.values())
    cluster.wait_until(stats_complete, timeout=30, interval=0.05,
                       what="the stats rollup of every attempt written (%s)" % phase)

    left = {}
    for suffix, eid in eps.items():
        [row] = cluster.query(
            "SELECT status::text, attempts, last_status_code, last_error, "
            "       lease_expires_at IS NULL, claimed_by IS NULL, "
            "       finished_at IS NOT NULL AND finished_at >= created_at, "
            "       last_attempt_at IS NOT NULL, next_attempt_at <= last_attempt_at + interval '1 hour' "
            "  FROM callback.callback_queue WHERE endpoint_id = %s", (eid,))
        attempts = cluster.query(
            "SELECT a.attempt, a.status_code, a.error, a.response_body, a.outcome::text, "
            "       a.event_id = q.event_id, a.event_type = q.event_type, a.latency_ms >= 0, "
            "       a.hook_error IS NULL "
            "  FROM callback.callback_attempts a JOIN callback.callback_queue q ON q.id = a.delivery_id "
            " WHERE a.endpoint_id = %s ORDER BY a.attempt", (eid,))
        stats = cluster.query(
            "SELECT sum(attempts)::int, sum(delivered)::int, sum(failed)::int, sum(dead)::int, "
            "       sum(latency_sum_ms) > 0, "
            "       sum((SELECT sum(h) FROM unnest(latency_hist) h))::int, "
            "       max(last_error) "
            "  FROM callback.callback_stats WHERE endpoint_id = %s", (eid,))
        left[suffix] = (row, attempts, stats)
    return left


def test_write_back_fires_triggers_and_writes_the_same(request, cluster, receiver, endpoint_factory):
    plain = _run_phase(request, cluster, receiver, endpoint_factory, "d")

    # an audit: a row trigger on a column the write-back sets and the claim
    # does not, and statement triggers with transition tables on both tables
    cluster.execute("CREATE TABLE public.wb_audit (what text, status text)")
    cluster.execute("""
        CREATE FUNCTION public.wb_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.wb_audit VALUES ('row', NEW.status); RETURN NEW; END $$""")
    cluster.execute("""
        CREATE FUNCTION public.wb_audit_queue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.wb_audit SELECT 'queue', n.status FROM nt n; RETURN NULL; END $$""")
    cluster.execute("""
        CREATE FUNCTION public.wb_audit_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO public.wb_audit SELECT 'attempts', n.outcome FROM nt n; RETURN NULL; END $$""")
    cluster.execute("GRANT INSERT ON public.wb_audit TO PUBLIC")
    cluster.execute("CREATE TRIGGER wb_audit_row AFTER UPDATE OF finished_at ON callback.callback_queue "
                    "FOR EACH ROW EXECUTE FUNCTION public.wb_audit_row()")
    cluster.execute("CREATE TRIGGER wb_audit_queue AFTER UPDATE ON callback.callback_queue "
                    "REFERENCING NEW TABLE AS nt FOR EACH STATEMENT "
                    "EXECUTE FUNCTION public.wb_audit_queue()")
    cluster.execute("CREATE TRIGGER wb_audit_attempts AFTER INSERT ON callback.callback_attempts "
                    "REFERENCING NEW TABLE AS nt FOR EACH STATEMENT "
                    "EXECUTE FUNCTION public.wb_audit_attempts()")
    try:
        triggered = _run_phase(request, cluster, receiver, endpoint_factory, "s")
        audit = {}
        for what, status, n in cluster.query(
                "SELECT what, status, count(*) FROM public.wb_audit GROUP BY 1, 2"):
            audit.setdefault(what, {})[status] = n
    finally:
        cluster.execute("DROP TRIGGER IF EXISTS wb_audit_row ON callback.callback_queue")
        cluster.execute("DROP TRIGGER IF EXISTS wb_audit_queue ON callback.callback_queue")
        cluster.execute("DROP TRIGGER IF EXISTS wb_audit_attempts ON callback.callback_attempts")
        cluster.execute("DROP FUNCTION IF EXISTS public.wb_audit_row(), public.wb_audit_queue(), "
                        "public.wb_audit_attempts()")
        cluster.execute("DROP TABLE IF EXISTS public.wb_audit")

    # 6 attempts written (1 + 2 + 2 + 1): 2 delivered, 2 dead, 2 retries
    written = {"delivered": 2, "dead": 2, "pending": 2}
    # the row trigger saw each, and no claim (UPDATE OF finished_at)
    assert audit.get("row") == written, audit
    # the queue's transition table: each attempt's claim ('sending') and write-back
    assert audit.get("queue") == dict(written, sending=6), audit
    # the attempts' transition table: each attempt row
    assert audit.get("attempts") == written, audit
    # ... and the rows are the same as without triggers
    for suffix, _, _ in SCENARIOS:
        assert plain[suffix] == triggered[suffix], (suffix, plain[suffix], triggered[suffix])

    # and what they left is what the answers call for
    assert plain["ok"][0][:4] == ("delivered", 1, 204, None)
    assert plain["retry"][0][:4] == ("delivered", 2, 204, None)
    assert [a[:5] for a in plain["retry"][1]] == [
        (1, 500, "HTTP 500", "boom", "pending"), (2, 204, None, None, "delivered")]
    assert plain["dead"][0][:4] == ("dead", 2, 503, "HTTP 503 (no attempts left)")
    assert [a[4] for a in plain["dead"][1]] == ["pending", "dead"]
    assert plain["bad"][0][:3] == ("dead", 1, 400) and plain["bad"][0][3].startswith("HTTP 400")
    for suffix, (row, attempts, stats) in plain.items():
        assert row[4:] == (True, True, True, True, True), (suffix, row)
        assert all(a[5:] == (True, True, True, True) for a in attempts), (suffix, attempts)
    # stats: attempts, delivered, failed, dead, latency, histogram total, last error
    assert plain["ok"][2] == [(1, 1, 0, 0, True, 1, None)]
    assert plain["retry"][2] == [(2, 1, 1, 0, True, 2, "HTTP 500")]
    assert plain["dead"][2] == [(2, 0, 2, 1, True, 2, plain["dead"][1][-1][2])]
    assert plain["bad"][2] == [(1, 0, 1, 1, True, 1, plain["bad"][0][3])]


def test_changed_column_type_is_an_error_not_a_crash(request, cluster, receiver, endpoint_factory):
    """The claim and the write-back write Datums of the types the extension's
    tables have: a column whose type was changed by hand is an error with a
    hint, never a crash of the server. Once it is changed back, the waiting
    delivery goes out.

    The SQL release of expired leases (each callback.poll_interval, and
    first thing when the worker starts) reads claimed_by too: its error,
    when it came before the claim, restarted the worker into that release
    again and again, and the claim never ran.  So the release is held off
    (poll_interval 1 h) and the worker seen past its start (a delivery
    after the reload) before the column is changed."""
    label = _label(request, "t", "type")
    receiver.script("/" + label, [])
    endpoint_factory(label, receiver.url("/" + label), event_types=[label + ".*"])
    poll = cluster.scalar("SELECT current_setting('callback.poll_interval')")
    cluster.set_conf(**{"callback.poll_interval": "1h"})
    cluster.reload()
    cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (label + ".warm",))
    assert receiver.wait_for(1, "/" + label, timeout=60), "no delivery after the reload"
    off = len(cluster.log_text())
    cluster.execute("ALTER TABLE callback.callback_queue ALTER COLUMN claimed_by TYPE text")
    try:
        cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (label + ".ev",))
        cluster.wait_until(
            lambda: 'has no column "claimed_by" of type integer' in cluster.log_text()[off:],
            timeout=60, interval=0.1, what="the claim's error about claimed_by in the log")
    finally:
        cluster.execute("ALTER TABLE callback.callback_queue "
                        "ALTER COLUMN claimed_by TYPE integer USING claimed_by::integer")
        cluster.set_conf(**{"callback.poll_interval": poll})
        cluster.reload()
    assert receiver.wait_for(2, "/" + label, timeout=60), "the delivery did not go out"
    log = cluster.log_text()[off:]
    assert "terminated by signal" not in log and "reinitializing" not in log, log[-3000:]


def test_process_callbacks_from_a_trigger_inside_the_worker_is_refused(request, cluster, receiver,
                                                                       endpoint_factory):
    """A trigger on the extension's tables runs inside the engine's writes;
    process_callbacks() called from there would re-enter the engine (and, in
    the worker, turn its SKIP LOCKED off for good). It is refused with an
    error; the trigger here catches it, and delivery goes on."""
    label = _label(request, "r", "reenter")
    receiver.script("/" + label, [])
    eid = endpoint_factory(label, receiver.url("/" + label), event_types=[label + ".*"])
    cluster.execute("CREATE TABLE public.wb_reenter (pid int, err text)")
    cluster.execute("""
        CREATE FUNCTION public.wb_reenter() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            BEGIN
                PERFORM callback.process_callbacks(1);
                INSERT INTO public.wb_reenter VALUES (pg_backend_pid(), NULL);
            EXCEPTION WHEN others THEN
                INSERT INTO public.wb_reenter VALUES (pg_backend_pid(), SQLERRM);
            END;
            RETURN NULL;
        END $$""")
    cluster.execute("CREATE TRIGGER wb_reenter AFTER INSERT ON callback.callback_attempts "
                    "FOR EACH STATEMENT EXECUTE FUNCTION public.wb_reenter()")
    try:
        cluster.execute("SELECT callback.enqueue(%s, '{}'::jsonb)", (label + ".ev",))
        cluster.wait_until(lambda: queue_status(cluster, eid).get("delivered", 0) == 1,
                           timeout=60, interval=0.05, what="the delivery written back")
        rows = cluster.query("SELECT pid, err FROM public.wb_reenter")
    finally:
        cluster.execute("DROP TRIGGER IF EXISTS wb_reenter ON callback.callback_attempts")
        cluster.execute("DROP FUNCTION IF EXISTS public.wb_reenter()")
        cluster.execute("DROP TABLE IF EXISTS public.wb_reenter")
    worker = cluster.scalar("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_callback worker' "
                            "AND datname = current_database()")
    assert rows and all(err is not None and "cannot be called while the delivery engine runs" in err
                        for _, err in rows), rows
    assert any(pid == worker for pid, _ in rows), (rows, worker)
