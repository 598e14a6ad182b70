"""Review of packed inbox rows (h-rev23b): failing tests for findings.

F1: a statement's open packs are closed and written by a nested insert
running in a subtransaction inside the batch (user code in the body: a
user type's cast to json, which row_to_json calls).  When the stale
queue shape (any pg_proc change, a relcache reset) makes open_queue()
re-open the target there, close_packs_as_owner() writes the statement's
packed events in that nested subtransaction; its rollback takes them
with it: events of committed rows silently lost.  The direct path
(callback.inbox = off) keeps all of them.
"""

CLUSTER_CONF = {"callback.inbox": True}

SETUP = r"""
CREATE TABLE f1_side (id int);
CREATE TRIGGER cb AFTER INSERT ON f1_side FOR EACH ROW EXECUTE FUNCTION callback.trigger('f1.side');
CREATE TYPE f1_mood AS ENUM ('a', 'b');
CREATE FUNCTION f1_mood_json(f1_mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
  IF $1 = 'b' THEN
    BEGIN
      -- any pg_proc change marks the queue's shape stale
      CREATE OR REPLACE FUNCTION pg_temp.f1_x() RETURNS int LANGUAGE sql AS 'SELECT 1';
      INSERT INTO f1_side VALUES (1);
      RAISE EXCEPTION 'caught below';
    EXCEPTION WHEN others THEN NULL;
    END;
  END IF;
  RETURN to_json($1::text);
END $$;
CREATE CAST (f1_mood AS json) WITH FUNCTION f1_mood_json(f1_mood);
CREATE TABLE f1_t (id int, m f1_mood);
CREATE TRIGGER cb AFTER INSERT ON f1_t REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION callback.trigger('f1.t');
"""


def events_of_statement(cluster, inbox):
    conn = cluster.connect(autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute("SET LOCAL callback.inbox = %s" % ("on" if inbox else "off"))
        cur.execute("INSERT INTO f1_t VALUES (1, 'a'), (2, 'a'), (3, 'b'), (4, 'a')")
        if inbox:
            cur.execute("SELECT coalesce(sum(events), 0) FROM callback.callback_inbox "
                        " WHERE event_type = 'f1.t.insert'")
        else:
            cur.execute("SELECT count(*) FROM callback.callback_queue "
                        " WHERE event_type = 'f1.t.insert'")
        return cur.fetchone()[0]
    finally:
        conn.rollback()
        conn.close()


def test_f1_nested_subxact_keeps_packs(cluster, receiver, endpoint_factory):
    eid = endpoint_factory("f1", receiver.url("/f1"), event_types="{f1.*}")
    cluster.execute("SELECT callback.pause_endpoint('f1')")
    cluster.execute(SETUP)
    assert eid
    assert events_of_statement(cluster, inbox=False) == 4
    assert events_of_statement(cluster, inbox=True) == 4, \
        "the packed events of rows 1-2 went with the nested subtransaction"
