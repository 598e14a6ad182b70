/*
 * prepared_exprs.h
 *		Check constraints and partial-index predicates planned once per
 *		backend, not once per statement (queue_rows.c's statements).
 */
#ifndef PGCB_PREPARED_EXPRS_H
#define PGCB_PREPARED_EXPRS_H

#include "nodes/execnodes.h"

/*
 * Give rri its relation's check constraints, ready for estate's statement
 * (after InitResultRelInfo), as ExecRelCheck would make them.
 */
extern void pgcb_prepared_checks(ResultRelInfo *rri, EState *estate);

/*
 * Give rri's partial indexes their predicates, ready for estate's
 * statement (after ExecOpenIndices), as ExecInsertIndexTuples would.
 */
extern void pgcb_prepared_predicates(ResultRelInfo *rri, EState *estate);

#endif							/* PGCB_PREPARED_EXPRS_H */
