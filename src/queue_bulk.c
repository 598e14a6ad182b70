/*
 * queue_bulk.c
 *		Buffered multi-insert: tuples of one relation collected in a small
 *		set of slots and written with table_multi_insert, which locks each
 *		heap page once and writes one WAL record per page instead of per
 *		row (the way COPY FROM writes, learnt from its multi-insert buffers).
 *		What a row needs after its heap insert (the queue's index entries)
 *		is the caller's callback, run per tuple right after the heap write:
 *		this file knows nothing of the queue's shape.
 *
 * The bounds keep memory small whatever the statement's size: at most
 * PGCB_BULK_MAX_TUPLES tuples or PGCB_BULK_MAX_BYTES of their data, then a
 * flush.  Slots are made once and reused across flushes (a BufferHeapTuple
 * slot per tuple, as the table AM wants them, so that the heap tuple the
 * slot forms is the one inserted, with no extra copy).
 */
#include "postgres.h"

#include "access/tableam.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "queue_bulk.h"

/* COPY's bounds: enough to fill pages, small enough to stay in cache. */
#define PGCB_BULK_MAX_TUPLES 1000
#define PGCB_BULK_MAX_BYTES (64 * 1024)

struct PgcbBulk
{
	Relation	rel;
	MemoryContext cxt;			/* where the slots live ... */
	ResourceOwner owner;		/* ... and who pins their descriptor */
	MemoryContext flush_cxt;	/* what a flush allocates (toasted copies ...) */
	PgcbBulkAfterInsert after;
	void	   *after_arg;
	TupleTableSlot **slots;		/* [PGCB_BULK_MAX_TUPLES], made on demand */
	int			nslots_made;
	int			nused;			/* tuples buffered: slots[0 .. nused) */
	Size		bytes;			/* their data, roughly */
};

PgcbBulk *
pgcb_bulk_create(Relation rel, PgcbBulkAfterInsert after, void *arg)
{
	PgcbBulk   *b = palloc0(sizeof(PgcbBulk));

	b->rel = rel;
	b->cxt = CurrentMemoryContext;
	b->owner = CurrentResourceOwner;
	b->flush_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback bulk flush",
										 ALLOCSET_DEFAULT_SIZES);
	b->after = after;
	b->after_arg = arg;
	b->slots = palloc0(sizeof(TupleTableSlot *) * PGCB_BULK_MAX_TUPLES);
	return b;
}

TupleTableSlot *
pgcb_bulk_next_slot(PgcbBulk *b, CommandId cid)
{
	if (b->nused >= PGCB_BULK_MAX_TUPLES || b->bytes >= PGCB_BULK_MAX_BYTES)
		pgcb_bulk_flush(b, cid);
	if (b->nused == b->nslots_made)
	{
		MemoryContext old = MemoryContextSwitchTo(b->cxt);
		ResourceOwner save_owner = CurrentResourceOwner;

		CurrentResourceOwner = b->owner;
		PG_TRY();
		{
			b->slots[b->nslots_made] = table_slot_create(b->rel, NULL);
		}
		PG_FINALLY();
		{
			CurrentResourceOwner = save_owner;
			MemoryContextSwitchTo(old);
		}
		PG_END_TRY();
		b->nslots_made++;
	}
	ExecClearTuple(b->slots[b->nused]);
	return b->slots[b->nused];
}

void
pgcb_bulk_added(PgcbBulk *b, Size bytes)
{
	/* the heap tuple formed now, in the slot's memory: the caller may free its datums */
	ExecMaterializeSlot(b->slots[b->nused]);
	b->nused++;
	b->bytes += bytes;
}

void
pgcb_bulk_flush(PgcbBulk *b, CommandId cid)
{
	int			n = b->nused;
	MemoryContext old;

	if (n == 0)
		return;

	/*
	 * Counted as written before writing: an error in between leaves the
	 * buffer empty, and the (sub)transaction's abort undoes what was
	 * written.
	 */
	b->nused = 0;
	b->bytes = 0;
	old = MemoryContextSwitchTo(b->flush_cxt);
	table_multi_insert(b->rel, b->slots, n, cid, 0, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextReset(b->flush_cxt);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		b->after(b->slots[i], b->after_arg);
		ExecClearTuple(b->slots[i]);
	}
}

void
pgcb_bulk_discard(PgcbBulk *b)
{
	for (int i = 0; i < b->nused; i++)
		ExecClearTuple(b->slots[i]);
	b->nused = 0;
	b->bytes = 0;
}

int
pgcb_bulk_pending(const PgcbBulk *b)
{
	return b->nused;
}

void
pgcb_bulk_free(PgcbBulk *b)
{
	ResourceOwner save_owner = CurrentResourceOwner;

	Assert(b->nused == 0);
	CurrentResourceOwner = b->owner;
	for (int i = 0; i < b->nslots_made; i++)
		ExecDropSingleTupleTableSlot(b->slots[i]);
	CurrentResourceOwner = save_owner;
	MemoryContextDelete(b->flush_cxt);
	pfree(b->slots);
	pfree(b);
}
