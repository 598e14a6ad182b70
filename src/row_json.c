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
 * old memory freed, at the entry's next use, or dropped with the other
 * stale ones when enough have piled up (a dropped table's is never used).
 *
 * The types most tables are made of skip their output function: integers
 * and oids are written as int2out/int4out/int8out/oidout write them (the
 * same numutils.c routines), uuids as uuid_out does, and text, varchar and
 * bpchar, whose output is their bytes, are escaped straight from the datum.
 * Every string is escaped by copying runs of bytes that need no escape at
 * once, to the bytes escape_json() gives.  A float or numeric output is
 * told a JSON number by its first character, not parsed again.  A row
 * costs one look-up only when the relation differs from the last row's.
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
#include "utils/uuid.h"

#include "row_json.h"

typedef enum
{
	COL_SKIP,					/* dropped */
	COL_BOOL,
	COL_INT2,
	COL_INT4,
	COL_INT8,
	COL_OID,					/* a string, not a number, as to_json() has it */
	COL_TEXT,					/* text, varchar, bpchar: output = the bytes */
	COL_UUID,
	COL_NUMERIC,				/* float4, float8, numeric */
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
	int		   *keylen;
	FmgrInfo   *out;
	Datum	   *values;
	bool	   *nulls;
} RowJsonEntry;

static HTAB *entries = NULL;

/* the entry of the last row written: a statement's rows skip the hash */
static RowJsonEntry *last_entry = NULL;

/*
 * Entries made stale since the last sweep (at least).  A dropped table's
 * entry is never used again: without a sweep a session that writes to
 * many short-lived tables (temporary ones, dropped partitions) would keep
 * every one's memory.
 */
#define STALE_SWEEP 64
static int	n_stale = 0;

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
		if (e && e->valid)
		{
			e->valid = false;
			n_stale++;
		}
		return;
	}
	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->valid)
			n_stale++;
		e->valid = false;
	}
}

/*
 * Forget the stale entries, memory and all: one still in use is made again
 * at its next row.  Only from entry_for(), when no row of any entry is
 * being written (a row's fast path runs built-in output functions only,
 * and the fallback does not touch its entry once row_to_json() is called).
 */
static void
sweep_stale(void)
{
	HASH_SEQ_STATUS seq;
	RowJsonEntry *e;

	hash_seq_init(&seq, entries);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->valid)
			continue;
		if (e->cxt)
			MemoryContextDelete(e->cxt);
		(void) hash_search(entries, &e->relid, HASH_REMOVE, NULL);
	}
	last_entry = NULL;
	n_stale = 0;
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
			*kind = COL_INT2;
			return true;
		case INT4OID:
			*kind = COL_INT4;
			return true;
		case INT8OID:
			*kind = COL_INT8;
			return true;
		case OIDOID:
			*kind = COL_OID;
			return true;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
			*kind = COL_TEXT;
			return true;
		case UUIDOID:
			*kind = COL_UUID;
			return true;
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
	e->keylen = palloc0(sizeof(int) * Max(desc->natts, 1));
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
		e->keylen[i] = k.len;
	}
	MemoryContextSwitchTo(old);
	e->valid = true;
}

/*
 * Room for n more bytes, and where they go.  The row's bytes go in with no
 * terminating NUL each time; pgcb_row_json_append() puts it back at the
 * end.  (enlargeStringInfo() is a call even when there is room.)
 */
static inline char *
reserve(StringInfo buf, int n)
{
	if (buf->maxlen - buf->len <= n)
		enlargeStringInfo(buf, n);
	return buf->data + buf->len;
}

static inline void
put(StringInfo buf, const char *s, int len)
{
	memcpy(reserve(buf, len), s, len);
	buf->len += len;
}

static inline void
put_char(StringInfo buf, char c)
{
	*reserve(buf, 1) = c;
	buf->len++;
}

/* bytes escape_json() does not copy as they are: controls, '"', '\\' */
static const bool needs_escape[256] = {
	[0x00] = true, [0x01] = true, [0x02] = true, [0x03] = true,
	[0x04] = true, [0x05] = true, [0x06] = true, [0x07] = true,
	[0x08] = true, [0x09] = true, [0x0a] = true, [0x0b] = true,
	[0x0c] = true, [0x0d] = true, [0x0e] = true, [0x0f] = true,
	[0x10] = true, [0x11] = true, [0x12] = true, [0x13] = true,
	[0x14] = true, [0x15] = true, [0x16] = true, [0x17] = true,
	[0x18] = true, [0x19] = true, [0x1a] = true, [0x1b] = true,
	[0x1c] = true, [0x1d] = true, [0x1e] = true, [0x1f] = true,
	['"'] = true, ['\\'] = true,
};

/* its two-character escapes; the other controls become \u00xx */
static const char short_escape[256] = {
	['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r', ['\t'] = 't',
	['"'] = '"', ['\\'] = '\\',
};

/*
 * escape_json() of the string s[0..len), without the per-byte appends:
 * runs of bytes that need no escape are copied at once.  escape_json()
 * stops at a NUL; so does this (text holds none, but the bytes must be the
 * same whatever the input).
 */
static void
append_escaped(StringInfo buf, const char *s, int len)
{
	const char *end = s + len;

	put_char(buf, '"');
	while (s < end)
	{
		const char *run = s;
		unsigned char c;
		char		esc[6] = {'\\', 'u', '0', '0'};

		while (s < end && !needs_escape[(unsigned char) *s])
			s++;
		if (s > run)
			put(buf, run, s - run);
		if (s == end || *s == '\0')
			break;
		c = (unsigned char) *s++;
		if (short_escape[c])
		{
			esc[1] = short_escape[c];
			put(buf, esc, 2);
		}
		else
		{
			/* "\\u%04x", as escape_json() writes the other controls */
			esc[4] = "0123456789abcdef"[c >> 4];
			esc[5] = "0123456789abcdef"[c & 0xf];
			put(buf, esc, 6);
		}
	}
	put_char(buf, '"');
}

/*
 * IsValidJsonNumber() of a float4, float8 or numeric output, which
 * datum_to_json() asks, without parsing: finite values print as
 * -?digits[.digits][e[+-]digits], a JSON number, and only NaN, Infinity
 * and -Infinity, which are not, start otherwise (the regress test compares
 * them with row_to_json() under several extra_float_digits).
 */
static inline bool
is_json_number(const char *s)
{
	if (*s == '-')
		s++;
	return *s >= '0' && *s <= '9';
}

/* JsonEncodeDateTime()'s text in quotes, as datum_to_json() writes it */
static void
append_datetime(StringInfo buf, Datum val, Oid typoid)
{
	char		dt[MAXDATELEN + 1];

	JsonEncodeDateTime(dt, val, typoid, NULL);
	put_char(buf, '"');
	put(buf, dt, strlen(dt));
	put_char(buf, '"');
}

static void
append_value(StringInfo buf, RowJsonEntry *e, int i, Datum val)
{
	char	   *s;
	char	   *p;

	switch (e->kind[i])
	{
		case COL_BOOL:
			if (DatumGetBool(val))
				put(buf, "true", 4);
			else
				put(buf, "false", 5);
			break;
		case COL_INT2:
			buf->len += pg_itoa(DatumGetInt16(val), reserve(buf, MAXINT8LEN + 1));
			break;
		case COL_INT4:
			buf->len += pg_ltoa(DatumGetInt32(val), reserve(buf, MAXINT8LEN + 1));
			break;
		case COL_INT8:
			buf->len += pg_lltoa(DatumGetInt64(val), reserve(buf, MAXINT8LEN + 1));
			break;
		case COL_OID:
			/* oidout's "%u" in quotes: digits need no escape */
			p = reserve(buf, MAXINT8LEN + 3);
			*p++ = '"';
			p += pg_ultoa_n(DatumGetObjectId(val), p);
			*p++ = '"';
			buf->len = p - buf->data;
			break;
		case COL_TEXT:
			{
				/* textout, varcharout and bpcharout: the bytes as they are */
				struct varlena *v = (struct varlena *) DatumGetPointer(val);
				struct varlena *d = pg_detoast_datum_packed(v);

				append_escaped(buf, VARDATA_ANY(d), VARSIZE_ANY_EXHDR(d));
				if (d != v)
					pfree(d);
			}
			break;
		case COL_UUID:
			{
				/* uuid_out's 36 characters, in quotes */
				const unsigned char *u = DatumGetUUIDP(val)->data;
				static const char hex[] = "0123456789abcdef";

				p = reserve(buf, 38);
				*p++ = '"';
				for (int b = 0; b < UUID_LEN; b++)
				{
					if (b == 4 || b == 6 || b == 8 || b == 10)
						*p++ = '-';
					*p++ = hex[u[b] >> 4];
					*p++ = hex[u[b] & 0xf];
				}
				*p++ = '"';
				buf->len = p - buf->data;
			}
			break;
		case COL_NUMERIC:
			{
				int			len;

				s = OutputFunctionCall(&e->out[i], val);
				len = strlen(s);
				if (is_json_number(s))
					put(buf, s, len);
				else
					append_escaped(buf, s, len);
				pfree(s);
			}
			break;
		case COL_DATE:
			append_datetime(buf, val, DATEOID);
			break;
		case COL_TIMESTAMP:
			append_datetime(buf, val, TIMESTAMPOID);
			break;
		case COL_TIMESTAMPTZ:
			append_datetime(buf, val, TIMESTAMPTZOID);
			break;
		case COL_JSON:
			s = OutputFunctionCall(&e->out[i], val);
			put(buf, s, strlen(s));
			pfree(s);
			break;
		case COL_OTHER:
			s = OutputFunctionCall(&e->out[i], val);
			append_escaped(buf, s, strlen(s));
			pfree(s);
			break;
		case COL_SKIP:
			break;
	}
}

static RowJsonEntry *
entry_for(Relation rel)
{
	RowJsonEntry *e;
	Oid			relid = RelationGetRelid(rel);
	bool		found;

	if (last_entry && last_entry->relid == relid && last_entry->valid &&
		last_entry->natts == RelationGetDescr(rel)->natts)
		return last_entry;
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
	/* entries are removed by the sweep alone, which resets last_entry */
	e = hash_search(entries, &relid, HASH_FIND, NULL);
	if (e == NULL && n_stale >= STALE_SWEEP)
		sweep_stale();
	if (e == NULL)
	{
		e = hash_search(entries, &relid, HASH_ENTER, &found);
		e->cxt = NULL;
		e->valid = false;
	}
	if (!e->valid || e->natts != RelationGetDescr(rel)->natts)
		build(e, rel);
	last_entry = e;
	return e;
}

void
pgcb_row_json_append(StringInfo buf, Relation rel, HeapTuple tuple)
{
	RowJsonEntry *e;
	bool		needsep = false;

	if (tuple == NULL)
	{
		put(buf, "null", 4);
		buf->data[buf->len] = '\0';
		return;
	}
	e = entry_for(rel);

	if (e->fallback)
	{
		text	   *json;
		Datum		row = heap_copy_tuple_as_datum(tuple, RelationGetDescr(rel));

		json = DatumGetTextPP(DirectFunctionCall1(row_to_json, row));
		appendBinaryStringInfo(buf, VARDATA_ANY(json), VARSIZE_ANY_EXHDR(json));
		return;
	}

	heap_deform_tuple(tuple, RelationGetDescr(rel), e->values, e->nulls);
	put_char(buf, '{');
	for (int i = 0; i < e->natts; i++)
	{
		if (e->kind[i] == COL_SKIP)
			continue;
		if (needsep)
			put_char(buf, ',');
		needsep = true;
		put(buf, e->key[i], e->keylen[i]);
		if (e->nulls[i])
			put(buf, "null", 4);
		else
			append_value(buf, e, i, e->values[i]);
	}
	put_char(buf, '}');
	buf->data[buf->len] = '\0';
}
