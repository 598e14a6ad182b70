/*
 * event_id.h
 *		Event ids: version 4 UUIDs, random, except within a run (one call of
 *		the statement trigger), where they are consecutive.
 */
#ifndef PGCB_EVENT_ID_H
#define PGCB_EVENT_ID_H

#include "utils/uuid.h"

/* The next event's id: random, or the run's next. */
extern void pgcb_event_id_new(pg_uuid_t *id);

/*
 * A run: until pgcb_event_id_run_end, the ids pgcb_event_id_new gives are
 * one random id, then each the one before stepped by 1, so that the packs
 * of a statement's events (inbox_pack.c) need not store them.  A run begun
 * within a run continues it.  The caller ends a run also on an error
 * (PG_FINALLY).
 */
extern void pgcb_event_id_run_begin(void);
extern void pgcb_event_id_run_end(void);

/*
 * out = id stepped k times: its last 48 bits plus k, modulo 2^48, the
 * version and variant bits untouched.  out may be id.
 */
extern void pgcb_event_id_step(const pg_uuid_t *id, uint64 k, pg_uuid_t *out);

#endif							/* PGCB_EVENT_ID_H */
