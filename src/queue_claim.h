/*
 * queue_claim.h
 *		The pieces of the C claim (queue_claim.c) that the batch claim
 *		(batch_claim.c) shares: the queue's shape as the catalog gives it,
 *		one claim's run (relation, snapshot, statement, scan of
 *		callback_queue_due, slots), the lock and recheck of a due row, and
 *		the write of its claimed version.
 */
#ifndef PGCB_QUEUE_CLAIM_H
#define PGCB_QUEUE_CLAIM_H

#include "access/genam.h"

#include "queue.h"
#include "queue_rows.h"
#include "session.h"

/* Per backend: what the catalog says about the queue. */
typedef struct PgcbClaimShape
{
	bool		valid;
	Oid			relid;
	Oid			due_index;
	AttrNumber	att_id;
	AttrNumber	att_event_id;
	AttrNumber	att_endpoint_id;
	AttrNumber	att_event_type;
	AttrNumber	att_body;
	AttrNumber	att_status;
	AttrNumber	att_attempts;
	AttrNumber	att_next_attempt_at;
	AttrNumber	att_lease_expires_at;
	AttrNumber	att_claimed_by;
	AttrNumber	att_traceparent;
	AttrNumber	att_tracestate;
	Datum		status_pending;
	Datum		status_sending;
	/* batches (1.1's batch_id and its index): looked up by the batch claim only */
	bool		batch_valid;
	AttrNumber	att_batch_id;
	bool		batch_index_known;	/* batch_index looked up (InvalidOid: none usable) */
	Oid			batch_index;
} PgcbClaimShape;

/* Per call: what the rows are written with. */
typedef struct PgcbClaimRun
{
	const PgcbClaimShape *shape;
	PgcbSession session;
	Relation	rel;
	Relation	index;			/* callback_queue_due */
	IndexScanDesc scan;			/* of it, rescanned per endpoint */
	PgcbRowsStatement stmt;		/* the statement's executor state and triggers */
	Snapshot	snapshot;
	TimestampTz now;
	Datum		lease_expires_at;
	int32		claimed_by;
	bool		batch;			/* batch_id is written too */
	TupleTableSlot *scanslot;	/* the version an index scan saw */
	TupleTableSlot *lockslot;	/* the version locked (the last one) */
	TupleTableSlot *newslot;	/* the version written */
	MemoryContext row_cxt;		/* reset per row */
} PgcbClaimRun;

/*
 * Begin a claim as a statement would: as the extension's owner, the queue
 * locked, then the snapshot taken; batch: the batch claim (batch_id is
 * written, the shape's batch part is looked up).
 */
extern void pgcb_claim_begin(PgcbClaimRun *run, int claimed_by, int lease_ms, bool batch);
extern void pgcb_claim_end(PgcbClaimRun *run);

/* Start the due scan of one endpoint: its open rows due now, oldest first. */
extern void pgcb_claim_scan_due(PgcbClaimRun *run, int endpoint_id);

/*
 * Lock the row at *tid as FOR UPDATE SKIP LOCKED does: true with its last
 * version in run->lockslot.
 */
extern bool pgcb_claim_lock(PgcbClaimRun *run, ItemPointer tid);
/* Whether the version the scan gave (scanslot) is pending: worth a lock. */
extern bool pgcb_claim_seen_pending(PgcbClaimRun *run);

/* The locked version is still the endpoint's, pending and due. */
extern bool pgcb_claim_still_due(PgcbClaimRun *run, int endpoint_id);

/*
 * Write the claimed version of the row in run->lockslot (with batch_id
 * when run->batch), note it in *c (and *batch_id, *batch_null: what was
 * written); false when a BEFORE trigger skipped it.
 */
extern bool pgcb_claim_write(PgcbClaimRun *run, const pg_uuid_t *new_batch_id, PgcbClaimed *c,
							 pg_uuid_t *batch_id, bool *batch_null, MemoryContext cxt);

/* The batch index callback_queue_batch, valid and ready; InvalidOid when none. */
extern Oid	pgcb_claim_batch_index(PgcbClaimRun *run);

/* Between rows: the row's slots and memory freed. */
extern void pgcb_claim_next_row(PgcbClaimRun *run);

#endif							/* PGCB_QUEUE_CLAIM_H */
