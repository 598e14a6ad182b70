--
-- schema_owner: CREATE EXTENSION pg_callback refuses a schema "callback"
-- that another role prepared (control file: schema = callback; PostgreSQL
-- uses an existing schema of that name).  Its owner, or a role that may
-- create objects in it, or objects of another role in it, could replace the
-- extension's objects and run code as the extension's owner.  Each case in
-- a database of its own.
--
SET client_min_messages = warning;
\set VERBOSITY default
\set SHOW_CONTEXT never
\set regress_db :DBNAME

CREATE ROLE regress_pgcb_mallory NOLOGIN;

-- 1. The schema is the attacker's, with a function of his in it.
CREATE DATABASE regress_pgcb_schema1;
\c regress_pgcb_schema1
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CREATE SCHEMA callback AUTHORIZATION regress_pgcb_mallory;
CREATE FUNCTION callback.event_type_matches(text[], varchar) RETURNS boolean
    LANGUAGE sql AS 'SELECT true';
ALTER FUNCTION callback.event_type_matches(text[], varchar) OWNER TO regress_pgcb_mallory;
CREATE EXTENSION pg_callback;
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'pg_callback';
SELECT p.oid::regprocedure AS left_as_it_was FROM pg_proc p WHERE p.pronamespace = 'callback'::regnamespace;

-- 2. The schema is a superuser's, but the attacker may create objects in it.
\c :regress_db
CREATE DATABASE regress_pgcb_schema2;
\c regress_pgcb_schema2
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CREATE SCHEMA callback;
GRANT CREATE ON SCHEMA callback TO regress_pgcb_mallory;
CREATE EXTENSION pg_callback;
-- ... or he did and it was revoked: his object is still there
REVOKE CREATE ON SCHEMA callback FROM regress_pgcb_mallory;
CREATE TABLE callback.callback_planted (x int);
ALTER TABLE callback.callback_planted OWNER TO regress_pgcb_mallory;
CREATE EXTENSION pg_callback;
-- cleaned up, it installs
DROP TABLE callback.callback_planted;
CREATE EXTENSION pg_callback;
SELECT extversion FROM pg_extension WHERE extname = 'pg_callback';

-- 3. The schema was created by the installing superuser beforehand: fine.
\c :regress_db
CREATE DATABASE regress_pgcb_schema3;
\c regress_pgcb_schema3
SET client_min_messages = warning;
CREATE SCHEMA callback;
CREATE EXTENSION pg_callback;
SELECT extversion FROM pg_extension WHERE extname = 'pg_callback';

\c :regress_db
DROP DATABASE regress_pgcb_schema1;
DROP DATABASE regress_pgcb_schema2;
DROP DATABASE regress_pgcb_schema3;
DROP ROLE regress_pgcb_mallory;
