
/*
 * 30-breaker-resume: resume_endpoint always wins over the worker's breaker.
 *
 * The worker now writes a breaker state only where breaker_changed_at still
 * holds the value it last read or wrote, and adopts the table's state
 * whenever that value differs.  So a resume needs only to leave a value the
 * worker has not seen: the time it actually ran (not its transaction's
 * start, which may be older than the breaker's opening), and strictly after
 * whatever is there now.
 */
CREATE OR REPLACE FUNCTION callback.resume_endpoint(name text)
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
           breaker_changed_at = GREATEST(pg_catalog.clock_timestamp(),
                                    c.breaker_changed_at + interval '1 microsecond'),
           updated_at = pg_catalog.now()
     WHERE c.id OPERATOR(pg_catalog.=) e.id;
    PERFORM callback.wake_worker();
END
$fn$;
