/*
 * queue.h
 *		The SQL the delivery engine runs against callback_queue and
 *		callback_endpoints: saved plans, set-based, one statement per step.
 *		Every function here must be called inside a transaction.
 */
#ifndef PGCB_QUEUE_H
#define PGCB_QUEUE_H

#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/uuid.h"

#include "endpoint.h"

typedef struct PgcbClaimed
{
	int64		id;
	pg_uuid_t	event_id;
	ItemPointerData tid;		/* the version the claim wrote; invalid: unknown */
	int			endpoint_id;
	int			attempts;		/* attempts made before this claim */
	char	   *body;
	int			body_len;
	char	   *traceparent;	/* W3C trace context, NULL when none */
	char	   *tracestate;
	char	   *event_type;		/* the routing key of amqp endpoints */
} PgcbClaimed;

/* Whether the extension is installed; if so, it cannot be dropped before commit. */
extern bool pgcb_queue_extension_present(void);

/* Refresh the endpoint hash (keyed by id) from callback_endpoints. */
extern void pgcb_queue_load_endpoints(HTAB *endpoints, MemoryContext cfgcxt, TimestampTz *now);

/*
 * Claim up to counts[i] due deliveries of endpoint_ids[i] for lease_ms;
 * rows go to *out (palloc'd in cxt).  In queue_claim.c.
 */
extern int	pgcb_queue_claim(int n, const int *endpoint_ids, const int *counts, int claimed_by,
							 int lease_ms, PgcbClaimed **out, MemoryContext cxt);

/*
 * ordering: claim up to n due deliveries of ordered endpoint endpoint_id,
 * each the oldest open one of its ordering key (rows without a key: any).
 * *next_due: when a head of a key that waits for a retry is due (0: none).
 */
extern int	pgcb_queue_claim_ordered(int endpoint_id, int n, int claimed_by, int lease_ms,
									 PgcbClaimed **out, MemoryContext cxt, TimestampTz *next_due);

/*
 * The worker (skip = true) never waits on a row lock held by someone else:
 * the writes below then skip such rows and say so, for the caller to try
 * again later.  process_callbacks() (skip = false) waits, as before.
 */
extern void pgcb_queue_set_skip_locked(bool skip);
extern bool pgcb_queue_skip_locked(void);

/*
 * batches: run a step (SPI work of the cycle) as this file's are run: in
 * the worker in a subtransaction with a short lock_timeout; false when a
 * lock was not granted in time and the step was undone.
 */
extern bool pgcb_queue_run_step(void (*step) (void *), void *arg);

/*
 * The inbox's move: a step whose failure is its own.  As
 * pgcb_queue_run_step, but always in a subtransaction (in
 * process_callbacks() too), and an error other than a lock timeout, a
 * cancel or a shutdown is handed back in *error (palloc'd; NULL on a lock
 * timeout), the step undone, rather than thrown on.
 */
extern bool pgcb_queue_try_step(void (*step) (void *), void *arg, ErrorData **error);

/* batches: an int[] argument of a statement, palloc'd */
extern ArrayType *pgcb_queue_int4_array(const int *v, int n);

/*
 * Record n outcomes: queue rows and attempt history (queue_write_back.c).
 * Outcomes whose row someone else holds are flagged in kept[] (all of them
 * when a lock timed out) and counted in the result: keep them for later.
 * final[i]: for an outcome written as final (delivered or dead), its
 * attempt number and whether its callback_attempts row was written
 * (callback.attempt_history); attempt 0 for the others.
 * The per-minute stats rollup of what was written is returned in *stats
 * (jsonb text in cxt, NULL if none), for pgcb_queue_write_stats().
 */
typedef struct PgcbFinalAttempt
{
	int32		attempt;
	bool		row_written;
} PgcbFinalAttempt;

extern int	pgcb_queue_write_back(const PgcbOutcome *outcomes, int n, bool *kept,
								  PgcbFinalAttempt *final, char **stats, MemoryContext cxt);

/*
 * Add stats rollups (oldest first) into callback_stats.  False: a lock
 * timed out and nothing was added.  True: added, but for the rollup left
 * in *rest (NULL if none; its rows are held by someone else).
 */
extern bool pgcb_queue_write_stats(char *const *docs, int n, char **rest, MemoryContext cxt);

/* Disable endpoints that answered 410; done[i]: dealt with. */
extern void pgcb_queue_disable_endpoints(const int *ids, int n, bool *done);

/*
 * Persist circuit-breaker states: each only where the table still holds
 * seen[i] (0: NULL) as breaker_changed_at, so a resume_endpoint committed
 * since we last read the table is never overwritten.  done[i]: written, or
 * left to such a resume; the others are to be written again later.
 */
extern void pgcb_queue_write_breakers(const int *ids, const char *const *states,
									  const char *const *reasons, const TimestampTz *at,
									  const TimestampTz *seen, int n, bool *done);

/*
 * Put claimed-but-unfinished rows back; never keep[] (whose outcome we hold,
 * not yet written).  mine: this claimer's, and with expired those whose
 * lease ran out, reading every undelivered row (at a start).  Else, with
 * expired: those whose lease ran out, of the endpoints enabled and not
 * paused and of those whose row is gone.
 */
extern uint64 pgcb_queue_release(bool mine, int claimed_by, bool expired,
								 const int64 *keep, int n_keep);

/* Make pending deliveries of dropped endpoints dead letters; returns how many. */
extern uint64 pgcb_queue_dead_letter_orphans(void);

/* The event body of a delivery (for on_response), NULL if it is gone. */
extern char *pgcb_queue_event_body(int64 delivery_id);

/*
 * Note an on_response failure on the attempt (outcome o, number attempt) it
 * ran after; that attempt's row is written if callback.attempt_history
 * left it out.
 */
extern void pgcb_queue_record_hook_error(const PgcbOutcome *o, const PgcbFinalAttempt *final,
										 const char *error);

#endif							/* PGCB_QUEUE_H */
