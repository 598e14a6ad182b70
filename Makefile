# pg_callback: PGXS build.  `make && make install`, then see README.md.

EXTENSION = pg_callback
MODULE_big = pg_callback
OBJS = \
	src/pg_callback.o \
	src/guc.o \
	src/shmem.o \
	src/event.o \
	src/trigger.o \
	src/launcher.o \
	src/worker.o \
	src/dbguard.o \
	src/delivery.o \
	src/queue.o \
	src/http.o \
	src/retry.o \
	src/sign.o \
	src/netpolicy.o \
	src/ratelimit.o \
	src/metrics.o \
	src/drain.o

# 1.0 is frozen as shipped.  The upgrade to 1.1 is put together from one part
# per change (sql/upgrade-1.1/NN-*.sql); a fresh install of 1.1 runs 1.0 and
# then the upgrade, so both paths are the same statements.
DATA = sql/pg_callback--1.0.sql
DATA_built = sql/pg_callback--1.0--1.1.sql
UPGRADE_1_1 = $(sort $(wildcard $(srcdir)/sql/upgrade-1.1/*.sql))
PGFILEDESC = "pg_callback - transactional webhooks"

# pg_regress tests (sql/ -> expected/) and isolation specs (specs/ -> expected/).
REGRESS = setup endpoints events signing netpolicy security fuzz
REGRESS_OPTS = --load-extension=pg_callback
ISOLATION = rollback concurrent_claim
ISOLATION_OPTS = --load-extension=pg_callback

# -Wextra, less the warnings PostgreSQL's own headers raise.
PG_CFLAGS += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
PG_CPPFLAGS += -I$(srcdir)/src
SHLIB_LINK += -lcurl -lcrypto

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/pg_callback--1.0--1.1.sql: $(UPGRADE_1_1)
	cat $^ > $@
