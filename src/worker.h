/*
 * worker.h
 *		The per-database delivery worker (a dynamic background worker
 *		started by the launcher).
 */
#ifndef PGCB_WORKER_H
#define PGCB_WORKER_H

#include "postgres.h"

#define PGCB_WORKER_TYPE "pg_callback worker"

/* What the launcher tells a worker, in bgw_extra (main_arg: its slot). */
typedef struct PgcbWorkerArgs
{
	Oid			dboid;
	int			db_worker;		/* its number within the database: claims */
	char		datname[NAMEDATALEN];	/* for messages only */
} PgcbWorkerArgs;

PGDLLEXPORT void pgcb_worker_main(Datum main_arg);

#endif							/* PGCB_WORKER_H */
