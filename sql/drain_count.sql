--
-- drain_count: process_callbacks(n) attempts what is due, whichever
-- endpoint it belongs to, and returns 0 only when nothing is.  The worker
-- takes an endpoint whose last claim got all it asked for as due without
-- looking (queue.c); process_callbacks() must look, or such an endpoint
-- could take the call's whole room, claim nothing, and leave another
-- endpoint's due row behind a 0 (helper-69's review).  The endpoints
-- refuse the connection: each attempt fails and is retried later.
--
SET client_min_messages = warning;

CREATE TEMP TABLE dc_paused AS SELECT name FROM callback.callback_endpoints WHERE NOT paused;
SELECT count(callback.pause_endpoint(name)) >= 0 AS paused FROM dc_paused;
SELECT callback.create_endpoint('regress_dc_e', 'http://127.0.0.1:9/e', '{dc_e.*}',
                                failure_threshold => 1000) > 0 AS created;
SELECT callback.create_endpoint('regress_dc_f', 'http://127.0.0.1:9/f', '{dc_f.*}',
                                failure_threshold => 1000) > 0 AS created;
SELECT callback.enqueue('dc_e.x', '{}') IS NOT NULL AS enqueued;
SELECT callback.enqueue('dc_f.x', '{}') IS NOT NULL AS enqueued;

-- one each, then nothing is due
SELECT callback.process_callbacks(1) AS first;
SELECT callback.process_callbacks(1) AS second;
SELECT callback.process_callbacks(1) AS third;
SELECT e.name, q.attempts
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name LIKE 'regress_dc_%' ORDER BY 1;

SELECT callback.drop_endpoint('regress_dc_e', force => true) AS dropped;
SELECT callback.drop_endpoint('regress_dc_f', force => true) AS dropped;
SELECT count(callback.resume_endpoint(name)) >= 0 AS resumed FROM dc_paused;
