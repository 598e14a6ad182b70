--
-- tracecontext: the W3C traceparent / tracestate an event carries (from
-- enqueue()'s arguments or the callback.traceparent / callback.tracestate
-- settings) and notify:<channel> endpoint URLs.  Every refusal shows its
-- SQLSTATE, message, detail and hint, then the number of queued rows, to
-- show that nothing was written.  No worker serves this database.
--
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never

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
        RAISE NOTICE '% %', st, msg USING DETAIL = coalesce(nullif(det, ''), '(no detail)'),
                                          HINT = coalesce(nullif(hnt, ''), '(no hint)');
    END;
    RETURN (SELECT count(*) FROM callback.callback_queue);
END
$$;

-- notify: URLs: the channel is what LISTEN takes unquoted
SELECT pg_temp.try($$SELECT callback.create_endpoint('tc_bad', 'notify:')$$);
SELECT pg_temp.try($$SELECT callback.create_endpoint('tc_bad', 'notify:Orders')$$);
SELECT pg_temp.try($$SELECT callback.create_endpoint('tc_bad', 'notify:or-ders')$$);
SELECT pg_temp.try($$SELECT callback.create_endpoint('tc_bad', 'notify:' || repeat('a', 64))$$);
SELECT pg_temp.try($$SELECT callback.create_endpoint('tc_bad', 'ftp://example.com/')$$);
SELECT callback.create_endpoint('tc', 'notify:tc_regress', event_types => '{tc.*}') > 0 AS created;
SELECT url FROM callback.callback_endpoints_redacted WHERE name = 'tc';

-- traceparent: version 00 is 55 characters of lowercase hex, no id all zeros
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-00000000000000000000000000000000-00f067aa0ba902b7-01')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later')$$);
-- tracestate
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate => 'rojo=1,congo=2')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate => 'Rojo=1')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', traceparent => '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', tracestate => 'rojo=1,rojo=2')$$);
SELECT pg_temp.try($$SELECT callback.enqueue('tc.x', '{}', tracestate => 'rojo=1')$$);
-- the settings: refused when set
SELECT pg_temp.try($$SET callback.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7'$$);
SELECT pg_temp.try($$SET callback.tracestate = 'a=b=c'$$);
BEGIN;
SET LOCAL callback.traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
SET LOCAL callback.tracestate = 'vendor=v1';
SELECT callback.enqueue('tc.set', '{}') IS NOT NULL AS queued;
COMMIT;
SELECT callback.enqueue('tc.after', '{}') IS NOT NULL AS queued;
SELECT event_type, traceparent, tracestate FROM callback.callback_queue ORDER BY id;

SELECT callback.drop_endpoint('tc', force => true);
