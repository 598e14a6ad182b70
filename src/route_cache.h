/*
 * route_cache.h
 *		Which endpoints an event type goes to, from a backend-local copy of
 *		the enabled endpoints' patterns.
 */
#ifndef PGCB_ROUTE_CACHE_H
#define PGCB_ROUTE_CACHE_H

/*
 * The ids of the enabled endpoints whose patterns match event_type, in
 * ascending order; returns their number.  *ids stays valid until the next
 * call.  *any_unpaused: one of them is not paused, so the worker has work
 * when the event commits (events for paused endpoints only wait for
 * resume_endpoint(), which wakes it).  (*ordered)[i]: whether endpoint i
 * is ordered (*ordered is NULL when none is), valid as long as *ids.
 */
extern int	pgcb_route_cache_match(const char *event_type, const int32 **ids, bool *any_unpaused,
								   const bool **ordered);

#endif							/* PGCB_ROUTE_CACHE_H */
