/*
 * batch.h
 *		Batches: on an endpoint with batch_size above 1, several deliveries
 *		go out in one request, a JSON array of their bodies, signed once,
 *		with one webhook-id; the batch is retried as one.
 */
#ifndef PGCB_BATCH_H
#define PGCB_BATCH_H

#include "utils/hsearch.h"

#include "queue.h"

/* One delivery carried by a batch. */
typedef struct PgcbBatchMember
{
	int64		id;
	pg_uuid_t	event_id;
	ItemPointerData tid;		/* as PgcbClaimed's */
} PgcbBatchMember;

/* One request's worth of deliveries, claimed together. */
typedef struct PgcbBatch
{
	/*
	 * The batch as the engine sends one claimed row: its first delivery,
	 * the attempts made before (the same for every member), the body.
	 */
	PgcbClaimed head;
	int			n;
	PgcbBatchMember *members;	/* in the body's order */
	char		msg_id[40];		/* webhook-id */
	char	   *ids_header;		/* "webhook-event-ids: msg_...,msg_..." */
} PgcbBatch;

/*
 * Before a claim: hold the endpoints whose partial batch may still wait
 * (batch_window), setting ep->batch_held; returns when the first of them
 * must go anyway (0: none held).
 */
extern TimestampTz pgcb_batch_hold(HTAB *endpoints, TimestampTz now);

/*
 * Claim up to counts[i] batches of at most sizes[i] due deliveries of
 * endpoint_ids[i] for lease_ms (a batch sent before comes back whole);
 * batches go to *out, in cxt.  Returns the number of batches.
 */
extern int	pgcb_batch_claim(int n, const int *endpoint_ids, const int *counts, const int *sizes,
							 int claimed_by, int lease_ms, PgcbBatch **out, MemoryContext cxt);

/* Free what pgcb_batch_claim() allocated for one batch (not the array). */
extern void pgcb_batch_free(PgcbBatch *b);

#endif							/* PGCB_BATCH_H */
