#!/usr/bin/env bash
# The whole test suite against an assert-enabled PostgreSQL 15: a check for
# developers, not a part of CI (the build takes about 10 minutes on 2 cores,
# once; the suite about as long as on Debian's server).
#
#   bash scripts/test-cassert.sh [pytest args, e.g. -k inbox]
#
# PostgreSQL built with --enable-cassert checks its own invariants wherever
# our C calls into it (buffer pins and locks, memory contexts, snapshots,
# the executor state queue_rows.c builds by hand) and fails hard where a
# release build would go on; the tests fail on any crash in a server log
# (test/crash_line.ere).  The source is Debian's: the newest postgresql-15
# in bookworm's main archive (15.18 when this was written; the rest of the
# suite runs on the installed server, 15.20 here), fetched through an apt
# configuration of its own, so the system's apt sources, lists and hooks
# stay as they are.
#
# The build is kept in .cassert/ in the repository (ignored by git) and
# reused by the next run; PGCB_CASSERT_DIR puts it elsewhere (the postgres
# user must be able to run programs there: a checkout under /root is not).
# A build is used only when it finished: it is made in a directory of its
# own and renamed into place at the end, with a stamp of how it was made.
#
# pg_cron is Debian's postgresql-15-cron library, copied in: a release
# build of an extension loads into an assert-enabled server of the same
# major version (the magic block does not include assertions).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-cassert.sh: run as root (it installs packages; the clusters run as postgres)" >&2
    exit 1
fi

cache=${PGCB_CASSERT_DIR:-$root/.cassert}
prefix="$cache/pg"
configure_flags=(--enable-cassert --enable-debug --with-openssl --with-lz4 --without-icu)
stamp="configure ${configure_flags[*]} CFLAGS=-O1 -g; contrib installed"
mkdir -p "$cache"

if [ "$(cat "$prefix/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "== build dependencies"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq build-essential bzip2 dpkg-dev pkgconf libreadline-dev zlib1g-dev \
        libssl-dev liblz4-dev postgresql-15-cron >/dev/null

    echo "== PostgreSQL 15 source, from Debian"
    apt_dir="$cache/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
        > "$apt_dir/sources.list"
    # the system's update hooks (packagekit, appstream) are not ours to run
    printf '%s\n' '#clear APT::Update::Post-Invoke-Success;' '#clear APT::Update::Post-Invoke;' \
        '#clear APT::Update::Pre-Invoke;' > "$apt_dir/apt.conf"
    apt_opts=(-c "$apt_dir/apt.conf" -o "Dir::Etc::SourceList=$apt_dir/sources.list"
              -o "Dir::Etc::SourceParts=$apt_dir/none" -o "Dir::State::Lists=$apt_dir/lists"
              -o "Dir::Cache=$apt_dir")
    apt-get "${apt_opts[@]}" update -qq
    src="$cache/src"
    building="$cache/pg.building"
    rm -rf "$src" "$building"
    trap 'rm -rf "$src" "$building"' EXIT
    mkdir -p "$src"
    (cd "$src" && apt-get "${apt_opts[@]}" source --download-only -qq postgresql-15)
    tarball=$(ls "$src"/postgresql-15_*.orig.tar.bz2)
    tar -xjf "$tarball" -C "$src"
    tree=$(ls -d "$src"/postgresql-15.*/)

    # configure's prefix is where it is used; it is built and installed into
    # $building with DESTDIR, then moved into place whole
    echo "== configure and build $(basename "$tree") with --enable-cassert for $prefix"
    (cd "$tree" &&
        ./configure -q --prefix="$prefix" "${configure_flags[@]}" CFLAGS="-O1 -g" &&
        make -s -j"$(nproc)" >/dev/null &&
        make -s install DESTDIR="$building" >/dev/null &&
        # contrib: the tests use amcheck and dblink, the Ansible role auto_explain
        make -s -j"$(nproc)" -C contrib install DESTDIR="$building" >/dev/null)
    rm -rf "$prefix"
    mv "$building$prefix" "$prefix"
    echo "$stamp" > "$prefix/.stamp"
    rm -rf "$src" "$building"
    trap - EXIT
fi

if ! runuser -u postgres -- test -x "$prefix/bin/postgres"; then
    echo "error: the postgres user cannot run $prefix/bin/postgres; set PGCB_CASSERT_DIR to a directory it can reach" >&2
    exit 1
fi

# pg_cron, built for Debian's server (see above)
cp /usr/lib/postgresql/15/lib/pg_cron.so "$("$prefix/bin/pg_config" --pkglibdir)/"
cp /usr/share/postgresql/15/extension/pg_cron* "$("$prefix/bin/pg_config" --sharedir)/extension/"

echo "== the suite against $("$prefix/bin/postgres" --version), assertions on"
# PGCB_PG_BIN would win over PG_CONFIG (scripts/lib.sh): the programs are this build's
export PG_CONFIG="$prefix/bin/pg_config" PGCB_PG_BIN="$prefix/bin"
exec bash "$root/scripts/test.sh" "$@"
