
/*
 * 20-input-validation: the internal helpers of the metrics views are not
 * for PUBLIC.  histogram_accum and histogram_add are the transition
 * functions of latency_histogram() and histogram_sum(); an aggregate checks
 * EXECUTE on them as the aggregate's owner, so the extension's own
 * aggregates keep working while nobody else builds aggregates on them.
 * Functions called in a view are checked as the view's user, not its owner:
 * callback_metrics calls histogram_sum() and histogram_percentile(), so
 * callback_monitor (and through it callback_admin) keeps EXECUTE on the
 * former; the latter, a pure function of its arguments, stays public.
 * _prom_label() serves only prometheus_metrics(), which runs as its owner.
 */
REVOKE ALL ON FUNCTION
    callback.histogram_accum(bigint[], double precision),
    callback.histogram_add(bigint[], bigint[]),
    callback.latency_histogram(double precision),
    callback.histogram_sum(bigint[]),
    callback._prom_label(text)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION callback.histogram_sum(bigint[]) TO callback_monitor;

/*
 * histogram_add() is histogram_sum()'s transition: strict, the first
 * histogram of each group became the state without being looked at.  Called
 * on NULL input it checks every one (and still skips NULLs).
 */
ALTER FUNCTION callback.histogram_add(bigint[], bigint[]) CALLED ON NULL INPUT;
