/*
 * batch_claim.h
 *		The claim of batch endpoints in C (batch_claim.c), for batch.c.
 */
#ifndef PGCB_BATCH_CLAIM_H
#define PGCB_BATCH_CLAIM_H

#include "queue.h"

/* One delivery claimed for a batch, with the batch it now belongs to. */
typedef struct PgcbBatchRow
{
	PgcbClaimed c;				/* no trace context or event type */
	pg_uuid_t	batch_id;
	bool		batch_null;		/* a BEFORE trigger wrote batch_id NULL */
} PgcbBatchRow;

/*
 * Claim up to counts[i] batches of at most sizes[i] due deliveries of
 * endpoint_ids[i] for lease_ms, as a step of the cycle; *out (in cxt)
 * gets the rows claimed, in the order of their ids.  Returns how many.
 */
extern int	pgcb_batch_claim_rows(int n, const int *endpoint_ids, const int *counts,
								  const int *sizes, int claimed_by, int lease_ms,
								  PgcbBatchRow **out, MemoryContext cxt);

#endif							/* PGCB_BATCH_CLAIM_H */
