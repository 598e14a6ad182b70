/* pg_callback--1.0.sql: the SQL surface of pg_callback (schema callback). */

\echo Use "CREATE EXTENSION pg_callback" to load this file. \quit

/*
 * Roles.  Roles are cluster-wide, so a second database reuses them; they are
 * not members of the extension and outlive DROP EXTENSION.
 *   callback_admin    manages endpoints, reads secrets, redrives, drains
 *   callback_producer may enqueue events and attach callback.trigger()
 *   callback_monitor  reads the metrics and health views (no secrets)
 */
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['callback_admin', 'callback_producer', 'callback_monitor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;
GRANT callback_producer TO callback_admin;
GRANT callback_monitor TO callback_admin;

GRANT USAGE ON SCHEMA callback TO callback_admin, callback_producer, callback_monitor;
-- pg_monitor reaches only what is granted to it below (worker counters, Prometheus text)
GRANT USAGE ON SCHEMA callback TO pg_monitor;

CREATE TYPE callback.delivery_status AS ENUM ('pending', 'sending', 'delivered', 'dead');

/* ---------------------------------------------------------------- C helpers */

CREATE FUNCTION callback.generate_secret()
RETURNS text
AS 'MODULE_PATHNAME', 'generate_secret'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

CREATE FUNCTION callback.validate_secret(secret text)
RETURNS void
AS 'MODULE_PATHNAME', 'validate_secret'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION callback.validate_url(url text)
RETURNS void
AS 'MODULE_PATHNAME', 'validate_url'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION callback.validate_headers(headers jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'validate_headers'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION callback.validate_event_types(patterns text[])
RETURNS void
AS 'MODULE_PATHNAME', 'validate_event_types'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION callback.event_type_matches(patterns text[], event_type text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'event_type_matches'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION callback.address_allowed(address inet)
RETURNS boolean
AS 'MODULE_PATHNAME', 'address_allowed'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

/* Standard Webhooks v1: "v1,<base64 HMAC-SHA256 of id.timestamp.body>". */
CREATE FUNCTION callback.sign(secret text, msg_id text, "timestamp" bigint, body text)
RETURNS text
AS 'MODULE_PATHNAME', 'sign'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/*
 * True when one of the space-separated signatures in signature_header is a
 * valid v1 signature of (msg_id, timestamp, body) under secret, and timestamp
 * lies within tolerance of now.  Constant-time comparison.
 */
CREATE FUNCTION callback.verify_signature(secret text, msg_id text, "timestamp" bigint,
                                          body text, signature_header text,
                                          tolerance interval DEFAULT '5 minutes')
RETURNS boolean
AS 'MODULE_PATHNAME', 'verify_signature'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

/* Latency histograms of callback_stats: 24 power-of-two buckets from 0.125 ms. */
CREATE FUNCTION callback.histogram_accum(bigint[], double precision)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'histogram_accum'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE AGGREGATE callback.latency_histogram(double precision) (
    SFUNC = callback.histogram_accum,
    STYPE = bigint[]
);

CREATE FUNCTION callback.histogram_add(bigint[], bigint[])
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'histogram_add'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE callback.histogram_sum(bigint[]) (
    SFUNC = callback.histogram_add,
    STYPE = bigint[]
);

/* Estimated p-quantile (0..1) in milliseconds of a latency histogram. */
CREATE FUNCTION callback.histogram_percentile(bigint[], double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'histogram_percentile'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

/* ---------------------------------------------------------------- tables */

CREATE TABLE callback.callback_endpoints (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    url text NOT NULL,
    event_types text[] NOT NULL DEFAULT '{*}',
    headers jsonb NOT NULL DEFAULT '{}',
    timeout_ms integer CHECK (timeout_ms BETWEEN 1 AND 300000),
    max_attempts integer NOT NULL DEFAULT 8 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_schedule interval[] NOT NULL
        DEFAULT '{5 seconds,5 minutes,30 minutes,2 hours,5 hours,10 hours,10 hours}',
    rate_limit double precision CHECK (rate_limit > 0 AND rate_limit <= 1000000),
    rate_burst integer CHECK (rate_burst BETWEEN 1 AND 1000000),
    failure_threshold integer NOT NULL DEFAULT 5 CHECK (failure_threshold BETWEEN 1 AND 1000000),
    breaker_cooldown interval NOT NULL DEFAULT '30 seconds',
    enabled boolean NOT NULL DEFAULT true,
    paused boolean NOT NULL DEFAULT false,
    disabled_reason text,
    breaker_state text NOT NULL DEFAULT 'closed'
        CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    breaker_reason text,
    breaker_changed_at timestamptz,
    secret text NOT NULL UNIQUE,
    previous_secret text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE callback.callback_endpoints IS
    'Where events go: one row per HTTP endpoint, with its routing, retry policy, rate limit and secret.';

/*
 * One row per (event, endpoint) delivery.  A logged table: it survives a
 * crash.  No foreign key to the endpoints, so that the trigger's insert does
 * not lock the endpoint row; drop_endpoint() removes an endpoint's rows.
 */
CREATE TABLE callback.callback_queue (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL,
    endpoint_id integer NOT NULL,
    event_type text NOT NULL,
    body text NOT NULL,
    status callback.delivery_status NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_expires_at timestamptz,
    claimed_by integer,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    finished_at timestamptz
);
COMMENT ON TABLE callback.callback_queue IS
    'One row per delivery of an event to an endpoint; body is the exact bytes POSTed.';
CREATE INDEX callback_queue_due ON callback.callback_queue (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX callback_queue_leased ON callback.callback_queue (lease_expires_at)
    WHERE status = 'sending';
CREATE INDEX callback_queue_dead ON callback.callback_queue (endpoint_id, finished_at)
    WHERE status = 'dead';
CREATE INDEX callback_queue_finished ON callback.callback_queue USING brin (finished_at);

CREATE TABLE callback.callback_attempts (
    delivery_id bigint NOT NULL,
    event_id uuid NOT NULL,
    endpoint_id integer NOT NULL,
    event_type text NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    latency_ms double precision NOT NULL,
    status_code integer,
    error text,
    response_body text,
    outcome callback.delivery_status NOT NULL
);
COMMENT ON TABLE callback.callback_attempts IS
    'One row per HTTP attempt; outcome is what the attempt left the delivery in (delivered, pending for a retry, dead).';
CREATE INDEX callback_attempts_delivery ON callback.callback_attempts (delivery_id);
CREATE INDEX callback_attempts_started ON callback.callback_attempts USING brin (started_at);

/*
 * Per-minute rollup of attempts, kept by the worker's write-back, so that the
 * metrics views read thousands of rows instead of millions.  latency_hist[i]
 * counts attempts with latency in [2^(i-1), 2^i) * 0.125 ms (i = 1..24).
 */
CREATE TABLE callback.callback_stats (
    minute timestamptz NOT NULL,
    endpoint_id integer NOT NULL,
    event_type text NOT NULL,
    attempts bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    dead bigint NOT NULL DEFAULT 0,
    latency_sum_ms double precision NOT NULL DEFAULT 0,
    latency_max_ms double precision NOT NULL DEFAULT 0,
    latency_hist bigint[] NOT NULL,
    last_error text,
    PRIMARY KEY (endpoint_id, event_type, minute)
);
CREATE INDEX callback_stats_minute ON callback.callback_stats (minute);

REVOKE ALL ON callback.callback_endpoints, callback.callback_queue,
              callback.callback_attempts, callback.callback_stats FROM PUBLIC;
GRANT SELECT ON callback.callback_endpoints, callback.callback_queue,
                callback.callback_attempts, callback.callback_stats TO callback_admin;
/* The monitor sees every endpoint column but the secrets. */
GRANT SELECT (id, name, url, event_types, headers, timeout_ms, max_attempts, retry_schedule,
              rate_limit, rate_burst, failure_threshold, breaker_cooldown, enabled, paused,
              disabled_reason, breaker_state, breaker_reason, breaker_changed_at,
              previous_secret_expires_at, created_at, updated_at)
    ON callback.callback_endpoints TO callback_monitor;
GRANT SELECT ON callback.callback_queue, callback.callback_attempts, callback.callback_stats
    TO callback_monitor;

/* ---------------------------------------------------------------- endpoints */

CREATE FUNCTION callback.create_endpoint(
    name text,
    url text,
    event_types text[] DEFAULT '{*}',
    headers jsonb DEFAULT '{}',
    timeout interval DEFAULT NULL,
    secret text DEFAULT NULL,
    max_attempts integer DEFAULT 8,
    retry_schedule interval[] DEFAULT '{5 seconds,5 minutes,30 minutes,2 hours,5 hours,10 hours,10 hours}',
    rate_limit double precision DEFAULT NULL,
    rate_burst integer DEFAULT NULL,
    failure_threshold integer DEFAULT 5,
    breaker_cooldown interval DEFAULT '30 seconds')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    new_id integer;
    arg record;
BEGIN
    -- NULL would otherwise reach the NOT NULL constraint, whose message
    -- prints the whole row, generated secret included.
    FOR arg IN SELECT * FROM (VALUES ('name', name IS NULL), ('url', url IS NULL),
                                     ('event_types', event_types IS NULL), ('headers', headers IS NULL),
                                     ('max_attempts', max_attempts IS NULL),
                                     ('retry_schedule', retry_schedule IS NULL),
                                     ('failure_threshold', failure_threshold IS NULL),
                                     ('breaker_cooldown', breaker_cooldown IS NULL)) a(arg, is_null)
               WHERE a.is_null LOOP
        RAISE EXCEPTION '% must not be NULL', arg.arg
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave the argument out to get its default.';
    END LOOP;
    PERFORM callback._check_endpoint_args(name, url, event_types, headers, timeout, secret,
                                          max_attempts, retry_schedule, rate_limit, rate_burst,
                                          failure_threshold, breaker_cooldown);
    IF EXISTS (SELECT 1 FROM callback.callback_endpoints e WHERE e.name = create_endpoint.name) THEN
        RAISE EXCEPTION 'endpoint "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use callback.alter_endpoint() to change it, or pick another name.';
    END IF;
    PERFORM callback._check_secret_unused(secret, NULL);
    INSERT INTO callback.callback_endpoints
        (name, url, event_types, headers, timeout_ms, secret, max_attempts, retry_schedule,
         rate_limit, rate_burst, failure_threshold, breaker_cooldown)
    VALUES (name, url, event_types, headers,
            (extract(epoch FROM timeout) * 1000)::integer,
            coalesce(secret, callback.generate_secret()), max_attempts, retry_schedule,
            rate_limit, coalesce(rate_burst, CASE WHEN rate_limit IS NOT NULL
                                                   THEN greatest(1, ceil(rate_limit))::integer END),
            failure_threshold, breaker_cooldown)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

/* Shared argument checks of create_endpoint and alter_endpoint; NULL means "not given". */
CREATE FUNCTION callback._check_endpoint_args(
    name text, url text, event_types text[], headers jsonb, timeout interval, secret text,
    max_attempts integer, retry_schedule interval[], rate_limit double precision,
    rate_burst integer, failure_threshold integer, breaker_cooldown interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NOT NULL AND (name !~ '^[A-Za-z0-9_.:-]{1,100}$') THEN
        RAISE EXCEPTION 'invalid endpoint name "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 100 letters, digits, "_", ".", ":" or "-".';
    END IF;
    IF url IS NOT NULL THEN
        PERFORM callback.validate_url(url);
    END IF;
    PERFORM callback.validate_event_types(event_types);
    IF headers IS NOT NULL THEN
        PERFORM callback.validate_headers(headers);
    END IF;
    IF timeout IS NOT NULL AND (timeout < '1 millisecond' OR timeout > '5 minutes') THEN
        RAISE EXCEPTION 'timeout % is out of range', timeout
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a timeout between 1 millisecond and 5 minutes.';
    END IF;
    IF secret IS NOT NULL THEN
        PERFORM callback.validate_secret(secret);
    END IF;
    IF max_attempts IS NOT NULL AND (max_attempts < 1 OR max_attempts > 100) THEN
        RAISE EXCEPTION 'max_attempts % is out of range', max_attempts
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give between 1 and 100 attempts.';
    END IF;
    IF retry_schedule IS NOT NULL AND (
           cardinality(retry_schedule) = 0
           OR EXISTS (SELECT 1 FROM unnest(retry_schedule) d
                      WHERE d IS NULL OR d < '0' OR d > '7 days')) THEN
        RAISE EXCEPTION 'invalid retry_schedule %', retry_schedule
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give one or more delays between 0 and 7 days, such as ''{5 seconds,5 minutes,30 minutes}''.';
    END IF;
    IF rate_limit IS NOT NULL AND NOT (rate_limit > 0 AND rate_limit <= 1000000) THEN
        RAISE EXCEPTION 'rate_limit % is out of range', rate_limit
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give requests per second above 0 and at most 1000000, or NULL for no limit.';
    END IF;
    IF rate_burst IS NOT NULL AND (rate_burst < 1 OR rate_burst > 1000000) THEN
        RAISE EXCEPTION 'rate_burst % is out of range', rate_burst
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a burst between 1 and 1000000.';
    END IF;
    IF failure_threshold IS NOT NULL AND (failure_threshold < 1 OR failure_threshold > 1000000) THEN
        RAISE EXCEPTION 'failure_threshold % is out of range', failure_threshold
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the number of consecutive failures that opens the circuit breaker, at least 1.';
    END IF;
    IF breaker_cooldown IS NOT NULL AND (breaker_cooldown < '1 millisecond' OR breaker_cooldown > '1 day') THEN
        RAISE EXCEPTION 'breaker_cooldown % is out of range', breaker_cooldown
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a cooldown between 1 millisecond and 1 day.';
    END IF;
END
$fn$;

/*
 * A secret given by the caller must not be another endpoint's (current or
 * previous).  Checked here so that the error does not print the secret, as
 * the unique index's message would.
 */
CREATE FUNCTION callback._check_secret_unused(secret text, own_id integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF secret IS NOT NULL AND EXISTS (
           SELECT 1 FROM callback.callback_endpoints c
            WHERE (c.secret = _check_secret_unused.secret OR c.previous_secret = _check_secret_unused.secret)
              AND c.id IS DISTINCT FROM own_id) THEN
        RAISE EXCEPTION 'this secret is already used by another endpoint'
            USING ERRCODE = 'unique_violation',
                  HINT = 'Each endpoint needs its own secret; omit it to have one generated.';
    END IF;
END
$fn$;

/* The endpoint's row, locked, or a clear error. */
CREATE FUNCTION callback._endpoint_for_update(endpoint text)
RETURNS callback.callback_endpoints
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    IF endpoint IS NULL THEN
        RAISE EXCEPTION 'endpoint name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give the name of an endpoint; see SELECT name FROM callback.callback_endpoints.';
    END IF;
    SELECT * INTO e FROM callback.callback_endpoints c WHERE c.name = endpoint FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" does not exist', endpoint
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM callback.callback_endpoints.';
    END IF;
    RETURN e;
END
$fn$;

/* Change an endpoint; arguments left NULL keep their value. */
CREATE FUNCTION callback.alter_endpoint(
    name text,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    timeout interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_schedule interval[] DEFAULT NULL,
    rate_limit double precision DEFAULT NULL,
    rate_burst integer DEFAULT NULL,
    failure_threshold integer DEFAULT NULL,
    breaker_cooldown interval DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    remove_rate_limit boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    e := callback._endpoint_for_update(name);
    PERFORM callback._check_endpoint_args(NULL, url, event_types, headers, timeout, NULL,
                                          max_attempts, retry_schedule, rate_limit, rate_burst,
                                          failure_threshold, breaker_cooldown);
    UPDATE callback.callback_endpoints c SET
        url = coalesce(alter_endpoint.url, c.url),
        event_types = coalesce(alter_endpoint.event_types, c.event_types),
        headers = coalesce(alter_endpoint.headers, c.headers),
        timeout_ms = coalesce((extract(epoch FROM alter_endpoint.timeout) * 1000)::integer, c.timeout_ms),
        max_attempts = coalesce(alter_endpoint.max_attempts, c.max_attempts),
        retry_schedule = coalesce(alter_endpoint.retry_schedule, c.retry_schedule),
        rate_limit = CASE WHEN remove_rate_limit THEN NULL
                          ELSE coalesce(alter_endpoint.rate_limit, c.rate_limit) END,
        -- A burst given wins; a first rate limit gets create_endpoint's
        -- default burst; otherwise the burst stays.
        rate_burst = CASE WHEN remove_rate_limit THEN NULL
                          WHEN alter_endpoint.rate_burst IS NOT NULL THEN alter_endpoint.rate_burst
                          WHEN alter_endpoint.rate_limit IS NOT NULL AND c.rate_limit IS NULL
                              THEN greatest(1, ceil(alter_endpoint.rate_limit))::integer
                          ELSE c.rate_burst END,
        failure_threshold = coalesce(alter_endpoint.failure_threshold, c.failure_threshold),
        breaker_cooldown = coalesce(alter_endpoint.breaker_cooldown, c.breaker_cooldown),
        enabled = coalesce(alter_endpoint.enabled, c.enabled),
        disabled_reason = CASE WHEN coalesce(alter_endpoint.enabled, c.enabled) THEN NULL
                               -- session_user: inside SECURITY DEFINER current_user is the owner
                               ELSE coalesce(c.disabled_reason, 'disabled by ' || session_user) END,
        updated_at = now()
    WHERE c.id = e.id;
END
$fn$;

/*
 * Drop an endpoint.  Its undelivered deliveries would be lost, so that needs
 * force => true; delivered and dead rows and the attempt history stay.
 */
CREATE FUNCTION callback.drop_endpoint(name text, force boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
    pending bigint;
BEGIN
    e := callback._endpoint_for_update(name);
    SELECT count(*) INTO pending FROM callback.callback_queue q
     WHERE q.endpoint_id = e.id AND q.status IN ('pending', 'sending');
    IF pending > 0 AND NOT coalesce(force, false) THEN
        RAISE EXCEPTION 'endpoint "%" has % undelivered deliveries', name, pending
            USING ERRCODE = 'object_in_use',
                  HINT = 'Pause it and let them drain, or call callback.drop_endpoint(name, force => true) to discard them.';
    END IF;
    DELETE FROM callback.callback_queue q WHERE q.endpoint_id = e.id AND q.status IN ('pending', 'sending');
    -- its figures would stay in callback_metrics with no name; the attempt history stays
    DELETE FROM callback.callback_stats s WHERE s.endpoint_id = e.id;
    DELETE FROM callback.callback_endpoints c WHERE c.id = e.id;
END
$fn$;

/* Hold deliveries to an endpoint; events keep queueing for it. */
CREATE FUNCTION callback.pause_endpoint(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    e := callback._endpoint_for_update(name);
    UPDATE callback.callback_endpoints c SET paused = true, updated_at = now() WHERE c.id = e.id;
END
$fn$;

/* Resume a paused endpoint; also closes its circuit breaker. */
CREATE FUNCTION callback.resume_endpoint(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    e := callback._endpoint_for_update(name);
    UPDATE callback.callback_endpoints c
       SET paused = false, breaker_state = 'closed', breaker_reason = NULL,
           breaker_changed_at = now(), updated_at = now()
     WHERE c.id = e.id;
    PERFORM callback.wake_worker();
END
$fn$;

/*
 * Give an endpoint a new secret.  For the grace period requests carry both
 * signatures, so receivers can switch over without rejecting anything.
 */
CREATE FUNCTION callback.rotate_secret(name text, grace interval DEFAULT '24 hours',
                                       new_secret text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
    s text := coalesce(new_secret, callback.generate_secret());
BEGIN
    e := callback._endpoint_for_update(name);
    IF grace IS NULL THEN
        RAISE EXCEPTION 'grace must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Give ''0'' to stop the old secret at once.';
    END IF;
    IF grace < '0' OR grace > '30 days' THEN
        RAISE EXCEPTION 'grace period % is out of range', grace
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an interval between 0 and 30 days.';
    END IF;
    PERFORM callback.validate_secret(s);
    IF s = e.secret THEN
        RAISE EXCEPTION 'the new secret equals the current one'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Omit new_secret to have one generated.';
    END IF;
    PERFORM callback._check_secret_unused(s, e.id);
    UPDATE callback.callback_endpoints c
       SET previous_secret = CASE WHEN grace > '0' THEN c.secret END,
           previous_secret_expires_at = CASE WHEN grace > '0' THEN now() + grace END,
           secret = s, updated_at = now()
     WHERE c.id = e.id;
    RETURN s;
END
$fn$;

/* ---------------------------------------------------------------- events */

CREATE FUNCTION callback.enqueue(event_type text, payload jsonb)
RETURNS uuid
AS 'MODULE_PATHNAME', 'enqueue'
LANGUAGE C VOLATILE;

CREATE FUNCTION callback.trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'callback_trigger'
LANGUAGE C;

/* Wake this database's worker (for instance after a manual change to the queue). */
CREATE FUNCTION callback.wake_worker()
RETURNS void
AS 'MODULE_PATHNAME', 'wake_worker'
LANGUAGE C VOLATILE STRICT;

/* ---------------------------------------------------------------- dead letters */

CREATE VIEW callback.callback_dead_letters AS
SELECT q.id, q.event_id, e.name AS endpoint, q.event_type, q.attempts, q.last_status_code,
       q.last_error, q.last_attempt_at, q.finished_at AS died_at, q.created_at, q.body
  FROM callback.callback_queue q
  LEFT JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE q.status = 'dead';

CREATE FUNCTION callback._redrive_where(cond text, arg anyelement)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n bigint;
BEGIN
    EXECUTE 'UPDATE callback.callback_queue q
                SET status = ''pending'', attempts = 0, next_attempt_at = now(),
                    finished_at = NULL, lease_expires_at = NULL, claimed_by = NULL
              WHERE q.status = ''dead'' AND ' || cond
        USING arg;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM callback.wake_worker();
    RETURN n;
END
$fn$;

/* Put dead letters back in the queue, with a fresh attempt budget. Returns how many. */
CREATE FUNCTION callback.redrive(ids bigint[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Give delivery ids from callback.callback_dead_letters.';
    END IF;
    RETURN callback._redrive_where('q.id = ANY ($1)', ids);
END
$fn$;

CREATE FUNCTION callback.redrive(endpoint text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    e := callback._endpoint_for_update(endpoint);
    RETURN callback._redrive_where('q.endpoint_id = $1', e.id);
END
$fn$;

CREATE FUNCTION callback.redrive(since timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Give the time from which dead letters are redriven, such as now() - interval ''1 hour''.';
    END IF;
    RETURN callback._redrive_where('q.finished_at >= $1', since);
END
$fn$;

/* ---------------------------------------------------------------- delivery from SQL */

/* Deliver up to max due deliveries now, from this session; returns how many were attempted. */
CREATE FUNCTION callback.process_callbacks(max integer DEFAULT 1000)
RETURNS integer
AS 'MODULE_PATHNAME', 'process_callbacks'
LANGUAGE C VOLATILE
-- it claims, writes back and keeps statistics, which callback_admin may not do by hand
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

/* ---------------------------------------------------------------- retention */

/*
 * Remove delivered and dead deliveries, attempts and stats older than
 * older_than, in batches of batch_size rows so that no lock is held long.
 * Pending deliveries are never removed.  Returns the number of rows removed.
 */
CREATE FUNCTION callback.purge(older_than interval DEFAULT NULL, batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cutoff timestamptz;
    n bigint;
    total bigint := 0;
BEGIN
    IF older_than IS NULL THEN
        -- The setting shows with its unit ('7d', '12h'), which interval reads.
        older_than := current_setting('callback.retention')::interval;
    END IF;
    IF older_than < '0' THEN
        RAISE EXCEPTION 'older_than % is negative', older_than USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give an age such as ''7 days''.';
    END IF;
    IF batch_size IS NULL THEN
        RAISE EXCEPTION 'batch_size must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave it out for the default of 10000 rows per batch.';
    END IF;
    IF batch_size < 1 OR batch_size > 1000000 THEN
        RAISE EXCEPTION 'batch_size % is out of range', batch_size USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Give between 1 and 1000000 rows per batch.';
    END IF;
    cutoff := now() - older_than;
    LOOP
        DELETE FROM callback.callback_queue q WHERE q.ctid = ANY (ARRAY(
            SELECT c.ctid FROM callback.callback_queue c
             WHERE c.status IN ('delivered', 'dead') AND c.finished_at < cutoff
             LIMIT batch_size FOR UPDATE SKIP LOCKED));
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        EXIT WHEN n < batch_size;
    END LOOP;
    LOOP
        DELETE FROM callback.callback_attempts a WHERE a.ctid = ANY (ARRAY(
            SELECT c.ctid FROM callback.callback_attempts c
             WHERE c.started_at < cutoff LIMIT batch_size));
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
        EXIT WHEN n < batch_size;
    END LOOP;
    DELETE FROM callback.callback_stats s WHERE s.minute < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END
$fn$;

/* ---------------------------------------------------------------- metrics */

/* Live counters of the delivery workers, from shared memory. */
CREATE FUNCTION callback.worker_stats(
    OUT slot integer, OUT pid integer, OUT database oid, OUT state text,
    OUT inflight bigint, OUT sent bigint, OUT delivered bigint, OUT failed bigint,
    OUT dead bigint, OUT bytes_sent bigint, OUT batches bigint,
    OUT started_at timestamptz, OUT last_activity_at timestamptz,
    OUT last_error text, OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'worker_stats'
LANGUAGE C VOLATILE STRICT;

CREATE VIEW callback.callback_worker_stats AS
SELECT s.slot, s.pid, d.datname AS database, s.state, s.inflight, s.sent, s.delivered,
       s.failed, s.dead, s.bytes_sent, s.batches, s.started_at, s.last_activity_at,
       s.last_error, s.last_error_at
  FROM callback.worker_stats() s
  LEFT JOIN pg_catalog.pg_database d ON d.oid = s.database;

/*
 * Per endpoint and event type.  History comes from the per-minute rollup
 * (cheap over any number of attempts); the backlog from the queue.
 * Latency percentiles are estimates from the histogram (within a bucket).
 */
CREATE VIEW callback.callback_metrics AS
WITH s AS (
    SELECT st.endpoint_id, st.event_type,
           sum(st.attempts) AS attempts, sum(st.delivered) AS delivered,
           sum(st.failed) AS failed, sum(st.dead) AS dead,
           sum(st.latency_sum_ms) AS latency_sum_ms, max(st.latency_max_ms) AS latency_max_ms,
           callback.histogram_sum(st.latency_hist) AS hist,
           (array_agg(st.last_error ORDER BY st.minute DESC)
                FILTER (WHERE st.last_error IS NOT NULL))[1] AS last_error
      FROM callback.callback_stats st
     GROUP BY st.endpoint_id, st.event_type
), q AS (
    -- one arm per status, so that each reads its partial index: the cost
    -- follows the backlog, not the history kept in the queue
    SELECT b.endpoint_id, b.event_type, sum(b.n) AS pending, min(b.oldest) AS oldest
      FROM (SELECT cq.endpoint_id, cq.event_type, count(*) AS n, min(cq.created_at) AS oldest
              FROM callback.callback_queue cq WHERE cq.status = 'pending'
             GROUP BY cq.endpoint_id, cq.event_type
            UNION ALL
            SELECT cq.endpoint_id, cq.event_type, count(*), min(cq.created_at)
              FROM callback.callback_queue cq WHERE cq.status = 'sending'
             GROUP BY cq.endpoint_id, cq.event_type) b
     GROUP BY b.endpoint_id, b.event_type
)
SELECT e.name AS endpoint,
       coalesce(s.event_type, q.event_type) AS event_type,
       coalesce(s.attempts, 0) AS total_calls,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(s.failed, 0) AS failed_attempts,
       coalesce(s.dead, 0) AS dead,
       coalesce(q.pending, 0) AS pending,
       round(100.0 * s.delivered / nullif(s.attempts, 0), 2) AS success_rate,
       round((s.latency_sum_ms / nullif(s.attempts, 0))::numeric, 2) AS avg_ms,
       round(least(callback.histogram_percentile(s.hist, 0.50), s.latency_max_ms)::numeric, 2) AS p50_ms,
       round(least(callback.histogram_percentile(s.hist, 0.95), s.latency_max_ms)::numeric, 2) AS p95_ms,
       round(least(callback.histogram_percentile(s.hist, 0.99), s.latency_max_ms)::numeric, 2) AS p99_ms,
       round(s.latency_max_ms::numeric, 2) AS max_ms,
       s.last_error,
       pg_catalog.now() - q.oldest AS oldest_pending_age
  FROM s
  FULL JOIN q ON q.endpoint_id = s.endpoint_id AND q.event_type = s.event_type
  LEFT JOIN callback.callback_endpoints e ON e.id = coalesce(s.endpoint_id, q.endpoint_id);

/*
 * Each endpoint held against thresholds over callback.health_window:
 * success rate, average latency and backlog (settings callback.health_*),
 * plus its breaker and whether it is paused or disabled.  A figure past its
 * threshold is a warn; far past it (5 points of success rate, 4x the
 * latency, 10x the backlog), an open breaker or a disabled endpoint, an alert.
 */
CREATE VIEW callback.callback_health AS
WITH t AS (
    SELECT coalesce(current_setting('callback.health_min_success_rate', true), '99.5')::float8 AS min_rate,
           coalesce(current_setting('callback.health_max_avg_ms', true), '150')::float8 AS max_avg,
           coalesce(current_setting('callback.health_max_backlog', true), '1000')::bigint AS max_backlog,
           coalesce(current_setting('callback.health_window', true), '15min')::interval AS win
), s AS (
    SELECT st.endpoint_id, sum(st.attempts) AS attempts, sum(st.delivered) AS delivered,
           sum(st.latency_sum_ms) AS latency_sum_ms
      FROM callback.callback_stats st
     -- written out (not from t) so that it bounds a scan of callback_stats_minute
     WHERE st.minute >= date_trunc('minute', pg_catalog.now()
               - coalesce(current_setting('callback.health_window', true), '15min')::interval)
     GROUP BY st.endpoint_id
), q AS (
    SELECT b.endpoint_id, sum(b.n) AS backlog, min(b.oldest) AS oldest
      FROM (SELECT cq.endpoint_id, count(*) AS n, min(cq.created_at) AS oldest
              FROM callback.callback_queue cq WHERE cq.status = 'pending'
             GROUP BY cq.endpoint_id
            UNION ALL
            SELECT cq.endpoint_id, count(*), min(cq.created_at)
              FROM callback.callback_queue cq WHERE cq.status = 'sending'
             GROUP BY cq.endpoint_id) b
     GROUP BY b.endpoint_id
), f AS (
    SELECT e.id, e.name, e.enabled, e.paused, e.breaker_state, e.breaker_reason,
           round(100.0 * s.delivered / nullif(s.attempts, 0), 2) AS success_rate,
           round((s.latency_sum_ms / nullif(s.attempts, 0))::numeric, 2) AS avg_ms,
           coalesce(q.backlog, 0) AS backlog, pg_catalog.now() - q.oldest AS oldest_pending_age,
           t.*
      FROM callback.callback_endpoints e
      CROSS JOIN t
      LEFT JOIN s ON s.endpoint_id = e.id
      LEFT JOIN q ON q.endpoint_id = e.id
), c AS (
    SELECT f.*, ARRAY(
        SELECT x FROM unnest(ARRAY[
            CASE WHEN NOT f.enabled THEN 'alert: endpoint disabled' END,
            CASE WHEN f.breaker_state = 'open' THEN 'alert: circuit breaker open (' || coalesce(f.breaker_reason, '?') || ')' END,
            CASE WHEN f.paused THEN 'warn: paused' END,
            CASE WHEN f.success_rate < f.min_rate - 5 THEN 'alert: success rate ' || f.success_rate || '% < ' || f.min_rate || '%'
                 WHEN f.success_rate < f.min_rate THEN 'warn: success rate ' || f.success_rate || '% < ' || f.min_rate || '%' END,
            CASE WHEN f.avg_ms >= 4 * f.max_avg THEN 'alert: average ' || f.avg_ms || ' ms >= ' || 4 * f.max_avg || ' ms'
                 WHEN f.avg_ms >= f.max_avg THEN 'warn: average ' || f.avg_ms || ' ms >= ' || f.max_avg || ' ms' END,
            CASE WHEN f.backlog >= 10 * f.max_backlog THEN 'alert: backlog ' || f.backlog || ' >= ' || 10 * f.max_backlog
                 WHEN f.backlog >= f.max_backlog THEN 'warn: backlog ' || f.backlog || ' >= ' || f.max_backlog END
        ]) x WHERE x IS NOT NULL) AS findings
      FROM f
)
SELECT c.name AS endpoint,
       CASE WHEN EXISTS (SELECT 1 FROM unnest(c.findings) x WHERE x LIKE 'alert:%') THEN 'alert'
            WHEN cardinality(c.findings) > 0 THEN 'warn'
            ELSE 'ok' END AS status,
       array_to_string(c.findings, '; ') AS reason,
       c.success_rate, c.avg_ms, c.backlog, c.oldest_pending_age,
       c.breaker_state, c.enabled, c.paused
  FROM c;

/* A Prometheus label value: backslash, double quote and newline escaped. */
CREATE FUNCTION callback._prom_label(v text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT replace(replace(replace(coalesce(v, ''), E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
$fn$;

/*
 * The figures of callback_metrics, callback_health and the worker counters
 * in the Prometheus text exposition format (version 0.0.4).
 */
CREATE FUNCTION callback.prometheus_metrics()
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    out text := '';
    m record;
    fam record;
    -- the view is read once; every family below is a pass over this array
    ms callback.callback_metrics[] := ARRAY(SELECT mt FROM callback.callback_metrics mt
                                             ORDER BY mt.endpoint, mt.event_type);
BEGIN
    FOR fam IN
        SELECT * FROM (VALUES
            ('pg_callback_calls_total', 'counter', 'HTTP attempts made.', 'total_calls'),
            ('pg_callback_delivered_total', 'counter', 'Deliveries that got a 2xx answer.', 'delivered'),
            ('pg_callback_failed_attempts_total', 'counter', 'Attempts that did not get a 2xx answer.', 'failed_attempts'),
            ('pg_callback_dead_total', 'counter', 'Deliveries parked as dead letters.', 'dead'),
            ('pg_callback_pending', 'gauge', 'Deliveries waiting to be sent or in flight.', 'pending'),
            ('pg_callback_success_ratio', 'gauge', 'Share of attempts that succeeded (0 to 1).', 'success_rate'),
            ('pg_callback_latency_avg_ms', 'gauge', 'Average attempt latency in milliseconds.', 'avg_ms'),
            ('pg_callback_latency_max_ms', 'gauge', 'Longest attempt latency in milliseconds.', 'max_ms'),
            ('pg_callback_oldest_pending_seconds', 'gauge', 'Age of the oldest undelivered delivery in seconds.', 'oldest_pending_age')
        ) AS f(name, type, help, col)
    LOOP
        out := out || '# HELP ' || fam.name || ' ' || fam.help || E'\n'
                   || '# TYPE ' || fam.name || ' ' || fam.type || E'\n';
        FOR m IN
            SELECT mt.endpoint, mt.event_type,
                   CASE fam.col
                       WHEN 'total_calls' THEN mt.total_calls::numeric
                       WHEN 'delivered' THEN mt.delivered::numeric
                       WHEN 'failed_attempts' THEN mt.failed_attempts::numeric
                       WHEN 'dead' THEN mt.dead::numeric
                       WHEN 'pending' THEN mt.pending::numeric
                       WHEN 'success_rate' THEN round(mt.success_rate / 100, 4)
                       WHEN 'avg_ms' THEN mt.avg_ms
                       WHEN 'max_ms' THEN mt.max_ms
                       WHEN 'oldest_pending_age' THEN
                           coalesce(round(extract(epoch FROM mt.oldest_pending_age)::numeric, 3), 0)
                   END AS v
              FROM unnest(ms) mt
        LOOP
            CONTINUE WHEN m.v IS NULL;
            out := out || fam.name || '{endpoint="' || callback._prom_label(m.endpoint)
                       || '",event_type="' || callback._prom_label(m.event_type) || '"} '
                       || m.v::text || E'\n';
        END LOOP;
    END LOOP;

    out := out || E'# HELP pg_callback_latency_ms Attempt latency in milliseconds (quantiles estimated from a histogram).\n'
               || E'# TYPE pg_callback_latency_ms summary\n';
    FOR m IN
        SELECT mt.* FROM unnest(ms) mt WHERE mt.total_calls > 0
    LOOP
        out := out
            || 'pg_callback_latency_ms{endpoint="' || callback._prom_label(m.endpoint) || '",event_type="'
            || callback._prom_label(m.event_type) || '",quantile="0.5"} ' || m.p50_ms || E'\n'
            || 'pg_callback_latency_ms{endpoint="' || callback._prom_label(m.endpoint) || '",event_type="'
            || callback._prom_label(m.event_type) || '",quantile="0.95"} ' || m.p95_ms || E'\n'
            || 'pg_callback_latency_ms{endpoint="' || callback._prom_label(m.endpoint) || '",event_type="'
            || callback._prom_label(m.event_type) || '",quantile="0.99"} ' || m.p99_ms || E'\n'
            || 'pg_callback_latency_ms_sum{endpoint="' || callback._prom_label(m.endpoint) || '",event_type="'
            || callback._prom_label(m.event_type) || '"} ' || round(m.avg_ms * m.total_calls, 3) || E'\n'
            || 'pg_callback_latency_ms_count{endpoint="' || callback._prom_label(m.endpoint) || '",event_type="'
            || callback._prom_label(m.event_type) || '"} ' || m.total_calls || E'\n';
    END LOOP;

    out := out || E'# HELP pg_callback_health Endpoint health: 0 ok, 1 warn, 2 alert.\n'
               || E'# TYPE pg_callback_health gauge\n';
    FOR m IN SELECT h.endpoint, h.status FROM callback.callback_health h ORDER BY h.endpoint LOOP
        out := out || 'pg_callback_health{endpoint="' || callback._prom_label(m.endpoint) || '"} '
                   || CASE m.status WHEN 'ok' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END || E'\n';
    END LOOP;

    out := out || E'# HELP pg_callback_worker_inflight Requests in flight per delivery worker.\n'
               || E'# TYPE pg_callback_worker_inflight gauge\n';
    FOR m IN SELECT w.slot, w.inflight FROM callback.worker_stats() w ORDER BY w.slot LOOP
        out := out || 'pg_callback_worker_inflight{slot="' || m.slot || '"} ' || m.inflight || E'\n';
    END LOOP;
    out := out || E'# HELP pg_callback_worker_sent_total Attempts finished per delivery worker.\n'
               || E'# TYPE pg_callback_worker_sent_total counter\n';
    FOR m IN SELECT w.slot, w.sent FROM callback.worker_stats() w ORDER BY w.slot LOOP
        out := out || 'pg_callback_worker_sent_total{slot="' || m.slot || '"} ' || m.sent || E'\n';
    END LOOP;
    RETURN out;
END
$fn$;

/* ---------------------------------------------------------------- privileges */

REVOKE ALL ON FUNCTION
    callback.create_endpoint(text, text, text[], jsonb, interval, text, integer, interval[],
                             double precision, integer, integer, interval),
    callback._check_endpoint_args(text, text, text[], jsonb, interval, text, integer, interval[],
                                  double precision, integer, integer, interval),
    callback._endpoint_for_update(text),
    callback._check_secret_unused(text, integer),
    callback.alter_endpoint(text, text, text[], jsonb, interval, integer, interval[],
                            double precision, integer, integer, interval, boolean, boolean),
    callback.drop_endpoint(text, boolean),
    callback.pause_endpoint(text),
    callback.resume_endpoint(text),
    callback.rotate_secret(text, interval, text),
    callback.generate_secret(),
    callback.enqueue(text, jsonb),
    callback.trigger(),
    callback.wake_worker(),
    callback._redrive_where(text, anyelement),
    callback.redrive(bigint[]),
    callback.redrive(text),
    callback.redrive(timestamptz),
    callback.process_callbacks(integer),
    callback.purge(interval, integer)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    callback.create_endpoint(text, text, text[], jsonb, interval, text, integer, interval[],
                             double precision, integer, integer, interval),
    callback.alter_endpoint(text, text, text[], jsonb, interval, integer, interval[],
                            double precision, integer, integer, interval, boolean, boolean),
    callback.drop_endpoint(text, boolean),
    callback.pause_endpoint(text),
    callback.resume_endpoint(text),
    callback.rotate_secret(text, interval, text),
    callback.generate_secret(),
    callback.wake_worker(),
    callback.redrive(bigint[]),
    callback.redrive(text),
    callback.redrive(timestamptz),
    callback.process_callbacks(integer),
    callback.purge(interval, integer)
TO callback_admin;

GRANT EXECUTE ON FUNCTION callback.enqueue(text, jsonb), callback.trigger()
TO callback_producer;

GRANT SELECT ON callback.callback_dead_letters TO callback_admin, callback_monitor;

GRANT SELECT ON callback.callback_metrics, callback.callback_health TO callback_monitor;
REVOKE ALL ON FUNCTION callback.worker_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION callback.worker_stats() TO pg_monitor, callback_monitor;
GRANT SELECT ON callback.callback_worker_stats TO pg_monitor, callback_monitor;
REVOKE ALL ON FUNCTION callback.prometheus_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION callback.prometheus_metrics() TO pg_monitor, callback_monitor;
