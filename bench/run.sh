#!/usr/bin/env bash
# pg_callback benchmark: one command.
#
#   bash bench/run.sh                 full run (3 runs / rounds of each part, about 45 min on 2 cores,
#                                     30 of them the trigger part's bracketed rounds, plus 5-10 min
#                                     of callgrind for the instructions part)
#   BENCH_QUICK=1 bash bench/run.sh   smoke run (1 run, small sizes, 1 round of 3 s trigger variants,
#                                     about 10 min);
#                                     same as --quick
#   PG_CONFIG=/path/to/pg_config bash bench/run.sh   another PostgreSQL 15 installation
#                                     (PGCB_PG_BIN overrides where its programs are)
#
# Other options are passed to bench/bench.py (see `bash bench/run.sh --help`):
#   --runs N, --profile (perf record of the worker / the cluster into bench/out/perf-*.txt),
#   --trigger-seconds S, --trigger-rounds N, --bulk-rows N, --trigger-parts P,
#   --trigger-settings off,on, --trigger-variants V (the trigger part),
#   --only drain,trigger,keepup,latency,metrics,batch,scaleout,amqp,instructions,stream,
#   --stream-rate N, --stream-seconds S (the steady stream, part 10),
#   --instr-n N, --instr-rows N (the instructions part, under callgrind),
#   --no-install (no apt-get), --no-build (use the pg_callback already installed)
#
# It installs what it needs from Debian (unless everything is already there),
# builds the extension from a copy of this repository in a temporary directory
# and installs it (make install), starts a throwaway PostgreSQL 15 cluster (as
# the postgres user) and nginx in that temporary directory on ports of their
# own, measures, writes bench/out/results.json, bench/out/results.md and
# bench/out/bench.png, prints a table, and removes the cluster, nginx and the
# temporary directory on exit.  A full (not quick) run also copies results.json,
# results.md and bench.png to bench/results/, which the README shows.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# PostgreSQL's programs: PG_CONFIG (default: pg_config on PATH) or PGCB_PG_BIN,
# as for scripts/test.sh; bench.py reads the same (exported by lib.sh).
# shellcheck source=../scripts/lib.sh
. "$REPO/scripts/lib.sh"
PG_BIN=$PGBIN

INSTALL=1
BUILD=1
QUICK=0
PARTIAL=0
ARGS=("$@")
case "${BENCH_QUICK:-0}" in
    ""|0|no|false) ;;
    *) QUICK=1; ARGS+=(--quick) ;;
esac
for a in "$@"; do
    case "$a" in
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --quick) QUICK=1 ;;
        --only|--only=*) PARTIAL=1 ;;
        -h|--help) exec /usr/bin/python3 "$HERE/bench.py" --help --tmp - --repo - ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh: run as root (it installs packages, runs make install and starts the cluster as postgres)" >&2
    exit 1
fi

# ------------------------------------------------------------------ packages
PKGS=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 build-essential
      libcurl4-openssl-dev libssl-dev librabbitmq-dev nginx-light wrk python3 python3-psycopg2
      python3-matplotlib rabbitmq-server python3-pika valgrind)
if [ "$INSTALL" = 1 ]; then
    missing=()
    for p in "${PKGS[@]}"; do
        # a full nginx serves as well as nginx-light
        if [ "$p" = nginx-light ] && command -v nginx >/dev/null; then continue; fi
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
        # the Debian nginx package starts a system nginx on port 80; we run our own
        if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
            systemctl stop nginx || true
        fi
    else
        echo "== packages: all present"
    fi
fi

id postgres >/dev/null 2>&1 || { echo "bench/run.sh: no postgres user (install postgresql-15)" >&2; exit 1; }

# ------------------------------------------------------------------ temp dir + cleanup
TMP="$(mktemp -d /tmp/pgcb-bench.XXXXXX)"
chmod 755 "$TMP"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # the bench's cluster, and the instructions part's (under callgrind)
    for data in "$TMP/pg/data" "$TMP/cg/data"; do
        if [ -f "$data/postmaster.pid" ]; then
            runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" stop -m fast -t 20 >/dev/null 2>&1 || \
                runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" stop -m immediate >/dev/null 2>&1 || true
        fi
    done
    for pidfile in "$TMP/nginx/nginx.pid" "$TMP/receiver.pid"; do
        if [ -s "$pidfile" ]; then
            pid="$(cat "$pidfile")"
            kill "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    if [ -n "${BENCH_KEEP_TMP:-}" ]; then
        echo "== kept $TMP (BENCH_KEEP_TMP set)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ build
if [ "$BUILD" = 1 ]; then
    echo "== building pg_callback in $TMP/src and installing it (make install, PG_CONFIG=$PG_CONFIG)"
    build_and_install "$REPO" "$TMP/src" >/dev/null
else
    echo "== --no-build: using the pg_callback installed in $("$PG_CONFIG" --pkglibdir)"
fi

mkdir -p "$HERE/out"
/usr/bin/python3 "$HERE/bench.py" --tmp "$TMP" --repo "$REPO" ${ARGS[@]+"${ARGS[@]}"}

# ------------------------------------------------------------------ publish
if [ "$QUICK" = 0 ] && [ "$PARTIAL" = 0 ]; then
    mkdir -p "$HERE/results"
    for f in results.json results.md bench.png; do
        [ -f "$HERE/out/$f" ] && cp "$HERE/out/$f" "$HERE/results/$f"
    done
    echo "== copied results.json, results.md and bench.png to bench/results/"
fi
