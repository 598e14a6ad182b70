
/*
 * 94-batches: several events per request (issue 12.3).  An endpoint with
 * batch_size above 1 gets up to batch_size events in one POST, a JSON array
 * of their bodies; batch_window lets a partial batch wait to fill.
 *
 * A queue row claimed into a batch keeps the batch's id: a retry, a lease
 * that ran out or a restart sends the same rows together again, with the
 * same webhook-id (src/batch.c).
 */

ALTER TABLE callback.callback_queue ADD COLUMN batch_id uuid;
COMMENT ON COLUMN callback.callback_queue.batch_id IS
    'The batch (one request) this delivery went out in, on an endpoint with batch_size above 1; retries send the batch again as one.';

/*
 * The claim takes a batch's pending rows together (src/batch.c).  Open rows
 * (finished_at IS NULL), not 'pending' ones: no index may name status
 * (part 98); the claim rechecks the status of each row.
 */
CREATE INDEX callback_queue_batch ON callback.callback_queue (batch_id)
    WHERE batch_id IS NOT NULL AND finished_at IS NULL;

GRANT SELECT (batch_id) ON callback.callback_queue TO callback_monitor;

/*
 * What is left to check once sizes and windows are in range (part 91): a
 * window only holds batches, so a window on a one-event endpoint is a
 * mistake.  NULL: not given (alter_endpoint keeps the value).
 */
CREATE OR REPLACE FUNCTION callback._check_batch(batch_size integer, batch_window interval)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF batch_size = 1 AND batch_window > '0' THEN
        RAISE EXCEPTION 'batch_window % needs batch_size above 1', batch_window
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give batch_size => N (events per request) with the window, or leave batch_window out.';
    END IF;
END
$fn$;
