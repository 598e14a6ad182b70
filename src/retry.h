/*
 * retry.h
 *		What an attempt's result means for its delivery: delivered, retry
 *		later (and when), or dead.
 */
#ifndef PGCB_RETRY_H
#define PGCB_RETRY_H

#include "utils/timestamp.h"

typedef enum PgcbVerdict
{
	PGCB_DELIVERED,
	PGCB_RETRY,
	PGCB_DEAD
} PgcbVerdict;

typedef struct PgcbDecision
{
	PgcbVerdict verdict;
	int64		delay_ms;		/* PGCB_RETRY: from now to the next attempt */
	bool		endpoint_gone;	/* 410: disable the endpoint */
	bool		counts_as_failure;	/* for the circuit breaker */
	const char *reason;			/* static text for dead letters, or NULL */
} PgcbDecision;

/*
 * status_code is 0 when no response arrived (transport error).
 * retry_after_ms is -1 when the response had no usable Retry-After.
 * attempt is this attempt's number, from 1.  schedule_ms[k] is the delay
 * before retry k+1; the last entry repeats.
 */
extern PgcbDecision pgcb_retry_decide(long status_code, long retry_after_ms, int attempt,
									  int max_attempts, const int64 *schedule_ms,
									  int n_schedule);

/* Parse a Retry-After value (delta-seconds or HTTP-date); -1 when unusable. */
extern long pgcb_retry_parse_retry_after(const char *value);

#endif							/* PGCB_RETRY_H */
