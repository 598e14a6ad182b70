/*
 * queue_bulk.h
 *		A bounded buffer of formed tuples for one relation, written with
 *		table_multi_insert: one heap page locked and one WAL record per page
 *		of rows instead of per row.
 */
#ifndef PGCB_QUEUE_BULK_H
#define PGCB_QUEUE_BULK_H

#include "executor/tuptable.h"
#include "utils/rel.h"

typedef struct PgcbBulk PgcbBulk;

/*
 * Called for each tuple once it is in the heap (slot->tts_tid set), in the
 * order the tuples were added: the caller's index entries.
 */
typedef void (*PgcbBulkAfterInsert) (TupleTableSlot *slot, void *arg);

/*
 * A buffer for rel, allocated in the current memory context; its slots are
 * pinned by the current resource owner (both as of this call, also for
 * slots made later).  The caller keeps rel open while
 * the buffer lives.
 */
extern PgcbBulk *pgcb_bulk_create(Relation rel, PgcbBulkAfterInsert after, void *arg);

/*
 * An empty slot for the next tuple, flushing first if the buffer is full.
 * The caller stores the tuple (ExecStoreVirtualTuple) and then calls
 * pgcb_bulk_added; until then the slot is not part of the buffer.
 */
extern TupleTableSlot *pgcb_bulk_next_slot(PgcbBulk *b, CommandId cid);

/*
 * The slot returned last now holds a tuple of about bytes bytes of
 * variable data: made independent of the caller's memory and counted.
 */
extern void pgcb_bulk_added(PgcbBulk *b, Size bytes);

/* Write what is buffered: heap, then the after-insert callback per tuple. */
extern void pgcb_bulk_flush(PgcbBulk *b, CommandId cid);

/* Forget what is buffered, unwritten (after an error: the abort undoes the rest). */
extern void pgcb_bulk_discard(PgcbBulk *b);

/* Tuples buffered and not written yet. */
extern int	pgcb_bulk_pending(const PgcbBulk *b);

/* Drop the slots and the buffer (nothing may be pending). */
extern void pgcb_bulk_free(PgcbBulk *b);

#endif							/* PGCB_QUEUE_BULK_H */
