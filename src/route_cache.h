/*
 * route_cache.h
 *		Which endpoints an event type goes to, from a backend-local copy of
 *		the enabled endpoints' patterns.
 */
#ifndef PGCB_ROUTE_CACHE_H
#define PGCB_ROUTE_CACHE_H

/*
 * The ids of the enabled endpoints whose patterns match event_type, in
 * ascending order; returns their number.  (*ordered)[i]: whether endpoint
 * i is ordered (*ordered is NULL when none is).  Both stay valid until
 * the next call.
 */
extern int	pgcb_route_cache_match(const char *event_type, const int32 **ids,
								   const bool **ordered);

#endif							/* PGCB_ROUTE_CACHE_H */
