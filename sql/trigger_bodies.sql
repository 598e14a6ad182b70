--
-- trigger_bodies: what callback.trigger() queues, row by row and per
-- statement over transition tables, is the row as to_jsonb() sees it: on a
-- partitioned table, with dropped and generated columns, TOASTed values,
-- 1,600 columns; row and statement level give the same bodies; a savepoint
-- rolled back sends nothing (and the queue insert works on after it); a
-- 100,000-row INSERT ... SELECT queues 100,000 rows.  No worker serves this
-- database: everything stays pending.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

SELECT callback.create_endpoint('regress_tb', 'http://127.0.0.1:9/tb', '{tb.*}') > 0 AS created;

-- The bodies queued for regress_tb, oldest first, as jsonb.
CREATE VIEW pg_temp.tbq AS
SELECT q.id, q.event_type, q.body::jsonb AS body, q.body AS raw
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_tb';

----------------------------------------------------------------- partitioned table

CREATE TABLE tb_part (id int, k text, v numeric) PARTITION BY LIST (k);
CREATE TABLE tb_part_a PARTITION OF tb_part FOR VALUES IN ('a');
CREATE TABLE tb_part_b PARTITION OF tb_part FOR VALUES IN ('b');
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON tb_part
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.part');
CREATE VIEW pg_temp.tbq_part AS
SELECT q.event_type, q.body->'data'->>'table' AS tab, q.body->'data'->'new' AS new, q.body->'data'->'old' AS old,
       q.body->'data'->'new' = (SELECT to_jsonb(p) FROM tb_part p WHERE p.id = (q.body->'data'->'new'->>'id')::int) AS new_as_row
  FROM pg_temp.tbq q ORDER BY q.id;
INSERT INTO tb_part VALUES (1, 'a', 1.50), (2, 'b', NULL);
SELECT * FROM pg_temp.tbq_part;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
-- a row moved across partitions: a delete from one, an insert into the other
UPDATE tb_part SET k = 'b' WHERE id = 1;
UPDATE tb_part SET v = 2 WHERE id = 2;
SELECT * FROM pg_temp.tbq_part;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

----------------------------------------------------------------- dropped and generated columns

CREATE TABLE tb_cols (id int, gone1 text, a int, g int GENERATED ALWAYS AS (a * 2) STORED, gone2 int, t timestamptz, j jsonb);
ALTER TABLE tb_cols DROP COLUMN gone1, DROP COLUMN gone2;
CREATE TRIGGER cb AFTER INSERT OR UPDATE ON tb_cols
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.cols');
CREATE VIEW pg_temp.tbq_cols AS
SELECT q.event_type, q.body->'data'->'new' AS new,
       q.body->'data'->'new' = (SELECT to_jsonb(c) FROM tb_cols c) AS same_as_row,
       strpos(q.raw, '"new":' || (SELECT row_to_json(c)::text FROM tb_cols c) || ',"old":') > 0 AS same_bytes_as_row_to_json
  FROM pg_temp.tbq q ORDER BY q.id;
INSERT INTO tb_cols (id, a, t, j) VALUES (1, 21, '2026-01-02 03:04:05.678+00', '{"x": [1, "é", null]}');
SELECT * FROM pg_temp.tbq_cols;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
UPDATE tb_cols SET a = 5;
SELECT * FROM pg_temp.tbq_cols;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

----------------------------------------------------------------- every kind of column

-- The bytes of "new" are row_to_json()'s, for built-in scalars (written by
-- pg_callback itself, see row_json.c) and for rows with arrays, composites,
-- domains and user types (left to row_to_json()).
CREATE TYPE tb_mood AS ENUM ('sad', 'happy');
CREATE DOMAIN tb_posint AS int CHECK (VALUE > 0);
CREATE TABLE tb_scalars (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
                         t text, vc varchar(10), c char(3), ba bytea, u uuid, d date, ts timestamp,
                         tz timestamptz, tm time, ttz timetz, iv interval, ip inet, js json, jb jsonb,
                         m money, o oid, ch "char", p point, dp tb_posint);
CREATE TABLE tb_others (id int, a int[], mood tb_mood, dp tb_posint, r tb_scalars, ta text[]);
CREATE TRIGGER cb AFTER INSERT ON tb_scalars FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.kinds');
CREATE TRIGGER cb AFTER INSERT ON tb_others FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.kinds');
INSERT INTO tb_scalars VALUES
    (true, -32768, 2147483647, -9223372036854775808, 'NaN', '-Infinity', 'NaN',
     E'tab\there "quoted" \\ back\nline \u00e9\u4e2d\U0001F600 \x01', 'vc', 'ab', '\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '-infinity', '2026-01-02 03:04:05.123456', '2026-06-30 23:59:59.999999+14', '24:00', '01:02:03+05:30',
     '-1 year 2 days 03:04:05.6', '::ffff:10.0.0.1/104', '{"a" : [1, 2.50, "x"]}', '{"b": 1e3}',
     '-12.34', 4294967295, 'x', '(1.5,-2)', 7),
    (false, 0, 0, 0, 1.5e-40, 1e308, 1e-30, '', NULL, NULL, '\x', NULL, '2000-02-29', 'infinity',
     '-infinity', '00:00', '00:00+00', '0', '0.0.0.0', 'null', '[]', '0', 0, ' ', NULL, NULL),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO tb_others SELECT 1, '{1,NULL,3}', 'happy', 5, s, '{"a b",NULL,"c\"d"}' FROM tb_scalars s WHERE s.b;
INSERT INTO tb_others VALUES (2, NULL, NULL, NULL, NULL, '{}');
SELECT q.event_type, q.body->'data'->>'table' AS tab,
       (SELECT count(*) FROM tb_scalars s WHERE strpos(q.raw, '"new":' || row_to_json(s)::text || ',"old":') > 0)
     + (SELECT count(*) FROM tb_others s WHERE strpos(q.raw, '"new":' || row_to_json(s)::text || ',"old":') > 0) AS rows_with_same_bytes
  FROM pg_temp.tbq q ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
DROP TABLE tb_others, tb_scalars;
DROP DOMAIN tb_posint;
DROP TYPE tb_mood;

----------------------------------------------------------------- TOAST

CREATE TABLE tb_toast (id int, t text);
ALTER TABLE tb_toast ALTER COLUMN t SET STORAGE EXTERNAL;	-- stored out of line, not compressed
CREATE TRIGGER cb AFTER INSERT OR DELETE ON tb_toast
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.toast');
CREATE TRIGGER cb_u AFTER UPDATE ON tb_toast REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.toast');
INSERT INTO tb_toast SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 3125) i;	-- 100 kB
UPDATE tb_toast SET id = 2;		-- statement level: the value read back from the transition tables
DELETE FROM tb_toast;
SELECT q.event_type, length(r.row->>'t') AS len,
       r.row->>'t' = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3125) i) AS same_text,
       length(c.body) > 100000 AS whole_body_queued
  FROM pg_temp.tbq q JOIN callback.callback_queue c ON c.id = q.id
 CROSS JOIN LATERAL (SELECT q.body->'data'->(CASE WHEN q.event_type LIKE '%.delete' THEN 'old' ELSE 'new' END) AS row) r
 ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

----------------------------------------------------------------- 1,600 columns

DO $$
BEGIN
    EXECUTE 'CREATE TABLE tb_wide (' ||
            (SELECT string_agg(format('c%s int', i), ', ') FROM generate_series(1, 1600) i) || ')';
    EXECUTE 'INSERT INTO tb_wide VALUES (' ||
            (SELECT string_agg(i::text, ', ') FROM generate_series(1, 1600) i) || ')';
END
$$;
CREATE TRIGGER cb AFTER UPDATE ON tb_wide
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.wide');
UPDATE tb_wide SET c1600 = -1;
SELECT q.event_type,
       (SELECT count(*) FROM jsonb_object_keys(q.body->'data'->'new')) AS new_keys,
       q.body->'data'->'new' = (SELECT to_jsonb(w) FROM tb_wide w) AS same_as_row,
       q.body->'data'->'old'->'c1600' AS old_c1600
  FROM pg_temp.tbq q ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

----------------------------------------------------------------- row and statement level

-- The same changes, once through the row trigger and once through the
-- three statement triggers: the same events, in the same order, with the
-- same data (the timestamp aside).
CREATE TABLE tb_same (id int PRIMARY KEY, v text, n numeric, d date);
CREATE TEMP TABLE tb_seen (level text, n int, event_type text, data jsonb);
CREATE FUNCTION pg_temp.tb_changes(level text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tb_same VALUES (1, 'one', 1.5, '2026-01-01'), (2, NULL, -2, NULL), (3, 'th"ree', 3e10, 'infinity');
    UPDATE tb_same SET v = coalesce(v, '') || '!', n = n * 2;
    DELETE FROM tb_same WHERE id <> 2;
    DELETE FROM tb_same;
    INSERT INTO tb_seen
    SELECT level, row_number() OVER (ORDER BY q.id), q.event_type, q.body->'data' FROM pg_temp.tbq q;
    DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
END
$$;
CREATE TRIGGER cb AFTER INSERT OR UPDATE OR DELETE ON tb_same
    FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.same');
SELECT pg_temp.tb_changes('row');
DROP TRIGGER cb ON tb_same;
CREATE TRIGGER cb_i AFTER INSERT ON tb_same REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.same');
CREATE TRIGGER cb_u AFTER UPDATE ON tb_same REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.same');
CREATE TRIGGER cb_d AFTER DELETE ON tb_same REFERENCING OLD TABLE AS o
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.same');
SELECT pg_temp.tb_changes('statement');
SELECT n, event_type, data FROM tb_seen WHERE level = 'row' ORDER BY n;
SELECT count(*) AS statement_events,
       count(*) FILTER (WHERE s.data = r.data AND s.event_type = r.event_type) AS identical
  FROM tb_seen s JOIN tb_seen r ON r.n = s.n AND r.level = 'row'
 WHERE s.level = 'statement';
-- and the raw bytes of a body, timestamp aside, through both paths
INSERT INTO tb_same VALUES (7, 'x', 0.10, '2026-02-03');
SELECT regexp_replace(raw, '"timestamp":"[^"]*"', '"timestamp":"<ts>"') AS statement_body FROM pg_temp.tbq;
DROP TRIGGER cb_i ON tb_same;
DROP TRIGGER cb_u ON tb_same;
DROP TRIGGER cb_d ON tb_same;
DELETE FROM tb_same;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
CREATE TRIGGER cb AFTER INSERT ON tb_same FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.same');
INSERT INTO tb_same VALUES (7, 'x', 0.10, '2026-02-03');
SELECT regexp_replace(raw, '"timestamp":"[^"]*"', '"timestamp":"<ts>"') AS row_body FROM pg_temp.tbq;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
DROP TRIGGER cb ON tb_same;

-- Statement level without the transition tables it needs: refused.
CREATE TABLE tb_bad (id int);
CREATE TRIGGER cb AFTER INSERT ON tb_bad FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.bad');
CREATE TRIGGER cb_u AFTER UPDATE ON tb_bad REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.bad');
INSERT INTO tb_bad VALUES (1);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
DROP TRIGGER cb ON tb_bad;
INSERT INTO tb_bad VALUES (1);
UPDATE tb_bad SET id = 2;
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- a statement that changes no row queues nothing
UPDATE tb_same SET v = 'none' WHERE false;
SELECT count(*) AS queued FROM pg_temp.tbq;

----------------------------------------------------------------- savepoints

CREATE TABLE tb_sp (id int);
CREATE TRIGGER cb AFTER INSERT ON tb_sp FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.sp');
-- the insert that rolls back is the first of the transaction (it opens the queue)
BEGIN;
SAVEPOINT s;
INSERT INTO tb_sp VALUES (1);
ROLLBACK TO SAVEPOINT s;
INSERT INTO tb_sp VALUES (2);
SAVEPOINT t;
INSERT INTO tb_sp VALUES (3);
ROLLBACK TO SAVEPOINT t;
SAVEPOINT u;
INSERT INTO tb_sp VALUES (4);
RELEASE SAVEPOINT u;
COMMIT;
SELECT q.body->'data'->'new'->'id' AS sent FROM pg_temp.tbq q ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
-- an error inside a PL/pgSQL exception block, after the insert
DO $$
BEGIN
    BEGIN
        INSERT INTO tb_sp VALUES (5);
        PERFORM 1 / 0;
    EXCEPTION WHEN division_by_zero THEN
        INSERT INTO tb_sp VALUES (6);
    END;
END
$$;
SELECT q.body->'data'->'new'->'id' AS sent FROM pg_temp.tbq q ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
-- a whole transaction rolled back
BEGIN;
INSERT INTO tb_sp VALUES (7);
ROLLBACK;
SELECT count(*) AS queued FROM pg_temp.tbq;

----------------------------------------------------------------- routing follows the endpoints

-- Altered, disabled, rolled back: seen by the next statement of this session.
INSERT INTO tb_sp VALUES (10);
SELECT callback.alter_endpoint('regress_tb', event_types => '{other.*}') IS NOT NULL AS altered;
INSERT INTO tb_sp VALUES (11);
BEGIN;
SELECT callback.alter_endpoint('regress_tb', event_types => '{tb.sp.*}') IS NOT NULL AS altered;
INSERT INTO tb_sp VALUES (12);
ROLLBACK;
INSERT INTO tb_sp VALUES (13);
SELECT callback.alter_endpoint('regress_tb', event_types => '{tb.sp.insert}') IS NOT NULL AS altered;
INSERT INTO tb_sp VALUES (14);
SELECT callback.alter_endpoint('regress_tb', enabled => false) IS NOT NULL AS disabled;
INSERT INTO tb_sp VALUES (15);
SELECT callback.alter_endpoint('regress_tb', enabled => true, event_types => '{tb.*}') IS NOT NULL AS enabled;
SELECT q.body->'data'->'new'->'id' AS sent FROM pg_temp.tbq q ORDER BY q.id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

-- A read-only transaction may not queue, routed or not (as with 1.0's INSERT).
BEGIN READ ONLY;
SELECT callback.enqueue('tb.ro', '{}') IS NOT NULL AS queued;
ROLLBACK;
BEGIN READ ONLY;
SELECT callback.enqueue('nobody.listens', '{}') IS NOT NULL AS queued;
ROLLBACK;

----------------------------------------------------------------- bulk

CREATE TABLE tb_bulk (id int, v text);
CREATE TRIGGER cb AFTER INSERT ON tb_bulk REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.bulk');
INSERT INTO tb_bulk SELECT i, 'v' || i FROM generate_series(1, 100000) i;
SELECT count(*) AS queued, count(DISTINCT (body->'data'->'new'->>'id')) AS distinct_rows,
       count(*) FILTER (WHERE body->'data'->'new' = jsonb_build_object('id', (body->'data'->'new'->>'id')::int,
                                                                       'v', 'v' || (body->'data'->'new'->>'id'))) AS right_body
  FROM pg_temp.tbq;
-- Every row is in the queue's B-tree indexes where it belongs (amcheck
-- reads the heap and looks each row up, partial indexes by their
-- predicate), and found through the index the worker claims by.
CREATE EXTENSION amcheck;
SELECT i.indexrelid::regclass AS index, bt_index_check(i.indexrelid, true) IS NOT NULL AS checked
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
 WHERE i.indrelid = 'callback.callback_queue'::regclass AND a.amname = 'btree' ORDER BY i.indexrelid::regclass::text;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM callback.callback_queue q
 WHERE q.finished_at IS NULL AND q.status = 'pending' AND q.endpoint_id = (SELECT id FROM callback.callback_endpoints WHERE name = 'regress_tb');
SELECT count(*) AS pending_by_index FROM callback.callback_queue q
 WHERE q.finished_at IS NULL AND q.status = 'pending' AND q.endpoint_id = (SELECT id FROM callback.callback_endpoints WHERE name = 'regress_tb');
RESET enable_seqscan;
RESET enable_bitmapscan;
DROP EXTENSION amcheck;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

----------------------------------------------------------------- fast paths

-- row_json.c writes int2/int4/int8/oid/bool/uuid and text/varchar/bpchar
-- without their output functions, and escapes every string (theirs and
-- the output of other types: name, "char", NaN) by runs of plain bytes.
-- The bytes must stay row_to_json()'s at the edges (extreme integers,
-- every escape class, empty and long text, non-ASCII UTF-8, NULLs,
-- domains, dropped and generated columns), through the row and the
-- statement trigger, in "new" and in "old".  Arrays of those types take
-- row_to_json() itself: the same bytes too.
CREATE DOMAIN tb_d8 AS int8;
CREATE DOMAIN tb_dtext AS text;
CREATE DOMAIN tb_dvc AS varchar(8);
CREATE DOMAIN tb_dbool AS bool;
CREATE DOMAIN tb_duuid AS uuid;
CREATE TABLE tb_fast (id int, gone text, i2 int2, i4 int4, i8 int8, o oid, b bool, t text,
                      vc varchar(40), c char(5), d8 tb_d8, dt tb_dtext, dvc tb_dvc, db tb_dbool,
                      g int8 GENERATED ALWAYS AS (i8 / 2) STORED, f8 float8, n numeric, u uuid, du tb_duuid,
                      nm name, ch "char", tail text);
ALTER TABLE tb_fast DROP COLUMN gone;
CREATE TABLE tb_fast_arr (id int, a2 int2[], a4 int4[], a8 int8[], ao oid[], ab bool[], at text[],
                          avc varchar[], ac char(2)[], ad tb_d8[], au uuid[]);
CREATE TEMP TABLE tb_fast_old AS SELECT * FROM tb_fast WITH NO DATA;
CREATE FUNCTION pg_temp.tb_fast_rows() RETURNS void LANGUAGE sql AS $$
INSERT INTO tb_fast (id, i2, i4, i8, o, b, t, vc, c, d8, dt, dvc, db, f8, n, u, du, nm, ch, tail) VALUES
    (1, -32768, -2147483648, -9223372036854775808, 0, true,
     (SELECT string_agg(chr(i), '') FROM generate_series(1, 127) i),
     E'\b\f\n\r\t"\\/ \u00e9\u4e2d\U0001F600', 'ab', -9223372036854775808,
     E'x\u001fy\u007fz', '', false, '-0', '-0', '00000000-0000-0000-0000-000000000000',
     'ffffffff-ffff-ffff-ffff-ffffffffffff', E'na\tme"\\\u0001é', '\', 'é'),
    (2, 32767, 2147483647, 9223372036854775807, 4294967295, false, '', '', '', 9223372036854775807,
     repeat(E'run of plain ascii \\ "q" ', 200), E'\t', NULL, 'NaN', 'NaN', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
     '{01234567-89ab-cdef-0123-456789abcdef}', '', '"', ''),
    (3, 0, 0, 0, 1, NULL, E'\u00e9\u00e9\U0001F600', 'ünï', 'a b', 0, repeat('x', 3000),
     'é', true, '-Infinity', '-1e-5', NULL, NULL, NULL, E'\u0001', repeat(md5('t'), 100)),
    (4, -1, -10, -100, 10, true, E'"', E'\\', E' "\t', -1, E'\n', E'\\\\', true, 'Infinity', '0',
     '10203040-5060-7080-90a0-b0c0d0e0f000', NULL, 'n', 'é', E'end\\'),
    (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO tb_fast_arr VALUES
    (1, '{-32768,NULL,32767}', '{-2147483648,2147483647}', '{-9223372036854775808,9223372036854775807}',
     '{0,4294967295}', '{t,f,NULL}', ARRAY['', E'\b\f\n\r\t"\\', 'é中😀', NULL], '{"a b",""}', '{x,"y "}', '{-1,0}',
     '{00000000-0000-0000-0000-000000000000,NULL}'),
    (2, '{}', NULL, '{}', NULL, '{}', '{}', NULL, '{}', NULL, '{}');
$$;
CREATE FUNCTION pg_temp.tb_fast_check(level text) RETURNS TABLE (level text, event_type text, id int, new_same_bytes bool, old_same_bytes bool)
LANGUAGE sql AS $$
SELECT level, q.event_type, coalesce((q.body->'data'->'new'->>'id')::int, (q.body->'data'->'old'->>'id')::int),
       CASE WHEN q.body->'data'->'new' = 'null' THEN strpos(q.raw, '"new":null,') > 0
            ELSE (SELECT count(*) FROM tb_fast f WHERE strpos(q.raw, '"new":' || row_to_json(f)::text || ',"old":') > 0)
               + (SELECT count(*) FROM tb_fast_arr f WHERE strpos(q.raw, '"new":' || row_to_json(f)::text || ',"old":') > 0) = 1 END,
       CASE WHEN q.body->'data'->'old' = 'null' THEN right(q.raw, 13) = ',"old":null}}'
            ELSE (SELECT count(*) FROM tb_fast_old f WHERE right(q.raw, length(row_to_json(f)::text) + 9) = ',"old":' || row_to_json(f)::text || '}}') = 1 END
  FROM pg_temp.tbq q ORDER BY q.id;
$$;
-- the rows inserted, then updated: each event's "new" and "old" compared
CREATE FUNCTION pg_temp.tb_fast_round(lvl text) RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.tb_fast_rows();
    RETURN QUERY SELECT * FROM pg_temp.tb_fast_check(lvl);
    DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
    INSERT INTO tb_fast_old SELECT * FROM tb_fast;
    UPDATE tb_fast SET t = t || E'\u0001', tail = tail || 'é', i2 = i2 / 2;
    RETURN QUERY SELECT * FROM pg_temp.tb_fast_check(lvl);
    DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
END
$$;
CREATE TRIGGER cb AFTER INSERT OR UPDATE ON tb_fast FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.fast');
CREATE TRIGGER cb AFTER INSERT ON tb_fast_arr FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.fast');
SELECT * FROM pg_temp.tb_fast_round('row') AS r(level text, event_type text, id int, new_same_bytes bool, old_same_bytes bool);
DROP TRIGGER cb ON tb_fast;
DROP TRIGGER cb ON tb_fast_arr;
TRUNCATE tb_fast, tb_fast_arr, tb_fast_old;
CREATE TRIGGER cb AFTER INSERT ON tb_fast REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.fast');
CREATE TRIGGER cb_u AFTER UPDATE ON tb_fast REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.fast');
CREATE TRIGGER cb AFTER INSERT ON tb_fast_arr REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.fast');
SELECT * FROM pg_temp.tb_fast_round('statement') AS r(level text, event_type text, id int, new_same_bytes bool, old_same_bytes bool);
-- one body in full, to see what the comparisons compared
UPDATE tb_fast SET t = E'a\u0002"b' WHERE id = 4;
SELECT regexp_replace(raw, '"timestamp":"[^"]*"', '"timestamp":"<ts>"') AS fast_body FROM pg_temp.tbq;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
DROP TABLE tb_fast, tb_fast_arr, tb_fast_old;
DROP DOMAIN tb_d8, tb_dtext, tb_dvc, tb_dbool, tb_duuid;

-- float4, float8 and numeric are written raw unless NaN or an infinity
-- (told by the output's first character): the same bytes as row_to_json()
-- over many magnitudes, the extremes and the special values, under several
-- extra_float_digits.
CREATE TABLE tb_num (k int, f4 float4, f8 float8, n numeric);
CREATE TRIGGER cb AFTER INSERT ON tb_num REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('tb.num');
CREATE FUNCTION pg_temp.tb_num_round(efd int) RETURNS TABLE (digits int, nrows bigint, same_bytes bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('extra_float_digits', efd::text, true);
    INSERT INTO tb_num
    SELECT k, CASE WHEN k BETWEEN -37 AND 38 THEN (sign * 1.2345678 * 10::float8 ^ k)::float4 END,
           sign * 10::float8 ^ k / 3, (sign * 1.5 * 10::numeric ^ k)
      FROM generate_series(-40, 40) k, (VALUES (1), (-1)) s(sign);
    INSERT INTO tb_num VALUES (100, 'NaN', 'NaN', 'NaN'), (101, 'Infinity', 'Infinity', 'Infinity'),
        (102, '-Infinity', '-Infinity', '-Infinity'), (103, '-0', '-0', '-0'), (104, 0, 0, 0),
        (105, 1.4e-45, 5e-324, 1e-1000), (106, 3.4028235e38, 1.7976931348623157e308, 1e1000),
        (107, -1.4e-45, -5e-324, -1e-1000), (108, 0.1, 0.1, 0.1), (109, 1e15, 1e15, 1e15),
        (110, 1e16, 1e16, 1e16), (111, 123456789, 1e22, 0.000001);
    RETURN QUERY
    SELECT efd, count(*), count(*) FILTER (WHERE EXISTS
               (SELECT 1 FROM tb_num t WHERE strpos(q.raw, '"new":' || row_to_json(t)::text || ',"old":') > 0))
      FROM pg_temp.tbq q;
    DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
    DELETE FROM tb_num;
END
$$;
SELECT r.* FROM unnest('{1, 0, 3, -15}'::int[]) e, pg_temp.tb_num_round(e) r;
DROP TABLE tb_num;

-- The body's head (op, schema, table) is kept for the last table: a table
-- or schema renamed in this session is seen by the next event.
CREATE SCHEMA tb_s1;
CREATE TABLE tb_s1.tb_r1 (id int);
CREATE TRIGGER cb AFTER INSERT OR DELETE ON tb_s1.tb_r1 FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.ren');
INSERT INTO tb_s1.tb_r1 VALUES (1);
ALTER TABLE tb_s1.tb_r1 RENAME TO "tb r2""";
INSERT INTO tb_s1."tb r2""" VALUES (2);
ALTER SCHEMA tb_s1 RENAME TO "tb s2\";
INSERT INTO "tb s2\"."tb r2""" VALUES (3);
DELETE FROM "tb s2\"."tb r2""" WHERE id = 3;
SELECT regexp_replace(raw, '"timestamp":"[^"]*"', '"timestamp":"<ts>"') AS body FROM pg_temp.tbq ORDER BY id;
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;
DROP SCHEMA "tb s2\" CASCADE;

-- The per-table column cache does not keep a dropped table's memory: a
-- session writing to 200 short-lived tables holds far fewer than 200.
CREATE FUNCTION pg_temp.tb_cycle(n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    CREATE TEMP TABLE tb_short (id int, t text);
    CREATE TRIGGER cb AFTER INSERT ON tb_short FOR EACH ROW EXECUTE FUNCTION callback.trigger('tb.short');
    INSERT INTO tb_short VALUES (i, 'x');
    DROP TABLE tb_short;
  END LOOP;
END $$;
SELECT pg_temp.tb_cycle(200);
SELECT count(*) < 100 AS cache_bounded FROM pg_backend_memory_contexts WHERE name = 'pg_callback row json';
DELETE FROM callback.callback_queue q USING pg_temp.tbq t WHERE q.id = t.id;

SELECT callback.drop_endpoint('regress_tb');
DROP VIEW pg_temp.tbq_part, pg_temp.tbq_cols;
DROP TABLE tb_part, tb_cols, tb_toast, tb_wide, tb_same, tb_bad, tb_sp, tb_bulk;
