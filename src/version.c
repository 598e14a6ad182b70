/*
 * version.c
 *		Is the pg_callback schema in this database one that this library
 *		works with?  The worker asks once per cycle (one catalog index
 *		lookup) and waits while the answer is no; SQL-callable entry points
 *		that run the delivery engine raise an error saying what to do.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "pg_callback.h"
#include "version.h"

/*
 * "major.minor" as one comparable number, or -1 if it is not of that form
 * (a hand-made version string matches nothing).
 */
static long
version_number(const char *v)
{
	int			major,
				minor;
	char		extra;

	if (sscanf(v, "%d.%d%c", &major, &minor, &extra) != 2 || major < 0 || minor < 0)
		return -1;
	return (long) major * 100000 + minor;
}

/* The extension's extversion into installed (truncated to len). */
static void
installed_version(Oid extoid, char *installed, int len)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	installed[0] = '\0';
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			text_to_cstring_buffer(DatumGetTextPP(d), installed, len);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

PgcbSchemaFit
pgcb_version_schema_fit(Oid extoid, char *installed, int len)
{
	long		have;

	installed_version(extoid, installed, len);
	have = version_number(installed);
	if (have < 0)
		return PGCB_SCHEMA_TOO_OLD;
	if (have > version_number(PGCB_VERSION))
		return PGCB_SCHEMA_TOO_NEW;
	if (have < version_number(PGCB_SCHEMA_MIN_VERSION))
		return PGCB_SCHEMA_TOO_OLD;
	return PGCB_SCHEMA_OK;
}

/* ERROR unless this library works with the schema of extension extoid. */
void
pgcb_version_check_schema(Oid extoid)
{
	char		installed[NAMEDATALEN];

	switch (pgcb_version_schema_fit(extoid, installed, sizeof(installed)))
	{
		case PGCB_SCHEMA_OK:
			return;
		case PGCB_SCHEMA_TOO_OLD:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_callback %s cannot use the extension at version %s in this database",
							PGCB_VERSION, installed),
					 errhint("Run ALTER EXTENSION pg_callback UPDATE.")));
			break;
		case PGCB_SCHEMA_TOO_NEW:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_callback %s cannot use the extension at version %s in this database",
							PGCB_VERSION, installed),
					 errhint("Install pg_callback %s or later and restart the server.", installed)));
			break;
	}
}
