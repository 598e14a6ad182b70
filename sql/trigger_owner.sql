--
-- trigger_owner: callback.trigger() without a prefix names events after the
-- table, and whoever owns the table can rename it.  So that form fires only
-- while the table's owner holds callback_producer (README "Roles"): after a
-- REVOKE, or an ALTER TABLE ... OWNER TO a non-producer, a rename cannot
-- choose a new event type.  A fixed prefix cannot be changed without
-- CREATE TRIGGER, which checks EXECUTE again, so it keeps firing.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE ROLE regress_pgcb_tgo_prod NOLOGIN IN ROLE callback_producer;
CREATE ROLE regress_pgcb_tgo_other NOLOGIN;
-- renaming a table needs CREATE on its schema
GRANT CREATE ON SCHEMA public TO regress_pgcb_tgo_prod;
SELECT callback.create_endpoint('regress_pgcb_tgo_ep', 'http://127.0.0.1:1/hook',
                                event_types => '{*}') IS NOT NULL AS created;

-- Insert as role; "ok" or "<SQLSTATE> <message> DETAIL/HINT".
CREATE FUNCTION pg_temp.try(role text, cmd text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', role);
        EXECUTE cmd;
        RESET ROLE;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        RETURN st || ' ' || msg || coalesce(' DETAIL: ' || nullif(det, ''), '')
                  || coalesce(' HINT: ' || nullif(hnt, ''), '');
    END;
END
$$;

-- A producer's table with the no-argument trigger, and one with a prefix.
CREATE TABLE regress_pgcb_tgo_a (id int PRIMARY KEY);
CREATE TABLE regress_pgcb_tgo_b (id int PRIMARY KEY);
ALTER TABLE regress_pgcb_tgo_a OWNER TO regress_pgcb_tgo_prod;
ALTER TABLE regress_pgcb_tgo_b OWNER TO regress_pgcb_tgo_prod;
SET ROLE regress_pgcb_tgo_prod;
CREATE TRIGGER tg AFTER INSERT ON regress_pgcb_tgo_a FOR EACH ROW EXECUTE FUNCTION callback.trigger();
CREATE TRIGGER tg AFTER INSERT ON regress_pgcb_tgo_b FOR EACH ROW EXECUTE FUNCTION callback.trigger('regress_pgcb_tgo_fixed');
RESET ROLE;

-- While the owner is a producer, both fire.
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_a VALUES (1)') AS a_as_producer;
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_b VALUES (1)') AS b_as_producer;

-- The role is revoked (in this very session: the per-backend cache must
-- notice) and the owner renames its table to choose another event type.
REVOKE callback_producer FROM regress_pgcb_tgo_prod;
SET ROLE regress_pgcb_tgo_prod;
ALTER TABLE regress_pgcb_tgo_a RENAME TO regress_pgcb_tgo_invoice;
RESET ROLE;
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_invoice VALUES (2)') AS a_after_revoke;
-- the fixed prefix keeps firing: the owner cannot change it
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_b VALUES (2)') AS b_after_revoke;

-- Granted again: fires again, under the new name.
GRANT callback_producer TO regress_pgcb_tgo_prod;
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_invoice VALUES (3)') AS a_after_grant;

-- The table given to a role that is not a producer: refused, whoever writes.
ALTER TABLE regress_pgcb_tgo_invoice OWNER TO regress_pgcb_tgo_other;
SELECT pg_temp.try('regress_pgcb_tgo_other', 'INSERT INTO regress_pgcb_tgo_invoice VALUES (4)') AS a_other_owner;
INSERT INTO regress_pgcb_tgo_invoice VALUES (5);
-- back to the producer: fires
ALTER TABLE regress_pgcb_tgo_invoice OWNER TO regress_pgcb_tgo_prod;
SELECT pg_temp.try('regress_pgcb_tgo_prod', 'INSERT INTO regress_pgcb_tgo_invoice VALUES (6)') AS a_back;

-- A superuser's table is a producer's.
CREATE TABLE regress_pgcb_tgo_su (id int PRIMARY KEY);
CREATE TRIGGER tg AFTER INSERT ON regress_pgcb_tgo_su FOR EACH ROW EXECUTE FUNCTION callback.trigger();
INSERT INTO regress_pgcb_tgo_su VALUES (1);

-- What was queued: no event named by a non-producer.
SELECT q.event_type, (q.body::jsonb -> 'data' -> 'new' ->> 'id')::int AS id
  FROM callback.callback_queue q JOIN callback.callback_endpoints e ON e.id = q.endpoint_id
 WHERE e.name = 'regress_pgcb_tgo_ep'
 ORDER BY q.id;

-- clean up
DROP TABLE regress_pgcb_tgo_invoice, regress_pgcb_tgo_b, regress_pgcb_tgo_su;
SELECT callback.drop_endpoint('regress_pgcb_tgo_ep', force => true);
REVOKE CREATE ON SCHEMA public FROM regress_pgcb_tgo_prod;
DROP ROLE regress_pgcb_tgo_prod, regress_pgcb_tgo_other;
