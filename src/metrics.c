/*
 * metrics.c
 *		SQL functions behind the metrics views: the latency histogram kept in
 *		callback_stats (an aggregate, a merge and a percentile estimate), and
 *		worker_stats(), the live counters from shared memory.
 *
 * A histogram of 24 power-of-two buckets makes p50/p95/p99 cheap over any
 * history: the views sum a few thousand per-minute rows instead of sorting
 * millions of attempts.  Estimates are interpolated within a bucket.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "metrics.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(histogram_accum);
PG_FUNCTION_INFO_V1(histogram_add);
PG_FUNCTION_INFO_V1(histogram_percentile);
PG_FUNCTION_INFO_V1(worker_stats);

static int
bucket_of(double ms)
{
	int			b;

	if (!(ms >= PGCB_HIST_BASE_MS))
		return 0;
	b = (int) floor(log2(ms / PGCB_HIST_BASE_MS)) + 1;
	return Min(b, PGCB_HIST_BUCKETS - 1);
}

static void
check_histogram(ArrayType *a)
{
	if (ARR_NDIM(a) != 1 || ARR_DIMS(a)[0] != PGCB_HIST_BUCKETS ||
		ARR_HASNULL(a) || ARR_ELEMTYPE(a) != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a latency histogram is a bigint[] of %d non-NULL counts", PGCB_HIST_BUCKETS)));
}

static ArrayType *
empty_histogram(void)
{
	Datum		zeros[PGCB_HIST_BUCKETS];

	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
		zeros[i] = Int64GetDatum(0);
	return construct_array(zeros, PGCB_HIST_BUCKETS, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/* Aggregate transition: count one latency (ms) into the histogram. */
Datum
histogram_accum(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ArrayType  *state;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "histogram_accum called in non-aggregate context");
	if (PG_ARGISNULL(0))
	{
		MemoryContext old = MemoryContextSwitchTo(aggcxt);

		state = empty_histogram();
		MemoryContextSwitchTo(old);
	}
	else
		state = PG_GETARG_ARRAYTYPE_P(0);
	if (!PG_ARGISNULL(1))
		((int64 *) ARR_DATA_PTR(state))[bucket_of(PG_GETARG_FLOAT8(1))]++;
	PG_RETURN_ARRAYTYPE_P(state);
}

Datum
histogram_add(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P_COPY(0);
	ArrayType  *b = PG_GETARG_ARRAYTYPE_P(1);
	int64	   *da;
	int64	   *db;

	check_histogram(a);
	check_histogram(b);
	da = (int64 *) ARR_DATA_PTR(a);
	db = (int64 *) ARR_DATA_PTR(b);
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
		da[i] += db[i];
	PG_RETURN_ARRAYTYPE_P(a);
}

/* The p-quantile (0..1) in ms, interpolated geometrically inside its bucket. */
Datum
histogram_percentile(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	double		p = PG_GETARG_FLOAT8(1);
	int64	   *d;
	int64		total = 0;
	double		rank;
	int64		seen = 0;

	check_histogram(a);
	if (!(p >= 0.0 && p <= 1.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("percentile %g is not between 0 and 1", p)));
	d = (int64 *) ARR_DATA_PTR(a);
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
		total += d[i];
	if (total == 0)
		PG_RETURN_NULL();
	rank = p * (double) total;
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
	{
		if (d[i] > 0 && (double) (seen + d[i]) >= rank)
		{
			double		lo = i == 0 ? 0.0 : PGCB_HIST_BASE_MS * pow(2.0, i - 1);
			double		hi = PGCB_HIST_BASE_MS * pow(2.0, i);
			double		frac = (rank - (double) seen) / (double) d[i];

			frac = Max(0.0, Min(1.0, frac));
			if (i == 0)
				PG_RETURN_FLOAT8(hi * frac);
			PG_RETURN_FLOAT8(lo * pow(hi / lo, frac));
		}
		seen += d[i];
	}
	PG_RETURN_FLOAT8(PGCB_HIST_BASE_MS * pow(2.0, PGCB_HIST_BUCKETS - 1));
}

/* callback.worker_stats(): one row per worker slot in use, from shared memory. */
Datum
worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (pgcb_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_callback is not in shared_preload_libraries"),
				 errhint("Add pg_callback to shared_preload_libraries and restart the server.")));

	for (int i = 0; i < PGCB_MAX_WORKERS; i++)
	{
		PgcbWorkerSlot *slot = &pgcb_shared->workers[i];
		Datum		values[15];
		bool		nulls[15];
		char		last_error[PGCB_LAST_ERROR_LEN];
		TimestampTz last_error_at;
		pid_t		pid = slot->pid;

		if (pid == 0)
			continue;
		memset(nulls, 0, sizeof(nulls));
		SpinLockAcquire(&slot->error_mutex);
		strlcpy(last_error, slot->last_error, sizeof(last_error));
		last_error_at = slot->last_error_at;
		SpinLockRelease(&slot->error_mutex);

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum((int32) pid);
		values[2] = ObjectIdGetDatum(slot->dboid);
		values[3] = CStringGetTextDatum(pgcb_state_name(pg_atomic_read_u32(&slot->state)));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->inflight));
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->sent));
		values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->delivered));
		values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->failed));
		values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->dead));
		values[9] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->bytes_sent));
		values[10] = Int64GetDatum((int64) pg_atomic_read_u64(&slot->batches));
		values[11] = TimestampTzGetDatum(slot->started_at);
		values[12] = TimestampTzGetDatum(slot->last_activity_at);
		values[13] = CStringGetTextDatum(last_error);
		nulls[13] = last_error[0] == '\0';
		values[14] = TimestampTzGetDatum(last_error_at);
		nulls[14] = last_error_at == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
