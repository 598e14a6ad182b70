/*
 * endpoint.h
 *		The records the delivery engine (delivery.c) and its SQL layer
 *		(queue.c, queue_write_back.c) share: an endpoint as the engine sees
 *		it, which the layer loads, and the outcome of an attempt, which the
 *		layer writes back.  Below both, so that neither borrows the other's
 *		types.
 */
#ifndef PGCB_ENDPOINT_H
#define PGCB_ENDPOINT_H

#include "storage/itemptr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "sign.h"

/* An endpoint as the engine sees it: configuration plus live state. */
typedef struct PgcbEndpoint
{
	int			id;				/* hash key */

	/* configuration, reloaded at every claim (strings in the config context) */
	char	   *name;
	char	   *url;
	char	  **headers;		/* "Name: value" */
	int			n_headers;
	int			timeout_ms;
	int			max_attempts;
	int64	   *schedule_ms;
	int			n_schedule;
	double		rate;			/* <= 0: unlimited */
	int			burst;
	int			failure_threshold;
	int64		cooldown_ms;
	bool		active;			/* enabled and not paused */
	bool		ordered;		/* one event per ordering key at a time */
	char	   *transform;		/* hooks (hooks.c), "schema.name"; NULL: none */
	char	   *on_response;
	char	   *owner;			/* the role hooks run as */
	PgcbKey		key;
	bool		has_previous_key;
	PgcbKey		previous_key;
	TimestampTz next_due;		/* earliest pending next_attempt_at, 0: none */
	/* batches: deliveries per request (1: none), window (batch.c) */
	int			batch_size;
	int64		batch_window_ms;
	bool		batch_held;		/* a partial batch waits for its window */
	bool		seen;			/* present in the latest load */

	/* live state, kept across reloads */
	int			inflight;
	int			consecutive_failures;
	char		breaker;		/* 'c'losed, 'o'pen, 'h'alf-open */
	TimestampTz breaker_changed_at;
	bool		breaker_dirty;	/* changed since last written to the table */
	/* breaker_changed_at in the table as we last read or wrote it */
	TimestampTz breaker_table_at;
	const char *breaker_reason;
	bool		gone;			/* answered 410: disable at next write-back */
	TimestampTz hold_until;		/* a 429 (or 503 with Retry-After) holds the endpoint */

	/* several workers: the shared state as last synced (epshare.c) */
	uint64		share_gen;
	TimestampTz share_table_at;
} PgcbEndpoint;

/* What one finished attempt left behind, waiting for the write-back. */
typedef struct PgcbOutcome
{
	int64		delivery_id;
	pg_uuid_t	event_id;		/* with the id: the row claimed, not one reusing its id */
	ItemPointerData tid;		/* the version the claim wrote: where the write-back
								 * looks first; invalid: unknown */
	int			endpoint_id;
	int			status_code;	/* 0: no response */
	char	   *error;			/* NULL when delivered */
	double		latency_ms;
	const char *verdict;		/* "delivered", "pending" (retry) or "dead" */
	TimestampTz next_attempt_at;	/* for a retry */
	TimestampTz started_at;
	char	   *response_body;
	char	   *response_headers;	/* JSON object, only for an on_response hook */
} PgcbOutcome;

#endif							/* PGCB_ENDPOINT_H */
