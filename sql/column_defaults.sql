--
-- column_defaults: the producer fills a queue or inbox row's other columns
-- from their defaults as the catalog has them (src/queue_insert.c, prepared
-- once per backend): the row is what an INSERT would give, an operator's
-- ALTER ... SET DEFAULT included, and with track_functions on the calls
-- are counted as the executor counts them.  No worker serves this
-- database: rows stay where the test puts them.
--
SET client_min_messages = warning;

SELECT callback.create_endpoint('regress_cd', 'http://127.0.0.1:9/cd', '{cd.*}') > 0 AS created;
CREATE TABLE cd_row (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON cd_row FOR EACH ROW EXECUTE FUNCTION callback.trigger('cd');

-- 1. The stock defaults, on the direct path: the identity, 'pending', 0,
-- now() for both timestamps.
BEGIN;
INSERT INTO cd_row VALUES (1, 'a'), (2, 'b');
SELECT count(*) AS rows,
       count(DISTINCT id) AS distinct_ids,
       bool_and(status = 'pending') AS pending,
       bool_and(attempts = 0) AS no_attempts,
       bool_and(created_at = now() AND next_attempt_at = now()) AS at_now,
       bool_and(lease_expires_at IS NULL AND finished_at IS NULL) AS nulls
  FROM callback.callback_queue WHERE event_type = 'cd.insert';
COMMIT;

-- 2. An operator's default, an expression: honoured from the next row on
-- (the ALTER invalidates the backend's prepared defaults).  Rolled back,
-- so that a failure here cannot leave it behind: the next row takes the
-- stock default again.
BEGIN;
ALTER TABLE callback.callback_queue ALTER COLUMN next_attempt_at SET DEFAULT pg_catalog.now() + interval '1 hour';
INSERT INTO cd_row VALUES (3, 'c');
SELECT next_attempt_at - now() AS delay FROM callback.callback_queue
 WHERE event_type = 'cd.insert' AND body LIKE '%"id":3%';
ROLLBACK;
BEGIN;
INSERT INTO cd_row VALUES (4, 'd');
SELECT next_attempt_at - now() AS delay FROM callback.callback_queue
 WHERE event_type = 'cd.insert' AND body LIKE '%"id":4%';
COMMIT;

-- 3. The inbox: xact and seq, created_at (now()), written_at
-- (clock_timestamp(), later than the transaction's start), events 1.
SET callback.inbox = on;
BEGIN;
INSERT INTO cd_row VALUES (5, 'e'), (6, 'f');
SELECT count(*) AS rows,
       bool_and(xact = pg_current_xact_id()) AS this_xact,
       max(seq) - min(seq) AS seq_step,
       bool_and(created_at = now()) AS created_now,
       bool_and(written_at >= now() AND written_at <= clock_timestamp()) AS written_since,
       bool_and(events = 1 AND more IS NULL) AS single
  FROM callback.callback_inbox WHERE event_type = 'cd.insert';

-- 4. With track_functions on when a backend prepares its defaults, the
-- calls are counted as the executor would count them: two rows, two calls
-- of callback._inbox_seq() (a C function: track_functions = all).  A new
-- session, so that the defaults are prepared under the setting.
COMMIT;
\c
SET client_min_messages = warning;
SET callback.inbox = on;
SET track_functions = 'all';
BEGIN;
INSERT INTO cd_row VALUES (7, 'g'), (8, 'h');
SELECT calls FROM pg_stat_xact_user_functions
 WHERE schemaname = 'callback' AND funcname = '_inbox_seq';
SELECT count(*) AS rows, count(DISTINCT (xact, seq)) AS distinct_xact_seq
  FROM callback.callback_inbox WHERE event_type = 'cd.insert';
COMMIT;
RESET track_functions;
RESET callback.inbox;

DELETE FROM callback.callback_inbox WHERE event_type = 'cd.insert';

SELECT callback.drop_endpoint('regress_cd', force => true);
DROP TABLE cd_row;
SELECT count(*) AS queue_rows FROM callback.callback_queue WHERE event_type = 'cd.insert';
