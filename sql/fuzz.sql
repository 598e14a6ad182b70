--
-- fuzz: every C function of the extension called with hostile arguments.
--
-- NaN, infinities, negative and huge numbers, NULL (for the functions not
-- marked STRICT), empty, NULL-element, two-dimensional, wrongly indexed and
-- wrongly sized arrays, 10 MB strings and odd bytes.  Each call must return
-- or fail with a SQLSTATE and a message (and a hint): no crash, no message
-- that repeats a 10 MB argument.  The list of C functions is read from the
-- catalog, so a C function added later without cases here fails this test.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Run cmd; "ok: <first column>" or "<SQLSTATE> <message>", the message cut
-- at 150 characters (with its full length when longer), and "[no hint]"
-- when the error has none.  With whole = false only the SQLSTATE is shown
-- (for messages another part of the extension owns).
CREATE FUNCTION pg_temp.fz(cmd text, whole boolean DEFAULT true) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
    st text;
    msg text;
    hnt text;
BEGIN
    EXECUTE cmd INTO r;
    RETURN 'ok: ' || coalesce(left(r, 60), 'NULL');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
    IF NOT whole THEN
        RETURN st;
    END IF;
    RETURN st || ' ' || left(msg, 150)
        || CASE WHEN length(msg) > 150 THEN format('... (%s chars)', length(msg)) ELSE '' END
        || CASE WHEN coalesce(hnt, '') = '' THEN ' [no hint]' ELSE '' END;
END
$$;

-- fn: the function a case fuzzes, as regprocedure text.  The signatures of
-- 10 MB ids and bodies (signed in 1 MB slices) are the ones Python's hmac
-- module computes for the same input.
CREATE TEMP TABLE fuzz_case (id serial, fn text, whole boolean DEFAULT true, cmd text);

INSERT INTO fuzz_case (fn, cmd) VALUES
    ('callback.generate_secret()', $$SELECT callback.generate_secret() ~ '^whsec_[A-Za-z0-9+/]+=*$'$$),

    ('callback.validate_secret(text)', $$SELECT callback.validate_secret('')$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret('whsec_')$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret('whsec_' || repeat('A', 10000000))$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret(E'whsec_\x01\x7f' || repeat('A', 40))$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret(E'whsec_caf\u00e9' || repeat('A', 40))$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret('whsec_AA==' || repeat('A', 40))$$),
    ('callback.validate_secret(text)', $$SELECT callback.validate_secret(NULL)$$),

    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_' || repeat('A', 10000000), 'msg_1', 0, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '', 0, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'a.b', 0, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', repeat('m', 10000000), 0, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', -9223372036854775808, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 9223372036854775807, '')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 0, repeat('b', 10000000))$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', E'msg_\x01\u00e9', 0, E'\x01\x7f\u00e9')$$),
    ('callback.sign(text,text,bigint,text)', $$SELECT callback.sign(NULL, 'msg_1', 0, '')$$),

    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_', 'msg_1', 0, '', 'v1,x')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 0, '', 'v1,x', '-1 second')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 0, '', 'v1,x', '-178000000 years')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', -9223372036854775808, '', 'v1,x', '178000000 years')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 9223372036854775807, '', 'v1,x', '178000000 years')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', extract(epoch FROM now())::bigint, '', repeat(' ', 10000000))$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', extract(epoch FROM now())::bigint, '', repeat('v1,AAAA ', 1250000))$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', repeat('m', 10000000), extract(epoch FROM now())::bigint, repeat('b', 10000000), E'v1,\x01\u00e9')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '', extract(epoch FROM now())::bigint, '', 'v1,x')$$),
    ('callback.verify_signature(text,text,bigint,text,text,interval)', $$SELECT callback.verify_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 0, '', 'v1,x', NULL)$$),

    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(NULL)$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types('{}')$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types('{NULL}')$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types('{{a},{b}}')$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types('[0:1]={a,b*}')$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(ARRAY[repeat('a', 10000000)])$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(ARRAY[repeat('a', 129)])$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(ARRAY[E'a\u00e9'])$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(ARRAY['a', ''])$$),
    ('callback.validate_event_types(text[])', $$SELECT callback.validate_event_types(array_fill('a.*'::text, ARRAY[100000]))$$),

    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{}', 'a')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{NULL,a}', 'a')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{{a},{b}}', 'a')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('[0:1]={x,b}', 'b')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{*}', repeat('a', 10000000))$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches(ARRAY['*' || repeat('a', 10000000)], 'a')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{*}', E'caf\u00e9')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches(E'{caf\u00e9*}', E'caf\u00e9.x')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches('{*}', '')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches(ARRAY[repeat('*', 128)], repeat('a', 128))$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches(array_fill('x'::text, ARRAY[100000]), 'a')$$),
    ('callback.event_type_matches(text[],text)', $$SELECT callback.event_type_matches(NULL, 'a')$$),

    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.histogram_accum(NULL, 1)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES ('NaN'::float8)) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES ('infinity'::float8)) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES ('-infinity'::float8)) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES (-1::float8)) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES ('-0'::float8), (0.125), (1e308), ('1.7976931348623157e308')) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT callback.latency_histogram(x) FROM (VALUES (NULL::float8)) v(x)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_one_element(x) FROM generate_series(1, 1000) x$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_two_dims(1) $$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_from_zero(1)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_nulls(1)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_negative(1)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_full(0.01)$$),
    ('callback.histogram_accum(bigint[],double precision)', $$SELECT pg_temp.fuzz_long(1)$$),

    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add('{1}', '{1}')$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add('{}', array_fill(0::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(0::bigint, ARRAY[24]), array_fill(0::bigint, ARRAY[4, 6]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(0::bigint, ARRAY[24], ARRAY[0]), array_fill(0::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(0::bigint, ARRAY[24]), array_fill(NULL::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(0::bigint, ARRAY[24]), array_fill(-1::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(9223372036854775807, ARRAY[24]), array_fill(1::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(array_fill(0::bigint, ARRAY[1000000]), array_fill(0::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(NULL, array_fill(2::bigint, ARRAY[24]))$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(NULL, '{1}')$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_add(NULL, NULL)$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_sum(h) FROM (VALUES ('{1}'::bigint[])) v(h)$$),
    ('callback.histogram_add(bigint[],bigint[])', $$SELECT callback.histogram_sum(h) FROM (VALUES (NULL::bigint[]), (array_fill(1::bigint, ARRAY[24])), (NULL)) v(h)$$),

    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 'NaN')$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 'infinity')$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), '-infinity')$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), -0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 1.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 0)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 1)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(0::bigint, ARRAY[24]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile('{}', 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile('{1}', 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[2, 12]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24], ARRAY[-5]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(NULL::bigint, ARRAY[24]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(-1::bigint, ARRAY[24]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(9223372036854775807, ARRAY[24]), 0.5)$$),
    ('callback.histogram_percentile(bigint[],double precision)', $$SELECT callback.histogram_percentile(array_fill(0::bigint, ARRAY[1000000]), 0.5)$$),

    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue(NULL, '{}')$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('regress_fuzz.x', NULL)$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('', '{}')$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue(repeat('a', 10000000), '{}')$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('regress_fuzz.*', '{}')$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue(E'regress_fuzz.\u00e9', '{}')$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('regress_fuzz.x', to_jsonb(repeat('p', 10000000)))$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('regress_fuzz.x', E'{"\\u0001": "\\u00e9", "n": 1e400}') IS NOT NULL$$),
    ('callback.enqueue(text,jsonb,text,text,text)', $$SELECT callback.enqueue('regress_fuzz.x', '{}', NULL, NULL, NULL) IS NOT NULL$$),
    ('callback._calling_role()', $$SELECT callback._calling_role() = current_user$$),
    ('callback._inbox_seq()', $$SELECT callback._inbox_seq() < callback._inbox_seq()$$),
    ('callback._move_inbox(integer)', $$SELECT callback._move_inbox(NULL)$$),
    ('callback._move_inbox(integer)', $$SELECT callback._move_inbox(0)$$),
    ('callback._move_inbox(integer)', $$SELECT callback._move_inbox(-2147483648)$$),
    ('callback._move_inbox(integer)', $$SELECT callback._move_inbox(2147483647) >= 0$$),

    ('callback.trigger()', $$SELECT callback.trigger()$$),
    ('callback.trigger()', $$INSERT INTO fuzz_before VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_statement VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_two_args VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_long_prefix VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_odd_prefix VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_empty_prefix VALUES (1)$$),
    ('callback.trigger()', $$INSERT INTO fuzz_ok VALUES (1) RETURNING id$$),
    ('callback.trigger()', $$INSERT INTO fuzz_statement_ok VALUES (1) RETURNING id$$),
    ('callback.trigger()', $$UPDATE fuzz_statement_ok SET id = 2 RETURNING id$$),
    ('callback.trigger()', $$DELETE FROM fuzz_statement_ok RETURNING id$$),
    ('callback.trigger()', $$INSERT INTO fuzz_statement_update_new VALUES (1) RETURNING id$$),
    ('callback.trigger()', $$UPDATE fuzz_statement_update_new SET id = 2 RETURNING id$$),
    ('callback._endpoints_changed()', $$SELECT callback._endpoints_changed()$$),
    ('callback._endpoints_changed()', $$INSERT INTO fuzz_endpoints_changed VALUES (1) RETURNING id$$),
    ('callback._endpoints_changed()', $$TRUNCATE fuzz_endpoints_changed_stmt$$),
    ('callback._endpoints_changed()', $$UPDATE callback.callback_endpoints SET enabled = enabled WHERE false RETURNING id$$),
    ('callback._endpoints_changed()', $$UPDATE callback.callback_endpoints SET paused = paused WHERE false RETURNING id$$),

    ('callback.wake_worker()', $$SELECT callback.wake_worker()$$),

    ('callback.process_callbacks(integer)', $$SELECT callback.process_callbacks(NULL)$$),
    ('callback.process_callbacks(integer)', $$SELECT callback.process_callbacks(0)$$),
    ('callback.process_callbacks(integer)', $$SELECT callback.process_callbacks(-2147483648)$$),
    ('callback.process_callbacks(integer)', $$SELECT callback.process_callbacks(2147483647)$$),

    ('callback.worker_stats()', $$SELECT count(*) >= 0 FROM callback.worker_stats()$$),
    ('callback.launcher_databases()', $$SELECT count(*) >= 0 FROM callback.launcher_databases()$$),
    ('callback.launcher_databases()', $$SELECT count(*) = 0 FROM callback.launcher_databases() l WHERE l.state NOT IN ('served', 'starting', 'waiting', 'restarting', 'excluded')$$);

-- The address policy's messages belong to netpolicy: only SQLSTATEs here.
INSERT INTO fuzz_case (fn, whole, cmd) VALUES
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url('')$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url('http://' || repeat('a', 10000000))$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url(E'http://127.0.0.1/\x01')$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url(E'http://127.0.0.1/\x7f')$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url('http://[::1')$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url('http://127.0.0.1:-1/')$$),
    ('callback.validate_url(text)', false, $$SELECT callback.validate_url(NULL)$$),

    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers('null')$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers('[]')$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers(jsonb_build_object('X-A', repeat('v', 10000000)))$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers(jsonb_build_object(repeat('k', 10000000), 'v'))$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers(E'{"X-A": "a\\u0001b"}')$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers(E'{"X-\\u00e9": "v"}')$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers((SELECT jsonb_object_agg('X-' || i, 'v') FROM generate_series(1, 100000) i))$$),
    ('callback.validate_headers(jsonb)', false, $$SELECT callback.validate_headers(NULL)$$),

    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed('0.0.0.0') IS NOT NULL$$),
    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed('255.255.255.255/0') IS NOT NULL$$),
    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed('::') IS NOT NULL$$),
    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed('::ffff:0.0.0.0/0') IS NOT NULL$$),
    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128') IS NOT NULL$$),
    ('callback.address_allowed(inet)', false, $$SELECT callback.address_allowed(NULL) IS NULL$$),

    ('callback.redact_url(text,boolean)', true, $$SELECT callback.redact_url('')$$),
    ('callback.redact_url(text,boolean)', true, $$SELECT length(callback.redact_url('http://' || repeat('u:p@', 2500000) || 'h/' || repeat('p', 10000000) || '?q', false))$$),
    ('callback.redact_url(text,boolean)', true, $$SELECT callback.redact_url(repeat('@', 100)) || callback.redact_url(repeat('/', 100)) || callback.redact_url(repeat(':', 100))$$),
    ('callback.redact_url(text,boolean)', true, $$SELECT callback.redact_url(E'h\u00e9:\u00e9@\u00e9/\u00e9?\u00e9', false)$$),
    ('callback.redact_url(text,boolean)', true, $$SELECT callback.redact_url(E'http://a\x01b@c/\x7f')$$),
    ('callback.redact_url(text,boolean)', true, $$SELECT callback.redact_url(NULL) IS NULL AND callback.redact_url('x', NULL) IS NULL$$);

-- backfill() is a procedure: through EXECUTE a CALL is atomic, so a call
-- that passes every check ends at 25001 (it commits per batch) and writes
-- nothing; these end earlier, at the argument they break.  Endpoint
-- regress_fuzz_bf exists while the cases run.
INSERT INTO fuzz_case (fn, cmd) VALUES
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill(NULL, NULL, NULL, NULL, NULL, NULL)$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', repeat('e', 10000000))$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'regress_fuzz_bf', repeat('(', 10000000))$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'regress_fuzz_bf', repeat('(', 8000))$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'regress_fuzz_bf', E'\x01')$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'x', NULL, -2147483648)$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'x', NULL, 100001)$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'x', NULL, 1, repeat('p', 10000000))$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill(4294967295, 'x')$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'regress_fuzz_bf', 'relname = ' || repeat('(', 4000) || '''x''' || repeat(')', 4000))$$),
    ('callback.backfill(regclass,text,text,integer,text,boolean)', $$CALL callback.backfill('pg_catalog.pg_class', 'regress_fuzz_bf', 'relname = ''x''', 1, 'fuzz')$$);

----------------------------------------------------------------- coverage

-- Every C function of the extension, with its number of cases.  A row in
-- the second query is a C function nobody fuzzes (or a case naming no C
-- function of the extension): add cases above.
CREATE TEMP VIEW ext_c_function AS
SELECT p.oid::regprocedure::text AS fn, p.proisstrict
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
       AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
  JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid AND x.extname = 'pg_callback'
 WHERE p.prolang = (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'c');

SELECT f.fn, f.proisstrict AS strict, count(c.id) AS cases
  FROM ext_c_function f LEFT JOIN fuzz_case c ON c.fn = f.fn
 GROUP BY f.fn, f.proisstrict ORDER BY f.fn COLLATE "C";

SELECT coalesce(f.fn, c.fn) AS not_fuzzed_or_unknown
  FROM ext_c_function f FULL JOIN (SELECT DISTINCT fn FROM fuzz_case) c ON c.fn = f.fn
 WHERE f.fn IS NULL OR c.fn IS NULL;

----------------------------------------------------------------- the cases

-- In a transaction rolled back at the end: enqueue() and the trigger may
-- queue rows for whatever endpoints other tests left.
BEGIN;

-- Aggregates over histogram_accum that start from a state of the wrong
-- shape, as any role allowed to execute histogram_accum could write.
DO $$
DECLARE
    zeros text := array_to_string(array_fill(0, ARRAY[23]), ',');
BEGIN
    EXECUTE $a$CREATE AGGREGATE pg_temp.fuzz_one_element(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{0}')$a$;
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_two_dims(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{{0,%s},{0,%s}}')$a$, zeros, zeros);
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_from_zero(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '[0:23]={0,%s}')$a$, zeros);
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_nulls(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{NULL,%s}')$a$, zeros);
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_negative(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{-1,%s}')$a$, zeros);
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_full(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{9223372036854775807,%s}')$a$, zeros);
    EXECUTE format($a$CREATE AGGREGATE pg_temp.fuzz_long(float8) (SFUNC = callback.histogram_accum, STYPE = bigint[], INITCOND = '{%s}')$a$,
                   array_to_string(array_fill(0, ARRAY[100000]), ','));
END
$$;

-- Tables with callback.trigger() attached the wrong ways.
CREATE TABLE fuzz_before (id int);
CREATE TRIGGER cb BEFORE INSERT ON fuzz_before FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TABLE fuzz_statement (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_statement FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TABLE fuzz_two_args (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_two_args FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_fuzz', 'x');
CREATE TABLE fuzz_long_prefix (id int);
DO $$ BEGIN
    EXECUTE format('CREATE TRIGGER cb AFTER INSERT ON fuzz_long_prefix FOR EACH ROW EXECUTE FUNCTION callback.trigger(%L)',
                   repeat('p', 1000000));
END $$;
CREATE TABLE fuzz_odd_prefix (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_odd_prefix FOR EACH ROW EXECUTE FUNCTION callback.trigger(E'regress_fuzz\u00e9');
CREATE TABLE fuzz_empty_prefix (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_empty_prefix FOR EACH ROW EXECUTE FUNCTION callback.trigger('');
CREATE TABLE fuzz_ok (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_ok FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TABLE fuzz_statement_ok (id int);
CREATE TRIGGER cb_i AFTER INSERT ON fuzz_statement_ok REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TRIGGER cb_u AFTER UPDATE ON fuzz_statement_ok REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TRIGGER cb_d AFTER DELETE ON fuzz_statement_ok REFERENCING OLD TABLE AS o
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('regress_fuzz');
CREATE TABLE fuzz_statement_update_new (id int);
CREATE TRIGGER cb_u AFTER UPDATE ON fuzz_statement_update_new REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('regress_fuzz');

-- callback._endpoints_changed() anywhere but on callback_endpoints.
CREATE TABLE fuzz_endpoints_changed (id int);
CREATE TRIGGER cb AFTER INSERT ON fuzz_endpoints_changed FOR EACH ROW EXECUTE FUNCTION callback._endpoints_changed();
CREATE TABLE fuzz_endpoints_changed_stmt (id int);
CREATE TRIGGER cb AFTER TRUNCATE ON fuzz_endpoints_changed_stmt FOR EACH STATEMENT EXECUTE FUNCTION callback._endpoints_changed();

SELECT callback.create_endpoint('regress_fuzz_bf', 'http://127.0.0.1:9/fuzz', event_types => '{nothing}') > 0 AS made;
SELECT c.id, c.fn, pg_temp.fz(c.cmd, c.whole) AS result
  FROM fuzz_case c ORDER BY c.id;
SELECT callback.drop_endpoint('regress_fuzz_bf', force => true);

ROLLBACK;

----------------------------------------------------------------- the matcher under a time limit

-- What took seconds past statement_timeout (the matcher backtracked over
-- any length and never checked for interrupts) is refused by length, and
-- the worst case within the length limit, 20000 times, finishes well
-- inside it.
SET statement_timeout = '2s';
SELECT pg_temp.fz($$SELECT callback.event_type_matches(ARRAY['*' || repeat('a', 20000) || 'b'], repeat('a', 200000))$$) AS long_inputs;
SELECT pg_temp.fz($$SELECT callback.event_type_matches(array_fill(('*' || repeat('a', 62) || 'b*')::text, ARRAY[20000]), repeat('a', 128))$$) AS worst_within_limit;
SELECT pg_temp.fz($$SELECT callback.event_type_matches(array_fill(('a*' || repeat('a*', 62) || 'b')::text, ARRAY[20000]), repeat('a', 128))$$) AS many_stars;
RESET statement_timeout;

-- The matcher still matches: '*' is any run of characters, anchored at both ends.
SELECT p, t, callback.event_type_matches(ARRAY[p], t) AS matches
  FROM (VALUES ('*', 'order.created'), ('order.*', 'order.created'), ('order.*', 'order'),
               ('*.created', 'order.created'), ('o*r*d', 'order.created'), ('a*a', 'a'),
               ('a*a', 'aa'), ('*a*b*c*', 'xaybzc'), ('*a*b*c*', 'xaycz'), ('a**b', 'ab'),
               ('*ab*ab', 'abab'), ('*ab*ab', 'aab'), ('order.created', 'order.created'),
               ('order.created', 'order.create')) v(p, t);

----------------------------------------------------------------- who may call the helpers

-- The aggregates' transition functions, latency_histogram and _prom_label
-- are not for PUBLIC (42501), even for a role that may use the schema; the
-- monitor still reads the views built on them.  histogram_sum and
-- histogram_percentile are PUBLIC's: callback_metrics calls them as the
-- querying role, so a role given SELECT on it directly (as 1.0 allowed)
-- reads it too.
CREATE ROLE regress_fuzz_plain NOLOGIN IN ROLE callback_producer;
CREATE ROLE regress_fuzz_monitor NOLOGIN IN ROLE callback_monitor;
GRANT SELECT ON callback.callback_metrics TO regress_fuzz_plain;
SET ROLE regress_fuzz_plain;
SELECT pg_temp.fz(cmd) AS plain_role, cmd
  FROM unnest(ARRAY[
    $$SELECT callback.histogram_accum(NULL, 1)$$,
    $$SELECT callback.histogram_add(NULL, NULL)$$,
    $$SELECT callback.latency_histogram(1)$$,
    $$SELECT callback.histogram_sum(NULL::bigint[])$$,
    $$SELECT callback._prom_label('x')$$,
    $$SELECT callback.histogram_percentile(array_fill(1::bigint, ARRAY[24]), 0.5) > 0$$,
    $$SELECT callback.event_type_matches('{order.*}', 'order.paid')$$,
    $$SELECT callback.validate_event_types('{order.*}')$$,
    $$SELECT callback.histogram_sum(h) FROM (VALUES ('{1}'::bigint[])) v(h)$$,
    $$SELECT count(p95_ms) >= 0 FROM callback.callback_metrics$$]) cmd;
SET ROLE regress_fuzz_monitor;
SELECT pg_temp.fz(cmd) AS monitor, cmd
  FROM unnest(ARRAY[
    $$SELECT count(*) >= 0 FROM callback.callback_metrics$$,
    $$SELECT count(*) >= 0 FROM callback.callback_health$$,
    $$SELECT callback.prometheus_metrics() LIKE '%pg_callback_endpoint_health%'$$,
    $$SELECT callback.latency_histogram(1)$$]) cmd;
RESET ROLE;
-- The extension's own aggregates still work for their owner.
SELECT callback.histogram_sum(h) AS summed
  FROM (VALUES (array_fill(1::bigint, ARRAY[24])), (array_fill(2::bigint, ARRAY[24]))) v(h);
REVOKE SELECT ON callback.callback_metrics FROM regress_fuzz_plain;
DROP ROLE regress_fuzz_plain, regress_fuzz_monitor;
