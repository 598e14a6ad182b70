/*
 * discovery.h
 *		Which databases have pg_callback: commit hooks that tell the launcher,
 *		the pg_database scan and the probe worker the launcher uses.
 */
#ifndef PGCB_DISCOVERY_H
#define PGCB_DISCOVERY_H

#include "postgres.h"

#include "postmaster/bgworker.h"

#define PGCB_PROBE_TYPE "pg_callback probe"

/* How often a database without the extension is looked at again. */
#define PGCB_PROBE_INTERVAL_MS (5 * 60 * 1000)

typedef struct PgcbDatabaseInfo
{
	Oid			oid;
	char		name[NAMEDATALEN];
	bool		servable;		/* connectable, not a template */
} PgcbDatabaseInfo;

extern void pgcb_discovery_init(void);
extern PgcbDatabaseInfo *pgcb_discovery_list_databases(int *n);
extern BackgroundWorkerHandle *pgcb_discovery_start_probe(Oid dboid);
extern int	pgcb_discovery_probe_result(void);

PGDLLEXPORT void pgcb_probe_main(Datum main_arg);

#endif							/* PGCB_DISCOVERY_H */
