#!/usr/bin/env bash
# The whole test suite against an assert-enabled PostgreSQL 15: a check for
# developers, not a part of CI (the build takes about 10 minutes on 2 cores,
# the suite about three times as long as on Debian's server).
#
#   bash scripts/test-cassert.sh [pytest args, e.g. -k inbox]
#
# PostgreSQL built with --enable-cassert checks its own invariants wherever
# our C calls into it (buffer pins and locks, memory contexts, snapshots,
# the executor state queue_rows.c builds by hand) and fails hard where a
# release build would go on.  The source is Debian's (the newest
# postgresql-15 in bookworm's main archive: the only source this machine
# kind can reach), fetched through an apt configuration of its own, so the
# system's apt sources stay as they are.  Everything is kept in .cassert/
# in the repository (ignored by git): a second run reuses the build.
#
# pg_cron is Debian's postgresql-15-cron library, copied in: a release
# build of an extension loads into an assert-enabled server of the same
# major version (the magic block does not include assertions).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cassert"
prefix="$cache/pg"
mkdir -p "$cache"

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-cassert.sh: run as root (it installs packages; the clusters run as postgres)" >&2
    exit 1
fi

if [ ! -x "$prefix/bin/pg_config" ]; then
    echo "== build dependencies"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq build-essential bzip2 dpkg-dev libreadline-dev zlib1g-dev \
        libssl-dev liblz4-dev postgresql-15-cron >/dev/null

    echo "== PostgreSQL 15 source, from Debian"
    apt_dir="$cache/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
        > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/none"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "APT::Sandbox::User=root")
    apt-get "${apt_opts[@]}" update -qq
    src="$cache/src"
    rm -rf "$src"
    mkdir -p "$src"
    (cd "$src" && apt-get "${apt_opts[@]}" source --download-only -qq postgresql-15)
    tarball=$(ls "$src"/postgresql-15_*.orig.tar.bz2)
    tar -xjf "$tarball" -C "$src"
    tree=$(ls -d "$src"/postgresql-15.*/)

    echo "== configure and build $(basename "$tree") with --enable-cassert into $prefix"
    (cd "$tree" &&
        ./configure -q --prefix="$prefix" --enable-cassert --enable-debug --with-openssl \
            --with-lz4 --without-icu CFLAGS="-O1 -g" &&
        make -s -j"$(nproc)" >/dev/null &&
        make -s install >/dev/null &&
        make -s -C src/test/isolation install >/dev/null &&
        # contrib: the tests use amcheck and dblink, the Ansible role auto_explain
        make -s -C contrib install >/dev/null)
    rm -rf "$src"
fi

# pg_cron, built for Debian's server (see above)
pkglib=$("$prefix/bin/pg_config" --pkglibdir)
share=$("$prefix/bin/pg_config" --sharedir)
cp /usr/lib/postgresql/15/lib/pg_cron.so "$pkglib/"
cp /usr/share/postgresql/15/extension/pg_cron* "$share/extension/"

"$prefix/bin/pg_config" --configure | grep -q -- "--enable-cassert" ||
    { echo "error: $prefix is not an assert-enabled build; remove $cache and run again" >&2; exit 1; }

echo "== the suite against $("$prefix/bin/postgres" --version), assertions on"
PG_CONFIG="$prefix/bin/pg_config" exec bash "$root/scripts/test.sh" "$@"
