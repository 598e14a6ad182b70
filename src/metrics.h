/*
 * metrics.h
 *		Latency histograms for the stats rollup, live worker counters, and
 *		the Prometheus text exposition.
 */
#ifndef PGCB_METRICS_H
#define PGCB_METRICS_H

/* Buckets of the latency histogram: bucket i covers [0.125*2^(i-1), 0.125*2^i) ms. */
#define PGCB_HIST_BUCKETS 24
#define PGCB_HIST_BASE_MS 0.125

#endif							/* PGCB_METRICS_H */
