/*
 * worker.h
 *		The per-database delivery worker (a dynamic background worker
 *		started by the launcher).
 */
#ifndef PGCB_WORKER_H
#define PGCB_WORKER_H

#include "postgres.h"

#define PGCB_WORKER_TYPE "pg_callback worker"

PGDLLEXPORT void pgcb_worker_main(Datum main_arg);

#endif							/* PGCB_WORKER_H */
