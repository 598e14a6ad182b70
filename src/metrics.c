/*
 * metrics.c
 *		SQL functions behind the metrics views: the latency histogram kept in
 *		callback_stats (an aggregate, a merge and a percentile estimate),
 *		worker_stats(), the live counters from shared memory, and
 *		launcher_databases(), which databases the launcher serves.
 *
 * A histogram of 24 power-of-two buckets makes p50/p95/p99 cheap over any
 * history: the views sum a few thousand per-minute rows instead of sorting
 * millions of attempts.  Estimates are interpolated within a bucket.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/int.h"
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
PG_FUNCTION_INFO_V1(launcher_databases);

/*
 * The bucket of a latency: finite and not negative (the callers check), so
 * the floor of its log2 is a finite double, compared before any cast to int.
 */
int
pgcb_hist_bucket(double ms)
{
	double		b;

	if (ms < PGCB_HIST_BASE_MS)
		return 0;
	b = floor(log2(ms / PGCB_HIST_BASE_MS)) + 1.0;
	if (b >= (double) (PGCB_HIST_BUCKETS - 1))
		return PGCB_HIST_BUCKETS - 1;
	return (int) b;
}

/*
 * Refuse anything but the histograms these functions make: one dimension
 * indexed from 1, PGCB_HIST_BUCKETS non-NULL counts, none negative.  The
 * SQL type only promises a bigint[], and a user-defined aggregate can start
 * from any INITCOND: the data is indexed by bucket, so its shape is checked
 * before any read or write.
 */
static void
check_histogram(ArrayType *a, const char *what)
{
	int64	   *d;

	if (ARR_ELEMTYPE(a) != INT8OID || ARR_NDIM(a) != 1 ||
		ARR_DIMS(a)[0] != PGCB_HIST_BUCKETS || ARR_LBOUND(a)[0] != 1 ||
		ARR_HASNULL(a))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not a latency histogram", what),
				 errdetail("A latency histogram is a one-dimensional bigint[] of %d non-NULL counts, indexed from 1.",
						   PGCB_HIST_BUCKETS),
				 errhint("Use the histograms in callback.callback_stats.latency_hist, or callback.latency_histogram() to make one.")));
	d = (int64 *) ARR_DATA_PTR(a);
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
	{
		if (d[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s is not a latency histogram", what),
					 errdetail("Bucket %d holds the negative count " INT64_FORMAT ".", i + 1, d[i]),
					 errhint("Use the histograms in callback.callback_stats.latency_hist, or callback.latency_histogram() to make one.")));
	}
}

static void
count_overflow(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("latency histogram count out of range"),
			 errdetail("A bucket would hold more than " INT64_FORMAT " attempts.", PG_INT64_MAX),
			 errhint("Sum fewer histograms at a time.")));
}

static ArrayType *
empty_histogram(void)
{
	Datum		zeros[PGCB_HIST_BUCKETS];

	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
		zeros[i] = Int64GetDatum(0);
	return construct_array(zeros, PGCB_HIST_BUCKETS, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * Aggregate transition: count one latency (ms) into the histogram.  The
 * state is updated in place, which an aggregate's transition function may
 * do; it is checked first, since any aggregate may use this function.
 */
Datum
histogram_accum(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ArrayType  *state;
	int64	   *slot;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("callback.histogram_accum() can only be called as an aggregate's transition function"),
				 errhint("Use the aggregate callback.latency_histogram(latency_ms).")));
	if (PG_ARGISNULL(0))
	{
		MemoryContext old = MemoryContextSwitchTo(aggcxt);

		state = empty_histogram();
		MemoryContextSwitchTo(old);
	}
	else
	{
		state = PG_GETARG_ARRAYTYPE_P(0);
		check_histogram(state, "the aggregate state");
	}
	if (!PG_ARGISNULL(1))
	{
		double		ms = PG_GETARG_FLOAT8(1);

		if (isnan(ms) || isinf(ms) || ms < 0.0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("latency %g ms is not a finite number of milliseconds, 0 or more", ms),
					 errhint("Give each attempt's latency in milliseconds, such as 12.5.")));
		slot = &((int64 *) ARR_DATA_PTR(state))[pgcb_hist_bucket(ms)];
		if (pg_add_s64_overflow(*slot, 1, slot))
			count_overflow();
	}
	PG_RETURN_ARRAYTYPE_P(state);
}

/*
 * Bucket-wise sum of two histograms, the transition of histogram_sum().
 * Called on NULL input (from 1.1) so that the first histogram an aggregate
 * sees is checked too: a strict transition would take it as the state
 * unchecked.  A NULL histogram adds nothing, as sum() skips NULLs.
 */
Datum
histogram_add(PG_FUNCTION_ARGS)
{
	ArrayType  *a;
	ArrayType  *b;
	int64	   *da;
	int64	   *db;

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
	{
		int			given = PG_ARGISNULL(0) ? 1 : 0;

		a = PG_GETARG_ARRAYTYPE_P_COPY(given);
		check_histogram(a, given == 0 ? "the first argument" : "the second argument");
		PG_RETURN_ARRAYTYPE_P(a);
	}
	a = PG_GETARG_ARRAYTYPE_P_COPY(0);
	b = PG_GETARG_ARRAYTYPE_P(1);
	check_histogram(a, "the first argument");
	check_histogram(b, "the second argument");
	da = (int64 *) ARR_DATA_PTR(a);
	db = (int64 *) ARR_DATA_PTR(b);
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
	{
		if (pg_add_s64_overflow(da[i], db[i], &da[i]))
			count_overflow();
	}
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

	check_histogram(a, "the first argument");
	/* also false for NaN */
	if (!(p >= 0.0 && p <= 1.0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("percentile %g is not between 0 and 1", p),
				 errhint("Give the quantile as a fraction, such as 0.95 for p95.")));
	d = (int64 *) ARR_DATA_PTR(a);
	for (int i = 0; i < PGCB_HIST_BUCKETS; i++)
	{
		if (pg_add_s64_overflow(total, d[i], &total))
			count_overflow();
	}
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

/* The live figures are in shared memory, there only when preloaded. */
static void
require_shared_memory(void)
{
	if (pgcb_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_callback is not in shared_preload_libraries"),
				 errhint("Add pg_callback to shared_preload_libraries and restart the server.")));
}

/* callback.worker_stats(): one row per worker slot in use, from shared memory. */
Datum
worker_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	require_shared_memory();

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

/*
 * callback.launcher_databases(): the databases where the launcher knows
 * pg_callback is installed, served or not, and why not.  Read under the
 * shared lock into local memory first: the tuplestore may write to disk.
 */
Datum
launcher_databases(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PgcbDatabase dbs[PGCB_MAX_DATABASES];

	InitMaterializedSRF(fcinfo, 0);
	require_shared_memory();

	LWLockAcquire(pgcb_shared->lock, LW_SHARED);
	memcpy(dbs, pgcb_shared->databases, sizeof(dbs));
	LWLockRelease(pgcb_shared->lock);

	for (int i = 0; i < PGCB_MAX_DATABASES; i++)
	{
		PgcbDatabase *db = &dbs[i];
		Datum		values[5];
		bool		nulls[5];
		const char *detail;

		if (db->state == PGCB_DB_FREE || db->state == PGCB_DB_ABSENT)
			continue;
		memset(nulls, 0, sizeof(nulls));
		detail = pgcb_database_reason_text(db->reason);
		values[0] = ObjectIdGetDatum(db->dboid);
		values[1] = CStringGetTextDatum(pgcb_database_state_name(db->state));
		values[2] = Int32GetDatum((int32) db->worker_pid);
		nulls[2] = db->state != PGCB_DB_SERVED || db->worker_pid == 0;
		values[3] = TimestampTzGetDatum(db->since);
		values[4] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
		nulls[4] = detail == NULL;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
