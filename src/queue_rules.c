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
 *
 * Only rules that fire count: a rule disabled, or one that fires only in
 * another session_replication_role than ours, rewrites nothing (the
 * rewriter skips it the same way).  The worker looks after its start, at
 * each sweep, and when a relcache invalidation of one of these tables has
 * come in since (CREATE RULE sends one), read at its transaction's start:
 * a rule created between two looks is seen before the next cycle's
 * statements, rather than by their failure.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "lib/stringinfo.h"
#include "rewrite/prs2lock.h"
#include "rewrite/rewriteDefine.h"
#include "utils/inval.h"
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
#define N_WRITTEN lengthof(written_tables)

/* Per backend: their OIDs at the last look, and whether one changed since. */
static Oid	watched[N_WRITTEN];
static bool changed = true;
static bool watching = false;

static void
rules_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid))
	{
		changed = true;
		return;
	}
	for (int i = 0; i < N_WRITTEN; i++)
		if (watched[i] == relid)
			changed = true;
}

bool
pgcb_queue_rules_changed(void)
{
	return changed;
}

/* As the rewriter decides whether a rule fires (rewriteHandler.c, matchLocks). */
static bool
rule_fires(const RewriteRule *rule)
{
	if (rule->enabled == RULE_DISABLED)
		return false;
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		return rule->enabled != RULE_FIRES_ON_ORIGIN;
	return rule->enabled != RULE_FIRES_ON_REPLICA;
}

/*
 * By the relcache's rules, not pg_class.relhasrules, which stays true once
 * a table had a rule.  A table we cannot lock at once (DDL, a TRUNCATE by
 * vacuum) is not known: the caller keeps its last answer.
 */
static PgcbRulesLook
look_at(Oid relid)
{
	Relation	rel;
	PgcbRulesLook look = PGCB_RULES_NONE;

	if (!ConditionalLockRelationOid(relid, AccessShareLock))
		return PGCB_RULES_UNKNOWN;
	rel = RelationIdGetRelation(relid);
	if (RelationIsValid(rel))
	{
		RuleLock   *rules = rel->rd_rules;

		for (int i = 0; rules != NULL && i < rules->numLocks; i++)
			if (rule_fires(rules->rules[i]))
				look = PGCB_RULES_FOUND;
		RelationClose(rel);
	}
	UnlockRelationOid(relid, AccessShareLock);
	return look;
}

PgcbRulesLook
pgcb_queue_rules_look(char **tables)
{
	Oid			nsp = get_namespace_oid(PGCB_SCHEMA_NAME, true);
	StringInfoData names;
	bool		unknown = false;

	*tables = NULL;
	if (!watching)
	{
		CacheRegisterRelcacheCallback(rules_relcache_callback, (Datum) 0);
		watching = true;
	}
	changed = false;
	initStringInfo(&names);
	for (int i = 0; i < N_WRITTEN; i++)
	{
		watched[i] = OidIsValid(nsp) ? get_relname_relid(written_tables[i], nsp) : InvalidOid;
		if (!OidIsValid(watched[i]))
			continue;
		switch (look_at(watched[i]))
		{
			case PGCB_RULES_FOUND:
				appendStringInfo(&names, "%s%s.%s", names.len > 0 ? ", " : "",
								 PGCB_SCHEMA_NAME, written_tables[i]);
				break;
			case PGCB_RULES_UNKNOWN:
				unknown = true;
				break;
			case PGCB_RULES_NONE:
				break;
		}
	}
	if (names.len > 0)
	{
		*tables = names.data;
		return PGCB_RULES_FOUND;
	}
	pfree(names.data);
	if (unknown)
	{
		changed = true;			/* look again at the next cycle */
		return PGCB_RULES_UNKNOWN;
	}
	return PGCB_RULES_NONE;
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
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 elevel < ERROR ? errmsg("%s; deliveries wait", msg) : errmsg("%s", msg),
			 errdetail("Rules rewrite the engine's statements; its own writes through the table do not run them."),
			 errhint("Drop the rules (SELECT tablename, rulename FROM pg_catalog.pg_rules WHERE schemaname = '%s'); use a trigger instead.",
					 PGCB_SCHEMA_NAME)));
}
