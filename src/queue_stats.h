/*
 * queue_stats.h
 *		The stats rollup added in C to callback_stats rows already there.
 */
#ifndef PGCB_QUEUE_STATS_H
#define PGCB_QUEUE_STATS_H

#include "datatype/timestamp.h"

#include "metrics.h"

/*
 * One callback_stats row of a rollup: what the write-back counts
 * (queue_write_back.c) and what is added to the table (here).
 */
typedef struct PgcbStatsRow
{
	TimestampTz minute;
	int32		endpoint_id;
	char	   *event_type;
	int64		attempts;
	int64		delivered;
	int64		failed;
	int64		dead;
	double		latency_sum_ms;
	double		latency_max_ms;
	int64		hist[PGCB_HIST_BUCKETS];
	char	   *last_error;		/* of the latest attempt with one */
	TimestampTz last_error_at;	/* the write-back's, to pick that attempt */
} PgcbStatsRow;

/*
 * Add the rollup documents (jsonb arrays of callback_stats rows, oldest
 * first) to their rows, as PLAN_STATS would, when every key's row is there
 * and could be locked: true.  False: nothing was written (PLAN_STATS is
 * for all of them).
 */
extern bool pgcb_stats_add_in_place(char *const *docs, int n);

#endif							/* PGCB_QUEUE_STATS_H */
