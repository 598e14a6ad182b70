/*
 * queue_bulk.c
 *		Buffered multi-insert: rows of one relation collected in a small set
 *		of slots and written with table_multi_insert, which locks each heap
 *		page once and writes one WAL record per page instead of per row
 *		(the way COPY FROM writes, learnt from its multi-insert buffers).
 *		What a row needs after its heap insert (the queue's index entries)
 *		is the caller's callback, run per row right after the heap write:
 *		this file knows nothing of the queue's shape.
 *
 * The bounds keep memory small whatever the statement's size: at most
 * PGCB_BULK_MAX_ROWS rows or PGCB_BULK_MAX_BYTES of their data, then a
 * flush.  The slots are made once per buffer and reused; they are slots
 * over a descriptor that pins nothing, so that a buffer can outlive a
 * transaction (a single-row transaction with fan-out would otherwise pay
 * for making its slots every time).  A row is given as a virtual slot and
 * kept in one of two ways, chosen when the buffer is made:
 *	- as its values, copied into a virtual slot's memory, when the caller's
 *	  after_insert reads them (index entries): the table AM forms the tuple
 *	  at the flush, and nothing deforms it again;
 *	- as the heap tuple formed from it, once, in a heap slot that the table
 *	  AM writes as it is, when nothing reads the values after the insert (a
 *	  table without indexes): 0.7k instructions less per narrow row than
 *	  copying the values and then forming the tuple from the copy.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "queue_bulk.h"

/* COPY's bounds: enough to fill pages, small enough to stay in cache. */
#define PGCB_BULK_MAX_ROWS 1000
#define PGCB_BULK_MAX_BYTES (64 * 1024)

struct PgcbBulk
{
	TupleDesc	desc;
	MemoryContext cxt;			/* the slots and the rows' data */
	MemoryContext flush_cxt;	/* what one flush allocates (heap tuples ...) */
	bool		form_tuples;	/* heap slots holding formed tuples, else virtual */
	TupleTableSlot **slots;		/* [PGCB_BULK_MAX_ROWS], made on demand */
	int			nslots_made;
	int			nused;			/* rows buffered: slots[0 .. nused) */
	Size		bytes;			/* their data, roughly */
};

PgcbBulk *
pgcb_bulk_create(TupleDesc desc, bool form_tuples)
{
	PgcbBulk   *b = palloc0(sizeof(PgcbBulk));

	Assert(desc->tdrefcount < 0);
	b->desc = desc;
	b->form_tuples = form_tuples;
	b->cxt = CurrentMemoryContext;
	b->flush_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback bulk flush",
										 ALLOCSET_DEFAULT_SIZES);
	b->slots = palloc0(sizeof(TupleTableSlot *) * PGCB_BULK_MAX_ROWS);
	return b;
}

void
pgcb_bulk_add(PgcbBulk *b, const PgcbBulkTarget *target, TupleTableSlot *row, Size bytes)
{
	MemoryContext old;
	TupleTableSlot *slot;

	if (b->nused >= PGCB_BULK_MAX_ROWS || b->bytes >= PGCB_BULK_MAX_BYTES)
		pgcb_bulk_flush(b, target);
	old = MemoryContextSwitchTo(b->cxt);
	if (b->nused == b->nslots_made)
	{
		b->slots[b->nslots_made] =
			MakeSingleTupleTableSlot(b->desc, b->form_tuples ? &TTSOpsHeapTuple : &TTSOpsVirtual);
		b->nslots_made++;
	}
	slot = b->slots[b->nused];
	if (b->form_tuples)
	{
		/* the slot owns the tuple: freed by the clear after the flush */
		ExecStoreHeapTuple(heap_form_tuple(b->desc, row->tts_values, row->tts_isnull),
						   slot, true);
	}
	else
	{
		int			natts = b->desc->natts;

		ExecClearTuple(slot);
		memcpy(slot->tts_values, row->tts_values, sizeof(Datum) * natts);
		memcpy(slot->tts_isnull, row->tts_isnull, sizeof(bool) * natts);
		ExecStoreVirtualTuple(slot);
		/* the values copied into the slot's memory */
		ExecMaterializeSlot(slot);
	}
	MemoryContextSwitchTo(old);
	b->nused++;
	b->bytes += bytes;
}

void
pgcb_bulk_flush(PgcbBulk *b, const PgcbBulkTarget *target)
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
	table_multi_insert(target->rel, b->slots, n, target->cid, 0, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextReset(b->flush_cxt);
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		target->after_insert(b->slots[i], target->arg);
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
	pgcb_bulk_discard(b);
	for (int i = 0; i < b->nslots_made; i++)
		ExecDropSingleTupleTableSlot(b->slots[i]);
	MemoryContextDelete(b->flush_cxt);
	pfree(b->slots);
	pfree(b);
}
