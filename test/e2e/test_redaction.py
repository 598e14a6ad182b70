"""End-to-end: secrets in URLs stay out of the server log, and deliveries
stranded by a dropped endpoint become visible dead letters.

  * A URL password (user:s3cret@) or token (?token=s3cret) never reaches
    the server log: not through the error of create_endpoint / alter_endpoint
    (message, detail, hint, nor the STATEMENT line that log_min_error_statement
    would add; a malformed secret's neither), nor through failed deliveries to such a URL (stored here by
    the superuser behind the functions' back, as a 1.0 database or a manual
    UPDATE could have it), whose errors land in the attempt history, the
    queue, the stats and the log.
  * Drop race: a transaction queues an event for an endpoint, another drops
    the endpoint, the first commits.  The worker's sweep turns the stranded
    delivery into a dead letter with the error 'endpoint dropped' and logs a
    WARNING; nothing stays pending forever.
"""

import psycopg2
import pytest

from conftest import make_endpoint

SECRET = "s3cret"
CLUSTER_CONF = {"log_min_error_statement": "error", "log_min_messages": "info"}


def _attempt_errors(cluster, name):
    return cluster.query(
        "SELECT a.error FROM callback.callback_attempts a "
        "JOIN callback.callback_endpoints e ON e.id = a.endpoint_id WHERE e.name = %s", (name,))


def test_url_secret_never_in_log(cluster):
    bad = [
        "http://user:%s@example.com/" % SECRET,
        "ftp://user:%s@example.com/" % SECRET,
        "http://user:%s@exa mple.com/" % SECRET,
        "http://user:%s@example.com:99999/" % SECRET,
        "http://user:%s@[::1/" % SECRET,
        "http:/user:%s@example.com/" % SECRET,
        "http://user:%s@example.com/" % SECRET + "a" * 3000,
        "http://10.0.0.1/hook?token=%s" % SECRET,
        "user:%s@example.com" % SECRET,
    ]
    for url in bad:
        with pytest.raises(psycopg2.Error) as err:
            # the URL inline in the statement text, as an application would write it
            cluster.execute("SELECT callback.create_endpoint('redact_bad', '%s')" % url)
        e = err.value
        shown = " ".join(str(x) for x in (e.pgerror, e.diag.message_detail, e.diag.message_hint,
                                          e.diag.context))
        assert SECRET not in shown, (url, shown)
    # a malformed secret, given inline, stays out of the log too
    with pytest.raises(psycopg2.Error) as err:
        cluster.execute("SELECT callback.create_endpoint('redact_bad', 'http://127.0.0.1:1/x', "
                        "secret => 'whsec_%s!')" % SECRET)
    assert "malformed webhook secret" in str(err.value)
    make_endpoint(cluster, "redact_ok", "http://127.0.0.1:1/hook", event_types=["nothing.matches"])
    for url in bad[:3]:
        with pytest.raises(psycopg2.Error):
            cluster.execute("SELECT callback.alter_endpoint('redact_ok', url => '%s')" % url)

    # Failed deliveries to URLs holding a password and a token: a closed
    # loopback port (allowlisted, the connect fails) and a private address
    # (refused by the address policy at connect time).
    targets = {"redact_closed": "http://user:%s@127.0.0.1:1/hook?token=%s" % (SECRET, SECRET),
               "redact_private": "http://user:%s@10.0.0.1/hook?token=%s" % (SECRET, SECRET)}
    for name, url in targets.items():
        make_endpoint(cluster, name, "http://127.0.0.1:1/x", event_types=["redact.*"],
                      retry_schedule=[0.2], max_attempts=2, failure_threshold=100)
        cluster.execute("UPDATE callback.callback_endpoints SET url = %s WHERE name = %s",
                        (url, name))
    cluster.execute("SELECT callback.wake_worker()")
    for i in range(3):
        cluster.execute("SELECT callback.enqueue('redact.test', %s)", ('{"n": %d}' % i,))
    for name in targets:
        cluster.wait_until(
            lambda: cluster.scalar(
                "SELECT count(*) FROM callback.callback_queue q JOIN callback.callback_endpoints e "
                "ON e.id = q.endpoint_id WHERE e.name = %s AND q.status = 'dead'", (name,)) == 3,
            timeout=30, what="3 dead letters for %s" % name)
        errors = [r[0] for r in _attempt_errors(cluster, name)]
        assert len(errors) == 6 and all(errors), errors
        assert not any(SECRET in x for x in errors), errors
    assert "address policy" in " ".join(r[0] for r in _attempt_errors(cluster, "redact_private"))
    leaked = cluster.scalar(
        "SELECT count(*) FROM (SELECT last_error FROM callback.callback_queue "
        "UNION ALL SELECT last_error FROM callback.callback_stats "
        "UNION ALL SELECT error FROM callback.callback_attempts) x(e) WHERE e LIKE %s",
        ("%" + SECRET + "%",))
    assert leaked == 0

    log = cluster.log_text()
    # the errors were logged (so the scan below looks at something)...
    assert log.count("invalid callback URL") >= len(bad) - 1, cluster.log_tail()
    # ... and none of them, nor anything else, shows the secret
    hits = [line for line in log.splitlines() if SECRET in line]
    assert hits == [], hits[:5]

    for name in list(targets) + ["redact_ok"]:
        cluster.execute("SELECT callback.drop_endpoint(%s, force => true)", (name,))


def test_dropped_endpoint_becomes_dead_letter(cluster):
    make_endpoint(cluster, "race_gone", "http://127.0.0.1:1/x", event_types=["race.*"])
    cluster.execute("SELECT callback.pause_endpoint('race_gone')")
    producer = cluster.connect(autocommit=False)
    try:
        with producer.cursor() as cur:
            cur.execute("SELECT callback.enqueue('race.e2e', '{}')")
            event_id = cur.fetchone()[0]
        # the drop cannot see the uncommitted delivery, so it does not refuse
        cluster.execute("SELECT callback.drop_endpoint('race_gone')")
        producer.commit()
    finally:
        producer.close()

    def state():
        return cluster.query("SELECT status::text, last_error FROM callback.callback_queue "
                             "WHERE event_id = %s", (event_id,))
    # committed after the drop: a delivery for an endpoint that is gone
    rows = cluster.wait_until(lambda: (lambda r: r if r and r[0][0] == "dead" else None)(state()),
                              timeout=15, what="the stranded delivery to become a dead letter")
    assert rows == [("dead", "endpoint dropped")]
    assert cluster.scalar("SELECT count(*) FROM callback.callback_dead_letters "
                          "WHERE event_id = %s AND last_error = 'endpoint dropped'", (event_id,)) == 1
    cluster.wait_until(lambda: "deliveries to dropped endpoints are dead letters now"
                       in cluster.log_text(), timeout=10, what="the WARNING in the log")


def test_failing_calls_keep_tokens_out_of_statement_log(cluster):
    """Any error inside create_endpoint / alter_endpoint / rotate_secret (not
    only a bad URL or secret: a bad name, max_attempts 1000, a duplicate),
    and verify_signature's, sign's and validate_headers' own errors, leave the statement out of
    the log although log_min_error_statement = error: it holds URL tokens,
    header values and secrets.  A URL refused by the address policy shows no
    path in the message.  A statement that fails for a reason of its own
    (1/0 below) is still logged, so the scan looks at a log that does log
    statements.  Called by a non-superuser callback_admin, as in production."""
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkw"  # valid base64, 32 bytes
    tok = {i: "PLANTEDTOK%02dX" % i for i in range(1, 13)}
    cluster.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'redact_admin') "
                    "THEN CREATE ROLE redact_admin LOGIN IN ROLE callback_admin; END IF; END $$")
    admin = psycopg2.connect(**dict(cluster.dsn(), user="redact_admin"))
    admin.autocommit = True
    url = "http://127.0.0.1:1/hook/%s?token=%s" % (tok[1], tok[2])
    hdr = '{"Authorization": "Bearer %s"}' % tok[3]
    calls = [
        # bad name, with URL, headers and a secret inline
        "SELECT callback.create_endpoint('bad name!', '%s', headers => '%s', secret => '%s%s')"
        % (url, hdr, secret[:-4], "AAA="),
        "SELECT callback.create_endpoint('stmt_ok2', '%s', headers => '%s', max_attempts => 1000)"
        % (url, hdr),
        # a private address: the message must not show the path either
        "SELECT callback.create_endpoint('stmt_ok3', 'http://10.0.0.1/x/%s?q=%s')" % (tok[4], tok[5]),
        "SELECT callback.create_endpoint('stmt_ok', '%s', headers => '%s')" % (url, hdr),  # duplicate
        "SELECT callback.alter_endpoint('stmt_ok', url => 'http://127.0.0.1:1/%s', max_attempts => 0)"
        % tok[6],
        "SELECT callback.alter_endpoint('stmt_ok', headers => '{\"X-Key\": \"%s\"}', timeout => '1 year')"
        % tok[7],
        "SELECT callback.rotate_secret('stmt_ok', grace => '-1 day', new_secret => '%s')" % secret,
        "SELECT callback.rotate_secret('no such endpoint', new_secret => '%s')" % secret,
        "SELECT callback.verify_signature('%s', 'msg_%s', 1, 'b', 'v1,x', '-1000000 years')"
        % (secret, tok[8]),
        "SELECT callback.sign('%s', 'msg.%s', 1, 'b')" % (secret, tok[9]),
        "SELECT callback.sign('%s', '', 1, '%s')" % (secret, tok[10]),
        # validate_headers is PUBLIC's: a bad header next to a good one
        "SELECT callback.validate_headers('{\"Authorization\": \"Bearer %s\", \"Bad Name\": \"v\"}')"
        % tok[12],
    ]
    # the endpoint that the duplicate and the alters name, created cleanly
    with admin.cursor() as cur:
        cur.execute("SELECT callback.create_endpoint('stmt_ok', 'http://127.0.0.1:1/x')")
    start = len(cluster.log_text())
    failed = 0
    for sql in calls:
        with pytest.raises(psycopg2.Error):
            with admin.cursor() as cur:
                cur.execute(sql)
        failed += 1
    with pytest.raises(psycopg2.Error):
        with admin.cursor() as cur:
            cur.execute("SELECT 1/0 AS %s" % tok[11])
    admin.close()
    cluster.wait_until(lambda: tok[11] in cluster.log_text()[start:], timeout=10,
                       what="the control statement in the log")
    log = cluster.log_text()[start:]
    # every call failed and was logged (the scan below looks at something)
    assert log.count("ERROR:") >= failed + 1, log
    assert "STATEMENT:  SELECT 1/0 AS %s" % tok[11] in log
    hits = [line for line in log.splitlines()
            if any(t in line for k, t in tok.items() if k != 11) or secret in line]
    assert hits == [], hits
    cluster.execute("SELECT callback.drop_endpoint('stmt_ok', force => true)")
    cluster.execute("DROP ROLE redact_admin")
