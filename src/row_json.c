/*
 * row_json.c
 *		A table row as JSON for the trigger's bodies: the same bytes as
 *		row_to_json(row), without looking up every column's type and output
 *		function again for every row.
 *
 * Per relation (a small hash, an entry dropped by the relation's relcache
 * invalidation: ALTER TABLE, a new column type...), each column's JSON key,
 * its category and its output function, chosen as PostgreSQL 15's
 * json_categorize_type() and datum_to_json() (utils/adt/json.c) choose
 * them: booleans as true/false, the numeric types raw when the output is a
 * valid JSON number, date and timestamps by JsonEncodeDateTime(), json and
 * jsonb as their text, every other built-in scalar as an escaped string.
 * A row with a column this does not cover the same way for sure (arrays,
 * composites, and any type created by a user, which a cast to json created
 * at any time would change) goes to row_to_json() itself.
 *
 * The invalidation callback only marks an entry stale (it may run while an
 * output function of that very entry is running); it is rebuilt, and the
 * old memory freed, at the entry's next use.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "row_json.h"

typedef enum
{
	COL_SKIP,					/* dropped */
	COL_BOOL,
	COL_NUMERIC,
	COL_DATE,
	COL_TIMESTAMP,
	COL_TIMESTAMPTZ,
	COL_JSON,
	COL_OTHER
} ColKind;

typedef struct RowJsonEntry
{
	Oid			relid;			/* hash key */
	bool		valid;
	bool		fallback;		/* use row_to_json() */
	MemoryContext cxt;
	int			natts;
	ColKind    *kind;
	char	  **key;			/* "name": */
	FmgrInfo   *out;
	Datum	   *values;
	bool	   *nulls;
} RowJsonEntry;

static HTAB *entries = NULL;

static void
row_json_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS seq;
	RowJsonEntry *e;

	if (entries == NULL)
		return;
	if (OidIsValid(relid))
	{
		e = hash_search(entries, &relid, HASH_FIND, NULL);
		if (e)
			e->valid = false;
		return;
	}
	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
		e->valid = false;
}

/* As json_categorize_type() decides; false: leave the row to row_to_json(). */
static bool
categorize(Oid typoid, ColKind *kind, Oid *outfunc)
{
	bool		varlena;

	typoid = getBaseType(typoid);
	*outfunc = InvalidOid;
	switch (typoid)
	{
		case BOOLOID:
			*kind = COL_BOOL;
			return true;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			getTypeOutputInfo(typoid, outfunc, &varlena);
			*kind = COL_NUMERIC;
			return true;
		case DATEOID:
			*kind = COL_DATE;
			return true;
		case TIMESTAMPOID:
			*kind = COL_TIMESTAMP;
			return true;
		case TIMESTAMPTZOID:
			*kind = COL_TIMESTAMPTZ;
			return true;
		case JSONOID:
		case JSONBOID:
			getTypeOutputInfo(typoid, outfunc, &varlena);
			*kind = COL_JSON;
			return true;
		default:
			if (typoid >= FirstNormalObjectId ||
				OidIsValid(get_element_type(typoid)) || typoid == ANYARRAYOID ||
				typoid == ANYCOMPATIBLEARRAYOID || typoid == RECORDARRAYOID ||
				type_is_rowtype(typoid))
				return false;
			getTypeOutputInfo(typoid, outfunc, &varlena);
			*kind = COL_OTHER;
			return true;
	}
}

static void
build(RowJsonEntry *e, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;

	if (e->cxt)
		MemoryContextDelete(e->cxt);
	e->cxt = AllocSetContextCreate(CacheMemoryContext, "pg_callback row json",
								   ALLOCSET_SMALL_SIZES);
	e->fallback = false;
	e->natts = desc->natts;
	old = MemoryContextSwitchTo(e->cxt);
	e->kind = palloc0(sizeof(ColKind) * Max(desc->natts, 1));
	e->key = palloc0(sizeof(char *) * Max(desc->natts, 1));
	e->out = palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1));
	e->values = palloc0(sizeof(Datum) * Max(desc->natts, 1));
	e->nulls = palloc0(sizeof(bool) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts && !e->fallback; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		StringInfoData k;
		Oid			outfunc;

		if (att->attisdropped)
		{
			e->kind[i] = COL_SKIP;
			continue;
		}
		if (!categorize(att->atttypid, &e->kind[i], &outfunc))
		{
			e->fallback = true;
			break;
		}
		if (OidIsValid(outfunc))
			fmgr_info_cxt(outfunc, &e->out[i], e->cxt);
		initStringInfo(&k);
		escape_json(&k, NameStr(att->attname));
		appendStringInfoChar(&k, ':');
		e->key[i] = k.data;
	}
	MemoryContextSwitchTo(old);
	e->valid = true;
}

static void
append_value(StringInfo buf, RowJsonEntry *e, int i, Datum val)
{
	char	   *s;
	char		dt[MAXDATELEN + 1];

	switch (e->kind[i])
	{
		case COL_BOOL:
			appendStringInfoString(buf, DatumGetBool(val) ? "true" : "false");
			break;
		case COL_NUMERIC:
			s = OutputFunctionCall(&e->out[i], val);
			if (IsValidJsonNumber(s, strlen(s)))
				appendStringInfoString(buf, s);
			else
				escape_json(buf, s);
			pfree(s);
			break;
		case COL_DATE:
			JsonEncodeDateTime(dt, val, DATEOID, NULL);
			appendStringInfo(buf, "\"%s\"", dt);
			break;
		case COL_TIMESTAMP:
			JsonEncodeDateTime(dt, val, TIMESTAMPOID, NULL);
			appendStringInfo(buf, "\"%s\"", dt);
			break;
		case COL_TIMESTAMPTZ:
			JsonEncodeDateTime(dt, val, TIMESTAMPTZOID, NULL);
			appendStringInfo(buf, "\"%s\"", dt);
			break;
		case COL_JSON:
			s = OutputFunctionCall(&e->out[i], val);
			appendStringInfoString(buf, s);
			pfree(s);
			break;
		case COL_OTHER:
			s = OutputFunctionCall(&e->out[i], val);
			escape_json(buf, s);
			pfree(s);
			break;
		case COL_SKIP:
			break;
	}
}

void
pgcb_row_json_append(StringInfo buf, Relation rel, HeapTuple tuple)
{
	RowJsonEntry *e;
	Oid			relid = RelationGetRelid(rel);
	bool		found;
	bool		needsep = false;

	if (tuple == NULL)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	if (entries == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(RowJsonEntry);
		ctl.hcxt = CacheMemoryContext;
		entries = hash_create("pg_callback row json", 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(row_json_relcache_callback, (Datum) 0);
	}
	e = hash_search(entries, &relid, HASH_ENTER, &found);
	if (!found)
	{
		e->cxt = NULL;
		e->valid = false;
	}
	if (!e->valid || e->natts != RelationGetDescr(rel)->natts)
		build(e, rel);

	if (e->fallback)
	{
		text	   *json;
		Datum		row = heap_copy_tuple_as_datum(tuple, RelationGetDescr(rel));

		json = DatumGetTextPP(DirectFunctionCall1(row_to_json, row));
		appendBinaryStringInfo(buf, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
		return;
	}

	heap_deform_tuple(tuple, RelationGetDescr(rel), e->values, e->nulls);
	appendStringInfoChar(buf, '{');
	for (int i = 0; i < e->natts; i++)
	{
		if (e->kind[i] == COL_SKIP)
			continue;
		if (needsep)
			appendStringInfoChar(buf, ',');
		needsep = true;
		appendStringInfoString(buf, e->key[i]);
		if (e->nulls[i])
			appendStringInfoString(buf, "null");
		else
			append_value(buf, e, i, e->values[i]);
	}
	appendStringInfoChar(buf, '}');
}
