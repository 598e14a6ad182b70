/*
 * backfill.c
 *		CALL callback.backfill(table, endpoint, where_clause, batch_size,
 *		prefix, restart): one "<prefix>.backfill" event per existing row of
 *		a table, for one endpoint, in batches of one transaction each.
 *
 * Each batch is one transaction: lock this backfill's progress row, read
 * how far it got, select the next rows (the caller's SQL, with the caller's
 * rights), queue one event per row, write the new position, commit.  The
 * queue rows and the position commit or roll back together, so a cancel or
 * a crash loses at most the batch in flight and a second CALL goes on from
 * the last commit: no row is queued twice.  Two sessions running the same
 * backfill take turns on the progress row and share the work.
 *
 * The walk: by primary key (keyset, ORDER BY the key, LIMIT batch_size) when
 * the table has one, else by ranges of heap blocks (a TID range scan, whole
 * pages per batch, sized to hold about batch_size rows).  A ctid walk is
 * exact while no VACUUM FULL or CLUSTER rewrites the table between a stop
 * and its resume.  Rows written meanwhile are the trigger's business: the
 * backfill sees each row as of its batch's snapshot.
 *
 * The body is the row trigger's (trigger_body.c) for that row, with the
 * event type "<prefix>.backfill", "op":"BACKFILL", the row as "new" and
 * "old" null.  The prefix is the trigger's rule: given, else the table's
 * name.
 *
 * Rights: the procedure is SECURITY INVOKER with no SET clause (COMMIT is
 * refused in a procedure that has one): the where clause runs as the
 * caller, under the caller's search_path and row security.  Only the
 * progress rows are read and written as the extension's owner (session.c),
 * by the fixed statements below.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "event.h"
#include "pg_callback.h"
#include "session.h"
#include "trigger.h"

PG_FUNCTION_INFO_V1(backfill);

#define BACKFILL_SUFFIX ".backfill"
#define BACKFILL_BATCH_MAX 100000
#define BACKFILL_WHERE_MAX 8192
#define PGCB_PRODUCER_ROLE "callback_producer"

typedef struct Backfill
{
	Oid			relid;
	char	   *relname;		/* for messages: schema.table, quoted */
	char	   *relref;			/* the table's name as a column reference */
	char	   *endpoint;
	int32		endpoint_id;
	char	   *where_clause;	/* NULL: every row */
	int			batch_size;
	char	   *prefix;
	char		event_type[PGCB_EVENT_TYPE_MAX + 1];
	bool		restart;
	Oid			pk_index;		/* InvalidOid: walk by ctid */
	char	   *query;			/* one batch; $1 (and $2) the position */
	int64		progress_id;
	double		rows_estimated; /* < 0: unknown */
	BlockNumber pages_per_batch;	/* ctid walk */
} Backfill;

/* ---------------------------------------------------------------- arguments */

static void
null_argument(const char *name, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("%s must not be NULL", name),
			 errhint("%s", hint)));
}

static void
check_arguments(FunctionCallInfo fcinfo, Backfill *b)
{
	if (PG_ARGISNULL(0))
		null_argument("table", "Name the table to backfill, such as 'public.orders'.");
	if (PG_ARGISNULL(1))
		null_argument("endpoint", "Name the endpoint that receives the events.");
	if (PG_ARGISNULL(3))
		null_argument("batch_size", "Give a number of rows per transaction, such as 10000, or leave it out.");
	if (PG_ARGISNULL(5))
		null_argument("restart", "Pass false to resume (the default) or true to start again.");

	b->relid = PG_GETARG_OID(0);
	b->endpoint = text_to_cstring(PG_GETARG_TEXT_PP(1));
	b->batch_size = PG_GETARG_INT32(3);
	b->restart = PG_GETARG_BOOL(5);
	if (b->batch_size < 1 || b->batch_size > BACKFILL_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d, not %d",
						BACKFILL_BATCH_MAX, b->batch_size),
				 errhint("Each batch is one transaction holding its rows in memory; 1000 to 10000 suits most tables.")));

	b->where_clause = NULL;
	if (!PG_ARGISNULL(2))
	{
		text	   *w = PG_GETARG_TEXT_PP(2);
		char	   *s;

		if (VARSIZE_ANY_EXHDR(w) > BACKFILL_WHERE_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("where_clause of %zu bytes is too long", (size_t) VARSIZE_ANY_EXHDR(w)),
					 errhint("Give a condition of at most %d bytes; a long list of keys fits in a table to join with EXISTS.",
							 BACKFILL_WHERE_MAX)));
		s = text_to_cstring(w);
		if (strspn(s, " \t\r\n\f\v") == strlen(s))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("where_clause must not be empty"),
					 errhint("Give a condition such as 'status = ''open''', or NULL for every row.")));
		b->where_clause = s;
	}
}

/* The prefix: as the trigger chooses it, and valid as the trigger checks it. */
static void
choose_prefix(FunctionCallInfo fcinfo, Backfill *b, Relation rel)
{
	b->prefix = PG_ARGISNULL(4) ? pstrdup(RelationGetRelationName(rel))
		: text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strlen(b->prefix) > PGCB_EVENT_TYPE_MAX - strlen(BACKFILL_SUFFIX) ||
		!pgcb_event_type_is_valid(b->prefix, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event type prefix \"%s\"", pgcb_event_clip_for_message(b->prefix)),
				 errhint("Use 1 to %d of the characters A-Z a-z 0-9 _ . -, such as 'order' (the trigger's prefix); "
						 "without prefix the table's name is used, which must be such a name.",
						 (int) (PGCB_EVENT_TYPE_MAX - strlen(BACKFILL_SUFFIX)))));
	snprintf(b->event_type, sizeof(b->event_type), "%s%s", b->prefix, BACKFILL_SUFFIX);
}

/* The caller may queue events and read the whole table. */
static void
check_rights(Backfill *b)
{
	Oid			producer = get_role_oid(PGCB_PRODUCER_ROLE, true);
	Oid			me = GetUserId();

	if (!OidIsValid(producer) || !has_privs_of_role(me, producer))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to backfill: role \"%s\" is not a member of %s",
						GetUserNameFromId(me, false), PGCB_PRODUCER_ROLE),
				 errhint("GRANT %s TO the role that runs the backfill.", PGCB_PRODUCER_ROLE)));
	if (pg_class_aclcheck(b->relid, me, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(b->relid, me, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", b->relname),
				 errdetail("callback.backfill() reads the table with the caller's rights."),
				 errhint("GRANT SELECT ON %s TO the role that runs the backfill.", b->relname)));
}

/* Open the table for this transaction; only a plain table has rows to backfill. */
static Relation
open_table(Backfill *b)
{
	Relation	rel = try_relation_open(b->relid, AccessShareLock);

	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s does not exist", b->relname ? b->relname : "with that OID"),
				 errhint("It was dropped; a backfill of another table is a new CALL.")));
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is a partitioned table", RelationGetRelationName(rel)),
				 errdetail("The trigger's events name the partition that holds the row."),
				 errhint("Backfill each partition: CALL callback.backfill('<partition>', ...) once per partition.")));
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errhint("Backfill a table; a view, materialized view, foreign table, index, sequence or type has no rows of its own to backfill.")));
	return rel;
}

/* ------------------------------------------------------------- where_clause */

/* Errors in the caller's where clause point into it, with a hint. */
static void
where_error_callback(void *arg)
{
	const char *sql = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(sql);
	}
	errcontext("where_clause of callback.backfill()");
	errhint("where_clause is one boolean SQL condition over the table's columns, such as 'status = ''open''', "
			"without WHERE or a semicolon; it runs with your rights and search_path.");
}

/*
 * The where clause is spliced into a statement: it must be exactly one
 * condition.  Parsed as "... WHERE NOT (clause)", anything that would
 * escape its parentheses shows: a second statement, a clause after WHERE
 * (GROUP BY, ORDER BY, UNION, LIMIT ...), or an AND / OR outside them (the
 * only operators that bind more loosely than NOT), which would otherwise
 * turn "(position) AND (clause)" into something else.
 */
static void
check_where_clause(Backfill *b)
{
	StringInfoData sql;
	ErrorContextCallback cb;
	List	   *stmts;
	SelectStmt *sel = NULL;
	bool		ok;

	initStringInfo(&sql);
	/* the newline ends a -- comment inside the clause, as in the query */
	appendStringInfo(&sql, "SELECT FROM ONLY %s WHERE NOT (%s\n)", b->relname, b->where_clause);
	cb.callback = where_error_callback;
	cb.arg = sql.data;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	stmts = raw_parser(sql.data, RAW_PARSE_DEFAULT);
	error_context_stack = cb.previous;

	ok = list_length(stmts) == 1 && IsA(linitial_node(RawStmt, stmts)->stmt, SelectStmt);
	if (ok)
	{
		sel = (SelectStmt *) linitial_node(RawStmt, stmts)->stmt;
		ok = sel->op == SETOP_NONE && sel->whereClause != NULL &&
			IsA(sel->whereClause, BoolExpr) &&
			((BoolExpr *) sel->whereClause)->boolop == NOT_EXPR &&
			sel->groupClause == NIL && sel->havingClause == NULL &&
			sel->windowClause == NIL && sel->sortClause == NIL &&
			sel->limitCount == NULL && sel->limitOffset == NULL &&
			sel->lockingClause == NIL && sel->withClause == NULL &&
			sel->intoClause == NULL && sel->distinctClause == NIL &&
			list_length(sel->fromClause) == 1 && sel->targetList == NIL;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("where_clause must be a single condition"),
				 errdetail("It reaches outside its parentheses (a top-level AND or OR with an unbalanced parenthesis, another clause or statement)."),
				 errhint("Give one boolean condition over the table's columns, such as 'status = ''open'' AND id > 100'.")));
	pfree(sql.data);
}

/* ------------------------------------------------------------------ queries */

/*
 * One batch's SELECT: the whole row (in the table's own row type, the
 * format the trigger sees) and, by primary key, the key as text.
 * By key:  $1 text[] is the last key done (NULL: from the start).
 * By ctid: $1 and $2 (tid) bound the block range.
 */
static void
build_query(Backfill *b, Relation rel)
{
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT CAST(%s.* AS %s)", b->relref, b->relname);
	if (OidIsValid(b->pk_index))
	{
		HeapTuple	itup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(b->pk_index));
		Form_pg_index idx;
		StringInfoData cols;
		StringInfoData casts;
		StringInfoData texts;

		if (!HeapTupleIsValid(itup))
			elog(ERROR, "cache lookup failed for index %u", b->pk_index);
		idx = (Form_pg_index) GETSTRUCT(itup);
		initStringInfo(&cols);
		initStringInfo(&casts);
		initStringInfo(&texts);
		for (int i = 0; i < idx->indnkeyatts; i++)
		{
			AttrNumber	att = idx->indkey.values[i];
			Form_pg_attribute a = TupleDescAttr(RelationGetDescr(rel), att - 1);
			const char *col = quote_identifier(NameStr(a->attname));
			const char *sep = i > 0 ? ", " : "";

			appendStringInfo(&cols, "%s%s.%s", sep, b->relref, col);
			appendStringInfo(&casts, "%sCAST($1[%d] AS %s)", sep, i + 1,
							 format_type_be_qualified(a->atttypid));
			appendStringInfo(&texts, "%sCAST(%s.%s AS pg_catalog.text)", sep, b->relref, col);
		}
		ReleaseSysCache(itup);
		appendStringInfo(&q, ", ARRAY[%s] FROM ONLY %s WHERE ($1 IS NULL OR ROW(%s) OPERATOR(pg_catalog.>) ROW(%s))",
						 texts.data, b->relname, cols.data, casts.data);
		if (b->where_clause)
			appendStringInfo(&q, " AND (%s\n)", b->where_clause);
		appendStringInfo(&q, " ORDER BY %s LIMIT %d", cols.data, b->batch_size);
	}
	else
	{
		appendStringInfo(&q, " FROM ONLY %s WHERE %s.ctid OPERATOR(pg_catalog.>=) $1 AND %s.ctid OPERATOR(pg_catalog.<) $2",
						 b->relname, b->relref, b->relref);
		if (b->where_clause)
			appendStringInfo(&q, " AND (%s\n)", b->where_clause);
	}
	b->query = q.data;
}

static int
query_nargs(Backfill *b, Oid *types)
{
	if (OidIsValid(b->pk_index))
	{
		types[0] = TEXTARRAYOID;
		return 1;
	}
	types[0] = types[1] = TIDOID;
	return 2;
}

/*
 * Plan the batch query once, as the caller, before anything is written:
 * an unknown column, a type error or a missing right in the where clause
 * shows here.
 */
static void
check_query(Backfill *b)
{
	Oid			types[2];
	int			nargs = query_nargs(b, types);
	ErrorContextCallback cb;
	SPIPlanPtr	plan;

	cb.callback = where_error_callback;
	cb.arg = b->query;
	cb.previous = error_context_stack;
	error_context_stack = b->where_clause ? &cb : cb.previous;
	plan = SPI_prepare(b->query, nargs, types);
	error_context_stack = cb.previous;
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for backfill: %s", SPI_result_code_string(SPI_result));
	SPI_freeplan(plan);
}

/* ----------------------------------------------------------------- progress */

/* the progress of backfills whose endpoint or table is gone */
static const char *const progress_forget_sql =
"DELETE FROM callback.callback_backfill_progress p "
" WHERE NOT EXISTS (SELECT 1 FROM callback.callback_endpoints e "
"                    WHERE e.id OPERATOR(pg_catalog.=) p.endpoint_id) "
"    OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p.relid)";

static const char *const progress_begin_sql =
"INSERT INTO callback.callback_backfill_progress "
"       (relid, endpoint_id, where_clause, prefix, walk_by, rows_estimated, started_by) "
"VALUES ($1, $2, $3, $4, $5, $6, $7) "
"ON CONFLICT (relid, endpoint_id, where_clause) DO NOTHING";

static const char *const progress_lock_sql =
"SELECT id, prefix, walk_by, last_key, rows_queued, finished_at IS NOT NULL "
"  FROM callback.callback_backfill_progress "
" WHERE relid OPERATOR(pg_catalog.=) $1 AND endpoint_id OPERATOR(pg_catalog.=) $2 "
"   AND where_clause IS NOT DISTINCT FROM $3 "
"   FOR UPDATE";

static const char *const progress_restart_sql =
"UPDATE callback.callback_backfill_progress "
"   SET prefix = $2, walk_by = $3, rows_estimated = $4, started_by = $5, last_key = NULL, "
"       rows_queued = 0, batches = 0, pid = NULL, started_at = pg_catalog.now(), "
"       updated_at = pg_catalog.now(), finished_at = NULL "
" WHERE id OPERATOR(pg_catalog.=) $1";

static const char *const progress_step_sql =
"UPDATE callback.callback_backfill_progress "
"   SET last_key = $2, rows_queued = rows_queued OPERATOR(pg_catalog.+) $3, "
"       batches = batches OPERATOR(pg_catalog.+) 1, pid = $4, updated_at = pg_catalog.now(), "
"       finished_at = CASE WHEN $5 THEN pg_catalog.now() END "
" WHERE id OPERATOR(pg_catalog.=) $1";

/* What the progress row says at the start of a batch. */
typedef struct Position
{
	bool		finished;
	Datum		last_key;		/* text[], copied into the caller's context */
	bool		last_key_null;
	int64		rows_queued;
} Position;

static void
spi_check(int rc, int expected, const char *what)
{
	if (rc != expected)
		elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

/*
 * Lock this backfill's progress row (made on the first call) and read the
 * position.  Run as the extension's owner.  first: check the stored
 * backfill against the arguments, restart it if asked.
 */
static void
progress_lock(Backfill *b, bool first, Position *pos, MemoryContext keep)
{
	PgcbSession s;
	Oid			types[7] = {OIDOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, OIDOID};
	Datum		values[7];
	char		nulls[7] = "       ";
	const char *walk_by = OidIsValid(b->pk_index) ? "primary key" : "ctid";
	bool		isnull;
	char	   *stored_prefix;
	char	   *stored_walk;
	int			rc;

	values[0] = ObjectIdGetDatum(b->relid);
	values[1] = Int32GetDatum(b->endpoint_id);
	values[2] = b->where_clause ? CStringGetTextDatum(b->where_clause) : (Datum) 0;
	nulls[2] = b->where_clause ? ' ' : 'n';
	values[3] = CStringGetTextDatum(b->prefix);
	values[4] = CStringGetTextDatum(walk_by);
	values[5] = Float8GetDatum(b->rows_estimated);
	nulls[5] = b->rows_estimated >= 0 ? ' ' : 'n';
	values[6] = ObjectIdGetDatum(GetUserId());

	pgcb_session_enter(&s);
	if (first)
	{
		rc = SPI_execute(progress_forget_sql, false, 0);
		spi_check(rc, SPI_OK_DELETE, "backfill progress clean-up");
		rc = SPI_execute_with_args(progress_begin_sql, 7, types, values, nulls, false, 0);
		spi_check(rc, SPI_OK_INSERT, "backfill progress insert");
	}
	rc = SPI_execute_with_args(progress_lock_sql, 3, types, values, nulls, false, 1);
	spi_check(rc, SPI_OK_SELECT, "backfill progress lock");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the progress of this backfill was removed while it ran"),
				 errdetail("Its row in callback.callback_backfill_progress was deleted (its endpoint was dropped and another backfill began)."),
				 errhint("Call callback.backfill() again to start anew.")));
	b->progress_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	stored_prefix = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	stored_walk = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	pos->last_key = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &pos->last_key_null);
	pos->rows_queued = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	pos->finished = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
	/* the key must outlive SPI's tuple table, freed here (SPI keeps them to SPI_finish) */
	if (!pos->last_key_null)
	{
		MemoryContext old = MemoryContextSwitchTo(keep);

		pos->last_key = datumCopy(pos->last_key, false, -1);
		MemoryContextSwitchTo(old);
	}
	SPI_freetuptable(SPI_tuptable);

	if (first && b->restart)
	{
		Datum		rv[5] = {Int64GetDatum(b->progress_id), values[3], values[4], values[5], values[6]};
		Oid			rt[5] = {INT8OID, TEXTOID, TEXTOID, FLOAT8OID, OIDOID};
		char		rn[5] = {' ', ' ', ' ', nulls[5], ' '};

		rc = SPI_execute_with_args(progress_restart_sql, 5, rt, rv, rn, false, 0);
		spi_check(rc, SPI_OK_UPDATE, "backfill progress restart");
		pos->finished = false;
		pos->last_key_null = true;
		pos->rows_queued = 0;
	}
	else if (first)
	{
		if (strcmp(stored_prefix, b->prefix) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("this backfill of %s to endpoint \"%s\" queues %s%s events, not %s",
							b->relname, b->endpoint, stored_prefix, BACKFILL_SUFFIX, b->event_type),
					 errhint("Resume with prefix => '%s', or pass restart => true to start again with the new prefix.",
							 stored_prefix)));
		if (strcmp(stored_walk, walk_by) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("this backfill of %s walked the table by %s, which it now cannot",
							b->relname, stored_walk),
					 errdetail("The table's primary key was added or dropped since the backfill began."),
					 errhint("Pass restart => true to queue every row again.")));
		if (pos->finished)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the backfill of %s to endpoint \"%s\" has finished already", b->relname, b->endpoint),
					 errdetail("It queued %lld rows; callback.callback_backfills shows it.",
							   (long long) pos->rows_queued),
					 errhint("Pass restart => true to queue every row again, or change where_clause to send other rows.")));
	}
	pgcb_session_leave(&s);
}

static void
progress_step(Backfill *b, Datum last_key, bool last_key_null, int64 rows, bool finished)
{
	PgcbSession s;
	Oid			types[5] = {INT8OID, TEXTARRAYOID, INT8OID, INT4OID, BOOLOID};
	Datum		values[5];
	char		nulls[5] = "     ";
	int			rc;

	values[0] = Int64GetDatum(b->progress_id);
	values[1] = last_key;
	nulls[1] = last_key_null ? 'n' : ' ';
	values[2] = Int64GetDatum(rows);
	values[3] = Int32GetDatum(MyProcPid);
	values[4] = BoolGetDatum(finished);
	pgcb_session_enter(&s);
	rc = SPI_execute_with_args(progress_step_sql, 5, types, values, nulls, false, 0);
	spi_check(rc, SPI_OK_UPDATE, "backfill progress update");
	pgcb_session_leave(&s);
}

/* The endpoint's id; it must exist and be enabled. */
static void
find_endpoint(Backfill *b)
{
	PgcbSession s;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(b->endpoint)};
	bool		isnull;
	bool		enabled;
	int			rc;

	pgcb_session_enter(&s);
	rc = SPI_execute_with_args("SELECT id, enabled FROM callback.callback_endpoints "
							   " WHERE name OPERATOR(pg_catalog.=) $1",
							   1, types, values, NULL, true, 1);
	spi_check(rc, SPI_OK_SELECT, "backfill endpoint lookup");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("endpoint \"%s\" does not exist", pgcb_event_clip_for_message(b->endpoint)),
				 errhint("Give the name of an endpoint made by callback.create_endpoint(); callback.callback_endpoints_redacted lists them.")));
	b->endpoint_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	enabled = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	pgcb_session_leave(&s);
	if (!enabled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("endpoint \"%s\" is disabled", b->endpoint),
				 errhint("Enable it first: SELECT callback.alter_endpoint('%s', enabled => true).", b->endpoint)));
}

/* ---------------------------------------------------------------- one batch */

/*
 * Queue the events of one batch of rows; returns how many.  *last_key gets
 * the last row's key (by key).  Runs in the batch's transaction.
 */
static uint64
queue_rows(Backfill *b, Relation rel, Datum *last_key, bool *last_key_null)
{
	SPITupleTable *tt = SPI_tuptable;
	uint64		n = SPI_processed;
	MemoryContext row_cxt;
	MemoryContext old;
	StringInfoData body;

	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback backfill row",
									ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(row_cxt);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		row = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
		HeapTupleHeader th;
		HeapTupleData tuple;
		PgcbEventRow ev = {0};

		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(row_cxt);
		if (isnull)
			elog(ERROR, "backfill query returned a NULL row");
		th = DatumGetHeapTupleHeader(row);
		tuple.t_len = HeapTupleHeaderGetDatumLength(th);
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = b->relid;
		tuple.t_data = th;
		initStringInfo(&body);
		pgcb_trigger_row_body(&body, rel, b->event_type, "BACKFILL", &tuple, NULL);
		ev.event_type = b->event_type;
		ev.body = body.data;
		ev.body_len = body.len;
		pgcb_event_enqueue_to(&ev, b->endpoint_id);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(row_cxt);
	if (n > 0 && OidIsValid(b->pk_index))
	{
		*last_key = SPI_getbinval(tt->vals[n - 1], tt->tupdesc, 2, last_key_null);
		if (!*last_key_null)
			*last_key = datumCopy(*last_key, false, -1);
	}
	SPI_freetuptable(tt);
	return n;
}

/* A text[] of one element: the ctid walk's next block. */
static Datum
block_key(BlockNumber blk)
{
	Datum		d = CStringGetTextDatum(psprintf("%u", blk));

	return PointerGetDatum(construct_array(&d, 1, TEXTOID, -1, false, TYPALIGN_INT));
}

static BlockNumber
key_block(Datum key)
{
	ArrayType  *a = DatumGetArrayTypeP(key);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n != 1 || nulls[0])
		elog(ERROR, "backfill position is not a block number");
	return (BlockNumber) strtoul(TextDatumGetCString(elems[0]), NULL, 10);
}

/*
 * One transaction's work.  Returns true when the backfill has finished.
 */
static bool
run_batch(Backfill *b, bool first, int64 *total, MemoryContext batch_cxt)
{
	Position	pos;
	Relation	rel;
	Oid			types[2];
	Datum		args[2];
	char		nulls[2] = "  ";
	ItemPointerData lo;
	ItemPointerData hi;
	BlockNumber from = 0;
	BlockNumber to = 0;
	BlockNumber nblocks = 0;
	Datum		last_key = (Datum) 0;
	bool		last_key_null = true;
	uint64		n;
	bool		finished;
	int			rc;

	progress_lock(b, first, &pos, batch_cxt);
	if (pos.finished)
		return true;			/* another session finished it meanwhile */

	rel = open_table(b);
	if (RelationGetPrimaryKeyIndex(rel) != b->pk_index)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary key of %s changed while it was backfilled", b->relname),
				 errhint("CALL callback.backfill(...) again: it resumes if it can, or says how to start again.")));

	query_nargs(b, types);
	if (OidIsValid(b->pk_index))
	{
		args[0] = pos.last_key;
		nulls[0] = pos.last_key_null ? 'n' : ' ';
	}
	else
	{
		from = pos.last_key_null ? 0 : key_block(pos.last_key);
		nblocks = RelationGetNumberOfBlocks(rel);
		to = from + Min(b->pages_per_batch, MaxBlockNumber - from);
		ItemPointerSet(&lo, from, 0);
		ItemPointerSet(&hi, to, 0);
		args[0] = PointerGetDatum(&lo);
		args[1] = PointerGetDatum(&hi);
	}

	/* the caller's SQL, with the caller's rights */
	if (OidIsValid(b->pk_index) || from < nblocks)
	{
		/*
		 * The key goes to text and back (the progress row keeps it between
		 * transactions): its output formats are pinned for the query, so
		 * that a resume in a session with another DateStyle, IntervalStyle
		 * or extra_float_digits reads the same key.  ISO leaves DateStyle's
		 * field order, and so the caller's date literals, as they were.
		 */
		int			nest = NewGUCNestLevel();

		(void) set_config_option("datestyle", "ISO", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("intervalstyle", "postgres", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		rc = SPI_execute_with_args(b->query, OidIsValid(b->pk_index) ? 1 : 2, types, args, nulls, false, 0);
		AtEOXact_GUC(true, nest);
		spi_check(rc, SPI_OK_SELECT, "backfill batch");
		PushActiveSnapshot(GetTransactionSnapshot());
		n = queue_rows(b, rel, &last_key, &last_key_null);
		PopActiveSnapshot();
	}
	else
		n = 0;

	if (OidIsValid(b->pk_index))
	{
		finished = n < (uint64) b->batch_size;
		if (n == 0)
		{
			last_key = pos.last_key;
			last_key_null = pos.last_key_null;
		}
	}
	else
	{
		finished = to >= nblocks;
		last_key = block_key(Min(to, nblocks));
		last_key_null = false;
		/* about batch_size rows next time, within a factor of 4 of this one */
		if (n == 0)
			b->pages_per_batch = Min(b->pages_per_batch * 4, (BlockNumber) 1 << 20);
		else
			b->pages_per_batch = Max(1, Min((double) b->pages_per_batch * 4,
											(double) b->pages_per_batch * b->batch_size / n));
	}
	progress_step(b, last_key, last_key_null, (int64) n, finished);
	*total = pos.rows_queued + (int64) n;
	relation_close(rel, AccessShareLock);

	ereport(NOTICE,
			(errmsg("backfill of %s to endpoint \"%s\": %llu rows in this batch, %lld queued in all%s",
					b->relname, b->endpoint, (unsigned long long) n, (long long) *total,
					finished ? ", finished" : "")));
	return finished;
}

/* ---------------------------------------------------------------- the entry */

Datum
backfill(PG_FUNCTION_ARGS)
{
	Backfill	b = {0};
	Relation	rel;
	MemoryContext batch_cxt;
	MemoryContext old;
	int64		total = 0;
	bool		finished;
	bool		atomic = fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		((CallContext *) fcinfo->context)->atomic;

	check_arguments(fcinfo, &b);
	/* a bad argument is said as such, in a transaction block too */
	if (SPI_connect_ext(atomic ? 0 : SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect_ext failed");

	/* the first transaction (the CALL's): check everything, write nothing yet */
	rel = open_table(&b);
	b.relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										   RelationGetRelationName(rel));
	b.relref = pstrdup(quote_identifier(RelationGetRelationName(rel)));
	check_rights(&b);
	choose_prefix(fcinfo, &b, rel);
	find_endpoint(&b);
	b.pk_index = RelationGetPrimaryKeyIndex(rel);
	b.rows_estimated = b.where_clause == NULL && rel->rd_rel->reltuples >= 0
		? rel->rd_rel->reltuples : -1;
	/* at most batch_size rows in a batch until the first one measures */
	b.pages_per_batch = rel->rd_rel->relpages > 0 && rel->rd_rel->reltuples > 0
		? Max(1, (double) b.batch_size * rel->rd_rel->relpages / rel->rd_rel->reltuples)
		: Max(1, b.batch_size / MaxHeapTuplesPerPage);
	if (b.where_clause)
		check_where_clause(&b);
	build_query(&b, rel);
	relation_close(rel, AccessShareLock);
	check_query(&b);

	if (atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("callback.backfill() cannot run inside a transaction block"),
				 errdetail("It commits after every batch, which a transaction block, a function or a procedure with a SET clause does not allow."),
				 errhint("Run CALL callback.backfill(...) as a statement of its own, outside BEGIN ... COMMIT.")));

	/* what lives across the batches' transactions */
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_callback backfill batch",
									  ALLOCSET_DEFAULT_SIZES);
	for (bool first = true;; first = false)
	{
		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(batch_cxt);
		old = MemoryContextSwitchTo(batch_cxt);
		finished = run_batch(&b, first, &total, batch_cxt);
		MemoryContextSwitchTo(old);
		SPI_commit();
		SPI_start_transaction();
		if (finished)
			break;
	}
	MemoryContextDelete(batch_cxt);
	SPI_finish();
	PG_RETURN_VOID();
}
