/*
 * route_cache.h
 *		Which endpoints an event type goes to, from a backend-local copy of
 *		the enabled endpoints' patterns.
 */
#ifndef PGCB_ROUTE_CACHE_H
#define PGCB_ROUTE_CACHE_H

/*
 * Where one event goes: the ids of the enabled endpoints whose patterns
 * match its type, in ascending order.  any_unpaused: one of them is not
 * paused, so the worker has work when the event commits (events for paused
 * endpoints only wait for resume_endpoint(), which wakes it).  ordered[i]:
 * whether endpoint i is ordered (ordered is NULL when none is).
 */
typedef struct PgcbRoutes
{
	int			n;
	const int32 *ids;
	const bool *ordered;
	bool		any_unpaused;
	uint64		memo_generation;	/* the memo ids and ordered point into */
} PgcbRoutes;

/*
 * The routes of event_type as the endpoints are now (a change committed
 * by another session is seen from here on).
 */
extern void pgcb_route_cache_lookup(const char *event_type, PgcbRoutes *routes);

/*
 * Whether routes still hold: no change to the endpoints seen and no rebuild
 * since its lookup.  One event looks its routes up once; what runs between
 * that and its queue rows (its body's output functions) may change an
 * endpoint or rebuild the cache.
 */
extern bool pgcb_route_cache_current(const PgcbRoutes *routes);

#endif							/* PGCB_ROUTE_CACHE_H */
