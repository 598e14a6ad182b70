/*
 * 98-queue-storage: what a queue row costs on its way in and through its
 * transitions.
 *
 * callback_queue_finished was a BRIN index on finished_at.  BRIN takes an
 * entry for every new row version, so the trigger's insert, the claim and
 * the write-back each paid for one (8.7k of the 60k instructions the
 * trigger added to an insert, by callgrind), although only purge() reads
 * it, and only for finished rows.  A partial btree over the finished rows
 * takes one entry per delivery, when it finishes, and none on the way in.
 * Its predicate names finished_at, not status: see below.
 */
DROP INDEX callback.callback_queue_finished;
CREATE INDEX callback_queue_finished ON callback.callback_queue (finished_at)
    WHERE finished_at IS NOT NULL;

/*
 * A claim that writes no index entry (issue 10).  The claim changes a row's
 * status, claimed_by and lease_expires_at; its new version is a heap-only
 * tuple (HOT: no index entry, the old version pruned on the page) only if
 * no index names one of those columns, in its keys or its predicate, and
 * the page has room.  1.0's partial indexes named status, so each claim
 * paid an entry in the primary key (with its uniqueness check) and in
 * callback_queue_leased (bench part 9: the claim fell from 45.2k to 23.9k
 * instructions per delivery, bench/results/instructions-hot-claim.md).
 *
 * So the indexes tell open rows from finished ones by finished_at, which
 * the write-back sets when a delivery ends (and redrive clears), and the
 * statements that read them check the status too:
 *	- callback_queue_due: (endpoint_id, next_attempt_at) of the open rows,
 *	  pending and in flight; the claim skips the ones in flight;
 *	- callback_queue_leased is gone: the lease sweep reads the open rows
 *	  through callback_queue_due, so it runs every quarter of
 *	  callback.lease rather than at every sweep (src/worker.c);
 *	- callback_queue_dead is gone: callback_dead_letters and redrive by
 *	  endpoint or time read the queue through (a scan of what purge()
 *	  keeps, delivered rows included), an operator's query instead of a
 *	  cost every delivery pays;
 *	- callback_queue_ordering and callback_queue_batch (parts 97, 94):
 *	  open rows.
 * A batch claim writes batch_id (a key of callback_queue_batch), so its
 * version is not heap-only; it also sets next_attempt_at to the lease's
 * end, which moves a batch endpoint's rows in flight (batch_size per
 * request) past its due rows in callback_queue_due (src/queue_claim.c).
 * The write-back of a finished delivery still makes a new version with
 * index entries (finished_at is in the predicates), as does a retry
 * (next_attempt_at is a key): one per delivery instead of two.
 *
 * fillfactor 50: a claim's version needs room on its row's page; the
 * inserts leave half of each page for it (at 100 the prototype's claim
 * cost 59.5k: no room, and a new version on another page).
 */

/*
 * The indexes trust finished_at: a row is undelivered exactly when it has
 * none.  The engine keeps that (the write-back sets finished_at with a
 * final outcome, redrive clears it); a hand-made UPDATE that broke it
 * would leave a pending row that no claim finds, or a finished one that
 * every scan for due rows passes, so it is a constraint.  Rows an operator
 * left so before this upgrade: their status decides.
 */
UPDATE callback.callback_queue
   SET finished_at = CASE WHEN status IN ('pending', 'sending') THEN NULL
                          ELSE coalesce(last_attempt_at, created_at) END
 WHERE (status IN ('pending', 'sending')) <> (finished_at IS NULL);
ALTER TABLE callback.callback_queue ADD CONSTRAINT callback_queue_finished_at_status
    CHECK ((status IN ('pending', 'sending')) = (finished_at IS NULL));

DROP INDEX callback.callback_queue_due;
DROP INDEX callback.callback_queue_leased;
DROP INDEX callback.callback_queue_dead;
CREATE INDEX callback_queue_due ON callback.callback_queue (endpoint_id, next_attempt_at)
    WHERE finished_at IS NULL;
ALTER TABLE callback.callback_queue SET (fillfactor = 50);

