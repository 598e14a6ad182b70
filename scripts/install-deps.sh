#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12 (as root),
# and the npm dependencies of the independent signature verifier
# (test/swh_verify, from its package-lock.json).
# Does nothing when everything is already there.
set -euo pipefail

packages=(
    make gcc
    postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-15-cron
    libcurl4-openssl-dev libssl-dev openssl
    python3 python3-pytest python3-psycopg2
    libipc-run-perl prometheus prometheus-postgres-exporter
    ansible ansible-lint
    librabbitmq-dev rabbitmq-server python3-pika
)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The verifier's node_modules, inside the repository; again only when the
# lock file changed since the last install.
swh="$(cd "$(dirname "$0")/.." && pwd)/test/swh_verify"
if [ ! -f "$swh/node_modules/.package-lock.json" ] ||
   [ "$swh/package-lock.json" -nt "$swh/node_modules/.package-lock.json" ]; then
    echo "installing test/swh_verify's npm dependencies"
    ( cd "$swh" && npm ci --silent --no-audit --no-fund >/dev/null )
fi
