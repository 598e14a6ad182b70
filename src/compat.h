/*
 * compat.h
 *		Every PostgreSQL-version and fork (openGauss) difference lives here,
 *		so that a port touches this file only.
 */
#ifndef PGCB_COMPAT_H
#define PGCB_COMPAT_H

#include "postgres.h"

#include "utils/wait_event.h"

#if PG_VERSION_NUM < 150000
#error "pg_callback needs PostgreSQL 15 or later"
#endif

/* PostgreSQL 15 added shmem_request_hook; before it, requests went in _PG_init. */
#define PGCB_HAVE_SHMEM_REQUEST_HOOK 1

/* Reserving a GUC prefix: MarkGUCPrefixReserved since 15. */
#define pgcb_reserve_guc_prefix(prefix) MarkGUCPrefixReserved(prefix)

/* May role run function fn?  (object_aclcheck since 16.) */
#define pgcb_proc_aclcheck(fn, role) pg_proc_aclcheck((fn), (role), ACL_EXECUTE)

/*
 * Whether the server was built with lz4, which toast_compress_datum() can
 * then use (the inbox's packs; pglz would cost more than it saves there).
 */
#ifdef USE_LZ4
#define PGCB_HAVE_LZ4 1
#else
#define PGCB_HAVE_LZ4 0
#endif

/* Wait-event type used for every wait of ours. */
#define PGCB_WAIT_EVENT PG_WAIT_EXTENSION

#endif							/* PGCB_COMPAT_H */
