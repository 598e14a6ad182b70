--
-- endpoints: create_endpoint, alter_endpoint, drop_endpoint, pause/resume,
-- rotate_secret, redrive, purge and process_callbacks argument checks.
--
-- Every refusal is shown with its SQLSTATE, message, detail and hint (a
-- missing hint prints "(no hint)"), followed by the number of endpoints, to
-- show that nothing was written.  Random values (secrets, uuids, times) are
-- never printed, only facts about them.
--
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run cmd; on error report its SQLSTATE, message, detail and hint.
-- Returns the number of endpoints afterwards.
CREATE FUNCTION pg_temp.try(cmd text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    BEGIN
        EXECUTE cmd;
        RAISE NOTICE 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        IF det <> '' THEN
            RAISE NOTICE '% %', st, msg USING DETAIL = det, HINT = coalesce(nullif(hnt, ''), '(no hint)');
        ELSE
            RAISE NOTICE '% %', st, msg USING HINT = coalesce(nullif(hnt, ''), '(no hint)');
        END IF;
    END;
    RETURN (SELECT count(*) FROM callback.callback_endpoints);
END
$$;

-- Everything an endpoint row says, but its secrets and timestamps.
CREATE VIEW pg_temp.ep AS
SELECT name, url, event_types, headers, timeout_ms, max_attempts, retry_schedule,
       rate_limit, rate_burst, failure_threshold, breaker_cooldown, enabled, paused,
       disabled_reason IS NOT NULL AS has_disabled_reason, breaker_state
  FROM callback.callback_endpoints;

\set sec1 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
\set sec2 'whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX'

----------------------------------------------------------------- create_endpoint

-- Defaults: every event, no headers, the default policy, a generated secret.
BEGIN;
SELECT callback.create_endpoint('plain', 'http://127.0.0.1:9/plain') IS NOT NULL AS created;
\x on
SELECT * FROM pg_temp.ep WHERE name = 'plain';
\x off
SELECT secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$' AS generated_secret,
       previous_secret IS NULL AS no_previous_secret,
       previous_secret_expires_at IS NULL AS no_previous_expiry,
       created_at = now() AS created_now, updated_at = now() AS updated_now
  FROM callback.callback_endpoints WHERE name = 'plain';
COMMIT;

-- Named arguments, every option given.
SELECT callback.create_endpoint(
           name => 'orders',
           url => 'https://example.com/hooks/orders?tenant=7',
           event_types => '{order.*, invoice.paid}',
           headers => '{"Authorization": "Bearer abc", "X-Tenant": "7"}',
           timeout => '2.5 seconds',
           secret => :'sec1',
           max_attempts => 3,
           retry_schedule => '{1 second, 10 seconds}',
           rate_limit => 2.5,
           failure_threshold => 10,
           breaker_cooldown => '1 minute') IS NOT NULL AS created;
\x on
SELECT * FROM pg_temp.ep WHERE name = 'orders';
\x off
SELECT secret = :'sec1' AS given_secret FROM callback.callback_endpoints WHERE name = 'orders';

-- A rate limit with an explicit burst; the burst of 'orders' was ceil(2.5).
SELECT callback.create_endpoint('limited', 'http://127.0.0.1:9/limited', rate_limit => 100,
                                rate_burst => 7) IS NOT NULL AS created;
SELECT name, rate_limit, rate_burst FROM callback.callback_endpoints
 WHERE rate_limit IS NOT NULL ORDER BY name COLLATE "C";

-- Duplicate name.
SELECT pg_temp.try($$SELECT callback.create_endpoint('plain', 'http://127.0.0.1:9/again')$$) AS endpoints;
-- Two endpoints cannot share a secret; the message does not repeat it.
SELECT pg_temp.try(format('SELECT callback.create_endpoint(%L, %L, secret => %L)',
                          'same_secret', 'http://127.0.0.1:9/', :'sec1')) AS endpoints;

-- Names.
SELECT pg_temp.try($$SELECT callback.create_endpoint(NULL, 'http://127.0.0.1:9/')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('', 'http://127.0.0.1:9/')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('has space', 'http://127.0.0.1:9/')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('semi;colon', 'http://127.0.0.1:9/')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint(repeat('n', 101), 'http://127.0.0.1:9/')$$) AS endpoints;

-- URLs.
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'not a url')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'ftp://example.com/hook')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'http://')$$) AS endpoints;
-- No authority: curl alone would read "path" as the host.
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'http:///path')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'http:/path')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'example.com/hook')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', '')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('u', 'http://10.1.2.3/hook')$$) AS endpoints;

-- Event type patterns.
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{order.*, NULL}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{"order created"}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{order/created}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{""}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e', 'http://127.0.0.1:9/', event_types => '{{a},{b}}')$$) AS endpoints;
SELECT pg_temp.try(format('SELECT callback.create_endpoint(%L, %L, event_types => ARRAY[%L])',
                          'e', 'http://127.0.0.1:9/', repeat('a', 129))) AS endpoints;
-- '{*}' and '{order.*}' are fine; so is the longest allowed pattern.
SELECT pg_temp.try($$SELECT callback.create_endpoint('e_all', 'http://127.0.0.1:9/', event_types => '{*}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('e_order', 'http://127.0.0.1:9/', event_types => '{order.*}')$$) AS endpoints;
SELECT pg_temp.try(format('SELECT callback.create_endpoint(%L, %L, event_types => ARRAY[%L])',
                          'e_long', 'http://127.0.0.1:9/', repeat('a', 128))) AS endpoints;
SELECT name, event_types FROM callback.callback_endpoints WHERE name IN ('e_all', 'e_order')
 ORDER BY name COLLATE "C";

-- Headers.
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '["X-A", "1"]')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '"X-A: 1"')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '{"X-A": 1}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '{"X-A": null}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '{"X-A": "a\r\nX-Evil: 1"}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '{"X A": "1"}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('h', 'http://127.0.0.1:9/', headers => '{"webhook-signature": "v1,x"}')$$) AS endpoints;

-- Timeouts: 1 ms to 5 minutes.
SELECT pg_temp.try($$SELECT callback.create_endpoint('t', 'http://127.0.0.1:9/', timeout => '-1 second')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('t', 'http://127.0.0.1:9/', timeout => '0')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('t', 'http://127.0.0.1:9/', timeout => '10 minutes')$$) AS endpoints;

-- Attempts: 1 to 100.
SELECT pg_temp.try($$SELECT callback.create_endpoint('a', 'http://127.0.0.1:9/', max_attempts => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('a', 'http://127.0.0.1:9/', max_attempts => 101)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('a', 'http://127.0.0.1:9/', max_attempts => NULL)$$) AS endpoints;

-- Retry schedules.
SELECT pg_temp.try($$SELECT callback.create_endpoint('r', 'http://127.0.0.1:9/', retry_schedule => '{}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('r', 'http://127.0.0.1:9/', retry_schedule => '{1 second, -5 seconds}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('r', 'http://127.0.0.1:9/', retry_schedule => '{1 second, NULL}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('r', 'http://127.0.0.1:9/', retry_schedule => '{8 days}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('r', 'http://127.0.0.1:9/', retry_schedule => NULL)$$) AS endpoints;

-- Rate limits.
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => -1)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => 1000001)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => 'NaN')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => 10, rate_burst => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('l', 'http://127.0.0.1:9/', rate_limit => 10, rate_burst => 1000001)$$) AS endpoints;

-- Circuit breaker.
SELECT pg_temp.try($$SELECT callback.create_endpoint('b', 'http://127.0.0.1:9/', failure_threshold => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('b', 'http://127.0.0.1:9/', breaker_cooldown => '0')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('b', 'http://127.0.0.1:9/', breaker_cooldown => '2 days')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('b', 'http://127.0.0.1:9/', failure_threshold => NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('b', 'http://127.0.0.1:9/', breaker_cooldown => NULL)$$) AS endpoints;

-- Secrets: malformed ones are refused without being repeated.
SELECT pg_temp.try($$SELECT callback.create_endpoint('s', 'http://127.0.0.1:9/', secret => 'hunter2')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('s', 'http://127.0.0.1:9/', secret => 'whsec_')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('s', 'http://127.0.0.1:9/', secret => 'whsec_not*base64!')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('s', 'http://127.0.0.1:9/', secret => 'whsec_c2hvcnQ=')$$) AS endpoints;

SELECT name FROM callback.callback_endpoints ORDER BY name COLLATE "C";

----------------------------------------------------------------- alter_endpoint

SELECT pg_temp.try($$SELECT callback.alter_endpoint('nosuch', url => 'http://127.0.0.1:9/x')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint(NULL, url => 'http://127.0.0.1:9/x')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('plain', url => 'ftp://127.0.0.1/x')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('plain', event_types => '{}')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('plain', max_attempts => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('plain', rate_burst => 0)$$) AS endpoints;
-- ... and the failed calls changed nothing.
SELECT * FROM pg_temp.ep WHERE name = 'plain';

-- Arguments left NULL keep their value.
SELECT callback.alter_endpoint('plain', url => 'https://example.com/new', max_attempts => 4);
SELECT name, url, event_types, max_attempts, retry_schedule FROM pg_temp.ep WHERE name = 'plain';

-- Disable: the reason says who did it.  Enable again: no reason.  Neither
-- touches the (absent) rate limit.
SELECT callback.alter_endpoint('plain', enabled => false);
SELECT enabled, disabled_reason = 'disabled by ' || current_user AS reason_names_the_user
  FROM callback.callback_endpoints WHERE name = 'plain';
SELECT callback.alter_endpoint('plain', enabled => true);
SELECT enabled, disabled_reason, rate_limit, rate_burst
  FROM callback.callback_endpoints WHERE name = 'plain';

-- A first rate limit (the burst defaults to ceil(rate), as in create_endpoint),
-- its burst changed, a new rate (the burst stays), both removed.
SELECT callback.alter_endpoint('plain', rate_limit => 3.2);
SELECT rate_limit, rate_burst FROM callback.callback_endpoints WHERE name = 'plain';
SELECT callback.alter_endpoint('plain', rate_burst => 9);
SELECT rate_limit, rate_burst FROM callback.callback_endpoints WHERE name = 'plain';
SELECT callback.alter_endpoint('plain', rate_limit => 50);
SELECT rate_limit, rate_burst FROM callback.callback_endpoints WHERE name = 'plain';
SELECT callback.alter_endpoint('plain', remove_rate_limit => true);
SELECT rate_limit, rate_burst FROM callback.callback_endpoints WHERE name = 'plain';

-- The secret survives alter_endpoint.
SELECT secret = :'sec1' AS secret_kept FROM callback.callback_endpoints WHERE name = 'orders';
SELECT callback.alter_endpoint('orders', headers => '{}', timeout => '300 ms');
SELECT headers, timeout_ms, secret = :'sec1' AS secret_kept
  FROM callback.callback_endpoints WHERE name = 'orders';

----------------------------------------------------------------- pause / resume

SELECT callback.pause_endpoint('plain');
SELECT paused, enabled FROM callback.callback_endpoints WHERE name = 'plain';
SELECT callback.resume_endpoint('plain');
SELECT paused, enabled, breaker_state FROM callback.callback_endpoints WHERE name = 'plain';
SELECT pg_temp.try($$SELECT callback.pause_endpoint('nosuch')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.resume_endpoint(NULL)$$) AS endpoints;

----------------------------------------------------------------- rotate_secret

SELECT pg_temp.try($$SELECT callback.rotate_secret('nosuch')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.rotate_secret('orders', grace => '-1 hour')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.rotate_secret('orders', grace => '31 days')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.rotate_secret('orders', grace => NULL)$$) AS endpoints;
SELECT pg_temp.try(format('SELECT callback.rotate_secret(%L, new_secret => %L)', 'orders', :'sec1')) AS endpoints;
SELECT pg_temp.try($$SELECT callback.rotate_secret('orders', new_secret => 'whsec_')$$) AS endpoints;
-- Another endpoint's secret: refused, without repeating it.
SELECT pg_temp.try(format('SELECT callback.rotate_secret(%L, new_secret => %L)', 'plain', :'sec1')) AS endpoints;
SELECT secret = :'sec1' AS unchanged, previous_secret IS NULL AS no_previous
  FROM callback.callback_endpoints WHERE name = 'orders';
SELECT count(*) AS endpoints_with_sec1 FROM callback.callback_endpoints WHERE secret = :'sec1';

-- With a grace period the old secret is kept until it expires.
BEGIN;
SELECT callback.rotate_secret('orders', '1 hour', :'sec2') = :'sec2' AS returns_new_secret;
SELECT secret = :'sec2' AS new_secret, previous_secret = :'sec1' AS previous_kept,
       previous_secret_expires_at = now() + interval '1 hour' AS expires_after_grace
  FROM callback.callback_endpoints WHERE name = 'orders';
COMMIT;

-- A generated secret, with the default grace of a day.
BEGIN;
SELECT callback.rotate_secret('orders') ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$' AS generated;
SELECT secret ~ '^whsec_' AND secret NOT IN (:'sec1', :'sec2') AS new_secret,
       previous_secret = :'sec2' AS previous_kept,
       previous_secret_expires_at = now() + interval '24 hours' AS expires_after_a_day
  FROM callback.callback_endpoints WHERE name = 'orders';
COMMIT;

-- While 'orders' keeps sec2 as its previous secret, no other endpoint may take it.
SELECT pg_temp.try(format('SELECT callback.create_endpoint(%L, %L, secret => %L)',
                          'same_secret', 'http://127.0.0.1:9/', :'sec2')) AS endpoints;
SELECT pg_temp.try(format('SELECT callback.rotate_secret(%L, new_secret => %L)', 'plain', :'sec2')) AS endpoints;

-- Grace 0: the old secret stops at once.
SELECT callback.rotate_secret('orders', '0', :'sec1') = :'sec1' AS returns_new_secret;
SELECT secret = :'sec1' AS new_secret, previous_secret IS NULL AS no_previous,
       previous_secret_expires_at IS NULL AS no_expiry
  FROM callback.callback_endpoints WHERE name = 'orders';

----------------------------------------------------------------- drop_endpoint

-- 'plain' and 'e_all' take every event; 'e_order' takes order.* ones.
SELECT callback.enqueue('order.created', '{"id": 1}') IS NOT NULL AS enqueued;
SELECT callback.enqueue('user.created', '{"id": 2}') IS NOT NULL AS enqueued;
SELECT e.name, q.event_type, q.status
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 ORDER BY e.name COLLATE "C", q.event_type COLLATE "C";

SELECT pg_temp.try($$SELECT callback.drop_endpoint('e_all')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.drop_endpoint('nosuch')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.drop_endpoint(NULL)$$) AS endpoints;
SELECT count(*) AS queued FROM callback.callback_queue;

-- An endpoint with nothing pending drops without force.
SELECT callback.drop_endpoint('e_long');
-- force => true discards the pending deliveries, and only this endpoint's.
SELECT callback.drop_endpoint('e_all', force => true);
SELECT e.name, q.event_type, q.status
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 ORDER BY e.name COLLATE "C", q.event_type COLLATE "C";
SELECT count(*) AS orphans FROM callback.callback_queue q
 WHERE NOT EXISTS (SELECT 1 FROM callback.callback_endpoints e WHERE e.id = q.endpoint_id);
SELECT name FROM callback.callback_endpoints ORDER BY name COLLATE "C";

-- Delivered and dead rows do not hold an endpoint back, and stay after the drop.
SELECT callback.create_endpoint('finished', 'http://127.0.0.1:9/finished', event_types => '{done.*}')
    AS finished_id \gset
SELECT callback.enqueue('done.a', '1') IS NOT NULL AS enqueued;
SELECT callback.enqueue('done.b', '2') IS NOT NULL AS enqueued;
UPDATE callback.callback_queue SET status = CASE event_type WHEN 'done.a' THEN 'delivered' ELSE 'dead' END::callback.delivery_status,
       attempts = 1, finished_at = now()
 WHERE endpoint_id = :finished_id;
SELECT callback.drop_endpoint('finished');
SELECT event_type, status FROM callback.callback_queue WHERE endpoint_id = :finished_id
 ORDER BY event_type COLLATE "C";
DELETE FROM callback.callback_queue WHERE event_type LIKE 'done.%';

----------------------------------------------------------------- redrive

-- Five events, each to 'plain' and to 'limited' (both take every event), made
-- dead letters by hand at known times.
SELECT count(callback.enqueue('redrive.test', jsonb_build_object('n', g))) AS enqueued
  FROM generate_series(1, 5) g;
UPDATE callback.callback_queue
   SET status = 'dead', attempts = 8, last_error = 'HTTP 500',
       finished_at = now() - (((body::jsonb -> 'data' ->> 'n')::int) || ' hours')::interval
 WHERE event_type = 'redrive.test';
SELECT (body::jsonb -> 'data' ->> 'n')::int AS n, status, attempts
  FROM callback.callback_queue WHERE event_type = 'redrive.test' ORDER BY 1, 2;

SELECT pg_temp.try($$SELECT callback.redrive(NULL::bigint[])$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.redrive(NULL::text)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.redrive(NULL::timestamptz)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.redrive('nosuch'::text)$$) AS endpoints;

-- By id: only dead rows among the ids count.
SELECT callback.redrive(ARRAY(SELECT id FROM callback.callback_queue
                               WHERE event_type = 'redrive.test'
                                 AND (body::jsonb -> 'data' ->> 'n')::int IN (1, 2))) AS redriven_by_id;
SELECT callback.redrive(ARRAY(SELECT id FROM callback.callback_queue
                               WHERE event_type = 'redrive.test'
                                 AND (body::jsonb -> 'data' ->> 'n')::int IN (1, 2))) AS again;
SELECT callback.redrive('{}'::bigint[]) AS empty;
-- Since a time: the ones that died within the last 3.5 hours (n = 3).
SELECT callback.redrive(now() - interval '3.5 hours') AS redriven_since;
-- By endpoint: the rest of 'plain''s (n = 4, 5); those of 'limited' stay dead.
SELECT callback.redrive('plain'::text) AS redriven_by_endpoint;
SELECT callback.redrive('plain'::text) AS again;
SELECT (body::jsonb -> 'data' ->> 'n')::int AS n, status, attempts, finished_at IS NULL AS unfinished,
       next_attempt_at <= now() AS due
  FROM callback.callback_queue WHERE event_type = 'redrive.test' ORDER BY 1, 2;

----------------------------------------------------------------- purge

SELECT pg_temp.try($$SELECT callback.purge('-1 day')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.purge('7 days', 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.purge('7 days', NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.purge('7 days', 1000001)$$) AS endpoints;

-- Start from an empty queue: delivered and dead rows old and new, and pending
-- rows old and new; attempts old and new.
DELETE FROM callback.callback_queue;
SELECT count(callback.enqueue('purge.' || s || '.' || age, '{}')) AS enqueued
  FROM unnest(ARRAY['delivered', 'dead', 'pending']) s, unnest(ARRAY['old', 'new']) age;
UPDATE callback.callback_queue
   SET status = split_part(event_type, '.', 2)::callback.delivery_status,
       created_at = now() - CASE split_part(event_type, '.', 3) WHEN 'old' THEN interval '30 days' ELSE interval '1 hour' END,
       finished_at = CASE WHEN split_part(event_type, '.', 2) <> 'pending'
                          THEN now() - CASE split_part(event_type, '.', 3) WHEN 'old' THEN interval '10 days' ELSE interval '1 hour' END END;
INSERT INTO callback.callback_attempts
    (delivery_id, event_id, endpoint_id, event_type, attempt, started_at, latency_ms, outcome)
SELECT q.id, q.event_id, q.endpoint_id, q.event_type, 1,
       coalesce(q.finished_at, q.created_at), 1.5, 'delivered'
  FROM callback.callback_queue q WHERE q.status <> 'pending';
SELECT callback.purge('7 days', 1) AS purged;
SELECT event_type, status FROM callback.callback_queue ORDER BY event_type COLLATE "C";
SELECT event_type FROM callback.callback_attempts ORDER BY event_type COLLATE "C";
SELECT callback.purge('7 days') AS purged_again;
-- NULL: callback.retention (7 days by default).
SELECT current_setting('callback.retention') AS retention, callback.purge(NULL) AS purged_default;
DELETE FROM callback.callback_attempts;
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- process_callbacks

SELECT pg_temp.try($$SELECT callback.process_callbacks(NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.process_callbacks(0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.process_callbacks(-1)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.process_callbacks(1000001)$$) AS endpoints;
-- Nothing is due: nothing attempted.
SELECT callback.process_callbacks(10) AS attempted;

----------------------------------------------------------------- 1.1 options

-- Out of range or NULL: refused, nothing written.
SELECT pg_temp.try($$SELECT callback.create_endpoint('opt', 'https://example.com/h', batch_size => 0)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('opt', 'https://example.com/h', batch_size => 1001)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('opt', 'https://example.com/h', batch_window => '-1 second')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('opt', 'https://example.com/h', ordered => NULL)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('opt', 'https://example.com/h', ordered => true, batch_size => 10)$$) AS endpoints;
SELECT count(*) AS opt_endpoints FROM callback.callback_endpoints WHERE name = 'opt';
-- The owner is the role calling, as SET ROLE left it, not the definer.
CREATE ROLE regress_opt_admin IN ROLE callback_admin;
SET ROLE regress_opt_admin;
SELECT callback.create_endpoint('opt', 'https://example.com/h') > 0 AS created;
RESET ROLE;
SELECT owner, ordered, transform, on_response, batch_size, batch_window
  FROM callback.callback_endpoints WHERE name = 'opt';
SELECT callback.alter_endpoint('opt', batch_size => 1) AS altered;
SELECT callback.alter_endpoint('opt', batch_size => 10) AS altered;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('opt', ordered => true)$$) AS endpoints;
-- Batches: a window needs batch_size above 1.
SELECT pg_temp.try($$SELECT callback.alter_endpoint('opt', batch_size => 1, batch_window => '5 seconds')$$) AS endpoints;
SELECT callback.alter_endpoint('opt', batch_size => 100, batch_window => '5 seconds') AS altered;
SELECT batch_size, batch_window FROM callback.callback_endpoints WHERE name = 'opt';
SELECT callback.drop_endpoint('opt');
DROP ROLE regress_opt_admin;
-- enqueue's positional 1.0 call still works.
SELECT callback.enqueue('regress.opt', '{}') IS NOT NULL AS enqueued;
DELETE FROM callback.callback_queue;

----------------------------------------------------------------- clean up

SELECT callback.drop_endpoint(name, force => true) FROM callback.callback_endpoints;
SELECT count(*) AS endpoints FROM callback.callback_endpoints;
