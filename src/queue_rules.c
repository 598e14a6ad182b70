/*
 * queue_rules.c
 *		The worker refuses to deliver while a table it writes has rules
 *		(CREATE RULE ... ON UPDATE TO callback.callback_queue DO ALSO ...).
 *
 * Why refuse rather than run: the worker writes those tables two ways.
 * Its C paths (the claim, the write-back, the inbox's move) go through
 * the table AM, where rules never apply; its SQL statements go through the
 * rewriter, where a DO ALSO or DO INSTEAD rule changes what they do, and
 * where a data-modifying WITH (the ordered claim, the stats rollup) fails
 * outright: "DO ALSO rules are not supported for data-modifying statements
 * in WITH".  That error ended the worker at each cycle, for every endpoint
 * of the database, and said nothing of the rule.  Triggers work on these
 * tables and are run by both ways (queue_rows.c); rules cannot be made to.
 *
 * What the worker does instead (worker.c): says once which tables have
 * rules and what to do, shows it in callback_worker_stats, and waits;
 * events keep arriving in the queue and go out once the rules are dropped.
 * process_callbacks() refuses with the same words, as an error.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "rewrite/prs2lock.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "pg_callback.h"
#include "queue_rules.h"

/* What the worker writes, by SQL or by the table AM. */
static const char *const written_tables[] = {
	"callback_queue", "callback_attempts", "callback_stats", "callback_endpoints",
	"callback_inbox",
};

/*
 * By the relcache's rules, not pg_class.relhasrules, which stays true once
 * a table had a rule.
 */
static bool
has_rules(Oid relid)
{
	Relation	rel;
	bool		rules;

	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return false;			/* DDL under way: the next look sees it */
	rel = RelationIdGetRelation(relid);
	rules = RelationIsValid(rel) && rel->rd_rules != NULL && rel->rd_rules->numLocks > 0;
	if (RelationIsValid(rel))
		RelationClose(rel);
	UnlockRelationOid(relid, AccessShareLock);
	return rules;
}

char *
pgcb_queue_tables_with_rules(void)
{
	Oid			nsp = get_namespace_oid(PGCB_SCHEMA_NAME, true);
	StringInfoData names;

	if (!OidIsValid(nsp))
		return NULL;
	initStringInfo(&names);
	for (int i = 0; i < lengthof(written_tables); i++)
	{
		Oid			relid = get_relname_relid(written_tables[i], nsp);

		if (OidIsValid(relid) && has_rules(relid))
			appendStringInfo(&names, "%s%s.%s", names.len > 0 ? ", " : "",
							 PGCB_SCHEMA_NAME, written_tables[i]);
	}
	if (names.len == 0)
	{
		pfree(names.data);
		return NULL;
	}
	return names.data;
}

void
pgcb_queue_rules_message(char *buf, Size len, const char *tables)
{
	snprintf(buf, len, "pg_callback does not deliver while %s %s rules",
			 tables, strchr(tables, ',') ? "have" : "has");
}

void
pgcb_queue_rules_report(int elevel, const char *tables)
{
	char		msg[256];

	pgcb_queue_rules_message(msg, sizeof(msg), tables);
	ereport(elevel,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s; deliveries wait", msg),
			 errdetail("Rules rewrite the engine's statements; its own writes through the table do not run them."),
			 errhint("Drop the rules (SELECT tablename, rulename FROM pg_catalog.pg_rules WHERE schemaname = '%s'); use a trigger instead.",
					 PGCB_SCHEMA_NAME)));
}
