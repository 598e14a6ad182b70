"""End-to-end: amqp:// endpoints against a real RabbitMQ (Debian's
rabbitmq-server, started once for this module on 127.0.0.1 with its own
ports, data in a temporary directory; rabbitmq_util.py), consumed with pika.

- 10,000 events arrive exactly once per webhook-id in a queue bound to the
  exchange (duplicates, allowed by at-least-once, are counted and reported),
  as persistent messages whose message_id is the webhook-id, whose routing
  key is the event type, whose headers carry webhook-id, webhook-timestamp
  and a webhook-signature that verifies against the endpoint's secret;
- the broker stopped for 20 s and started again loses nothing: events
  written during the outage arrive after it, and an HTTP endpoint of the
  same worker keeps receiving while the broker is down;
- a missing exchange, an unroutable message (mandatory) and a nack (a full
  queue with x-overflow=reject-publish) are failed attempts in
  callback_attempts, retried per policy, then dead letters;
- a "broker" that accepts connections and never answers holds up the HTTP
  deliveries of the same worker by at most the bound of one handshake now
  and then (reconnects back off), not once per publish;
- batch_size > 1: one message per batch, its body the array, webhook-id the
  batch's, webhook-event-ids its events';
- amqps:// verifies the broker's certificate against callback.ca_file:
  refused (a failed attempt) until the test's CA is configured, then
  delivered over TLS;
- bad amqp URLs are refused with 22023 (a forbidden address with 42501),
  no message or view repeats the password.
"""

import collections
import socket
import threading
import time

import pytest

from conftest import record_figure
from faults_util import diagnostics, msg_id
import rabbitmq_util
from test_signing import new_secret, spec_signature

pytestmark = pytest.mark.skipif(not rabbitmq_util.available(),
                                reason="rabbitmq-server is not installed (scripts/install-deps.sh)")

PASSWORD = "guest"          # the broker's default user; never shown
SECRET_PW = "s3cr3t-Pw"     # in URLs that must be refused or redacted


@pytest.fixture(scope="module")
def broker():
    b = rabbitmq_util.Broker("pgcbamqp", tls=True)
    try:
        b.start()
        yield b
    finally:
        b.close()


def enqueue(cluster, etype, n):
    """n events of type etype in one transaction; their webhook-ids."""
    rows = cluster.query("SELECT callback.enqueue(%s, jsonb_build_object('i', g))::text "
                         "  FROM generate_series(1, %s) g", (etype, n))
    return {msg_id(r[0]) for r in rows}


def statuses(cluster, eid):
    return dict(cluster.query("SELECT status::text, count(*) FROM callback.callback_queue "
                              " WHERE endpoint_id = %s GROUP BY 1", (eid,)))


def by_id(msgs):
    """webhook-id -> how many times it arrived."""
    return collections.Counter(props.message_id for _, props, _ in msgs)


# ---------------------------------------------------------------- URLs

@pytest.mark.parametrize("url, what", [
    ("amqp://u:%s@/vh" % SECRET_PW, "no host"),
    ("amqp://u:%s@:5672/vh" % SECRET_PW, "no host"),
    ("amqp://u:%s@host:99999/" % SECRET_PW, "port"),
    ("amqp://u:%s@host/a/b" % SECRET_PW, "vhost with a slash"),
    ("amqp://u:%s@host/?exchange=bad%%20name" % SECRET_PW, "exchange"),
    ("amqp://u:%s@host/?routing_key=%s" % (SECRET_PW, "k" * 256), "routing key"),
    ("amqp://u:%s@host/?token=%s" % (SECRET_PW, SECRET_PW), "unknown parameter"),
    ("amqp://u:%s@host/?exchange" % SECRET_PW, "no value"),
    ("amqp://u:%s@host/?mandatory=maybe" % SECRET_PW, "mandatory"),
    ("amqp://u:%s@host/?exchange=a&exchange=b" % SECRET_PW, "repeated"),
    ("amqp://u:%s@host/#frag" % SECRET_PW, "fragment"),
    ("amqp:/u:%s@host/" % SECRET_PW, "not amqp://"),
])
def test_bad_urls_refused(cluster, url, what):
    import psycopg2
    conn = cluster.connect()
    with pytest.raises(psycopg2.Error) as ei:
        with conn.cursor() as cur:
            cur.execute("SELECT callback.validate_url(%s)", (url,))
    e = ei.value
    assert e.pgcode == "22023", (what, e.pgcode, str(e))
    text = " ".join(filter(None, [e.diag.message_primary, e.diag.message_detail,
                                  e.diag.message_hint]))
    assert SECRET_PW not in text, text
    # and nothing is written by create_endpoint
    with pytest.raises(psycopg2.Error) as ei:
        with conn.cursor() as cur:
            cur.execute("SELECT callback.create_endpoint(name => 'bad_amqp', url => %s)", (url,))
    assert ei.value.pgcode == "22023"
    assert cluster.scalar("SELECT count(*) FROM callback.callback_endpoints "
                          " WHERE name = 'bad_amqp'") == 0
    conn.close()


def test_forbidden_address_and_redaction(cluster, broker, endpoint_factory):
    import psycopg2
    conn = cluster.connect()
    # the network policy is the same as for HTTP: 10/8 is not allowlisted here
    for url in ("amqp://u:%s@10.1.2.3/" % SECRET_PW, "amqps://u:%s@[::ffff:10.1.2.3]/" % SECRET_PW,
                "amqp://u:%s@167837955/" % SECRET_PW):
        with pytest.raises(psycopg2.Error) as ei:
            with conn.cursor() as cur:
                cur.execute("SELECT callback.validate_url(%s)", (url,))
        assert ei.value.pgcode == "42501", (url, str(ei.value))
        assert SECRET_PW not in str(ei.value)
    conn.close()

    # a good URL: accepted, and the monitor's view shows no password
    good = "amqp://u:%s@127.0.0.1:%d/%%2F?exchange=x.y&routing_key=k&mandatory=false" % (
        SECRET_PW, broker.port)
    cluster.execute("SELECT callback.validate_url(%s)", (good,))
    eid = endpoint_factory("amqp_redacted", good, event_types=["nothing.matches"])
    shown = cluster.scalar("SELECT url FROM callback.callback_endpoints_redacted WHERE id = %s",
                           (eid,))
    assert SECRET_PW not in shown and shown.startswith("amqp://***@127.0.0.1:"), shown


# ---------------------------------------------------------------- delivery

def test_10000_events_exactly_once(cluster, broker, endpoint_factory):
    broker.declare("pgcb.events", "all_events")
    secret = new_secret()
    eid = endpoint_factory("amqp_10k", broker.url(query="exchange=pgcb.events"),
                           event_types=["amqp10k.*"], secret=secret)
    n = 10000
    t0 = time.monotonic()
    ids = enqueue(cluster, "amqp10k.created", n)
    assert len(ids) == n
    msgs = broker.drain("all_events", n, timeout=150)
    elapsed = time.monotonic() - t0
    counts = by_id(msgs)
    dups = sum(c - 1 for c in counts.values() if c > 1)
    record_figure("amqp: %d events published and consumed in %.1f s (%.0f/s), %d duplicates"
                  % (n, elapsed, n / elapsed, dups))
    assert set(counts) == ids, ("missing %d, unexpected %d" % (len(ids - set(counts)),
                                                               len(set(counts) - ids))
                                + diagnostics(cluster, eid))
    # at least once: duplicates may happen, but are reported above
    cluster.wait_until(lambda: statuses(cluster, eid) == {"delivered": n}, timeout=60,
                       what="all 10000 rows delivered")

    bodies = dict(cluster.query(
        "SELECT 'msg_' || replace(event_id::text, '-', ''), body "
        "  FROM callback.callback_queue WHERE endpoint_id = %s", (eid,)))
    for method, props, body in msgs[:2000]:
        h = props.headers
        assert props.message_id == h["webhook-id"]
        assert props.delivery_mode == 2                  # persistent
        assert props.content_type == "application/json"
        assert method.routing_key == "amqp10k.created"   # the event type
        assert method.exchange == "pgcb.events"
        assert body.decode() == bodies[props.message_id]
        ts = int(h["webhook-timestamp"])
        assert abs(ts - time.time()) < 600
        sigs = h["webhook-signature"].split(" ")
        assert spec_signature(secret, props.message_id, ts, body) in sigs, h
    # the per-minute rollup (callback_stats, metrics, Prometheus) counts them like HTTP ones
    cluster.wait_until(lambda: cluster.scalar(
        "SELECT coalesce(sum(delivered), 0) FROM callback.callback_stats WHERE endpoint_id = %s",
        (eid,)) == n, timeout=30, what="10000 delivered in callback_stats")
    # attempts recorded like HTTP ones, without a status code
    row = cluster.query("SELECT count(*), count(status_code), count(error) "
                        "  FROM callback.callback_attempts WHERE endpoint_id = %s", (eid,))[0]
    assert row[0] >= n and row[1] == 0 and row[2] == 0, row


def test_broker_restart_loses_nothing(cluster, broker, receiver, endpoint_factory):
    broker.declare("pgcb.restart", "restart_events")
    eid = endpoint_factory("amqp_restart", broker.url(query="exchange=pgcb.restart"),
                           event_types=["amqprs.*"], max_attempts=100,
                           retry_schedule=[0.5, 1, 2], failure_threshold=1000,
                           breaker_cooldown=2)
    hid = endpoint_factory("http_beside", receiver.url("/beside"), event_types=["beside.*"])

    before = enqueue(cluster, "amqprs.before", 200)
    got = broker.drain("restart_events", 200, timeout=60)
    assert set(by_id(got)) == before, diagnostics(cluster, eid)

    broker.stop()
    down_at = time.monotonic()
    during = enqueue(cluster, "amqprs.during", 500)
    # HTTP keeps flowing while the broker is down
    enqueue(cluster, "beside.ev", 100)
    assert receiver.wait_for(100, "/beside", timeout=15), diagnostics(cluster, hid)
    http_done = time.monotonic() - down_at
    # the publishes fail and are retried: visible in callback_attempts, no secret in them
    errors = cluster.wait_until(lambda: cluster.query(
        "SELECT DISTINCT error FROM callback.callback_attempts "
        " WHERE endpoint_id = %s AND outcome = 'pending'", (eid,)), timeout=15,
        what="failed attempts while the broker is down")
    assert any("127.0.0.1:%d" % broker.port in e[0] for e in errors), errors
    assert not any(PASSWORD + "@" in e[0] for e in errors)
    assert statuses(cluster, eid).get("delivered", 0) == 200
    remaining = 20 - (time.monotonic() - down_at)
    if remaining > 0:
        time.sleep(remaining)  # the outage itself is what is tested: 20 s, not a poll
    broker.start()
    up_at = time.monotonic()

    cluster.wait_until(lambda: statuses(cluster, eid) == {"delivered": 700}, timeout=60,
                       what="all 700 rows delivered")
    published_s = time.monotonic() - up_at
    got = broker.drain("restart_events", 500, timeout=90)
    counts = by_id(got)
    record_figure("amqp restart: 100 HTTP deliveries in %.1f s while the broker was down; "
                  "the 500 events of the outage confirmed %.1f s and consumed %.1f s after it "
                  "came back, %d duplicates"
                  % (http_done, published_s, time.monotonic() - up_at,
                     sum(c - 1 for c in counts.values() if c > 1)))
    assert set(counts) == during, ("missing %d" % len(during - set(counts))
                                   + diagnostics(cluster, eid))


def test_missing_exchange_unroutable_and_nack(cluster, broker, endpoint_factory):
    # no such exchange: the broker closes the channel
    e1 = endpoint_factory("amqp_noexchange", broker.url(query="exchange=no.such.exchange"),
                          event_types=["amqpne.*"], max_attempts=2, retry_schedule=[0.2], failure_threshold=100)
    # an exchange with no queue bound: returned (mandatory is the default)
    conn = broker.connect()
    conn.channel().exchange_declare(exchange="pgcb.unbound", exchange_type="topic", durable=True)
    conn.close()
    e2 = endpoint_factory("amqp_unroutable", broker.url(query="exchange=pgcb.unbound"),
                          event_types=["amqpur.*"], max_attempts=2, retry_schedule=[0.2], failure_threshold=100)
    # a queue that rejects what does not fit: nacks
    broker.declare("pgcb.full", "full_queue",
                   queue_args={"x-max-length": 1, "x-overflow": "reject-publish"})
    e3 = endpoint_factory("amqp_nack", broker.url(query="exchange=pgcb.full"),
                          event_types=["amqpnk.*"], max_attempts=2, retry_schedule=[0.2], failure_threshold=100)
    enqueue(cluster, "amqpne.x", 3)
    enqueue(cluster, "amqpur.x", 3)
    enqueue(cluster, "amqpnk.x", 3)

    def errors(eid):
        return [r[0] for r in cluster.query(
            "SELECT error FROM callback.callback_attempts WHERE endpoint_id = %s "
            "   AND error IS NOT NULL ORDER BY started_at", (eid,))]

    def settled(eid, want, what):
        try:
            cluster.wait_until(lambda: statuses(cluster, eid) == want, timeout=30, what=what)
        except AssertionError as e:
            raise AssertionError("%s; attempts: %r%s" % (e, errors(eid), diagnostics(cluster, eid)))

    settled(e1, {"dead": 3}, "missing exchange: 3 dead letters")
    settled(e2, {"dead": 3}, "unroutable: 3 dead letters")
    settled(e3, {"delivered": 1, "dead": 2}, "full queue: 1 delivered, 2 dead")

    e1_errors = errors(e1)
    assert len(e1_errors) == 6 and all("404 NOT_FOUND" in e and "no.such.exchange" in e
                                       for e in e1_errors), e1_errors
    e2_errors = errors(e2)
    assert len(e2_errors) == 6 and all("312 NO_ROUTE" in e for e in e2_errors), e2_errors
    e3_errors = errors(e3)
    assert len(e3_errors) == 4 and all("basic.nack" in e for e in e3_errors), e3_errors
    assert cluster.scalar("SELECT count(*) FROM callback.callback_dead_letters "
                          " WHERE endpoint IN ('amqp_noexchange', 'amqp_unroutable', 'amqp_nack')") == 8


def test_amqps_verifies_the_broker(cluster, broker, endpoint_factory):
    broker.declare("pgcb.tls", "tls_events")
    url = "amqps://guest:guest@localhost:%d/%%2F?exchange=pgcb.tls" % broker.tls_port
    eid = endpoint_factory("amqp_tls", url, event_types=["amqptls.*"], max_attempts=100,
                           retry_schedule=[0.5], failure_threshold=100)
    try:
        # the system CAs do not know the test's CA: the handshake fails
        ids = enqueue(cluster, "amqptls.x", 20)
        errors = cluster.wait_until(lambda: cluster.query(
            "SELECT DISTINCT error FROM callback.callback_attempts WHERE endpoint_id = %s",
            (eid,)), timeout=30, what="failed TLS attempts")
        assert all("localhost:%d" % broker.tls_port in e[0] for e in errors), errors
        assert statuses(cluster, eid).get("delivered", 0) == 0
        cluster.set_conf(**{"callback.ca_file": broker.ca_file})
        cluster.reload()
        got = broker.drain("tls_events", 20, timeout=60)
        assert set(by_id(got)) == ids, diagnostics(cluster, eid)
        record_figure("amqps: refused with the system CAs (%s), delivered with callback.ca_file"
                      % errors[0][0])
    finally:
        cluster.set_conf(**{"callback.ca_file": None})
        cluster.reload()


def test_silent_broker_does_not_hold_up_http(cluster, receiver, endpoint_factory):
    # accepts TCP connections and never speaks: each AMQP handshake waits its bound
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    held = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    port = srv.getsockname()[1]
    try:
        aid = endpoint_factory("amqp_silent", "amqp://guest:guest@127.0.0.1:%d/" % port,
                               event_types=["amqpsil.*"], timeout=1, max_attempts=100,
                               retry_schedule=[1], failure_threshold=1000)
        endpoint_factory("http_beside_silent", receiver.url("/silent_beside"),
                         event_types=["sbeside.*"])
        enqueue(cluster, "amqpsil.x", 20)
        errors = cluster.wait_until(lambda: cluster.query(
            "SELECT DISTINCT error FROM callback.callback_attempts WHERE endpoint_id = %s",
            (aid,)), timeout=30, what="failed attempts to the silent broker")
        assert any("127.0.0.1:%d" % port in e[0] for e in errors), errors
        # rounds of HTTP events for 12 s, while the publishes keep retrying
        rounds = []
        t_end = time.monotonic() + 12
        sent = 0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            enqueue(cluster, "sbeside.x", 20)
            sent += 20
            assert receiver.wait_for(sent, "/silent_beside", timeout=60), diagnostics(cluster, aid)
            rounds.append(time.monotonic() - t0)
        handshakes = len(held)
        record_figure("amqp silent broker: %d rounds of 20 HTTP deliveries beside it in 12 s, "
                      "slowest %.2f s, median %.2f s; %d AMQP handshakes tried (each waits 1 s); "
                      "error: %s" % (len(rounds), max(rounds), sorted(rounds)[len(rounds) // 2],
                                     handshakes, errors[0][0]))
        assert handshakes >= 3, handshakes   # it did keep trying
        # a handshake per publish would hold each round up for 20 s
        assert max(rounds) < 6, rounds
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


def test_batches_are_one_message_each(cluster, broker, endpoint_factory):
    import json
    broker.declare("pgcb.batch", "batch_events")
    eid = endpoint_factory("amqp_batch", broker.url(query="exchange=pgcb.batch"),
                           event_types=["amqpbt.*"])
    cluster.execute("SELECT callback.alter_endpoint('amqp_batch', batch_size => 5)")
    ids = enqueue(cluster, "amqpbt.x", 10)
    got = broker.drain("batch_events", 2, timeout=60)
    assert len(got) == 2, (len(got), diagnostics(cluster, eid))
    seen = []
    for method, props, body in got:
        events = json.loads(body)
        assert isinstance(events, list) and len(events) == 5, body
        assert method.routing_key == "batch"
        event_ids = props.headers["webhook-event-ids"].split(",")
        assert props.message_id == props.headers["webhook-id"] not in event_ids
        seen += event_ids
    assert sorted(seen) == sorted(ids)
    cluster.wait_until(lambda: statuses(cluster, eid) == {"delivered": 10}, timeout=30,
                       what="10 rows delivered")
