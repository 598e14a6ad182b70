/*
 * trigger_key.c
 *		ordering: the ordering key callback.trigger() gives a row's event,
 *		made only when an ordered endpoint gets the event (event.c calls
 *		back).  The key is the text of the table's primary key columns, or
 *		of the columns named by the trigger's option 'key=col1,col2':
 *
 *	  EXECUTE FUNCTION callback.trigger('order', 'key=customer_id')
 *
 * One column: its value as text (NULL: no key, the event is not ordered).
 * Several: a JSON array of their texts, so that ('a,b','c') and
 * ('a','b,c') stay two keys.  The new row's values (the old row's for a
 * DELETE).  A key longer than PGCB_ORDERING_KEY_MAX bytes is cut there:
 * two keys that then look alike are delivered one at a time together,
 * which keeps each one's order.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_index.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "parser/parse_relation.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "event.h"
#include "trigger.h"

#define KEY_OPTION "key="

bool
pgcb_trigger_key_is_option(const char *arg)
{
	return strncmp(arg, KEY_OPTION, strlen(KEY_OPTION)) == 0;
}

/* The attribute numbers of the key columns; *n of them (0: no key). */
static AttrNumber *
key_columns(Relation rel, const char *option, int *n)
{
	AttrNumber *cols;

	*n = 0;
	if (option == NULL)
	{
		Oid			pk = RelationGetPrimaryKeyIndex(rel);
		HeapTuple	tup;
		Form_pg_index index;

		if (!OidIsValid(pk))
			return NULL;
		tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for index %u", pk);
		index = (Form_pg_index) GETSTRUCT(tup);
		cols = palloc(sizeof(AttrNumber) * Max(index->indnkeyatts, 1));
		for (int i = 0; i < index->indnkeyatts; i++)
			cols[(*n)++] = index->indkey.values[i];
		ReleaseSysCache(tup);
		return cols;
	}
	else
	{
		char	   *list = pstrdup(option + strlen(KEY_OPTION));
		char	   *save = NULL;

		cols = palloc(sizeof(AttrNumber) * (strlen(list) / 2 + 1));
		for (char *name = strtok_r(list, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save))
		{
			AttrNumber	att;

			while (*name == ' ')
				name++;
			for (char *end = name + strlen(name); end > name && end[-1] == ' '; end--)
				end[-1] = '\0';
			att = attnameAttNum(rel, name, false);
			if (att == InvalidAttrNumber || att < 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("callback.trigger() key column \"%s\" does not exist in table \"%s\"",
								name, RelationGetRelationName(rel)),
						 errhint("Name the columns as the table spells them, comma-separated: callback.trigger('prefix', 'key=customer_id').")));
			cols[(*n)++] = att;
		}
		if (*n == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("callback.trigger() option \"%s\" names no column", option),
					 errhint("Give one or more columns: 'key=customer_id' or 'key=region,account'.")));
		return cols;
	}
}

static char *
column_text(HeapTuple tuple, TupleDesc desc, AttrNumber att, bool *isnull)
{
	Datum		d = heap_getattr(tuple, att, desc, isnull);
	Oid			typout;
	bool		varlena;

	if (*isnull)
		return NULL;
	getTypeOutputInfo(TupleDescAttr(desc, att - 1)->atttypid, &typout, &varlena);
	return OidOutputFunctionCall(typout, d);
}

char *
pgcb_trigger_key(void *arg)
{
	PgcbKeySource *src = (PgcbKeySource *) arg;
	TupleDesc	desc = RelationGetDescr(src->rel);
	int			n;
	AttrNumber *cols = key_columns(src->rel, src->option, &n);
	StringInfoData buf;
	bool		isnull;

	if (n == 0 || src->tuple == NULL)
		return NULL;
	if (n == 1)
	{
		char	   *text = column_text(src->tuple, desc, cols[0], &isnull);

		if (text == NULL)
			return NULL;
		initStringInfo(&buf);
		appendStringInfoString(&buf, text);
	}
	else
	{
		initStringInfo(&buf);
		appendStringInfoChar(&buf, '[');
		for (int i = 0; i < n; i++)
		{
			char	   *text = column_text(src->tuple, desc, cols[i], &isnull);

			if (i > 0)
				appendStringInfoChar(&buf, ',');
			if (text == NULL)
				appendStringInfoString(&buf, "null");
			else
				escape_json(&buf, text);
		}
		appendStringInfoChar(&buf, ']');
	}
	if (buf.len > PGCB_ORDERING_KEY_MAX)
		buf.data[pg_mbcliplen(buf.data, buf.len, PGCB_ORDERING_KEY_MAX)] = '\0';
	return buf.data;
}
