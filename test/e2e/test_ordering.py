"""End-to-end: per-key ordering (ordered => true), with one and with four
workers per database, and a worker killed mid-run.

- 50 keys x 200 events through callback.enqueue(key => ...) to an ordered
  endpoint whose receiver answers 500 to a random 20 % of first attempts
  and answers after a random delay: per key, the events arrive in queue
  (commit) order with no gap; an event arriving again straight after
  itself (a retry, or a resend after a kill) is counted as a duplicate,
  anything else out of place fails;
- one more key whose every attempt gets 500: its first event holds back
  only that key (its later events never arrive) while the other keys are
  delivered in full;
- the same with callback.workers_per_database = 4 (disjoint claims: every
  event arrives once except retries), and with a worker SIGKILLed mid-run
  (a crash: a key's deliveries whose outcomes were lost are sent again, in
  order, before the key goes on);
- the row trigger: the primary key by default, 'key=col' as an argument.
"""

import json
import random
import signal
import threading

import pytest

from conftest import record_figure
from receiver import Receiver

KEYS = 50
PER_KEY = 200
BAD_KEY = "bad"


class FlakyReceiver(Receiver):
    """500 to a random 20 % of first attempts and to every attempt of
    BAD_KEY, after a random delay of up to 15 ms; records (key, seq)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._seen = set()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._rng = random.Random(11)
        self.arrivals = []  # (key, seq) in arrival order

    def _record(self, method, target, path, headers, body):
        super()._record(method, target, path, headers, body)
        data = json.loads(body)["data"]
        wid = headers.get("webhook-id")
        with self._lock:
            self.arrivals.append((data["k"], data["s"]))
            first = wid not in self._seen
            self._seen.add(wid)
            fail = data["k"] == BAD_KEY or (first and self._rng.random() < 0.2)
            delay = self._rng.random() * 0.015
        self._local.answer = (500 if fail else 200, delay)

    def _response_for(self, path):
        status, delay = getattr(self._local, "answer", (200, 0.0))
        return status, {}, "", delay


@pytest.fixture
def flaky():
    r = FlakyReceiver(host="127.0.0.1", port=0).start()
    yield r
    r.stop()


def set_workers(cluster, n):
    cluster.set_conf(**{"callback.workers_per_database": n})
    cluster.reload()
    cluster.wait_until(
        lambda: cluster.scalar("SELECT count(*) FROM callback.callback_worker_stats "
                               " WHERE database = current_database()") == n,
        timeout=60, what="%d workers in the database" % n)


def check_order(arrivals, keys, per_key, strict=True):
    """Per key: the first arrivals of the events are 0 .. per_key-1 in that
    order, and nothing arrives ahead of its turn.  strict: an event comes
    again only straight after itself (a retry); else (a crash lost the
    outcomes of a key's last deliveries) the key may go back and send those
    again, in order, before it goes on.  Returns the repeated arrivals."""
    by_key = {}
    for k, s in arrivals:
        by_key.setdefault(k, []).append(s)
    repeats = 0
    for k in keys:
        seq = by_key.get(k, [])
        top = -1
        prev = None
        for s in seq:
            if s == top + 1:
                top = s
            else:
                assert s <= top and (not strict or s == prev), \
                    "key %s arrived out of order or with a gap: %r" % (k, seq[:60])
                repeats += 1
            prev = s
        assert top == per_key - 1, "key %s: %d of %d arrived" % (k, top + 1, per_key)
    return repeats


def queue_status(cluster, ep):
    return dict(cluster.query("SELECT status::text, count(*) FROM callback.callback_queue "
                              " WHERE endpoint_id = %s GROUP BY 1", (ep,)))


def run_ordered(cluster, flaky, endpoint_factory, name, workers, kill=False):
    set_workers(cluster, workers)
    ep = endpoint_factory(name, flaky.url("/" + name), event_types=[name],
                          ordered=True, max_attempts=100,
                          retry_schedule=["100 milliseconds", "100 milliseconds", "60 seconds"])
    # the bad key first: its head fails forever and must hold back only itself
    cluster.execute(
        "SELECT callback.enqueue(%s, jsonb_build_object('k', %s, 's', s), key => %s) "
        "  FROM generate_series(0, 4) s", (name, BAD_KEY, BAD_KEY))
    keys = ["k%02d" % i for i in range(KEYS)]
    # events of a key in id order, keys interleaved; a few commits
    for part in range(4):
        lo, hi = part * PER_KEY // 4, (part + 1) * PER_KEY // 4 - 1
        cluster.execute(
            "SELECT callback.enqueue(%s, jsonb_build_object('k', k, 's', s), key => k) "
            "  FROM generate_series(%s, %s) s, unnest(%s::text[]) k ORDER BY s, k",
            (name, lo, hi, keys))
    total = KEYS * PER_KEY
    if kill:
        cluster.wait_until(lambda: len(flaky.arrivals) >= total // 3, timeout=120,
                           what="a third of the events sent")
        victim = cluster.worker_pids()[-1]
        cluster.kill(victim, signal.SIGKILL)
    cluster.wait_until(lambda: queue_status(cluster, ep).get("delivered", 0) == total,
                       timeout=300, interval=0.5,
                       what="%d delivered" % total)
    repeats = check_order(flaky.arrivals, keys, PER_KEY, strict=not kill)
    bad = [s for k, s in flaky.arrivals if k == BAD_KEY]
    assert bad and set(bad) == {0}, "the failing key moved on: %r" % bad[:20]
    row = cluster.query("SELECT status::text, attempts FROM callback.callback_queue "
                        " WHERE endpoint_id = %s AND ordering_key = %s ORDER BY id LIMIT 1",
                        (ep, BAD_KEY))[0]
    assert row[0] in ("pending", "sending") and row[1] >= 2, row
    record_figure("ordered, %d worker(s)%s: %d events over %d keys in order; "
                  "%d repeated arrivals (retries and resends)"
                  % (workers, ", one SIGKILLed" if kill else "", total, KEYS, repeats))
    return repeats


@pytest.mark.parametrize("workers", [1, 4])
def test_ordered_per_key_with_failures_and_a_stuck_key(cluster, flaky, endpoint_factory, workers):
    run_ordered(cluster, flaky, endpoint_factory, "ord%d" % workers, workers)


def test_ordered_survives_sigkill_of_a_worker(cluster, flaky, endpoint_factory):
    run_ordered(cluster, flaky, endpoint_factory, "ordkill", 4, kill=True)


def test_row_trigger_keys(cluster, receiver, endpoint_factory):
    """Primary key by default; 'key=col' names the columns; unordered
    endpoints store no key."""
    set_workers(cluster, 1)
    ep = endpoint_factory("trg", receiver.url("/trg"), event_types=["acct.*", "cust.*"],
                          ordered=True)
    plain = endpoint_factory("trgplain", receiver.url("/trgplain"), event_types=["acct.*"])
    cluster.execute("CREATE TABLE acct (id int PRIMARY KEY, cust int, v int)")
    cluster.execute("CREATE TRIGGER a AFTER INSERT OR UPDATE OR DELETE ON acct "
                    "FOR EACH ROW EXECUTE FUNCTION callback.trigger('acct')")
    cluster.execute("CREATE TABLE cust (a int, b text, v int)")
    cluster.execute("CREATE TRIGGER c AFTER INSERT ON cust "
                    "FOR EACH ROW EXECUTE FUNCTION callback.trigger('cust', 'key=a, b')")
    cluster.execute("INSERT INTO acct VALUES (1, 7, 0), (2, 7, 0)")
    cluster.execute("UPDATE acct SET v = 1 WHERE id = 1")
    cluster.execute("DELETE FROM acct WHERE id = 2")
    cluster.execute("INSERT INTO cust VALUES (1, 'x,y', 0)")
    keys = cluster.query("SELECT event_type, ordering_key FROM callback.callback_queue "
                         " WHERE endpoint_id = %s ORDER BY id", (ep,))
    assert keys == [("acct.insert", "1"), ("acct.insert", "2"), ("acct.update", "1"),
                    ("acct.delete", "2"), ("cust.insert", '["1","x,y"]')]
    assert cluster.scalar("SELECT count(*) FROM callback.callback_queue "
                          " WHERE endpoint_id = %s AND ordering_key IS NOT NULL", (plain,)) == 0
    with pytest.raises(Exception) as e:
        cluster.execute("CREATE TRIGGER d AFTER INSERT ON cust "
                        "FOR EACH ROW EXECUTE FUNCTION callback.trigger('cust', 'key=nope')")
        cluster.execute("INSERT INTO cust VALUES (2, 'z', 0)")
    assert "nope" in str(e.value)
    cluster.wait_until(lambda: queue_status(cluster, ep).get("delivered", 0) == 5,
                       timeout=60, what="trigger events delivered")
