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
 * memory context, across transactions, and pin nothing.  form_tuples: keep
 * each row as its formed heap tuple, for a target whose after_insert reads
 * no values (they would be deformed again); else keep the values.
 */
extern PgcbBulk *pgcb_bulk_create(TupleDesc desc, bool form_tuples);

/*
 * Add the row in row (a virtual slot of the buffer's descriptor) with
 * about bytes bytes of variable data, flushing to target first if the
 * buffer is full: formed into a tuple in the buffer's memory (the caller
 * may then free its datums) and counted.
 */
extern void pgcb_bulk_add(PgcbBulk *b, const PgcbBulkTarget *target, TupleTableSlot *row,
						  Size bytes);

/* Write what is buffered: heap, then target->after_insert per row. */
extern void pgcb_bulk_flush(PgcbBulk *b, const PgcbBulkTarget *target);

/* Forget what is buffered, unwritten (its transaction is rolling back). */
extern void pgcb_bulk_discard(PgcbBulk *b);

/* Rows buffered and not written yet. */
extern int	pgcb_bulk_pending(const PgcbBulk *b);

/* Drop the slots and the buffer. */
extern void pgcb_bulk_free(PgcbBulk *b);

#endif							/* PGCB_QUEUE_BULK_H */
