/*
 * pg_callback.h
 *		Names shared by every part of pg_callback.
 *
 * Each part has a header of its own (guc.h, shmem.h, event.h, queue.h ...);
 * this one holds only what they all need.
 */
#ifndef PG_CALLBACK_H
#define PG_CALLBACK_H

#include "compat.h"

#define PGCB_EXTENSION_NAME		"pg_callback"
#define PGCB_SCHEMA_NAME		"callback"
#define PGCB_LIBRARY_NAME		"pg_callback"

/* Longest event type, and the characters allowed in one (patterns add '*'). */
#define PGCB_EVENT_TYPE_MAX		128

/*
 * How many delivery workers shared memory has room for (callback.max_workers
 * is at most this), and how many databases the launcher can keep track of.
 */
#define PGCB_MAX_WORKERS		64
#define PGCB_MAX_DATABASES		256

extern bool pgcb_event_type_is_valid(const char *type, bool allow_wildcard);
extern bool pgcb_event_type_matches(const char *pattern, const char *type);

#endif							/* PG_CALLBACK_H */
