"""End-to-end: a rule on a table the worker writes (src/queue_rules.c).

The worker's SQL statements go through the rewriter and its C writes do
not, so a rule would apply to some of its writes and not others; and a
data-modifying WITH (the ordered claim, the stats rollup) fails outright
under a DO ALSO or DO INSTEAD rule.  Before, that error ended the worker at
each cycle, for every endpoint of the database, and named no rule.  Now the
worker says which tables have rules, shows it in callback_worker_stats
(state and last_error, refreshed at each look), delivers nothing meanwhile,
loses nothing, and delivers everything once the rules are dropped;
process_callbacks() refuses with the same words.

A rule created while the worker runs is seen through the relcache
invalidation CREATE RULE sends, before the next cycle's statements: the
worker does not fail on it first.  A rule that does not fire (disabled, or
for replicas only) does not count; a table locked by someone else leaves
the worker's last answer as it was.
"""

import psycopg2
import pytest

from conftest import make_endpoint
from faults_util import enqueue_many, msg_id, wait_queue_delivered

WAITING = "waiting: rules on its tables"

RULES = [
    # the ordered claim is an UPDATE in a WITH
    ("callback_queue", "rq_also",
     "CREATE RULE rq_also AS ON UPDATE TO callback.callback_queue DO ALSO NOTIFY pgcb_rules"),
    # the stats rollup is an INSERT in a WITH
    ("callback_stats", "rs_nothing",
     "CREATE RULE rs_nothing AS ON INSERT TO callback.callback_stats DO INSTEAD NOTHING"),
]


def worker(cluster):
    rows = cluster.query("SELECT state, last_error, last_error_at, pg_catalog.now() "
                         "FROM callback.callback_worker_stats")
    return rows[0] if rows else (None, None, None, None)


def wait_waiting(cluster, table, after=None, timeout=90):
    """Until the worker says it waits for the rules on table (and, with
    after, has looked again since that time)."""
    def ok():
        state, error, error_at, _ = worker(cluster)
        return (state == WAITING and error is not None and ("callback." + table) in error
                and (after is None or error_at > after))
    return cluster.wait_until(ok, timeout=timeout, interval=0.2,
                              what="the worker waiting for the rules on %s" % table)


def webhook_ids(receiver, path):
    return {r.headers.get("webhook-id") for r in receiver.requests(path)}


@pytest.mark.parametrize("table,rule,ddl", RULES, ids=[r[0] for r in RULES])
def test_the_worker_waits_while_its_tables_have_rules(cluster, receiver, table, rule, ddl):
    p = make_endpoint(cluster, "rl_p_" + table, receiver.url("/p"), event_types=["rlp.*"])
    o = make_endpoint(cluster, "rl_o_" + table, receiver.url("/o"), event_types=["rlo.*"],
                      ordered=True)
    try:
        enqueue_many(cluster, "rlp.before", 3)
        enqueue_many(cluster, "rlo.before", 3)
        wait_queue_delivered(cluster, p, 3, timeout=60)
        wait_queue_delivered(cluster, o, 3, timeout=60)

        pid = cluster.worker_pids()
        log_from = len(cluster.log_text())
        cluster.execute(ddl)
        # a commit wakes the worker: its next cycle looks (the rule's invalidation) before it claims
        enqueue_many(cluster, "rlo.wake", 1)
        wait_waiting(cluster, table)
        log = cluster.log_text()[log_from:]
        assert "rules are not supported" not in log, "the worker ran a statement under the rule"
        assert cluster.worker_pids() == pid, "the worker restarted"
        assert "pg_callback does not deliver while callback.%s has rules; deliveries wait" % table in log
        assert "pg_rules WHERE schemaname = 'callback'" in log

        # events committed now wait: the worker looked again after them and sent nothing
        seen = receiver.count()
        ids_p = enqueue_many(cluster, "rlp.during", 5)
        ids_o = enqueue_many(cluster, "rlo.during", 5)
        committed_at = cluster.scalar("SELECT pg_catalog.clock_timestamp()")
        wait_waiting(cluster, table, after=committed_at)
        assert receiver.count() == seen
        waiting = cluster.scalar(
            "SELECT count(*) FROM callback.callback_queue WHERE event_id = ANY(%s::uuid[]) "
            "AND status = 'pending'", (ids_p + ids_o,))
        assert waiting == 10

        # process_callbacks() refuses with the same words, and claims nothing
        with pytest.raises(psycopg2.Error) as e:
            cluster.execute("SELECT callback.process_callbacks(10)")
        assert e.value.pgcode == "55000"
        assert "callback.%s has rules" % table in str(e.value)

        cluster.execute("DROP RULE %s ON callback.%s" % (rule, table))
        wait_queue_delivered(cluster, p, 3 + 5, timeout=90)
        wait_queue_delivered(cluster, o, 3 + 1 + 5, timeout=90)
        assert "no rules on its tables any more; delivering" in cluster.log_text()[log_from:]
        for ids, path in ((ids_p, "/p"), (ids_o, "/o")):
            assert {msg_id(i) for i in ids} <= webhook_ids(receiver, path)
        assert worker(cluster)[0] != WAITING
    finally:
        cluster.execute("DROP RULE IF EXISTS %s ON callback.%s" % (rule, table))
        for name in ("rl_p_" + table, "rl_o_" + table):
            cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))


def test_a_locked_table_keeps_the_worker_waiting(cluster, receiver):
    """While the worker waits for a rule, another session locks the table
    (as vacuum's truncation of its tail does): the worker cannot look, and
    must keep waiting rather than announce that the rules are gone."""
    p = make_endpoint(cluster, "rl_lock", receiver.url("/l"), event_types=["rll.*"])
    conn = None
    try:
        cluster.execute("CREATE RULE rs_lock AS ON INSERT TO callback.callback_stats DO INSTEAD NOTHING")
        enqueue_many(cluster, "rll.wake", 1)
        wait_waiting(cluster, "callback_stats")
        log_from = len(cluster.log_text())
        conn = cluster.connect(autocommit=False)
        conn.cursor().execute("LOCK TABLE callback.callback_stats IN ACCESS EXCLUSIVE MODE")
        seen = receiver.count()
        ids = enqueue_many(cluster, "rll.during", 3)
        locked_at = cluster.scalar("SELECT pg_catalog.clock_timestamp()")
        wait_waiting(cluster, "callback_stats", after=locked_at)
        assert receiver.count() == seen
        assert "no rules on its tables any more" not in cluster.log_text()[log_from:]
        conn.rollback()
        cluster.execute("DROP RULE rs_lock ON callback.callback_stats")
        wait_queue_delivered(cluster, p, 1 + 3, timeout=90)
        assert {msg_id(i) for i in ids} <= webhook_ids(receiver, "/l")
    finally:
        if conn is not None:
            conn.close()
        cluster.execute("DROP RULE IF EXISTS rs_lock ON callback.callback_stats")
        cluster.execute("SELECT callback.drop_endpoint('rl_lock', force => true)")


@pytest.mark.parametrize("how", ["DISABLE RULE", "ENABLE REPLICA RULE"])
def test_a_rule_that_does_not_fire_does_not_stop_delivery(cluster, receiver, how):
    """The rewriter skips a disabled rule, and one for replicas only in the
    worker's session_replication_role (origin): it changes nothing, and
    nothing waits for it."""
    name = "rl_off_" + how.split()[0].lower()
    p = make_endpoint(cluster, name, receiver.url("/" + name), event_types=[name + ".*"],
                      ordered=True)
    error_at = worker(cluster)[2]
    try:
        conn = cluster.connect(autocommit=False)
        cur = conn.cursor()
        cur.execute("CREATE RULE rq_off AS ON UPDATE TO callback.callback_queue DO ALSO NOTIFY pgcb_rules")
        cur.execute("ALTER TABLE callback.callback_queue %s rq_off" % how)
        conn.commit()
        conn.close()
        ids = enqueue_many(cluster, name + ".x", 4)
        wait_queue_delivered(cluster, p, 4, timeout=60)
        assert {msg_id(i) for i in ids} <= webhook_ids(receiver, "/" + name)
        state, error, now_error_at, _ = worker(cluster)
        assert state != WAITING
        # no refusal since the test began (last_error keeps an older one)
        assert now_error_at == error_at or "has rules" not in (error or "")
    finally:
        cluster.execute("DROP RULE IF EXISTS rq_off ON callback.callback_queue")
        cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))
