/*
 * queue.h
 *		The SQL the delivery engine runs against callback_queue and
 *		callback_endpoints: saved plans, set-based, one statement per step.
 *		Every function here must be called inside a transaction.
 */
#ifndef PGCB_QUEUE_H
#define PGCB_QUEUE_H

#include "utils/hsearch.h"
#include "utils/uuid.h"

#include "delivery.h"

typedef struct PgcbClaimed
{
	int64		id;
	pg_uuid_t	event_id;
	int			endpoint_id;
	int			attempts;		/* attempts made before this claim */
	char	   *body;
	int			body_len;
} PgcbClaimed;

/* Whether the extension is installed; if so, it cannot be dropped before commit. */
extern bool pgcb_queue_extension_present(void);

/* Refresh the endpoint hash (keyed by id) from callback_endpoints. */
extern void pgcb_queue_load_endpoints(HTAB *endpoints, MemoryContext cfgcxt, TimestampTz *now);

/*
 * Claim up to counts[i] due deliveries of endpoint_ids[i] for lease_ms;
 * rows go to *out (palloc'd in cxt).
 */
extern int	pgcb_queue_claim(int n, const int *endpoint_ids, const int *counts, int claimed_by,
							 int lease_ms, PgcbClaimed **out, MemoryContext cxt);

/* Record n outcomes: queue rows, attempt history and per-minute stats, in one statement. */
extern void pgcb_queue_write_back(const PgcbOutcome *outcomes, int n);

/* Disable endpoints that answered 410. */
extern void pgcb_queue_disable_endpoints(const int *ids, int n);

/*
 * Persist circuit-breaker states: each only where the table still holds
 * seen[i] (0: NULL) as breaker_changed_at, so a resume_endpoint committed
 * since we last read the table is never overwritten.
 */
extern void pgcb_queue_write_breakers(const int *ids, const char *const *states,
									  const char *const *reasons, const TimestampTz *at,
									  const TimestampTz *seen, int n);

/* Put claimed-but-unfinished rows back: this claimer's (mine) and/or those whose lease expired. */
extern uint64 pgcb_queue_release(bool mine, int claimed_by, bool expired);

/* Make pending deliveries of dropped endpoints dead letters; returns how many. */
extern uint64 pgcb_queue_dead_letter_orphans(void);

#endif							/* PGCB_QUEUE_H */
