# pg_callback: PGXS build.  `make && make install`, then see README.md.

EXTENSION = pg_callback
# The version lives in the control file only; everything else reads it here.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" $(srcdir)/pg_callback.control)
MODULE_big = pg_callback
OBJS = \
	src/pg_callback.o \
	src/guc.o \
	src/inbox.o \
	src/inbox_pack.o \
	src/inbox_vacuum.o \
	src/shmem.o \
	src/epshare.o \
	src/event.o \
	src/event_id.o \
	src/trigger.o \
	src/trigger_body.o \
	src/trigger_stmt.o \
	src/trigger_key.o \
	src/backfill.o \
	src/route_cache.o \
	src/queue_insert.o \
	src/queue_bulk.o \
	src/queue_claim.o \
	src/batch_claim.o \
	src/row_json.o \
	src/launcher.o \
	src/discovery.o \
	src/worker.o \
	src/dbguard.o \
	src/delivery.o \
	src/queue.o \
	src/queue_rows.o \
	src/queue_rules.o \
	src/queue_stats.o \
	src/queue_write_back.o \
	src/attempt_history.o \
	src/batch.o \
	src/http.o \
	src/http1.o \
	src/http1_response.o \
	src/amqp_transport.o \
	src/retry.o \
	src/sign.o \
	src/netpolicy.o \
	src/notify_target.o \
	src/tracecontext.o \
	src/ratelimit.o \
	src/metrics.o \
	src/drain.o \
	src/session.o \
	src/hooks.o \
	src/hook_escalation.o \
	src/version.o

# 1.0 is frozen as shipped.  The upgrade to 1.1 is put together from one part
# per change (sql/upgrade-1.1/NN-*.sql); a fresh install of 1.1 runs 1.0 and
# then the upgrade, so both paths are the same statements.
DATA = sql/pg_callback--1.0.sql
DATA_built = sql/pg_callback--1.0--1.1.sql
UPGRADE_1_1 = $(sort $(wildcard $(srcdir)/sql/upgrade-1.1/*.sql))
PGFILEDESC = "pg_callback - transactional webhooks"

# pg_regress tests (sql/ -> expected/) and isolation specs (specs/ -> expected/).
REGRESS = setup endpoints events signing netpolicy security search_path fuzz privileges trigger_owner schema_owner default_acl bounds trigger_bodies backfill tracecontext bulk_insert inbox inbox_roles producer_cache producer_cache_rebuild trigger_unrouted column_defaults nested_events engine_checks drain_count
REGRESS_OPTS = --load-extension=pg_callback
ISOLATION = rollback concurrent_claim claim_snapshot batch_claim_snapshot drop_endpoint_race route_cache inbox_move stats_key
ISOLATION_OPTS = --load-extension=pg_callback

# -Wextra, less the warnings PostgreSQL's own headers raise.
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
PG_CPPFLAGS += -I$(srcdir)/src -DPGCB_VERSION='"$(EXTVERSION)"'
SHLIB_LINK += -lcurl -lcrypto -lrabbitmq

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Without --enable-depend PGXS tracks no headers: rebuild every object when a
# header or the control file's version changes.
$(OBJS): $(wildcard $(srcdir)/src/*.h) $(srcdir)/pg_callback.control

# The folder too: removing a part must rebuild the script.
sql/pg_callback--1.0--1.1.sql: $(UPGRADE_1_1) $(srcdir)/sql/upgrade-1.1
	cat $(UPGRADE_1_1) > $@

# `make dist`: pg_callback-<version>.zip (what PGXN takes) and .tar.gz of the
# committed tree (git archive of HEAD), after checking that META.json gives
# the control file's version.
# DISTDIR says where they go (default: here).
DISTNAME = $(EXTENSION)-$(EXTVERSION)
DISTDIR ?= .
.PHONY: dist
dist:
	python3 $(srcdir)/test/check_meta.py $(srcdir)
	git -C $(srcdir) archive --format=zip --prefix=$(DISTNAME)/ -o $(abspath $(DISTDIR)/$(DISTNAME).zip) HEAD
	git -C $(srcdir) archive --format=tar.gz --prefix=$(DISTNAME)/ -o $(abspath $(DISTDIR)/$(DISTNAME).tar.gz) HEAD
