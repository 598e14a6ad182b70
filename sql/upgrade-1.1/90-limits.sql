
/*
 * 90-limits.sql: bounds on what an administrator may configure, secrets kept
 * out of the log's STATEMENT line, and histogram_sum() public again.
 *
 * 1. _check_endpoint_args() (create_endpoint and alter_endpoint) bounds the
 *    rate limit from below as well: 1e-300 per second passed "> 0", and the
 *    worker's wait for the next token overflowed into a busy loop.  It also
 *    bounds the sizes: at most 100 event type patterns, 50 headers of at
 *    most 8 kB together, 50 retry delays (the worker loads every endpoint
 *    into memory and scans the patterns for each event).
 * 2. An error inside create_endpoint, alter_endpoint or rotate_secret (a bad
 *    name, max_attempts 1000, a duplicate) had the server log the calling
 *    statement with log_min_error_statement, URL tokens, header values and
 *    secrets included.  A SET clause on the function holds while the error
 *    is reported (the setting is restored only when the transaction aborts,
 *    after the log line is written), so panic there hides the STATEMENT line
 *    of any error raised inside.  (These functions are SECURITY DEFINER and
 *    owned by a superuser: the superuser-only setting applies for every
 *    caller.)
 * 3. callback_metrics calls histogram_sum() as the querying role.  1.0 let
 *    PUBLIC execute it and part 20 took that away, so a role given SELECT on
 *    callback_metrics directly (not through callback_monitor) failed with
 *    "permission denied for aggregate histogram_sum" after the upgrade.  Its
 *    input is checked now (part 20), it is a pure function: PUBLIC again,
 *    USAGE on the schema still gates it.
 */

/* ---------------------------------------------------------------- 1. bounds */

CREATE OR REPLACE FUNCTION callback._check_endpoint_args(
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
    IF cardinality(event_types) > 100 THEN
        RAISE EXCEPTION 'too many event type patterns (%)', cardinality(event_types)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Give at most 100 patterns; a pattern such as ''order.*'' matches many types.';
    END IF;
    PERFORM callback.validate_event_types(event_types);
    IF headers IS NOT NULL THEN
        -- counted before they are looked at; sizes only, never the values
        IF jsonb_typeof(headers) = 'object' AND (SELECT count(*) FROM jsonb_object_keys(headers)) > 50 THEN
            RAISE EXCEPTION 'too many headers (%)', (SELECT count(*) FROM jsonb_object_keys(headers))
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Give at most 50 headers.';
        END IF;
        IF octet_length(headers::text) > 8192 THEN
            RAISE EXCEPTION 'headers are too large (% bytes)', octet_length(headers::text)
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Give at most 8 kB of header names and values together.';
        END IF;
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
    IF cardinality(retry_schedule) > 50 THEN
        RAISE EXCEPTION 'too many retry delays (%)', cardinality(retry_schedule)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Give at most 50 delays; the last one repeats for the attempts after it.';
    END IF;
    IF retry_schedule IS NOT NULL AND (
           cardinality(retry_schedule) = 0
           OR EXISTS (SELECT 1 FROM unnest(retry_schedule) d
                      WHERE d IS NULL OR d < '0' OR d > '7 days')) THEN
        RAISE EXCEPTION 'invalid retry_schedule %', retry_schedule
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give one or more delays between 0 and 7 days, such as ''{5 seconds,5 minutes,30 minutes}''.';
    END IF;
    -- NaN and infinities fail both comparisons
    IF rate_limit IS NOT NULL AND NOT (rate_limit >= 0.001 AND rate_limit <= 1000000) THEN
        RAISE EXCEPTION 'rate_limit % is out of range', rate_limit
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give requests per second between 0.001 (one every 1000 seconds) and 1000000, or NULL for no limit.';
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

/* ---------------------------------------------------------------- 2. the log */

ALTER FUNCTION callback.create_endpoint(text, text, text[], jsonb, interval, text, integer,
                                        interval[], double precision, integer, integer, interval)
    SET log_min_error_statement = panic;
ALTER FUNCTION callback.alter_endpoint(text, text, text[], jsonb, interval, integer, interval[],
                                       double precision, integer, integer, interval, boolean, boolean)
    SET log_min_error_statement = panic;
ALTER FUNCTION callback.rotate_secret(text, interval, text)
    SET log_min_error_statement = panic;

/* ---------------------------------------------------------------- 3. histogram_sum */

GRANT EXECUTE ON FUNCTION callback.histogram_sum(bigint[]) TO PUBLIC;
