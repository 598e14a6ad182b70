/*
 * queue_stats.h
 *		The stats rollup added in C to callback_stats rows already there.
 */
#ifndef PGCB_QUEUE_STATS_H
#define PGCB_QUEUE_STATS_H

/*
 * Add the rollup documents (jsonb arrays of callback_stats rows, oldest
 * first) to their rows, as PLAN_STATS would, when every key's row is there
 * and could be locked: true.  False: nothing was written (PLAN_STATS is
 * for all of them).
 */
extern bool pgcb_stats_add_in_place(char *const *docs, int n);

#endif							/* PGCB_QUEUE_STATS_H */
