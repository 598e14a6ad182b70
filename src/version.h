/*
 * version.h
 *		Which schema versions (pg_extension.extversion) this library works
 *		with.  PGCB_VERSION, the version the library was built as, comes from
 *		the control file's default_version (the Makefile passes it).
 *
 * Policy: a library supports its own schema version and, until ALTER
 * EXTENSION pg_callback UPDATE has run, every older one from
 * PGCB_SCHEMA_MIN_VERSION on.  Raise PGCB_SCHEMA_MIN_VERSION when C code
 * starts to need an object that an upgrade part adds.
 */
#ifndef PGCB_VERSION_H
#define PGCB_VERSION_H

#ifndef PGCB_VERSION
#error "PGCB_VERSION is set by the Makefile from pg_callback.control"
#endif

/* 1.1: the engine reads the endpoints' batch options and queue.batch_id,
 * and the claim the trace context (traceparent, tracestate) */
#define PGCB_SCHEMA_MIN_VERSION "1.1"

typedef enum PgcbSchemaFit
{
	PGCB_SCHEMA_OK,
	PGCB_SCHEMA_TOO_OLD,		/* run ALTER EXTENSION pg_callback UPDATE */
	PGCB_SCHEMA_TOO_NEW			/* install the matching library */
} PgcbSchemaFit;

extern PgcbSchemaFit pgcb_version_schema_fit(Oid extoid, char *installed, int len);
extern void pgcb_version_check_schema(Oid extoid);

#endif							/* PGCB_VERSION_H */
