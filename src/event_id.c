/*
 * event_id.c
 *		Event ids.  Every event gets a version 4 UUID, the webhook-id its
 *		deliveries carry and the key a receiver deduplicates on.
 *
 * Alone, an event's id is random, as gen_random_uuid() makes it.  Along a
 * run (the events one statement trigger call writes into the inbox, where
 * they are packed: trigger_stmt.c; event.c asks for each event) only the
 * first id is random and each next one is the one before with its last 48
 * bits stepped by 1: a pack of them in callback_inbox then stores its
 * first id only (inbox_pack.c).  Sixteen random bytes per event were a
 * third of a packed event's stored bytes, since they do not compress.
 * Ids stay unique: along a run they differ in their last 48 bits, and two
 * runs' ids meet only if their random first ids agree in the other 74
 * random bits.  They are not secrets (nothing trusts an event id for more
 * than naming the event), but consecutive ids tell a receiver that events
 * came from one statement: hence runs only where they save bytes, and
 * never for an event that another event's making ran into (it is made
 * with no run).
 */
#include "postgres.h"

#include "event_id.h"

/*
 * Random bytes are drawn UUID_POOL ids at a time: one pg_strong_random()
 * call per UUID_POOL ids instead of one per id.  The pool is per process
 * and filled in it (never in the postmaster), so no two backends share
 * bytes.
 */
#define UUID_POOL 64

/* The last 48 bits: bytes 10..15 (the version is in byte 6, the variant in 8). */
#define STEP_FROM 10

static void
random_id(pg_uuid_t *id)
{
	static unsigned char pool[UUID_POOL * UUID_LEN];
	static int	left = 0;
	unsigned char *u;

	if (left == 0)
	{
		if (!pg_strong_random(pool, sizeof(pool)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		left = UUID_POOL;
	}
	left--;
	u = pool + left * UUID_LEN;
	memcpy(id->data, u, UUID_LEN);
	explicit_bzero(u, UUID_LEN);
	id->data[6] = (id->data[6] & 0x0f) | 0x40;	/* version 4 */
	id->data[8] = (id->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
}

void
pgcb_event_id_step(const pg_uuid_t *id, uint64 k, pg_uuid_t *out)
{
	uint64		low = 0;

	for (int i = STEP_FROM; i < UUID_LEN; i++)
		low = (low << 8) | id->data[i];
	low = (low + k) & ((UINT64CONST(1) << 48) - 1);
	if (out != id)
		memcpy(out->data, id->data, STEP_FROM);
	for (int i = UUID_LEN - 1; i >= STEP_FROM; i--)
	{
		out->data[i] = (unsigned char) (low & 0xff);
		low >>= 8;
	}
}

void
pgcb_event_id_new(pg_uuid_t *id, PgcbIdRun *run)
{
	if (run == NULL)
		random_id(id);
	else
	{
		if (run->started)
			pgcb_event_id_step(&run->last, 1, &run->last);
		else
		{
			random_id(&run->last);
			run->started = true;
		}
		*id = run->last;
	}
}
