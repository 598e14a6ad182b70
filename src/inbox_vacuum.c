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
 *	- a lock taken without waiting, for the transaction: a move, ANALYZE or
 *	  autovacuum holding it means a later cycle;
 *	- no cost-based delay, whatever vacuum_cost_delay says: this is the
 *	  worker's time;
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
 * that moment.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "inbox.h"
#include "inbox_vacuum.h"

/* About 30 to 40 pages of the inbox's rows, deleted. */
#define VACUUM_AFTER_EVENTS 1000

/* At high rates: a vacuum per this long, each freeing more pages. */
#define VACUUM_MIN_GAP_MS 100

/* How often a cycle that moved nothing may try to shrink the inbox. */
#define SHRINK_GAP_MS 10000

static uint64 moved_since_vacuum = 0;
static TimestampTz last_vacuum_at = 0;
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
	params.freeze_min_age = -1;
	params.freeze_table_age = -1;
	params.multixact_freeze_min_age = -1;
	params.multixact_freeze_table_age = -1;
	params.log_min_duration = -1;
	params.index_cleanup = VACOPTVALUE_AUTO;
	params.truncate = truncate ? VACOPTVALUE_ENABLED : VACOPTVALUE_DISABLED;
	params.nworkers = -1;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
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

			if (!rel->rd_rel->relhasindex && (!shrink || !others_hold(rel)))
			{
				pgstat_report_activity(STATE_RUNNING, "pg_callback: vacuum callback_inbox");
				vacuum_heap(rel, shrink);
				moved_since_vacuum = 0;
			}
			table_close(rel, NoLock);
		}
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		/* as a failed move: logged once a minute, and deliveries go on */
		if (TimestampDifferenceExceeds(last_failure_logged, now, 60 * 1000))
		{
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("pg_callback: vacuuming callback_inbox failed: %s", edata->message),
					 errdetail("Nothing is lost; the inbox's moved rows keep their space until a vacuum succeeds."),
					 errhint("Fix the cause; the worker tries again and logs this once a minute while it fails.")));
			last_failure_logged = now;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
pgcb_inbox_vacuum_after(uint64 moved)
{
	TimestampTz now = GetCurrentTimestamp();

	moved_since_vacuum += moved;
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
