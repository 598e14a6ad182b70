/*
 * attempt_history.c
 *		Which attempts leave a callback_attempts row (callback.attempt_history).
 *
 * 'all' (the default) keeps every attempt.  'failures' leaves out the row of
 * a delivery delivered at its first attempt: the common case, and the one
 * that tells nothing the queue row and the per-minute rollup do not, while
 * its heap tuple and two index entries were about a tenth of the worker's
 * instructions per delivery (bench part 9).  callback_stats is
 * written for every attempt either way, so callback_metrics,
 * callback_health and prometheus_metrics() stay exact.
 *
 * Kept under 'failures', as something an operator must be able to see:
 *	- every failed attempt: a retry, a dead letter, a failed transform;
 *	- a success after earlier attempts (a retry, or a redriven dead letter,
 *	  which starts again at attempt 1 but keeps its last attempt's time), so
 *	  a delivery's history is whole or absent, never cut;
 *	- a success that carries an error;
 *	- a success whose on_response hook failed: known only after the
 *	  write-back, so its row is written with the hook_error (queue.c,
 *	  PLAN_HOOK_ERROR).
 */
#include "postgres.h"

#include "attempt_history.h"
#include "guc.h"

bool
pgcb_attempt_history_keeps(bool delivered, int attempt, bool attempted_before, const char *error)
{
	if (pgcb_attempt_history == PGCB_ATTEMPT_HISTORY_ALL)
		return true;
	return !delivered || attempt > 1 || attempted_before || error != NULL;
}
