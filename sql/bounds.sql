--
-- bounds: what an administrator may configure is bounded (part 90-limits):
-- the rate limit from below and above (a tiny one made the worker's wait
-- for a token overflow), and the sizes of event_types, headers and
-- retry_schedule, in create_endpoint and alter_endpoint alike.  Also
-- redact_url() with a password that holds a '/'.
--
-- Every refusal is shown with its SQLSTATE, message and hint, followed by
-- the number of endpoints, to show that nothing was written.
--
SET client_min_messages = notice;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.try(cmd text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    hnt text;
BEGIN
    BEGIN
        EXECUTE cmd;
        RAISE NOTICE 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hnt = PG_EXCEPTION_HINT;
        RAISE NOTICE '% %', st, msg USING HINT = coalesce(nullif(hnt, ''), '(no hint)');
    END;
    RETURN (SELECT count(*) FROM callback.callback_endpoints WHERE name LIKE 'bounds%');
END
$$;

-- rate_limit: 0.001 to 1000000 per second; NaN and infinities refused
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => 1e-300)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => 0.000999)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => 'infinity')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => '-infinity')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => 'NaN')$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r', 'http://127.0.0.1:9/', rate_limit => 0.001)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.create_endpoint('bounds_r2', 'http://127.0.0.1:9/', rate_limit => 1000000)$$) AS endpoints;
SELECT name, rate_limit, rate_burst FROM callback.callback_endpoints WHERE name LIKE 'bounds%' ORDER BY name;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('bounds_r', rate_limit => 1e-300)$$) AS endpoints;
SELECT pg_temp.try($$SELECT callback.alter_endpoint('bounds_r', rate_limit => 'NaN')$$) AS endpoints;
SELECT rate_limit FROM callback.callback_endpoints WHERE name = 'bounds_r';

-- event_types: at most 100 patterns
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_e', 'http://127.0.0.1:9/', event_types => %L)$$,
                          ARRAY(SELECT 'type' || i || '.*' FROM generate_series(1, 101) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_e', 'http://127.0.0.1:9/', event_types => %L)$$,
                          ARRAY(SELECT 'type' || i || '.*' FROM generate_series(1, 100) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.alter_endpoint('bounds_e', event_types => %L)$$,
                          ARRAY(SELECT 'type' || i FROM generate_series(1, 101) i))) AS endpoints;
SELECT cardinality(event_types) FROM callback.callback_endpoints WHERE name = 'bounds_e';

-- headers: at most 50, of at most 8 kB together
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_h', 'http://127.0.0.1:9/', headers => %L)$$,
                          (SELECT jsonb_object_agg('X-H' || i, 'v') FROM generate_series(1, 51) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_h', 'http://127.0.0.1:9/', headers => %L)$$,
                          jsonb_build_object('X-Big', repeat('a', 8200)))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_h', 'http://127.0.0.1:9/', headers => %L)$$,
                          (SELECT jsonb_object_agg('X-H' || i, repeat('v', 100)) FROM generate_series(1, 50) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.alter_endpoint('bounds_h', headers => %L)$$,
                          (SELECT jsonb_object_agg('X-H' || i, 'v') FROM generate_series(1, 51) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.alter_endpoint('bounds_h', headers => %L)$$,
                          (SELECT jsonb_object_agg('X-H' || i, repeat('v', 200)) FROM generate_series(1, 50) i))) AS endpoints;
SELECT (SELECT count(*) FROM jsonb_object_keys(headers)) AS headers FROM callback.callback_endpoints WHERE name = 'bounds_h';

-- retry_schedule: at most 50 delays
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_s', 'http://127.0.0.1:9/', retry_schedule => %L)$$,
                          ARRAY(SELECT make_interval(secs => i) FROM generate_series(1, 51) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.create_endpoint('bounds_s', 'http://127.0.0.1:9/', retry_schedule => %L)$$,
                          ARRAY(SELECT make_interval(secs => i) FROM generate_series(1, 50) i))) AS endpoints;
SELECT pg_temp.try(format($$SELECT callback.alter_endpoint('bounds_s', retry_schedule => %L)$$,
                          ARRAY(SELECT make_interval(secs => i) FROM generate_series(1, 51) i))) AS endpoints;
SELECT cardinality(retry_schedule) FROM callback.callback_endpoints WHERE name = 'bounds_s';

-- redact_url: a password with an unencoded '/' is hidden up to the last '@'
-- before the query; an '@' in a path hides the host too (more, never less)
SELECT u, callback.redact_url(u) AS redacted, callback.redact_url(u, false) AS without_path
  FROM (VALUES ('http://user:pa/ss@host/p'),
               ('http://user:pa/ss@host:8080/p/q?token=x#f'),
               ('https://u:a/b/c@d@example.com/hook'),
               ('http://user:pass@host/p?next=a@b'),
               ('https://discord.example.com/users/@me'),
               ('http://host/p?x=@y'),
               ('http://host/p#@frag'),
               ('//u:p/w@host/x')) v(u);

SELECT callback.drop_endpoint(name) FROM callback.callback_endpoints WHERE name LIKE 'bounds%' ORDER BY name;
