/*
 * 60-prometheus: the Prometheus exposition done the Prometheus way.
 *
 * Owns callback_stats_purged (lifetime counters that outlive purge()), the
 * two triggers that keep it, callback.prometheus_series() and
 * callback.prometheus_health() (the rows both the text exposition and
 * deploy/prometheus/queries.yaml read), and callback.prometheus_metrics().
 *
 * Names follow the Prometheus conventions: base units (seconds), counters
 * end in _total, latency is a histogram (cumulative _bucket{le} from the
 * power-of-two buckets of callback_stats, +Inf, _sum, _count) so that it
 * aggregates across instances.  Figures derived from others (success ratio,
 * average latency, quantiles) are left to PromQL.
 */

/*
 * What purge() has removed from callback_stats, per endpoint and event type.
 * callback_stats + callback_stats_purged is the whole history, so the
 * counters exported from it never go down when old minutes are purged (a
 * drop would read as a counter reset).  Kept by a trigger on callback_stats,
 * so that purge(), drop_endpoint() and any later deleter fold what they remove.
 */
CREATE TABLE callback.callback_stats_purged (
    endpoint_id integer NOT NULL,
    event_type text NOT NULL,
    attempts bigint NOT NULL,
    delivered bigint NOT NULL,
    failed bigint NOT NULL,
    dead bigint NOT NULL,
    latency_sum_ms double precision NOT NULL,
    latency_hist bigint[] NOT NULL,
    PRIMARY KEY (endpoint_id, event_type)
);
REVOKE ALL ON callback.callback_stats_purged FROM PUBLIC;
-- counts and timings only, like callback_stats
GRANT SELECT ON callback.callback_stats_purged TO callback_admin, callback_monitor;

/*
 * Folds deleted callback_stats rows into callback_stats_purged, in the
 * deleting transaction: a scrape sees either the minutes or their fold.
 * Rows of an endpoint that is gone are dropped (they have no series), and
 * so are folds left behind by a drop_endpoint() that raced with a purge.
 */
CREATE FUNCTION callback._stats_fold_purged()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO callback.callback_stats_purged AS p
        (endpoint_id, event_type, attempts, delivered, failed, dead, latency_sum_ms, latency_hist)
    SELECT g.endpoint_id, g.event_type, sum(g.attempts), sum(g.delivered), sum(g.failed),
           sum(g.dead), sum(g.latency_sum_ms), callback.histogram_sum(g.latency_hist)
      FROM gone g
     WHERE EXISTS (SELECT 1 FROM callback.callback_endpoints e
                    WHERE e.id = g.endpoint_id)
     GROUP BY g.endpoint_id, g.event_type
    ON CONFLICT (endpoint_id, event_type) DO UPDATE SET
        attempts = p.attempts + excluded.attempts,
        delivered = p.delivered + excluded.delivered,
        failed = p.failed + excluded.failed,
        dead = p.dead + excluded.dead,
        latency_sum_ms = p.latency_sum_ms + excluded.latency_sum_ms,
        latency_hist = callback.histogram_add(p.latency_hist, excluded.latency_hist);
    DELETE FROM callback.callback_stats_purged p
     WHERE NOT EXISTS (SELECT 1 FROM callback.callback_endpoints e
                        WHERE e.id = p.endpoint_id);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER callback_stats_fold_purged
    AFTER DELETE ON callback.callback_stats
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION callback._stats_fold_purged();

/* drop_endpoint() removes the endpoint's history: its folded part too. */
CREATE FUNCTION callback._stats_drop_purged()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM callback.callback_stats_purged p
     WHERE p.endpoint_id IN (SELECT g.id FROM gone g);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER callback_endpoints_drop_purged
    AFTER DELETE ON callback.callback_endpoints
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION callback._stats_drop_purged();

REVOKE ALL ON FUNCTION callback._stats_fold_purged(), callback._stats_drop_purged() FROM PUBLIC;

/*
 * One row per endpoint and event type, in the shape the Prometheus families
 * take (and that prometheus-postgres-exporter's HISTOGRAM usage reads):
 * lifetime counters, the backlog, and the latency histogram in seconds.
 * latency_seconds holds the 23 finite upper bounds (0.125 ms * 2^k) and
 * latency_seconds_bucket the cumulative counts at each; +Inf is _count
 * (the 24 buckets of callback_stats, PGCB_HIST_BUCKETS and PGCB_HIST_BASE_MS
 * in src/metrics.h; the last one is open-ended).
 * A latency exactly on a bound counts in the bucket above it.
 * Rows whose endpoint is gone are left out: they would share one label set.
 */
CREATE FUNCTION callback.prometheus_series(
    OUT endpoint text, OUT event_type text,
    OUT calls_total bigint, OUT delivered_total bigint,
    OUT failed_attempts_total bigint, OUT dead_total bigint,
    OUT pending bigint, OUT oldest_pending_seconds double precision,
    OUT latency_seconds double precision[], OUT latency_seconds_bucket bigint[],
    OUT latency_seconds_sum double precision, OUT latency_seconds_count bigint)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
WITH s AS (
    SELECT a.endpoint_id, a.event_type, sum(a.attempts) AS attempts, sum(a.delivered) AS delivered,
           sum(a.failed) AS failed, sum(a.dead) AS dead, sum(a.latency_sum_ms) AS latency_sum_ms,
           callback.histogram_sum(a.latency_hist) AS hist
      FROM (SELECT st.endpoint_id, st.event_type, st.attempts, st.delivered, st.failed, st.dead,
                   st.latency_sum_ms, st.latency_hist
              FROM callback.callback_stats st
            UNION ALL
            SELECT p.endpoint_id, p.event_type, p.attempts, p.delivered, p.failed, p.dead,
                   p.latency_sum_ms, p.latency_hist
              FROM callback.callback_stats_purged p) a
     GROUP BY a.endpoint_id, a.event_type
), q AS (
    -- the open rows through callback_queue_due (finished_at IS NULL, part 98)
    SELECT b.endpoint_id, b.event_type, sum(b.n) AS pending, min(b.oldest) AS oldest
      FROM (SELECT cq.endpoint_id, cq.event_type, count(*) AS n, min(cq.created_at) AS oldest
              FROM callback.callback_queue cq
             WHERE cq.finished_at IS NULL AND cq.status IN ('pending', 'sending')
             GROUP BY cq.endpoint_id, cq.event_type
            UNION ALL
            -- committed with callback.inbox on, not yet moved (part 58);
            -- a row carries events deliveries (a pack)
            SELECT ci.endpoint_id, ci.event_type, sum(ci.events), min(ci.created_at)
              FROM callback.callback_inbox ci
             GROUP BY ci.endpoint_id, ci.event_type) b
     GROUP BY b.endpoint_id, b.event_type
), j AS (
    SELECT e.name, coalesce(s.event_type, q.event_type) AS event_type, s.attempts, s.delivered,
           s.failed, s.dead, s.latency_sum_ms, s.hist, q.pending, q.oldest
      FROM s
      FULL JOIN q ON q.endpoint_id = s.endpoint_id
                 AND q.event_type = s.event_type
      JOIN callback.callback_endpoints e
        ON e.id = coalesce(s.endpoint_id, q.endpoint_id)
)
SELECT j.name, j.event_type,
       coalesce(j.attempts, 0)::bigint, coalesce(j.delivered, 0)::bigint,
       coalesce(j.failed, 0)::bigint, coalesce(j.dead, 0)::bigint,
       coalesce(j.pending, 0)::bigint,
       coalesce(extract(epoch FROM pg_catalog.now() - j.oldest)::double precision, 0),
       ARRAY(SELECT 0.000125::double precision * (2::double precision ^ k)
               FROM pg_catalog.generate_series(0, 22) k ORDER BY k),
       ARRAY(SELECT (sum(coalesce(j.hist[k + 1], 0)) OVER (ORDER BY k))::bigint
               FROM pg_catalog.generate_series(0, 22) k ORDER BY k),
       coalesce(j.latency_sum_ms / 1000, 0),
       coalesce((SELECT sum(c)::bigint FROM pg_catalog.unnest(j.hist) c), 0)
  FROM j
 ORDER BY j.name, j.event_type
$fn$;

/* callback_health as a number per endpoint: 0 ok, 1 warn, 2 alert. */
CREATE FUNCTION callback.prometheus_health(OUT endpoint text, OUT health integer)
RETURNS SETOF record
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT h.endpoint,
           CASE h.status WHEN 'ok' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END
      FROM callback.callback_health h
     ORDER BY h.endpoint
$fn$;

/*
 * The Prometheus text exposition format (0.0.4) of prometheus_series(),
 * prometheus_health() and worker_stats(): the same family names as
 * deploy/prometheus/queries.yaml gives through prometheus-postgres-exporter.
 * extra_float_digits = 1 prints every double exactly (shortest round trip).
 */
CREATE OR REPLACE FUNCTION callback.prometheus_metrics()
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $fn$
WITH s AS MATERIALIZED (
    SELECT p.*, row_number() OVER (ORDER BY p.endpoint, p.event_type) AS rn,
           'endpoint="' || callback._prom_label(p.endpoint) || '",event_type="'
               || callback._prom_label(p.event_type) || '"' AS lab
      FROM callback.prometheus_series() p
), fam(ord, name, type, help) AS (VALUES
    (1, 'pg_callback_calls_total', 'counter', 'HTTP attempts made.'),
    (2, 'pg_callback_delivered_total', 'counter', 'Deliveries that got a 2xx answer.'),
    (3, 'pg_callback_failed_attempts_total', 'counter', 'Attempts that did not get a 2xx answer.'),
    (4, 'pg_callback_dead_total', 'counter', 'Deliveries parked as dead letters.'),
    (5, 'pg_callback_pending', 'gauge', 'Deliveries waiting to be sent or in flight.'),
    (6, 'pg_callback_oldest_pending_seconds', 'gauge', 'Age of the oldest undelivered delivery in seconds (0 when none).'),
    (7, 'pg_callback_latency_seconds', 'histogram', 'Attempt latency in seconds (power-of-two buckets).'),
    (8, 'pg_callback_endpoint_health', 'gauge', 'Endpoint health from callback_health: 0 ok, 1 warn, 2 alert.'),
    (9, 'pg_callback_worker_inflight', 'gauge', 'Requests in flight per delivery worker.'),
    (10, 'pg_callback_worker_sent_total', 'counter', 'Attempts finished per delivery worker since it started.')
), line(ord, rn, sub, txt) AS (
    SELECT f.ord, -1::bigint, 0::bigint, '# HELP ' || f.name || ' ' || f.help FROM fam f
    UNION ALL
    SELECT f.ord, -1, 1, '# TYPE ' || f.name || ' ' || f.type FROM fam f
    UNION ALL
    SELECT f.ord, s.rn, 0, f.name || '{' || s.lab || '} ' ||
           CASE f.ord WHEN 1 THEN s.calls_total::text
                      WHEN 2 THEN s.delivered_total::text
                      WHEN 3 THEN s.failed_attempts_total::text
                      WHEN 4 THEN s.dead_total::text
                      WHEN 5 THEN s.pending::text
                      ELSE s.oldest_pending_seconds::text END
      FROM fam f CROSS JOIN s WHERE f.ord BETWEEN 1 AND 6
    UNION ALL
    SELECT 7, s.rn, b.k, 'pg_callback_latency_seconds_bucket{' || s.lab || ',le="' || b.le::text || '"} ' || b.n
      FROM s CROSS JOIN LATERAL ROWS FROM (pg_catalog.unnest(s.latency_seconds),
                                           pg_catalog.unnest(s.latency_seconds_bucket))
                        WITH ORDINALITY AS b(le, n, k)
    UNION ALL
    SELECT 7, s.rn, 100, 'pg_callback_latency_seconds_bucket{' || s.lab || ',le="+Inf"} ' || s.latency_seconds_count
      FROM s
    UNION ALL
    SELECT 7, s.rn, 101, 'pg_callback_latency_seconds_sum{' || s.lab || '} ' || s.latency_seconds_sum::text
      FROM s
    UNION ALL
    SELECT 7, s.rn, 102, 'pg_callback_latency_seconds_count{' || s.lab || '} ' || s.latency_seconds_count
      FROM s
    UNION ALL
    SELECT 8, row_number() OVER (ORDER BY h.endpoint), 0,
           'pg_callback_endpoint_health{endpoint="' || callback._prom_label(h.endpoint) || '"} ' || h.health
      FROM callback.prometheus_health() h
    UNION ALL
    SELECT 9, w.slot, 0, 'pg_callback_worker_inflight{slot="' || w.slot || '"} ' || w.inflight
      FROM callback.worker_stats() w
    UNION ALL
    SELECT 10, w.slot, 0, 'pg_callback_worker_sent_total{slot="' || w.slot || '"} ' || w.sent
      FROM callback.worker_stats() w
)
SELECT string_agg(l.txt, E'\n' ORDER BY l.ord, l.rn, l.sub) || E'\n' FROM line l
$fn$;

REVOKE ALL ON FUNCTION callback.prometheus_series(), callback.prometheus_health(),
    callback.prometheus_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION callback.prometheus_series(), callback.prometheus_health(),
    callback.prometheus_metrics() TO pg_monitor, callback_monitor;
