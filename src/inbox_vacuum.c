/*
 * inbox_vacuum.c
 *		The worker vacuums callback_inbox after it has moved rows out of it.
 *
 * Why the worker and not autovacuum: each move reads the whole inbox, and
 * the rows it deleted stay on their pages until a vacuum lets the producers
 * reuse the space.  Autovacuum visits a database once a minute at most, and
 * it skips a table it cannot lock at once (SKIP_LOCKED), which under a
 * steady stream is often the inbox, held by one move after another.  At
 * 3,000 events a second the inbox then grew by a hundred pages every second
 * and no autovacuum ran in four minutes: each move read more pages than the
 * last, and the worker's CPU per delivery went from 146 to 400 µs, until
 * it fell behind.
 *
 * So after every VACUUM_AFTER_EVENTS events moved, at most once per
 * VACUUM_MIN_GAP_MS, the worker vacuums the inbox's heap, between two
 * cycles, outside their transactions.  Not VACUUM the statement: after its
 * tables it updates pg_database (vac_update_datfrozenxid), where it waits
 * for any open transaction that changed the database's row, such as a
 * database owner's ALTER DATABASE left open, and the worker would deliver
 * nothing meanwhile.  Here the table AM's vacuum of the one heap
 * (table_relation_vacuum, as VACUUM does for each table), with:
 *	- the table's lock taken without waiting, for the transaction: a move,
 *	  ANALYZE or autovacuum holding it means a later cycle; inside the
 *	  vacuum, heavyweight locks (the statistics' update of pg_class) waited
 *	  for VACUUM_LOCK_TIMEOUT at most, then a try FAILURE_BACKOFF_MS later;
 *	- no cost-based delay and VACUUM's default freeze ages, whatever the
 *	  settings (a database owner's among them) say: this is the worker's
 *	  time, and an aggressive vacuum waits for pinned pages (so one that
 *	  must be aggressive is left to autovacuum);
 *	- the table's owner as the user, in a security-restricted operation, as
 *	  VACUUM runs it, and not at all if the inbox has an index (it has none;
 *	  one added by hand could run its owner's functions): autovacuum then;
 *	- the inbox's TOAST table left to autovacuum, which the moves do not hold
 *	  off.
 * Truncating the empty pages at the end (after a backlog, or once a stream
 * stops) takes ACCESS EXCLUSIVE, which VACUUM takes only when its scan found
 * enough empty pages at the end, lets go when someone waits for it, and
 * tries for up to 5 s: so only after a cycle that moved nothing, at most
 * every SHRINK_GAP_MS, when no other process holds a lock on the inbox at
 * that moment (one that comes between that look and the truncation still
 * costs the worker up to those 5 s), and not if the table's vacuum_truncate
 * option says no.
 */
#include "postgres.h"

#include "access/multixact.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/autovacuum.h"
#include "storage/bufmgr.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "inbox.h"
#include "inbox_vacuum.h"

/* About 30 to 40 pages of the inbox's rows, deleted. */
#define VACUUM_AFTER_EVENTS 1000

/*
 * At high rates: a vacuum per this long, each freeing more pages.  Each
 * one updates the inbox's pg_class row in place, which has every producer
 * rebuild its cached inbox (queue_insert.c) at its next event.
 */
#define VACUUM_MIN_GAP_MS 250

/* After a vacuum that failed or timed out: the next one this much later. */
#define FAILURE_BACKOFF_MS 10000

/*
 * The longest the vacuum waits for a lock: its statistics' update of the
 * inbox's pg_class row waits for an open transaction that changed that row
 * (a GRANT on the inbox left open).  Then a later try.
 */
#define VACUUM_LOCK_TIMEOUT "200ms"

/*
 * VACUUM's defaults for the freeze ages, whatever the session's settings
 * say: set to 0 (a database owner may), each vacuum would be aggressive,
 * and an aggressive vacuum waits, without a timeout, for a page someone
 * keeps pinned (a cursor on the inbox).
 */
#define FREEZE_MIN_AGE 50000000
#define FREEZE_TABLE_AGE 150000000
#define MULTIXACT_FREEZE_MIN_AGE 5000000
#define MULTIXACT_FREEZE_TABLE_AGE 150000000

/* How often a cycle that moved nothing may try to shrink the inbox. */
#define SHRINK_GAP_MS 10000

static uint64 moved_since_vacuum = 0;
static TimestampTz last_vacuum_at = 0;
static TimestampTz not_before = 0;
static int	failures_in_row = 0;
static TimestampTz last_shrink_at = 0;
static TimestampTz last_failure_logged = 0;

/*
 * Whether another process holds a lock on the inbox: then a truncation
 * would wait for it (VACUUM tries for up to 5 s), and the worker with it.
 */
static bool
others_hold(Relation rel)
{
	LOCKTAG		tag;
	int			others;

	SET_LOCKTAG_RELATION(tag, MyDatabaseId, RelationGetRelid(rel));
	(void) GetLockConflicts(&tag, AccessExclusiveLock, &others);
	return others > 0;
}

/*
 * Whether a vacuum now would be aggressive (it must freeze the table's
 * oldest rows): those wait for pinned pages, so they are autovacuum's
 * (with a margin: half of the age that makes one).
 */
static bool
would_be_aggressive(Relation rel)
{
	TransactionId frozen = rel->rd_rel->relfrozenxid;
	MultiXactId minmxid = rel->rd_rel->relminmxid;
	int			xid_limit = Min(FREEZE_TABLE_AGE, (int) (autovacuum_freeze_max_age * 0.95));
	/* as vacuum_set_xid_limits: lower when multixact member space runs short */
	int			mxid_limit = Min(MULTIXACT_FREEZE_TABLE_AGE,
								 (int) (MultiXactMemberFreezeThreshold() * 0.95));

	if (!TransactionIdIsNormal(frozen) || !MultiXactIdIsValid(minmxid))
		return true;
	return (int32) (ReadNextTransactionId() - frozen) >= xid_limit / 2 ||
		(int32) (ReadNextMultiXactId() - minmxid) >= mxid_limit / 2;
}

/* Old enough that a vacuum must freeze it: autovacuum's, said once. */
static void
left_to_autovacuum(TimestampTz now)
{
	static bool said = false;

	if (!said)
		ereport(LOG,
				(errmsg("pg_callback: callback_inbox is old enough for an aggressive vacuum; the worker leaves its vacuums to autovacuum"),
				 errhint("Its moved rows keep their space until autovacuum has frozen it; VACUUM (FREEZE) callback.callback_inbox does it at once.")));
	said = true;
	not_before = TimestampTzPlusMilliseconds(now, FAILURE_BACKOFF_MS);
}

/* As VACUUM: the table's vacuum_truncate option may forbid truncating. */
static bool
truncate_allowed(Relation rel)
{
	return rel->rd_options == NULL || ((StdRdOptions *) rel->rd_options)->vacuum_truncate;
}

/*
 * The inbox as pg_callback made it: a heap with no index.  Anything else
 * (changed by hand) is autovacuum's: an index could run its owner's
 * functions, and the table AM's vacuum is for heaps.
 */
static bool
plain_heap(Relation rel)
{
	return rel->rd_rel->relkind == RELKIND_RELATION && !rel->rd_rel->relhasindex &&
		rel->rd_tableam == GetHeapamTableAmRoutine();
}

/* One vacuum of the inbox's heap, in the caller's transaction. */
static void
vacuum_heap(Relation rel, bool truncate)
{
	VacuumParams params;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	memset(&params, 0, sizeof(params));
	params.options = VACOPT_VACUUM;
	params.freeze_min_age = FREEZE_MIN_AGE;
	params.freeze_table_age = FREEZE_TABLE_AGE;
	params.multixact_freeze_min_age = MULTIXACT_FREEZE_MIN_AGE;
	params.multixact_freeze_table_age = MULTIXACT_FREEZE_TABLE_AGE;
	params.log_min_duration = -1;
	params.index_cleanup = VACOPTVALUE_AUTO;
	params.truncate = truncate ? VACOPTVALUE_ENABLED : VACOPTVALUE_DISABLED;
	params.nworkers = -1;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("lock_timeout", VACUUM_LOCK_TIMEOUT, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	VacuumCostActive = false;
	VacuumCostBalance = 0;
	table_relation_vacuum(rel, &params, GetAccessStrategy(BAS_VACUUM));
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

static void
run_vacuum(bool shrink, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		Oid			relid;

		StartTransactionCommand();
		relid = pgcb_inbox_relid_if_any();
		if (OidIsValid(relid) && !pgcb_inbox_surely_empty(relid) &&
			ConditionalLockRelationOid(relid, ShareUpdateExclusiveLock))
		{
			Relation	rel = table_open(relid, NoLock);

			if (!plain_heap(rel))
				;				/* autovacuum's */
			else if (would_be_aggressive(rel))
				left_to_autovacuum(now);
			else if (!shrink || (truncate_allowed(rel) && !others_hold(rel)))
			{
				pgstat_report_activity(STATE_RUNNING, "pg_callback: vacuum callback_inbox");
				/* as VACUUM: a snapshot, for what the relcache may look up */
				PushActiveSnapshot(GetTransactionSnapshot());
				vacuum_heap(rel, shrink);
				PopActiveSnapshot();
				moved_since_vacuum = 0;
				failures_in_row = 0;
			}
			table_close(rel, NoLock);
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		TimestampTz failed_at;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		/* a cancel ends the worker, as one during a cycle does */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		/* what it cleaned stays clean; the next try later */
		failed_at = GetCurrentTimestamp();
		not_before = TimestampTzPlusMilliseconds(failed_at, FAILURE_BACKOFF_MS);
		/*
		 * A lock timeout once is no failure; six in a row (a minute of
		 * them) is one: the inbox's statistics and frozen xid stand still.
		 */
		failures_in_row++;
		if ((edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE || failures_in_row >= 6) &&
			TimestampDifferenceExceeds(last_failure_logged, failed_at, 60 * 1000))
		{
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("pg_callback: vacuuming callback_inbox failed: %s", edata->message),
					 errdetail("Nothing is lost; the inbox's moved rows keep their space until a vacuum succeeds."),
					 errhint("Fix the cause; the worker tries again and logs this once a minute while it fails.")));
			last_failure_logged = failed_at;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
pgcb_inbox_vacuum_after(uint64 moved)
{
	TimestampTz now = GetCurrentTimestamp();

	moved_since_vacuum += moved;
	if (now < not_before)
		return;
	if (moved_since_vacuum >= VACUUM_AFTER_EVENTS &&
		TimestampDifferenceExceeds(last_vacuum_at, now, VACUUM_MIN_GAP_MS))
	{
		last_vacuum_at = now;
		run_vacuum(false, now);
	}
	else if (moved == 0 && TimestampDifferenceExceeds(last_shrink_at, now, SHRINK_GAP_MS))
	{
		last_shrink_at = now;
		run_vacuum(true, now);
	}
}
