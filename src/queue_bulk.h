/*
 * queue_bulk.h
 *		A bounded buffer of formed rows for one relation, written with
 *		table_multi_insert: one heap page locked and one WAL record per page
 *		of rows instead of per row.
 */
#ifndef PGCB_QUEUE_BULK_H
#define PGCB_QUEUE_BULK_H

#include "executor/tuptable.h"
#include "utils/rel.h"

typedef struct PgcbBulk PgcbBulk;

/*
 * Where a flush writes: the relation (open), the command id, and what each
 * row needs once it is in the heap (slot->tts_tid set), called in the
 * order the rows were added: the caller's index entries.
 */
typedef struct PgcbBulkTarget
{
	Relation	rel;
	CommandId	cid;
	void		(*after_insert) (TupleTableSlot *slot, void *arg);
	void	   *arg;
} PgcbBulkTarget;

/*
 * A buffer for rows of desc, which must not be reference-counted (a copy,
 * not a relcache entry's): the buffer and its slots live in the current
 * memory context, across transactions, and pin nothing.
 */
extern PgcbBulk *pgcb_bulk_create(TupleDesc desc);

/*
 * An empty slot for the next row, flushing to target first if the buffer
 * is full.  The caller stores the row (ExecStoreVirtualTuple) and then
 * calls pgcb_bulk_added; until then the slot is not part of the buffer.
 */
extern TupleTableSlot *pgcb_bulk_next_slot(PgcbBulk *b, const PgcbBulkTarget *target);

/*
 * The slot returned last now holds a row with about bytes bytes of
 * variable data: copied into the buffer's memory (the caller may free its
 * datums) and counted.
 */
extern void pgcb_bulk_added(PgcbBulk *b, Size bytes);

/* Write what is buffered: heap, then target->after_insert per row. */
extern void pgcb_bulk_flush(PgcbBulk *b, const PgcbBulkTarget *target);

/* Forget what is buffered, unwritten (its transaction is rolling back). */
extern void pgcb_bulk_discard(PgcbBulk *b);

/* Rows buffered and not written yet. */
extern int	pgcb_bulk_pending(const PgcbBulk *b);

/* Drop the slots and the buffer. */
extern void pgcb_bulk_free(PgcbBulk *b);

#endif							/* PGCB_QUEUE_BULK_H */
