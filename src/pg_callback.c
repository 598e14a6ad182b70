/*
 * pg_callback.c
 *		Module entry point.  _PG_init reads like a table of contents: each
 *		part sets itself up in its own file.
 *
 * Loaded without shared_preload_libraries (by CREATE EXTENSION alone),
 * the SQL functions work but there is no worker and no shared memory:
 * events queue up, and callback.process_callbacks() explains what is missing.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "dbguard.h"
#include "discovery.h"
#include "event.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	pgcb_guc_init();
	if (!process_shared_preload_libraries_in_progress)
		return;
	pgcb_shmem_init();
	pgcb_launcher_register();
	pgcb_dbguard_init();
	pgcb_discovery_init();
	pgcb_event_init();
}
