/*
 * launcher.c
 *		The leader, modelled on autoprewarm: a static background worker,
 *		restarted by the postmaster if it dies, that serves every database
 *		where pg_callback is installed.  For each it starts a delivery worker
 *		(a dynamic worker with bgw_notify_pid set to us, never restarted by
 *		the postmaster), starts it again when it exits (backing off if it
 *		keeps failing), and stops it when the extension or the database goes.
 *
 * Which databases: discovery.c (commit hooks, probes); this file decides.
 * A database is served when callback.database_name lets it (empty: all)
 * and one of the callback.max_workers slots is free; otherwise it waits,
 * in order of arrival, and callback_databases and the log (once per
 * database and reason) say why.  A worker that exits keeps its database's
 * slot while it restarts; one that found the extension dropped gives it up.
 *
 * A slot is (database, worker number within the database): the number is
 * what the worker claims with, so that a restarted worker returns its own
 * claims whichever slot it lands in.  A database has
 * callback.workers_per_database of them (numbers 0 .. n-1): its first
 * worker is started as above; the others are added while slots are free,
 * after every waiting database has its first (callback_databases says when
 * a database runs with fewer).  Lowering the setting stops the highest
 * numbers; their claims come back by lease expiry.
 *
 * It connects to no database, only to the shared catalogs.  All it knows
 * lives in shared memory (shmem.h) except the handles and its probe
 * schedule, which are its own.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "discovery.h"
#include "guc.h"
#include "launcher.h"
#include "shmem.h"
#include "worker.h"

#define RESTART_DELAY_MIN_MS 100
#define RESTART_DELAY_MAX_MS 30000
/* A worker that ran this long was healthy: restart it without backoff. */
#define HEALTHY_RUN_MS 10000
#define CHECK_INTERVAL_MS 1000
#define SCAN_INTERVAL_MS 1000
/* A probe that could not start or answer is tried again after this. */
#define PROBE_RETRY_MS 10000

/* A worker we started, by slot number. */
typedef struct Run
{
	BackgroundWorkerHandle *handle; /* NULL: slot free */
	Oid			dboid;
	int			db_worker;		/* its number within the database */
	pid_t		pid;			/* once started */
	TimestampTz started_at;
} Run;

/* A database of pg_database, and when to probe it next (0: not needed). */
typedef struct Known
{
	PgcbDatabaseInfo info;
	TimestampTz probe_at;
} Known;

static Run	runs[PGCB_MAX_WORKERS];
static Known *known = NULL;
static int	n_known = 0;
static TimestampTz scanned_at = 0;
static bool rescan = true;
static BackgroundWorkerHandle *probe_handle = NULL;
static Oid	probe_dboid = InvalidOid;

/*
 * A dynamic worker of ours (delivery worker or probe): connected to a
 * database, started once recovery is over, never restarted by the
 * postmaster (the launcher decides), reporting to the launcher.
 */
void
pgcb_launcher_fill_worker(BackgroundWorker *bgw, const char *function,
						  const char *type, const char *name)
{
	memset(bgw, 0, sizeof(*bgw));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw->bgw_library_name, PGCB_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(bgw->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(bgw->bgw_name, name, BGW_MAXLEN);
	strlcpy(bgw->bgw_type, type, BGW_MAXLEN);
	bgw->bgw_notify_pid = MyProcPid;
}

void
pgcb_launcher_register(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 1;
	strlcpy(bgw.bgw_library_name, PGCB_LIBRARY_NAME, BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "pgcb_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, PGCB_LAUNCHER_TYPE, BGW_MAXLEN);
	strlcpy(bgw.bgw_type, PGCB_LAUNCHER_TYPE, BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);
}

static void
launcher_detach(int code, Datum arg)
{
	/* our workers must not outlive us: the next launcher starts new ones */
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		if (runs[i].handle != NULL)
			TerminateBackgroundWorker(runs[i].handle);
	if (probe_handle != NULL)
		TerminateBackgroundWorker(probe_handle);
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	if (pgcb_shared->launcher_pid == MyProcPid)
	{
		pgcb_shared->launcher_pid = 0;
		pgcb_shared->launcher_latch = NULL;
	}
	LWLockRelease(pgcb_shared->lock);
}

static Known *
find_known(Oid dboid)
{
	for (int i = 0; i < n_known; i++)
		if (known[i].info.oid == dboid)
			return &known[i];
	return NULL;
}

static const char *
db_name(Oid dboid)
{
	Known	   *k = find_known(dboid);
	static char buf[32];

	if (k != NULL)
		return k->info.name;
	snprintf(buf, sizeof(buf), "oid %u", dboid);
	return buf;
}

static Run *
run_of(Oid dboid)
{
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		if (runs[i].handle != NULL && runs[i].dboid == dboid)
			return &runs[i];
	return NULL;
}

/* How many workers dboid has (started or starting), and whether number w is one. */
static int
runs_of(Oid dboid, int w, bool *has_w)
{
	int			n = 0;

	if (has_w)
		*has_w = false;
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		if (runs[i].handle != NULL && runs[i].dboid == dboid)
		{
			n++;
			if (has_w && runs[i].db_worker == w)
				*has_w = true;
		}
	return n;
}

/* Stop dboid's workers numbered at or above callback.workers_per_database. */
static void
stop_surplus(Oid dboid)
{
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
		if (runs[i].handle != NULL && runs[i].dboid == dboid &&
			runs[i].db_worker >= pgcb_workers_per_database)
			TerminateBackgroundWorker(runs[i].handle);
}

/* Read pg_database again: new databases are probed, dropped ones forgotten. */
static void
scan_databases(TimestampTz now)
{
	int			n;
	PgcbDatabaseInfo *list = pgcb_discovery_list_databases(&n);
	Known	   *fresh = MemoryContextAlloc(TopMemoryContext, Max(n, 1) * sizeof(Known));

	for (int i = 0; i < n; i++)
	{
		Known	   *old = find_known(list[i].oid);

		fresh[i].info = list[i];
		/* new, or now connectable: probe it at once */
		fresh[i].probe_at = (old != NULL && old->info.servable) ? old->probe_at : now;
	}
	pfree(list);
	if (known != NULL)
		pfree(known);
	known = fresh;
	n_known = n;
	scanned_at = now;
	rescan = false;
}

/* Say why a database is not served, once per database and reason. */
static void
say_once(PgcbDatabase *db, PgcbDatabaseReason reason)
{
	if (db->said & (1 << reason))
		return;
	db->said |= 1 << reason;
	switch (reason)
	{
		case PGCB_WHY_MAX_WORKERS:
			ereport(LOG,
					(errmsg("pg_callback: database \"%s\" waits for a delivery worker: all %d of callback.max_workers are serving other databases",
							db_name(db->dboid), pgcb_max_workers),
					 errhint("Raise callback.max_workers (a restart), or name the databases to serve in callback.database_name; callback.callback_databases lists who waits.")));
			break;
		case PGCB_WHY_NO_BGWORKER:
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("pg_callback could not start a delivery worker for database \"%s\"",
							db_name(db->dboid)),
					 errhint("Raise max_worker_processes (a restart).")));
			break;
		case PGCB_WHY_FILTER:
			ereport(LOG,
					(errmsg("pg_callback is installed in database \"%s\", which callback.database_name leaves out: its events are not delivered",
							db_name(db->dboid)),
					 errhint("Add it to callback.database_name, or empty the setting to serve every database, and reload.")));
			break;
		case PGCB_WHY_TEMPLATE:
			ereport(LOG,
					(errmsg("pg_callback is installed in database \"%s\", which is a template or allows no connections: its events are not delivered",
							db_name(db->dboid))));
			break;
		default:
			break;
	}
}

static void
set_state(PgcbDatabase *db, PgcbDatabaseState state, PgcbDatabaseReason reason,
		  TimestampTz now)
{
	if (db->state != state)
		db->since = now;
	db->state = state;
	db->reason = reason;
}

/* Start worker number w of db in a free slot (lock held); false if none started. */
static bool
start_worker(PgcbDatabase *db, int w, TimestampTz now)
{
	char		name[BGW_MAXLEN];
	BackgroundWorker bgw;
	PgcbWorkerArgs args;
	int			slotno = -1;

	for (int i = 0; i < pgcb_max_workers; i++)
		if (runs[i].handle == NULL)
		{
			slotno = i;
			break;
		}
	if (slotno < 0)
		return false;			/* a stopped worker not yet reaped */

	memset(&args, 0, sizeof(args));
	args.dboid = db->dboid;
	args.db_worker = w;
	strlcpy(args.datname, db_name(db->dboid), NAMEDATALEN);

	snprintf(name, sizeof(name), "%s %d", PGCB_WORKER_TYPE, slotno);
	pgcb_launcher_fill_worker(&bgw, "pgcb_worker_main", PGCB_WORKER_TYPE, name);
	bgw.bgw_main_arg = Int32GetDatum(slotno);
	StaticAssertStmt(sizeof(PgcbWorkerArgs) <= BGW_EXTRALEN, "worker arguments too long");
	memcpy(bgw.bgw_extra, &args, sizeof(args));

	if (!RegisterDynamicBackgroundWorker(&bgw, &runs[slotno].handle))
	{
		runs[slotno].handle = NULL;
		set_state(db, PGCB_DB_WAITING, PGCB_WHY_NO_BGWORKER, now);
		say_once(db, PGCB_WHY_NO_BGWORKER);
		return false;
	}
	runs[slotno].dboid = db->dboid;
	runs[slotno].db_worker = w;
	runs[slotno].pid = 0;
	runs[slotno].started_at = now;
	if (db->state != PGCB_DB_SERVED)
		set_state(db, PGCB_DB_STARTING, PGCB_WHY_NONE, now);
	return true;
}

/*
 * A worker stopped: why decides what next.  Its database's entry says
 * ABSENT if the worker found the extension dropped (no restart), EXCLUDED
 * if we stopped it; anything else is a failure or an eviction by DROP
 * DATABASE, and the worker comes back after a back-off (holding its slot).
 */
static void
reap_worker(Run *r, TimestampTz now)
{
	PgcbDatabase *db;

	Run		   *other;

	pfree(r->handle);
	r->handle = NULL;
	other = run_of(r->dboid);
	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	db = pgcb_shmem_find_database(r->dboid, false);
	if (db != NULL)
	{
		if (db->worker_pid == r->pid || other == NULL)
			db->worker_pid = other != NULL ? other->pid : 0;
		/* ABSENT: the worker said so in the log; EXCLUDED: we did */
		if (db->state != PGCB_DB_ABSENT && db->state != PGCB_DB_EXCLUDED)
		{
			if (TimestampDifferenceExceeds(r->started_at, now, HEALTHY_RUN_MS))
				db->restart_delay_ms = RESTART_DELAY_MIN_MS;
			else
				db->restart_delay_ms = Min(Max(db->restart_delay_ms * 2, RESTART_DELAY_MIN_MS),
										   RESTART_DELAY_MAX_MS);
			db->next_start_at = TimestampTzPlusMilliseconds(now, db->restart_delay_ms);
			/* with workers left it stays served; the missing one comes back later */
			if (other == NULL)
				set_state(db, PGCB_DB_RESTARTING, PGCB_WHY_BACKOFF, now);
		}
	}
	LWLockRelease(pgcb_shared->lock);
	rescan = true;				/* maybe its database went */
}

static void
watch_workers(TimestampTz now)
{
	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
	{
		Run		   *r = &runs[i];
		pid_t		pid;
		BgwHandleStatus status;
		PgcbDatabase *db;

		if (r->handle == NULL)
			continue;
		status = GetBackgroundWorkerPid(r->handle, &pid);
		if (status == BGWH_STOPPED)
		{
			reap_worker(r, now);
			continue;
		}
		if (status != BGWH_STARTED)
			continue;
		r->pid = pid;
		LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
		db = pgcb_shmem_find_database(r->dboid, false);
		if (db != NULL && db->state == PGCB_DB_STARTING)
		{
			if (db->said & ((1 << PGCB_WHY_MAX_WORKERS) | (1 << PGCB_WHY_NO_BGWORKER)))
				ereport(LOG,
						(errmsg("pg_callback: database \"%s\" has a delivery worker now",
								db_name(db->dboid))));
			db->said = 0;
			db->worker_pid = pid;
			set_state(db, PGCB_DB_SERVED, PGCB_WHY_NONE, now);
		}
		else if (db != NULL && db->state == PGCB_DB_SERVED && db->worker_pid == 0)
			db->worker_pid = pid;
		LWLockRelease(pgcb_shared->lock);
	}
}

/*
 * Go over the database table (lock held): stop what must not be served,
 * restart what is due, hand free slots to the databases that wait, the
 * longest-waiting first, and then to the served databases that have fewer
 * than callback.workers_per_database workers.  Returns the ms until a
 * restart is due, or -1.
 */
static long
assign_slots(TimestampTz now)
{
	int			busy = 0;
	long		next_ms = -1;
	bool		done[PGCB_MAX_DATABASES];
	bool		top_up[PGCB_MAX_DATABASES];

	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
	{
		PgcbDatabase *db = &pgcb_shared->databases[i];
		Known	   *k;
		int			n_runs;

		done[i] = true;
		top_up[i] = false;
		if (db->state == PGCB_DB_FREE || db->state == PGCB_DB_ABSENT)
			continue;
		k = find_known(db->dboid);
		n_runs = runs_of(db->dboid, -1, NULL);
		busy += n_runs;
		if (k == NULL)
		{
			/* dropped, or too new for our last scan */
			if (db->since < scanned_at && n_runs == 0)
				db->state = PGCB_DB_FREE;
			else
				rescan = true;
			continue;
		}
		if (!k->info.servable || !pgcb_guc_database_wanted(k->info.name))
		{
			PgcbDatabaseReason why = k->info.servable ? PGCB_WHY_FILTER : PGCB_WHY_TEMPLATE;

			set_state(db, PGCB_DB_EXCLUDED, why, now);
			say_once(db, why);
			for (int j = 0; j < PGCB_MAX_WORKERS; j++)
				if (runs[j].handle != NULL && runs[j].dboid == db->dboid)
					TerminateBackgroundWorker(runs[j].handle);
			continue;
		}
		if (db->state == PGCB_DB_EXCLUDED)
			set_state(db, PGCB_DB_WANTED, PGCB_WHY_NONE, now);
		stop_surplus(db->dboid);
		if (db->state == PGCB_DB_STARTING || db->state == PGCB_DB_SERVED || n_runs > 0)
		{
			top_up[i] = true;
			continue;
		}
		if (db->state == PGCB_DB_RESTARTING)
		{
			busy++;				/* it keeps its slot while it restarts */
			if (pgcb_shmem_held(db->dboid))
				db->reason = PGCB_WHY_HELD;
			else if (now >= db->next_start_at)
			{
				/* its first worker takes the slot kept */
				if (!start_worker(db, 0, now))
					rescan = true;
			}
			else
			{
				long		ms = (long) ((db->next_start_at - now) / 1000) + 1;

				next_ms = next_ms < 0 ? ms : Min(next_ms, ms);
			}
			continue;
		}
		done[i] = false;		/* WANTED or WAITING: below */
	}

	/* the waiting ones, oldest first, while slots are free */
	for (;;)
	{
		PgcbDatabase *first = NULL;
		int			first_i = -1;

		for (int i = 0; i < PGCB_MAX_DATABASES; i++)
		{
			PgcbDatabase *db = &pgcb_shared->databases[i];

			if (!done[i] && (first == NULL || db->since < first->since))
			{
				first = db;
				first_i = i;
			}
		}
		if (first == NULL)
			break;
		done[first_i] = true;
		if (pgcb_shmem_held(first->dboid))
			set_state(first, PGCB_DB_WAITING, PGCB_WHY_HELD, now);
		else if (busy >= pgcb_max_workers)
		{
			set_state(first, PGCB_DB_WAITING, PGCB_WHY_MAX_WORKERS, now);
			say_once(first, PGCB_WHY_MAX_WORKERS);
		}
		else if (start_worker(first, 0, now))
		{
			busy++;
			top_up[first_i] = true;
		}
	}

	/* served databases: their further workers, while slots are free */
	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
	{
		PgcbDatabase *db = &pgcb_shared->databases[i];
		bool		fewer = false;

		if (!top_up[i] || pgcb_shmem_held(db->dboid))
			continue;
		for (int w = 0; w < pgcb_workers_per_database; w++)
		{
			bool		has_w;

			(void) runs_of(db->dboid, w, &has_w);
			if (has_w)
				continue;
			if (now < db->next_start_at)
			{
				long		ms = (long) ((db->next_start_at - now) / 1000) + 1;

				next_ms = next_ms < 0 ? ms : Min(next_ms, ms);
				fewer = true;
				break;
			}
			if (busy >= pgcb_max_workers || !start_worker(db, w, now))
			{
				fewer = true;
				break;
			}
			busy++;
		}
		if (db->state == PGCB_DB_SERVED)
			db->reason = fewer ? PGCB_WHY_FEWER_WORKERS : PGCB_WHY_NONE;
	}
	return next_ms;
}

/* Probe one database at a time: the next due, not already known to have it. */
static long
run_probes(TimestampTz now)
{
	Known	   *next = NULL;

	if (probe_handle != NULL)
	{
		pid_t		pid;
		int			result;
		Known	   *k;

		if (GetBackgroundWorkerPid(probe_handle, &pid) != BGWH_STOPPED)
			return -1;			/* its exit sets our latch */
		pfree(probe_handle);
		probe_handle = NULL;
		result = pgcb_discovery_probe_result();
		k = find_known(probe_dboid);
		if (result == 1)
			pgcb_shmem_announce_database(probe_dboid, true);
		if (k != NULL)
			k->probe_at = TimestampTzPlusMilliseconds(now, result < 0 ? PROBE_RETRY_MS
													  : PGCB_PROBE_INTERVAL_MS);
		probe_dboid = InvalidOid;
	}

	LWLockAcquire(pgcb_shared->lock, LW_SHARED);
	for (int i = 0; i < n_known; i++)
	{
		Known	   *k = &known[i];
		PgcbDatabase *db;

		if (!k->info.servable || !pgcb_guc_database_wanted(k->info.name))
			continue;
		db = pgcb_shmem_find_database(k->info.oid, false);
		if (db != NULL && db->state != PGCB_DB_ABSENT)
			continue;			/* known to have it */
		if (next == NULL || k->probe_at < next->probe_at)
			next = k;
	}
	LWLockRelease(pgcb_shared->lock);

	if (next == NULL)
		return -1;
	if (next->probe_at > now)
		return (long) ((next->probe_at - now) / 1000) + 1;
	probe_handle = pgcb_discovery_start_probe(next->info.oid);
	if (probe_handle == NULL)
	{
		/* no background worker slot now: later */
		next->probe_at = TimestampTzPlusMilliseconds(now, PROBE_RETRY_MS);
		return PROBE_RETRY_MS;
	}
	probe_dboid = next->info.oid;
	return -1;
}

void
pgcb_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
	pgcb_shared->launcher_pid = MyProcPid;
	pgcb_shared->launcher_latch = MyLatch;
	/* a previous launcher's workers died with it: serve its databases anew */
	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
	{
		PgcbDatabase *db = &pgcb_shared->databases[i];

		if (db->state != PGCB_DB_FREE && db->state != PGCB_DB_ABSENT)
		{
			db->state = PGCB_DB_WANTED;
			db->reason = PGCB_WHY_NONE;
			db->worker_pid = 0;
		}
	}
	pgcb_shared->probe_pid = 0;
	pgcb_shared->probe_dboid = InvalidOid;
	LWLockRelease(pgcb_shared->lock);
	on_shmem_exit(launcher_detach, (Datum) 0);

	for (;;)
	{
		long		timeout = CHECK_INTERVAL_MS;
		long		ms;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		watch_workers(now);
		if (rescan || TimestampDifferenceExceeds(scanned_at, now, SCAN_INTERVAL_MS))
			scan_databases(now);

		LWLockAcquire(pgcb_shared->lock, LW_EXCLUSIVE);
		ms = assign_slots(now);
		LWLockRelease(pgcb_shared->lock);
		if (ms >= 0)
			timeout = Min(timeout, ms);

		ms = run_probes(now);
		if (ms >= 0)
			timeout = Min(timeout, ms);
		if (rescan)
			timeout = Min(timeout, 100);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PGCB_WAIT_EVENT);
		ResetLatch(MyLatch);
	}
}
