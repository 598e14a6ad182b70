
/*
 * 05-config-dump: pg_dump keeps the configuration and the undelivered work.
 *
 * The extension's tables are members of the extension, so pg_dump writes
 * only CREATE EXTENSION for them unless they are marked as configuration.
 * Marked here: every endpoint (with its secret), the deliveries not yet
 * delivered (pending, sending, and dead letters, which an operator may
 * redrive), and the identity sequences, so that ids given after a restore
 * continue after the restored ones.  Delivered rows, the attempt history
 * and the per-minute stats are history: not dumped (see README, "Backup
 * and restore", for dumping them with pg_dump -t).
 *
 * A 'sending' row keeps its claim from the old cluster: the restored
 * database's worker of the same number (claimed_by) returns it at its
 * start, the lease sweep any other once that lease has run out, and it is
 * sent again with the same webhook-id.
 */
SELECT pg_catalog.pg_extension_config_dump('callback.callback_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('callback.callback_endpoints_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('callback.callback_queue',
                                           $$WHERE status <> 'delivered'$$);
SELECT pg_catalog.pg_extension_config_dump('callback.callback_queue_id_seq', '');
