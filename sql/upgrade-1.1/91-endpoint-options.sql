/*
 * 91-endpoint-options: the columns and arguments of the 1.1 endpoint options
 * and event attributes, defined once so that each feature only fills in
 * its behaviour:
 *
 *   endpoint: ordered (per-key ordering), transform and on_response (SQL
 *   hooks, run as the endpoint's owner), batch_size and batch_window
 *   (several events per request), owner (the role that created it);
 *   queue row: ordering_key, traceparent, tracestate;
 *   enqueue(event_type, payload, key, traceparent, tracestate).
 *
 * create_endpoint and alter_endpoint keep their 1.0 arguments in place and
 * take the new ones after them, so that calls by position still work.
 */

ALTER TABLE callback.callback_endpoints
    ADD COLUMN ordered boolean NOT NULL DEFAULT false,
    ADD COLUMN transform text,
    ADD COLUMN on_response text,
    ADD COLUMN batch_size integer NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 1000),
    ADD COLUMN batch_window interval NOT NULL DEFAULT '0'
        CHECK (batch_window >= '0' AND batch_window <= '1 hour'),
    ADD COLUMN owner name;
COMMENT ON COLUMN callback.callback_endpoints.owner IS
    'The role that created the endpoint (outside any SECURITY DEFINER function); its hooks run as this role.';

ALTER TABLE callback.callback_queue
    ADD COLUMN ordering_key text,
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;

/* The role calling, as SET ROLE left it, whatever SECURITY DEFINER functions are between. */
CREATE FUNCTION callback._calling_role()
RETURNS name
AS 'MODULE_PATHNAME', 'pgcb_calling_role'
LANGUAGE C STABLE STRICT;

/*
 * Checks of the 1.1 options; NULL means "not given".  Each feature's own
 * checks are its own function, so that the features stay apart.
 */
CREATE FUNCTION callback._check_endpoint_options(
    ordered boolean, transform text, on_response text, batch_size integer, batch_window interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF batch_size IS NOT NULL AND (batch_size < 1 OR batch_size > 1000) THEN
        RAISE EXCEPTION 'batch_size % is out of range', batch_size
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give between 1 (one event per request) and 1000 events per request.';
    END IF;
    IF batch_window IS NOT NULL AND (batch_window < '0' OR batch_window > '1 hour'
                                     OR NOT isfinite(batch_window)) THEN
        RAISE EXCEPTION 'batch_window % is out of range', batch_window
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give how long a batch may wait to fill, between 0 and 1 hour.';
    END IF;
    PERFORM callback._check_ordered(ordered);
    IF ordered AND batch_size > 1 THEN
        RAISE EXCEPTION 'an ordered endpoint takes one event per request'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave batch_size at 1 for an ordered endpoint, or make it unordered.';
    END IF;
    PERFORM callback._check_hook('transform', transform);
    PERFORM callback._check_hook('on_response', on_response);
    PERFORM callback._check_batch(batch_size, batch_window);
END
$fn$;

/*
 * _check_ordered (part 97), _check_hook (part 93) and _check_batch (part 94)
 * are each feature's own checks, defined with the feature.
 */

DROP FUNCTION callback.create_endpoint(text, text, text[], jsonb, interval, text, integer,
                                       interval[], double precision, integer, integer, interval);
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
    breaker_cooldown interval DEFAULT '30 seconds',
    ordered boolean DEFAULT false,
    transform text DEFAULT NULL,
    on_response text DEFAULT NULL,
    batch_size integer DEFAULT 1,
    batch_window interval DEFAULT '0')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
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
                                     ('breaker_cooldown', breaker_cooldown IS NULL),
                                     ('ordered', ordered IS NULL),
                                     ('batch_size', batch_size IS NULL),
                                     ('batch_window', batch_window IS NULL)) a(arg, is_null)
               WHERE a.is_null LOOP
        RAISE EXCEPTION '% must not be NULL', arg.arg
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave the argument out to get its default.';
    END LOOP;
    PERFORM callback._check_endpoint_args(name, url, event_types, headers, timeout, secret,
                                          max_attempts, retry_schedule, rate_limit, rate_burst,
                                          failure_threshold, breaker_cooldown);
    PERFORM callback._check_endpoint_options(ordered, transform, on_response, batch_size, batch_window);
    IF EXISTS (SELECT 1 FROM callback.callback_endpoints e WHERE e.name = create_endpoint.name) THEN
        RAISE EXCEPTION 'endpoint "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Use callback.alter_endpoint() to change it, or pick another name.';
    END IF;
    PERFORM callback._check_secret_unused(secret, NULL);
    INSERT INTO callback.callback_endpoints
        (name, url, event_types, headers, timeout_ms, secret, max_attempts, retry_schedule,
         rate_limit, rate_burst, failure_threshold, breaker_cooldown,
         ordered, transform, on_response, batch_size, batch_window, owner)
    VALUES (name, url, event_types, headers,
            (extract(epoch FROM timeout) * 1000)::integer,
            coalesce(secret, callback.generate_secret()), max_attempts, retry_schedule,
            rate_limit, coalesce(rate_burst, CASE WHEN rate_limit IS NOT NULL
                                                   THEN greatest(1, ceil(rate_limit))::integer END),
            failure_threshold, breaker_cooldown,
            ordered, transform, on_response, batch_size, batch_window, callback._calling_role())
    RETURNING id INTO new_id;
    RETURN new_id;
END
$fn$;

DROP FUNCTION callback.alter_endpoint(text, text, text[], jsonb, interval, integer, interval[],
                                      double precision, integer, integer, interval, boolean, boolean);
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
    remove_rate_limit boolean DEFAULT false,
    ordered boolean DEFAULT NULL,
    transform text DEFAULT NULL,
    on_response text DEFAULT NULL,
    batch_size integer DEFAULT NULL,
    batch_window interval DEFAULT NULL,
    remove_transform boolean DEFAULT false,
    remove_on_response boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $fn$
DECLARE
    e callback.callback_endpoints;
BEGIN
    e := callback._endpoint_for_update(name);
    PERFORM callback._check_endpoint_args(NULL, url, event_types, headers, timeout, NULL,
                                          max_attempts, retry_schedule, rate_limit, rate_burst,
                                          failure_threshold, breaker_cooldown);
    -- the options as they will be: they are checked together
    PERFORM callback._check_endpoint_options(coalesce(ordered, e.ordered), transform, on_response,
                                             coalesce(batch_size, e.batch_size),
                                             coalesce(batch_window, e.batch_window));
    /*
     * Hooks run as the endpoint's owner: only the owner (or a member of
     * it) may change them, or another admin could have his function run
     * with the owner's rights; nor point an endpoint with hooks elsewhere,
     * or he would receive what the owner's transform computed.  An
     * endpoint without an owner (made by 1.0) gets the caller as its owner
     * with its first hook.
     */
    IF (alter_endpoint.transform IS NOT NULL OR alter_endpoint.on_response IS NOT NULL
        OR remove_transform OR remove_on_response
        OR (alter_endpoint.url IS NOT NULL AND (e.transform IS NOT NULL OR e.on_response IS NOT NULL)))
       AND e.owner IS NOT NULL
       AND NOT pg_has_role(callback._calling_role(), e.owner, 'MEMBER') THEN
        RAISE EXCEPTION 'only the owner of endpoint "%" may change its hooks or, while it has some, its URL', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Its transform and on_response functions run as its owner, %I.', e.owner),
                  HINT = format('SET ROLE %I first (as a member of it), or create an endpoint of your own.', e.owner);
    END IF;
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
        ordered = coalesce(alter_endpoint.ordered, c.ordered),
        transform = CASE WHEN remove_transform THEN NULL
                         ELSE coalesce(alter_endpoint.transform, c.transform) END,
        on_response = CASE WHEN remove_on_response THEN NULL
                           ELSE coalesce(alter_endpoint.on_response, c.on_response) END,
        batch_size = coalesce(alter_endpoint.batch_size, c.batch_size),
        batch_window = coalesce(alter_endpoint.batch_window, c.batch_window),
        owner = CASE WHEN c.owner IS NULL AND (alter_endpoint.transform IS NOT NULL
                                               OR alter_endpoint.on_response IS NOT NULL)
                     THEN callback._calling_role() ELSE c.owner END,
        updated_at = now()
    WHERE c.id = e.id;
END
$fn$;

DROP FUNCTION callback.enqueue(text, jsonb);
/*
 * Queue an event.  key: the ordering key (ordered endpoints deliver one
 * event per key at a time, in commit order); traceparent / tracestate: the
 * W3C trace context that every attempt sends on.
 */
CREATE FUNCTION callback.enqueue(event_type text, payload jsonb, key text DEFAULT NULL,
                                 traceparent text DEFAULT NULL, tracestate text DEFAULT NULL)
RETURNS uuid
AS 'MODULE_PATHNAME', 'enqueue'
LANGUAGE C VOLATILE;

/* The monitor reads the new options (none of them is a secret); see part 50. */
GRANT SELECT (ordered, transform, on_response, batch_size, batch_window, owner)
    ON callback.callback_endpoints TO callback_monitor;
GRANT SELECT (ordering_key, traceparent, tracestate)
    ON callback.callback_queue TO callback_monitor;
