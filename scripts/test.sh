#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   pg_regress and isolation tests (make installcheck) against a throwaway
#   cluster, then the end-to-end tests (pytest: real cluster, real HTTP
#   receiver on 127.0.0.1, real pg_cron).
# Usage: scripts/test.sh [pytest args, e.g. -k pipeline]
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"

bash "$root/scripts/install-deps.sh" || exit 1

work=$(mktemp -d /tmp/pgcb-test.XXXXXX)
chmod 755 "$work"
port=${PGCB_TEST_PORT:-55432}
cleanup() { stop_cluster "$work"; rm -rf "$work"; }
trap cleanup EXIT

echo "== build (-Wall -Wextra -Werror) and install"
build_and_install "$root" "$work/src" || exit 1

echo "== pg_regress and isolation tests"
# the settings the regression tests need (test/installcheck.conf) and pg_cron
mapfile -t regress_conf < <(grep -v '^\s*#' "$root/test/installcheck.conf" | grep .)
start_cluster "$work" "$port" "${regress_conf[@]}" \
    "shared_preload_libraries = 'pg_callback, pg_cron'" \
    "cron.database_name = 'postgres'" || { cat "$work/server.log"; exit 1; }
regress_out=$(as_postgres make -C "$work/src" installcheck PG_CONFIG="$PG_CONFIG" PGHOST="$work" PGPORT="$port" 2>&1)
regress_rc=$?
echo "$regress_out"
if [ $regress_rc -ne 0 ]; then
    for f in "$work/src/regression.diffs" "$work/src/output_iso/regression.diffs"; do
        [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
    done
fi
stop_cluster "$work"
# "All 6 tests passed." / "2 of 6 tests failed."
regress_passed=0
regress_failed=0
# a process of that cluster that crashed, though the tests passed (the
# pattern the end-to-end clusters are checked with, test/e2e/cluster.py)
if grep -E -f "$root/test/crash_line.ere" "$work/server.log"; then
    echo "error: the pg_regress cluster's server log records a crash (above)"
    regress_failed=1
fi
while read -r line; do
    if [[ $line =~ All\ ([0-9]+)\ tests\ passed ]]; then
        regress_passed=$((regress_passed + BASH_REMATCH[1]))
    elif [[ $line =~ ([0-9]+)\ of\ ([0-9]+)\ tests\ failed ]]; then
        regress_failed=$((regress_failed + BASH_REMATCH[1]))
        regress_passed=$((regress_passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
    fi
done <<< "$regress_out"
[ $regress_rc -ne 0 ] && [ $regress_failed -eq 0 ] && regress_failed=1

echo "== end-to-end tests"
export PYTHONDONTWRITEBYTECODE=1
/usr/bin/python3 -m pytest -p no:cacheprovider -q -rfE --junitxml="$work/e2e.xml" "$root/test" "$@"
e2e_rc=$?
read -r e2e_passed e2e_failed < <(/usr/bin/python3 - "$work/e2e.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
PY
)
[ $e2e_rc -ne 0 ] && [ "$e2e_failed" -eq 0 ] && e2e_failed=1
# a run in which nothing ran is not a success
if [ $regress_passed -eq 0 ] && [ $regress_failed -eq 0 ]; then
    echo "error: no pg_regress or isolation test ran"
    regress_failed=1
fi
if [ "$e2e_passed" -eq 0 ] && [ "$e2e_failed" -eq 0 ]; then
    echo "error: no end-to-end test ran (pytest exit $e2e_rc)"
    e2e_failed=1
fi

passed=$((regress_passed + e2e_passed))
failed=$((regress_failed + e2e_failed))
echo
echo "regress: $regress_passed passed, $regress_failed failed; end-to-end: $e2e_passed passed, $e2e_failed failed"
echo "tests: $passed passed, $failed failed"
[ $failed -eq 0 ]
