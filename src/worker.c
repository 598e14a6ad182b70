/*
 * worker.c
 *		The delivery worker's loop.  It sleeps on one WaitEventSet (its latch,
 *		curl's sockets, postmaster death), is woken by the commit of any
 *		transaction that queued an event, and drives the delivery engine:
 *
 *		wait -> collect finished attempts -> (short transaction: write back
 *		outcomes, claim more) -> start requests -> wait ...
 *
 * No transaction is open while HTTP is in flight.  The worker commits with
 * synchronous_commit off: losing its last commits in a crash only means
 * those deliveries are sent again (at least once), never lost, and it saves
 * a WAL flush per batch.
 *
 * It exits non-zero on any error or SIGTERM, so the launcher starts it
 * again; its claims are released when it comes back.  It exits zero when
 * the extension has been dropped from its database, having told the
 * launcher, which then leaves the database alone until it is created again.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "delivery.h"
#include "inbox.h"
#include "inbox_vacuum.h"
#include "guc.h"
#include "hook_escalation.h"
#include "pg_callback.h"
#include "queue.h"
#include "queue_rules.h"
#include "session.h"
#include "shmem.h"
#include "version.h"
#include "worker.h"

/* How long a finished attempt may wait before it is written back. */
#define FLUSH_DELAY_MS 20

/*
 * The least time between two cycles.  Under a stream of commits each one
 * wakes the worker; waiting this long lets one cycle claim what many
 * commits queued, instead of a transaction per commit.
 */
#define MIN_CYCLE_GAP_US 1000

typedef struct LoopState
{
	bool		woken;			/* the latch was set: maybe new work */
	bool		claims_released;
	TimestampTz last_cycle_at;
	TimestampTz last_sweep_at;
	TimestampTz last_lease_sweep_at;
	TimestampTz first_unflushed_at;
	int			last_claimed;
	bool		extension_present;	/* and its schema one we work with */
	bool		extension_gone; /* dropped: we stop */
	uint32		created_gen;	/* pgcb_shmem_database_gen() before the look */
	bool		schema_refused; /* we said so in the log */
	bool		rules_checked;	/* once since the start */
	bool		rules_refused;	/* a table we write has rules: we said so */
	char		rules_msg[PGCB_LAST_ERROR_LEN]; /* which, when last seen */
	const char *datname;
} LoopState;

/*
 * Whether this library works with the database's schema (see version.h).
 * If not, say once what to do, and wait: the queue keeps filling, and the
 * first cycle after ALTER EXTENSION pg_callback UPDATE delivers it.
 */
static bool
schema_usable(PgcbWorkerSlot *slot, LoopState *ls)
{
	char		installed[NAMEDATALEN];
	PgcbSchemaFit fit;

	fit = pgcb_version_schema_fit(get_extension_oid(PGCB_EXTENSION_NAME, false),
								  installed, sizeof(installed));
	if (fit == PGCB_SCHEMA_OK)
	{
		if (ls->schema_refused)
			ereport(LOG,
					(errmsg("pg_callback: the extension is now at version %s; delivering",
							installed)));
		ls->schema_refused = false;
		return true;
	}
	if (!ls->schema_refused)
	{
		char		msg[PGCB_LAST_ERROR_LEN];

		snprintf(msg, sizeof(msg),
				 "pg_callback %s cannot use the extension at version %s in this database",
				 PGCB_VERSION, installed);
		ereport(LOG,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s; deliveries wait", msg),
				 fit == PGCB_SCHEMA_TOO_OLD ?
				 errhint("Run ALTER EXTENSION pg_callback UPDATE in database \"%s\".",
						 ls->datname) :
				 errhint("Install pg_callback %s or later and restart the server.", installed)));
		pgcb_shmem_set_error(slot, msg);
	}
	pgcb_shmem_set_state(slot, PGCB_STATE_SCHEMA_MISMATCH);
	ls->schema_refused = true;
	return false;
}

/*
 * Whether no table we write has rules (queue_rules.c says why we refuse
 * them).  Looked at once after the start, at each sweep, when one of those
 * tables' relcache entries was invalidated (read at our transaction's
 * start: CREATE RULE sends one), and at each cycle while refusing.  A
 * table locked by someone else leaves the last answer as it was.
 */
static bool
rules_absent(PgcbWorkerSlot *slot, LoopState *ls, bool sweep)
{
	char	   *tables;

	if (ls->rules_checked && !sweep && !ls->rules_refused && !pgcb_queue_rules_changed())
		return true;
	ls->rules_checked = true;
	switch (pgcb_queue_rules_look(&tables))
	{
		case PGCB_RULES_NONE:
			if (ls->rules_refused)
				ereport(LOG, (errmsg("pg_callback: no rules on its tables any more; delivering")));
			ls->rules_refused = false;
			return true;
		case PGCB_RULES_UNKNOWN:
			if (!ls->rules_refused)
				return true;
			break;				/* still refusing, as last said */
		case PGCB_RULES_FOUND:
			pgcb_queue_rules_message(ls->rules_msg, sizeof(ls->rules_msg), tables);
			if (!ls->rules_refused)
				pgcb_queue_rules_report(LOG, tables);
			pfree(tables);
			break;
	}
	/* at each look: last_error_at says it still holds */
	pgcb_shmem_set_error(slot, ls->rules_msg);
	pgcb_shmem_set_state(slot, PGCB_STATE_TABLE_RULES);
	ls->rules_refused = true;
	return false;
}

/*
 * Whether a sweep also returns the claims whose lease ran out.  That
 * statement reads the due open rows of every endpoint enabled and not
 * paused, and of those whose row is gone (no index names the rows in
 * flight, so that a claim stays HOT: sql/upgrade-1.1/98-queue-storage.sql;
 * PLAN_RELEASE_EXPIRED in queue.c), so it runs every quarter of
 * callback.lease, not at every sweep: a claim that ran out comes back
 * within lease / 4 (at least callback.poll_interval), a paused or disabled
 * endpoint's within that once it is resumed and enabled.
 */
static bool
lease_sweep_due(LoopState *ls)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(ls->last_lease_sweep_at, now,
									Max(pgcb_poll_interval_ms, pgcb_lease_ms / 4)))
		return false;
	ls->last_lease_sweep_at = now;
	return true;
}

/* One short transaction: write back, release stale claims, claim more. */
static void
run_cycle(PgcbWorkerSlot *slot, LoopState *ls, bool sweep)
{
	int			room = pgcb_max_inflight - pgcb_delivery_inflight();
	uint64		moved = 0;

	/* read before we look, so that a CREATE EXTENSION after the look shows */
	ls->created_gen = pgcb_shmem_database_gen(MyDatabaseId);

	/* now() in our statements is the transaction start: keep it current */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "pg_callback: claim and write back");

	ls->extension_present = pgcb_queue_extension_present();
	if (!ls->extension_present)
	{
		pgcb_shmem_set_state(slot, PGCB_STATE_NO_EXTENSION);
		ls->extension_gone = true;
	}
	else if (!schema_usable(slot, ls))
		ls->extension_present = false;
	else if (!rules_absent(slot, ls, sweep))
		;						/* events wait in the queue */
	else
	{
		/*
		 * Write back before the sweep.  After a stall longer than the lease
		 * (SIGSTOP, a long lock wait, an overloaded host) the outcomes we
		 * hold are for rows whose lease has run out: swept first, they
		 * would be 'pending' again and the write-back, which matches our
		 * claims, would drop them (no attempt row, attempts not counted, a
		 * dead verdict retried).  pgcb_delivery_cycle() flushes again;
		 * with nothing left that is only the breakers and 410s.
		 */
		if (pgcb_delivery_unflushed() > 0 && (sweep || !ls->claims_released))
			pgcb_delivery_flush();
		if (!ls->claims_released)
		{
			pgcb_delivery_release_claims(true, true);
			ls->claims_released = true;
		}
		else if (sweep && lease_sweep_due(ls))
			pgcb_delivery_release_claims(false, true);
		if (sweep)
		{
			(void) pgcb_queue_dead_letter_orphans();
			ls->last_sweep_at = GetCurrentTimestamp();
		}
		/* callback.inbox: what committed there joins the queue first */
		moved = pgcb_inbox_move(PGCB_INBOX_MOVE_MAX);
		ls->last_claimed = pgcb_delivery_cycle(room);
		pgcb_shmem_set_state(slot, pgcb_delivery_inflight() > 0 ?
							 PGCB_STATE_DELIVERING : PGCB_STATE_IDLE);
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	ls->last_cycle_at = GetCurrentTimestamp();
	ls->first_unflushed_at = 0;
	/* what moved left dead rows behind in the inbox */
	pgcb_inbox_vacuum_after(moved);
	/* more waits in the inbox: another cycle at once */
	ls->woken = moved >= PGCB_INBOX_MOVE_MAX;
}

static bool
cycle_needed(LoopState *ls, TimestampTz now, bool *sweep)
{
	int			unflushed = pgcb_delivery_unflushed();
	int			inflight = pgcb_delivery_inflight();
	long		due_ms = pgcb_delivery_ms_until_due();

	*sweep = TimestampDifferenceExceeds(ls->last_sweep_at, now, pgcb_poll_interval_ms);
	if (ls->woken || *sweep || !ls->claims_released ||
		TimestampDifferenceExceeds(ls->last_cycle_at, now, pgcb_poll_interval_ms))
		return true;
	if (!ls->extension_present)
		return false;
	if (due_ms == 0)
		return true;
	if (unflushed > 0 && (inflight == 0 || unflushed >= pgcb_batch_size ||
						  TimestampDifferenceExceeds(ls->first_unflushed_at, now, FLUSH_DELAY_MS)))
		return true;
	/* refill once half of what was last claimed has come back */
	if (pgcb_delivery_more_due() && unflushed >= Max(1, ls->last_claimed / 2))
		return true;
	return false;
}

static long
wait_timeout(LoopState *ls, TimestampTz now)
{
	long		timeout = pgcb_poll_interval_ms;
	long		due_ms = pgcb_delivery_ms_until_due();

	/* more waits in the inbox (run_cycle): look at the sockets, then go on */
	if (ls->woken)
		return 0;
	if (due_ms >= 0)
		timeout = Min(timeout, due_ms);
	if (pgcb_delivery_unflushed() > 0)
		timeout = Min(timeout, FLUSH_DELAY_MS);
	return Max(timeout, 0);
}

void
pgcb_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	PgcbWorkerArgs args;
	PgcbWorkerSlot *slot;
	LoopState	ls;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
	BackgroundWorkerInitializeConnectionByOid(args.dboid, InvalidOid, 0);
	pgcb_session_pin_search_path();
	slot = pgcb_shmem_attach_worker(slotno, MyDatabaseId, args.db_worker);
	pgstat_report_appname(PGCB_WORKER_TYPE);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	/*
	 * The cycle's statements are written for READ COMMITTED (a claim skips
	 * what others lock, the write-back re-reads its rows): a database or
	 * server default of REPEATABLE READ made the write-back fail with
	 * serialization errors and the worker restart in a loop, sending again.
	 * And the worker must write, whatever the default says.
	 */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", PGCB_WORKER_TYPE, PGC_USERSET, PGC_S_OVERRIDE);

	ereport(LOG,
			(errmsg("pg_callback worker started in database \"%s\"", args.datname)));

	/* claims are per database: a restart in another slot still finds its own */
	pgcb_delivery_init(slot, args.db_worker);
	/* a hook that ignores its cancel ends this worker, not holds it */
	pgcb_hookesc_enable();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "pg_callback worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	memset(&ls, 0, sizeof(ls));
	ls.woken = true;
	ls.extension_present = true;
	ls.datname = args.datname;

	for (;;)
	{
		TimestampTz now;
		bool		sweep;

		/* whatever a loop allocates outside the engine's contexts dies here */
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			pgcb_delivery_apply_settings();
		}

		now = GetCurrentTimestamp();
		if (cycle_needed(&ls, now, &sweep))
		{
			long		since_last = (long) (now - ls.last_cycle_at);

			if (since_last >= 0 && since_last < MIN_CYCLE_GAP_US)
				pg_usleep(MIN_CYCLE_GAP_US - since_last);
			run_cycle(slot, &ls, sweep);
			MemoryContextSwitchTo(loop_cxt);
			/* created again since we looked: go on, as 1.0 did */
			if (ls.extension_gone &&
				!pgcb_shmem_database_absent(MyDatabaseId, ls.created_gen))
				ls.extension_gone = false;
			if (ls.extension_gone)
			{
				/* no claims to return: they went with the tables */
				ereport(LOG,
						(errmsg("pg_callback: the extension is not installed in database \"%s\"; its worker stops",
								args.datname),
						 errhint("CREATE EXTENSION pg_callback there starts delivery again.")));
				proc_exit(0);
			}
		}

		if (pgcb_delivery_wait(wait_timeout(&ls, GetCurrentTimestamp())))
			ls.woken = true;
		if (pgcb_delivery_unflushed() > 0 && ls.first_unflushed_at == 0)
			ls.first_unflushed_at = GetCurrentTimestamp();
	}
}
