/*
 * metrics.h
 *		Latency histograms for the stats rollup, live worker counters, and
 *		the Prometheus text exposition.
 */
#ifndef PGCB_METRICS_H
#define PGCB_METRICS_H

#include "fmgr.h"

/* Buckets of the latency histogram: bucket i covers [0.125*2^(i-1), 0.125*2^i) ms. */
#define PGCB_HIST_BUCKETS 24
#define PGCB_HIST_BASE_MS 0.125

/* The bucket (0-based) of a finite latency of 0 ms or more. */
extern int	pgcb_hist_bucket(double ms);

/* SQL callback.histogram_add(bigint[], bigint[]): bucket-wise sum. */
extern Datum histogram_add(PG_FUNCTION_ARGS);

#endif							/* PGCB_METRICS_H */
