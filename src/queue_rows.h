/*
 * queue_rows.h
 *		Row writes to the extension's tables made as one SQL statement would
 *		make them, without SPI: shared by the claim (queue_claim.c) and the
 *		write-back (queue_write_back.c).
 */
#ifndef PGCB_QUEUE_ROWS_H
#define PGCB_QUEUE_ROWS_H

#include "access/tableam.h"
#include "commands/trigger.h"
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
	TransitionCaptureState *capture[PGCB_ROWS_MAX_RELS];	/* NULL: no transition tables */
	EPQState	epq;			/* for BEFORE row triggers (never used: rows are locked first) */
} PgcbRowsStatement;

/*
 * A column by name (an upgraded 1.0 table orders them otherwise), of type
 * typid (InvalidOid: an enum); an error with a hint if there is none.
 */
extern AttrNumber pgcb_rows_column(Relation rel, const char *name, Oid typid);

/*
 * Refuse (an error with a hint) what an UPDATE or INSERT would do and this
 * file cannot: row security that applies to the current user (the
 * extension's owner), a relation that is not a plain table or is a
 * partition.  who names the
 * caller in the error.
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
 * Write the new version newslot of the row locked in oldslot into the
 * statement's relation i (an UPDATE), or the row slot (an INSERT), as the
 * executor does: BEFORE row triggers, generated columns, constraints, the
 * table AM, index entries, AFTER row triggers and transition tables.
 * False: a BEFORE trigger skipped the row.  newslot's TID is the version
 * written.
 */
extern bool pgcb_rows_update(PgcbRowsStatement *st, int i, TupleTableSlot *oldslot,
							 TupleTableSlot *newslot);
extern bool pgcb_rows_insert(PgcbRowsStatement *st, int i, TupleTableSlot *slot);

/*
 * Lock the latest version of the row at *tid of the statement's relation i
 * for an update, as
 * nodeLockRows.c takes a row for SELECT ... FOR UPDATE [SKIP LOCKED]: true
 * with that version in slot; false when the row is gone, was changed by
 * this transaction since the snapshot, or (*held) someone else holds it
 * and wait is LockWaitSkip.  In REPEATABLE READ a row changed since the
 * snapshot is a serialization failure.
 */
extern bool pgcb_rows_lock(PgcbRowsStatement *st, int i, ItemPointer tid, TupleTableSlot *slot,
						   LockWaitPolicy wait, bool *held);

#endif							/* PGCB_QUEUE_ROWS_H */
