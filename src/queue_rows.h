/*
 * queue_rows.h
 *		Row writes to the extension's tables made as one SQL statement would
 *		make them, without SPI: shared by the claim (queue_claim.c) and the
 *		write-back (queue_write_back.c).
 */
#ifndef PGCB_QUEUE_ROWS_H
#define PGCB_QUEUE_ROWS_H

#include "access/tableam.h"
#include "nodes/execnodes.h"
#include "utils/rel.h"

/* At most the two tables of the write-back. */
#define PGCB_ROWS_MAX_RELS 2

/*
 * One "statement" over up to two tables: its EState and range table (the
 * columns written, for UPDATE OF triggers and the executor's checks), a
 * result relation per table with its indexes open, the statement triggers
 * fired around its rows and the after-trigger queue run at its end.
 */
typedef struct PgcbRowsStatement
{
	EState	   *estate;
	int			nrels;
	ResultRelInfo *rri[PGCB_ROWS_MAX_RELS];
	CmdType		cmd[PGCB_ROWS_MAX_RELS];
} PgcbRowsStatement;

/* A column by name (an upgraded 1.0 table orders them otherwise). */
extern AttrNumber pgcb_rows_column(Relation rel, const char *name);

/*
 * Refuse (an error with a hint) what an UPDATE or INSERT would do and the
 * simple-relation helpers cannot: transition tables, forced row security,
 * a relation that is not a plain table.  who names the caller in the error.
 */
extern void pgcb_rows_check(Relation rel, CmdType cmd, const char *who);

/*
 * Begin a statement that writes rels[i] with cmds[i] (CMD_UPDATE or
 * CMD_INSERT) the columns cols[i] (attribute numbers, not offset).
 */
extern void pgcb_rows_begin(PgcbRowsStatement *st, Snapshot snapshot, int nrels,
							const Relation *rels, const CmdType *cmds, List *const *cols);
/* Fire the statement's AFTER triggers, run its after-trigger queue, free it. */
extern void pgcb_rows_end(PgcbRowsStatement *st);

/*
 * Lock the latest version of the row at *tid for an update, as
 * nodeLockRows.c takes a row for SELECT ... FOR UPDATE [SKIP LOCKED]: true
 * with that version in slot; false when the row is gone, was changed by
 * this transaction since the snapshot, or (*held) someone else holds it
 * and wait is LockWaitSkip.  In REPEATABLE READ a row changed since the
 * snapshot is a serialization failure.
 */
extern bool pgcb_rows_lock(Relation rel, ItemPointer tid, Snapshot snapshot, TupleTableSlot *slot,
						   LockWaitPolicy wait, bool *held);

#endif							/* PGCB_QUEUE_ROWS_H */
