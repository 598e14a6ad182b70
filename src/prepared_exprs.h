/*
 * prepared_exprs.h
 *		Check constraints and partial-index predicates prepared once per
 *		backend, not once per statement (queue_rows.c's statements).
 */
#ifndef PGCB_PREPARED_EXPRS_H
#define PGCB_PREPARED_EXPRS_H

#include "nodes/execnodes.h"

/* Give rri its relation's check constraints, prepared (after InitResultRelInfo). */
extern void pgcb_prepared_checks(ResultRelInfo *rri);

/* Give rri's partial indexes their predicates, prepared (after ExecOpenIndices). */
extern void pgcb_prepared_predicates(ResultRelInfo *rri);

#endif							/* PGCB_PREPARED_EXPRS_H */
