/*
 * launcher.h
 *		The launcher (leader): a static background worker that starts the
 *		per-database delivery worker and starts it again when it exits.
 */
#ifndef PGCB_LAUNCHER_H
#define PGCB_LAUNCHER_H

#include "postgres.h"

#include "postmaster/bgworker.h"

#define PGCB_LAUNCHER_TYPE "pg_callback launcher"

extern void pgcb_launcher_register(void);
extern void pgcb_launcher_fill_worker(BackgroundWorker *bgw, const char *function,
									  const char *type, const char *name);

PGDLLEXPORT void pgcb_launcher_main(Datum main_arg);

#endif							/* PGCB_LAUNCHER_H */
