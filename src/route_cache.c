/*
 * route_cache.c
 *		Routing an event type to endpoints from a backend-local copy of the
 *		enabled endpoints and their patterns, instead of scanning
 *		callback_endpoints and matching every pattern per row.
 *
 * Invalidation: row changes send no relcache invalidation by themselves,
 * so part 70 puts a statement-level trigger on callback_endpoints
 * (INSERT, DELETE, TRUNCATE, UPDATE OF id, enabled, paused, event_types:
 * the breaker's updates do not change routing and do not invalidate; a
 * pause does not change where events go, but whether their commit need
 * wake the worker) that calls callback._endpoints_changed(), which sends a
 * relcache invalidation of callback_endpoints.  PostgreSQL delivers it to
 * this backend at the next command (our own change) or, from another
 * session, when that session commits; a rollback, or a savepoint rolled
 * back, replays it locally.  Each lookup first reads the invalidation queue
 * (AcceptInvalidationMessages: one unlocked flag test when it is empty), so
 * an endpoint created, altered, disabled or dropped and committed is seen
 * by the next event of every session, also within an open transaction.
 *
 * What a rebuild reads: the latest committed state plus this transaction's
 * own earlier commands (GetLatestSnapshot), whatever the isolation level.
 * So routing is "the endpoints as they are when the event happens", also
 * in REPEATABLE READ and SERIALIZABLE (1.0's SQL routing used the
 * transaction snapshot there).  A cache built from the
 * transaction snapshot could not be kept past its transaction: a change
 * committed before the rebuild but after that snapshot would have had its
 * invalidation consumed already.
 *
 * Without that trigger (a 1.0 schema the 1.1 library runs against before
 * ALTER EXTENSION ... UPDATE, or the trigger disabled) the copy is read
 * again for every event.
 *
 * Matches are remembered per event type (a trigger fires with one or three
 * types), at most MEMO_MAX of them, forgotten with the endpoints.  The last
 * one found is kept at hand: a statement's rows, and most runs of writes,
 * ask for the same type again, and a string comparison is a fraction of a
 * hash look-up.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "executor/tuptable.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "pg_callback.h"
#include "session.h"
#include "route_cache.h"

#define MEMO_MAX 1024

typedef struct RouteEndpoint
{
	int32		id;
	bool		ordered;		/* ordering: its events carry a key */
	bool		paused;			/* queued for, but not delivered to now */
	int			npatterns;
	char	  **patterns;
} RouteEndpoint;

typedef struct RouteMemo
{
	char		event_type[PGCB_EVENT_TYPE_MAX + 1];	/* hash key */
	int			n;
	int32	   *ids;
	bool	   *ordered;		/* per id; NULL when none is ordered */
	bool		any_unpaused;	/* one of them may deliver now: wake the worker */
} RouteMemo;

static MemoryContext route_cxt = NULL;
static MemoryContext memo_cxt = NULL;
static Oid	endpoints_relid = InvalidOid;
static bool valid = false;
static uint64 invalidations = 0;
static RouteEndpoint *endpoints = NULL;
static int	n_endpoints = 0;
static HTAB *memo = NULL;
static RouteMemo *last_memo = NULL; /* in memo; NULL when memo is remade */
static uint64 memo_generation = 0;	/* bumped each time memo is remade */

static void
route_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == endpoints_relid)
	{
		valid = false;
		invalidations++;
	}
}

static Oid
lookup_endpoints_relid(void)
{
	return pgcb_session_relid("callback_endpoints");
}

/*
 * Whether part 70's trigger is there and fires always.  Without it (a 1.0
 * schema not yet updated to 1.1, or the trigger disabled by hand) nothing
 * tells us of a change: the copy is then read again for every event.
 */
static bool
has_invalidation_trigger(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;

	if (td == NULL)
		return false;
	for (int i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		/* ALWAYS: also in sessions with session_replication_role = replica */
		if (strcmp(t->tgname, "callback_endpoints_routes_changed") == 0 &&
			t->tgenabled == TRIGGER_FIRES_ALWAYS)
			return true;
	}
	return false;
}

static int
endpoint_cmp(const void *a, const void *b)
{
	int32		x = ((const RouteEndpoint *) a)->id;
	int32		y = ((const RouteEndpoint *) b)->id;

	return (x > y) - (x < y);
}

/* The memo and the id arrays it points to live in memo_cxt. */
static void
new_memo(void)
{
	HASHCTL		ctl;

	if (memo_cxt == NULL)
		memo_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback route memo",
										 ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(memo_cxt);
	last_memo = NULL;
	memo_generation++;
	ctl.keysize = PGCB_EVENT_TYPE_MAX + 1;
	ctl.entrysize = sizeof(RouteMemo);
	ctl.hcxt = memo_cxt;
	memo = hash_create("pg_callback routes", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

static void
rebuild(void)
{
	Relation	rel;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	att_id;
	AttrNumber	att_enabled;
	AttrNumber	att_types;
	AttrNumber	att_ordered;
	AttrNumber	att_paused;
	int			cap = 16;
	uint64		seen;
	bool		invalidated_by_trigger;

	if (route_cxt == NULL)
	{
		route_cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback route cache",
										  ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(route_relcache_callback, (Datum) 0);
	}
	MemoryContextReset(route_cxt);
	endpoints = NULL;
	n_endpoints = 0;
	new_memo();

	/*
	 * Valid at the end only if no invalidation arrived meanwhile (opening
	 * the table reads the queue; a commit seen by it may or may not be in
	 * our snapshot): else this call uses what it read and the next one
	 * reads again.  An error on the way leaves it invalid.
	 */
	seen = invalidations;
	endpoints_relid = lookup_endpoints_relid();

	rel = table_open(endpoints_relid, AccessShareLock);
	invalidated_by_trigger = has_invalidation_trigger(rel);
	att_id = attnameAttNum(rel, "id", false);
	att_enabled = attnameAttNum(rel, "enabled", false);
	att_types = attnameAttNum(rel, "event_types", false);
	/* ordering: absent from a 1.0 schema, where nothing is ordered */
	att_ordered = attnameAttNum(rel, "ordered", false);
	att_paused = attnameAttNum(rel, "paused", false);
	if (att_id == InvalidAttrNumber || att_enabled == InvalidAttrNumber ||
		att_types == InvalidAttrNumber || att_paused == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("callback.callback_endpoints lacks id, enabled, paused or event_types"),
				 errhint("The extension's tables were changed by hand; reinstall pg_callback.")));

	endpoints = MemoryContextAlloc(route_cxt, sizeof(RouteEndpoint) * cap);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d;
		ArrayType  *arr;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		RouteEndpoint *ep;

		d = slot_getattr(slot, att_enabled, &isnull);
		if (isnull || !DatumGetBool(d))
			continue;
		d = slot_getattr(slot, att_id, &isnull);
		if (isnull)
			continue;
		if (n_endpoints == cap)
		{
			cap *= 2;
			endpoints = repalloc(endpoints, sizeof(RouteEndpoint) * cap);
		}
		ep = &endpoints[n_endpoints++];
		ep->id = DatumGetInt32(d);
		ep->ordered = false;
		if (att_ordered != InvalidAttrNumber)
		{
			d = slot_getattr(slot, att_ordered, &isnull);
			ep->ordered = !isnull && DatumGetBool(d);
		}
		d = slot_getattr(slot, att_paused, &isnull);
		ep->paused = !isnull && DatumGetBool(d);
		ep->npatterns = 0;
		ep->patterns = NULL;
		d = slot_getattr(slot, att_types, &isnull);
		if (isnull)
			continue;
		arr = DatumGetArrayTypeP(d);
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		ep->patterns = MemoryContextAlloc(route_cxt, sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			/* a NULL element matches nothing, as in event_type_matches() */
			if (!nulls[i])
				ep->patterns[ep->npatterns++] =
					MemoryContextStrdup(route_cxt, TextDatumGetCString(elems[i]));
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);

	qsort(endpoints, n_endpoints, sizeof(RouteEndpoint), endpoint_cmp);
	valid = (invalidations == seen) && invalidated_by_trigger;
}

/* The memo of event_type, made on a miss. */
static RouteMemo *
memo_for(const char *event_type)
{
	RouteMemo  *m;
	bool		found;

	if (strlen(event_type) > PGCB_EVENT_TYPE_MAX)
		elog(ERROR, "event type longer than %d characters", PGCB_EVENT_TYPE_MAX);
	m = hash_search(memo, event_type, HASH_FIND, &found);
	if (!found)
	{
		int32	   *matched;
		bool	   *matched_ordered;
		bool		any_ordered = false;
		int			n = 0;
		bool		unpaused = false;

		if (hash_get_num_entries(memo) >= MEMO_MAX)
			new_memo();
		matched = MemoryContextAlloc(memo_cxt, sizeof(int32) * Max(n_endpoints, 1));
		matched_ordered = MemoryContextAlloc(memo_cxt, sizeof(bool) * Max(n_endpoints, 1));

		for (int e = 0; e < n_endpoints; e++)
		{
			for (int p = 0; p < endpoints[e].npatterns; p++)
			{
				if (pgcb_event_type_matches(endpoints[e].patterns[p], event_type))
				{
					matched_ordered[n] = endpoints[e].ordered;
					any_ordered |= endpoints[e].ordered;
					matched[n++] = endpoints[e].id;
					unpaused |= !endpoints[e].paused;
					break;
				}
			}
		}
		m = hash_search(memo, event_type, HASH_ENTER, &found);
		m->n = n;
		m->ids = matched;
		m->ordered = any_ordered ? matched_ordered : NULL;
		m->any_unpaused = unpaused;
	}
	return m;
}

void
pgcb_route_cache_lookup(const char *event_type, PgcbRoutes *routes)
{
	RouteMemo  *m;

	/* see the header comment: a committed change is seen from here on */
	AcceptInvalidationMessages();
	if (!valid)
		rebuild();

	/* last_memo: forgotten by a rebuild, which remakes the memo */
	if (last_memo != NULL && strcmp(last_memo->event_type, event_type) == 0)
		m = last_memo;
	else
		m = last_memo = memo_for(event_type);
	routes->n = m->n;
	routes->ids = m->ids;
	routes->ordered = m->ordered;
	routes->any_unpaused = m->any_unpaused;
	routes->memo_generation = memo_generation;
}

bool
pgcb_route_cache_current(const PgcbRoutes *routes)
{
	/*
	 * Invalid: a change seen since (a cast run for the body may alter an
	 * endpoint).  Without the invalidation trigger the cache is never
	 * valid, and an event is routed twice, as before it was routed once:
	 * nothing else would tell of a change made meanwhile.
	 */
	return valid && routes->memo_generation == memo_generation;
}

/*
 * callback._endpoints_changed(): the statement-level trigger on
 * callback_endpoints that tells every backend to drop its routes (at the
 * next command here, at commit elsewhere).
 */
PG_FUNCTION_INFO_V1(endpoints_changed);

Datum
endpoints_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback._endpoints_changed() was not called by the trigger manager"),
				 errhint("It is the trigger pg_callback keeps on callback.callback_endpoints; do not call it.")));
	if (RelationGetRelid(trigdata->tg_relation) != lookup_endpoints_relid())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("callback._endpoints_changed() fired on \"%s\", not on callback.callback_endpoints",
						RelationGetRelationName(trigdata->tg_relation)),
				 errhint("It is the trigger pg_callback keeps on callback.callback_endpoints; do not attach it elsewhere.")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
