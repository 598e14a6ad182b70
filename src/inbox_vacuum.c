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
 * VACUUM_MIN_GAP_MS, the worker runs VACUUM (TRUNCATE false) on the inbox,
 * between two cycles, outside their transactions.  No truncation: that
 * needs an ACCESS EXCLUSIVE lock, which the producers' inserts hold off
 * and which VACUUM waits up to 5 s for; autovacuum still shrinks the table
 * when it can.  A lock we cannot have at once (autovacuum, an ANALYZE, a
 * mover in another session) means: at a later cycle.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "inbox.h"
#include "inbox_vacuum.h"
#include "pg_callback.h"

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

/* VACUUM (TRUNCATE truncate, SKIP_LOCKED) of relid, as the statement would. */
static void
vacuum_inbox(Oid relid, bool truncate)
{
	VacuumStmt *stmt = makeNode(VacuumStmt);

	stmt->options = list_make2(makeDefElem("truncate", (Node *) makeString(truncate ? "true" : "false"), -1),
							   makeDefElem("skip_locked", (Node *) makeString("true"), -1));
	stmt->rels = list_make1(makeVacuumRelation(makeRangeVar(PGCB_SCHEMA_NAME, "callback_inbox", -1),
											   relid, NIL));
	stmt->is_vacuumcmd = true;
	ExecVacuum(make_parsestate(NULL), stmt, true);
}

/*
 * Our lock on the inbox, held from our look to VACUUM's own lock, across
 * the transactions VACUUM commits: a lock another process took in between
 * would have VACUUM skip the table with a warning.  A session lock, which
 * no transaction's end lets go: released by unlock_session().
 */
static LOCKTAG held_tag;
static LOCKMODE held_mode = NoLock;

static bool
lock_for_session(Oid relid, LOCKMODE mode)
{
	SET_LOCKTAG_RELATION(held_tag, MyDatabaseId, relid);
	if (LockAcquire(&held_tag, mode, true, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	held_mode = mode;
	return true;
}

static void
unlock_session(void)
{
	if (held_mode != NoLock)
		LockRelease(&held_tag, held_mode, true);
	held_mode = NoLock;
}

/*
 * With the mode given, taken without waiting: SHARE UPDATE EXCLUSIVE for
 * the vacuum after moves; ACCESS EXCLUSIVE, which no producer may hold
 * meanwhile, for the one that truncates, which then has its lock at once
 * rather than waiting up to 5 s for it.  An inbox of no page is left
 * alone: an ACCESS EXCLUSIVE lock is written to the WAL (for standbys),
 * and an idle database would log one every SHRINK_GAP_MS.
 */
static void
run_vacuum(LOCKMODE mode, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;
	MemoryContext portal_cxt = PortalContext;
	bool		truncate = (mode == AccessExclusiveLock);
	Oid			relid;

	/* VACUUM keeps what lives across its transactions in PortalContext */
	PortalContext = AllocSetContextCreate(cxt, "pg_callback inbox vacuum", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		StartTransactionCommand();
		relid = pgcb_inbox_relid_if_any();
		if (OidIsValid(relid) && (!truncate || !pgcb_inbox_surely_empty(relid)) &&
			lock_for_session(relid, mode))
		{
			pgstat_report_activity(STATE_RUNNING, "pg_callback: vacuum callback_inbox");
			vacuum_inbox(relid, truncate);
			moved_since_vacuum = 0;
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
		AbortOutOfAnyTransaction();
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
	unlock_session();
	MemoryContextSwitchTo(cxt);
	MemoryContextDelete(PortalContext);
	PortalContext = portal_cxt;
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
pgcb_inbox_vacuum_after(uint64 moved)
{
	TimestampTz now;

	moved_since_vacuum += moved;
	now = GetCurrentTimestamp();
	if (moved_since_vacuum >= VACUUM_AFTER_EVENTS &&
		TimestampDifferenceExceeds(last_vacuum_at, now, VACUUM_MIN_GAP_MS))
	{
		last_vacuum_at = now;
		run_vacuum(ShareUpdateExclusiveLock, now);
	}
	else if (moved == 0 && TimestampDifferenceExceeds(last_shrink_at, now, SHRINK_GAP_MS))
	{
		last_shrink_at = now;
		run_vacuum(AccessExclusiveLock, now);
	}
}
