/*
 * event_id.h
 *		Event ids: version 4 UUIDs, random, except along a run (the events
 *		one statement trigger call packs), where they are consecutive.
 */
#ifndef PGCB_EVENT_ID_H
#define PGCB_EVENT_ID_H

#include "utils/uuid.h"

/*
 * A run of consecutive ids: its first is random, each next one the one
 * before stepped by 1, so that the packs of a statement's events
 * (inbox_pack.c) need not store them.  Zeroed, it has not started.
 */
typedef struct PgcbIdRun
{
	bool		started;
	pg_uuid_t	last;
} PgcbIdRun;

/* The next event's id: random when run is NULL, else run's next. */
extern void pgcb_event_id_new(pg_uuid_t *id, PgcbIdRun *run);

/*
 * out = id stepped k times: its last 48 bits plus k, modulo 2^48, the
 * version and variant bits untouched.  out may be id.
 */
extern void pgcb_event_id_step(const pg_uuid_t *id, uint64 k, pg_uuid_t *out);

#endif							/* PGCB_EVENT_ID_H */
