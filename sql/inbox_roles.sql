--
-- inbox_roles: a producer's very first write in a new session, with
-- callback.inbox on.  The insert runs as the inbox's owner, but the
-- expressions of its defaults (callback._inbox_seq() among them, whose
-- EXECUTE only the owner has) are prepared once per backend: prepared by
-- the producer itself they were checked against the producer's rights
-- ("permission denied for function _inbox_seq").  sql/inbox.sql cannot
-- see it: a superuser's earlier write in its session prepared them first.
-- Each \c below is a new backend, so nothing is prepared yet.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never
\set regress_user :USER

CREATE ROLE regress_ibr_producer LOGIN IN ROLE callback_producer;
-- a superuser sets it for the role: the producer may not
ALTER ROLE regress_ibr_producer SET callback.inbox = on;
SELECT callback.create_endpoint('ibr_ep', 'http://127.0.0.1:9/ibr', event_types => ARRAY['ibr.*']) > 0 AS created;
CREATE TABLE ibr_t (id int PRIMARY KEY, v text);
CREATE TRIGGER cb AFTER INSERT ON ibr_t FOR EACH ROW EXECUTE FUNCTION callback.trigger('ibr.t');
GRANT INSERT ON ibr_t TO regress_ibr_producer;

-- the row trigger, first thing in a new session of the producer
\c - regress_ibr_producer
SET client_min_messages = warning;
SHOW callback.inbox;
INSERT INTO ibr_t VALUES (1, 'first write of the session');

-- enqueue(), first thing in another new session
\c - regress_ibr_producer
SET client_min_messages = warning;
SELECT callback.enqueue('ibr.enq', '{"v": "first enqueue of the session"}') IS NOT NULL AS enqueued;

-- both are in the inbox, none in the queue
\c - :regress_user
SET client_min_messages = warning;
SELECT i.event_type, i.body::jsonb -> 'data' AS data
  FROM callback.callback_inbox i JOIN callback.callback_endpoints e ON e.id = i.endpoint_id
 WHERE e.name = 'ibr_ep' ORDER BY i.written_at, i.xact, i.seq;
SELECT count(*) AS in_queue
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'ibr_ep';

SELECT callback.drop_endpoint('ibr_ep', force => true);
DROP TABLE ibr_t;
DROP OWNED BY regress_ibr_producer;
DROP ROLE regress_ibr_producer;
