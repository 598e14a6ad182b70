/*
 * hook_escalation.c
 *		The delivery worker's last resort against a hook that catches its
 *		own cancel.
 *
 * hooks.c cancels a hook after callback.hook_timeout, and again every
 * 100 ms; a PL/pgSQL hook may catch query_canceled each time and go on,
 * and would hold the worker (every endpoint of its database) for ever.  So
 * when the hook still runs one more hook_timeout after its first cancel,
 * the worker ends itself through the die path: a FATAL, which no exception
 * block can catch, and exit code 1, which restarts this worker only, never
 * the cluster.  On its way out (before_shmem_exit) it leaves word in shared
 * memory: its database and the hook's function.  That hook is then set
 * aside in the database for HOOKESC_SET_ASIDE_MS: every call of it, by
 * whichever worker, is not made but fails at once with what happened (the
 * delivery that ended the worker included).  Without that, a hook that
 * always loops would end the worker at every attempt of every event, each
 * time holding the database's other endpoints for 2 x hook_timeout and
 * sending their requests in flight again.  A transform's failure is a
 * failed attempt (retried, then dead, per the endpoint's policy), an
 * on_response's is the attempt's hook_error.  What the ended worker had
 * claimed comes back as after any worker exit: its claim transaction rolls
 * back, and the next worker releases its committed claims.
 *
 * Only the worker escalates: a session's process_callbacks() is ended by
 * whoever waits on it, and whatever it claimed comes back to the worker.
 *
 * Locking: a spinlock guards the table of words.  It is taken by a worker
 * leaving word, and before a hook call only while some word is kept (an
 * atomic count says so without the lock); a word past its time is freed
 * by the next look.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "hook_escalation.h"
#include "shmem.h"

/* Words kept at once; when all are live, a new one replaces the next in turn. */
#define ESC_MAX_WORDS 32
/* how long a hook that ended the worker is not called (README: Hooks) */
#define HOOKESC_SET_ASIDE_MS (10 * 60 * 1000)
#define ESC_KIND_LEN 16
/*
 * The name as stored, for the log only (a word matches by the function's
 * OID): _check_hook (part 93) accepts up to 200 characters, quotes and
 * spaces included, so up to 800 bytes.
 */
#define ESC_FN_LEN (4 * 200 + 1)

typedef struct EscWord
{
	Oid			dboid;			/* InvalidOid: free */
	uint32		gen;			/* pgcb_shmem_database_gen(): ids restart with the extension */
	Oid			fnoid;			/* the hook's function: what is set aside */
	TimestampTz until;			/* set aside until then */
	char		kind[ESC_KIND_LEN];
} EscWord;

typedef struct EscShared
{
	slock_t		mutex;
	pg_atomic_uint32 n_words;
	uint32		next;			/* where a word goes when none is free */
	EscWord		words[ESC_MAX_WORDS];
} EscShared;

static EscShared *esc = NULL;

/* This process's hook in progress; the timer's handler reads it. */
static bool enabled = false;
static bool armed = false;
static TimestampTz die_at = 0;
static volatile sig_atomic_t escalated = false;
static EscWord running;
/* for the log line only */
static char running_fn[ESC_FN_LEN];
static int64 running_delivery_id;


Size
pgcb_hookesc_shmem_size(void)
{
	return MAXALIGN(sizeof(EscShared));
}

/* With AddinShmemInitLock held (shmem.c). */
void
pgcb_hookesc_shmem_startup(void)
{
	bool		found;

	esc = ShmemInitStruct("pg_callback hook escalation", sizeof(EscShared), &found);
	if (!found)
	{
		memset(esc, 0, sizeof(EscShared));
		SpinLockInit(&esc->mutex);
		pg_atomic_init_u32(&esc->n_words, 0);
	}
}

/*
 * The function, not its name: another spelling of the name is the same
 * hook, and a function created later under a dropped one's name is not.
 */
static bool
same_hook(const EscWord *w, Oid dboid, uint32 gen, const char *kind, Oid fnoid)
{
	return w->dboid == dboid && w->gen == gen && w->fnoid == fnoid &&
		strcmp(w->kind, kind) == 0;
}

/* before_shmem_exit: the word, if the exit is ours. */
static void
leave_word(int code, Datum arg)
{
	EscWord    *w = NULL;
	TimestampTz now;

	if (!escalated)
		return;
	/* no LWLock is held: a FATAL from ProcessInterrupts never holds one */
	running.gen = pgcb_shmem_database_gen(MyDatabaseId);
	now = GetCurrentTimestamp();
	running.until = TimestampTzPlusMilliseconds(now, HOOKESC_SET_ASIDE_MS);
	SpinLockAcquire(&esc->mutex);
	/*
	 * The same hook's earlier word, else one past its time (still counted:
	 * only a look frees it), else a free one, else the next in turn.
	 */
	for (int i = 0; i < ESC_MAX_WORDS && w == NULL; i++)
		if (same_hook(&esc->words[i], running.dboid, running.gen, running.kind, running.fnoid))
			w = &esc->words[i];
	for (int i = 0; i < ESC_MAX_WORDS && w == NULL; i++)
		if (OidIsValid(esc->words[i].dboid) && esc->words[i].until <= now)
			w = &esc->words[i];
	for (int i = 0; i < ESC_MAX_WORDS && w == NULL; i++)
		if (!OidIsValid(esc->words[i].dboid))
		{
			w = &esc->words[i];
			pg_atomic_fetch_add_u32(&esc->n_words, 1);
		}
	if (w == NULL)
		w = &esc->words[esc->next++ % ESC_MAX_WORDS];
	*w = running;
	SpinLockRelease(&esc->mutex);
	ereport(LOG,
			(errmsg("pg_callback: the worker ended itself: %s %s did not stop within callback.hook_timeout after its cancel (delivery %lld)",
					running.kind, running_fn, (long long) running_delivery_id),
			 errhint("The worker is restarted; the %s is not called for %d minutes: each call fails at once instead.",
					 running.kind, HOOKESC_SET_ASIDE_MS / 60000)));
}

void
pgcb_hookesc_enable(void)
{
	if (enabled)
		return;
	before_shmem_exit(leave_word, (Datum) 0);
	enabled = true;
}

void
pgcb_hookesc_arm(const char *kind, const char *fn, Oid fnoid, int64 delivery_id, TimestampTz at)
{
	if (!enabled)
		return;
	memset(&running, 0, sizeof(running));
	running.dboid = MyDatabaseId;
	strlcpy(running.kind, kind, ESC_KIND_LEN);
	running.fnoid = fnoid;
	running_delivery_id = delivery_id;
	strlcpy(running_fn, fn, ESC_FN_LEN);
	die_at = at;
	armed = true;
}

void
pgcb_hookesc_disarm(void)
{
	armed = false;
}

/*
 * A signal handler: only flags.  ProcessInterrupts handles ProcDiePending
 * before a cancel, and as FATAL.
 */
void
pgcb_hookesc_tick(void)
{
	if (!armed || GetCurrentTimestamp() < die_at)
		return;
	escalated = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Whether the hook is set aside in this database (a worker ended itself in
 * a call of it less than HOOKESC_SET_ASIDE_MS ago), and until when.
 */
bool
pgcb_hookesc_set_aside(const char *kind, Oid fnoid, TimestampTz *until)
{
	bool		found = false;
	uint32		gen;
	TimestampTz now;

	if (esc == NULL || pg_atomic_read_u32(&esc->n_words) == 0)
		return false;
	gen = pgcb_shmem_database_gen(MyDatabaseId);
	now = GetCurrentTimestamp();
	SpinLockAcquire(&esc->mutex);
	for (int i = 0; i < ESC_MAX_WORDS; i++)
	{
		EscWord    *w = &esc->words[i];

		if (!OidIsValid(w->dboid))
			continue;
		if (w->until <= now)
		{
			w->dboid = InvalidOid;
			pg_atomic_fetch_sub_u32(&esc->n_words, 1);
			continue;
		}
		if (!found && same_hook(w, MyDatabaseId, gen, kind, fnoid))
		{
			*until = w->until;
			found = true;
		}
	}
	SpinLockRelease(&esc->mutex);
	return found;
}
