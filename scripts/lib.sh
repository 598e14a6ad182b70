# Shell helpers shared by test.sh and demo.sh: a throwaway PostgreSQL 15
# cluster run by the postgres user (PostgreSQL refuses to run as root).

# PG_CONFIG picks the PostgreSQL installation (default: the one on PATH);
# PGCB_PG_BIN overrides where its programs are.
PG_CONFIG=${PG_CONFIG:-pg_config}
PGBIN=${PGCB_PG_BIN:-$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
export PG_CONFIG PGCB_PG_BIN="$PGBIN"

# as_postgres CMD...: run a command as the postgres user when we are root.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# build_and_install SRC DEST: copy the source tree to DEST (owned by
# postgres, so pg_regress can write its results there), build it there and
# install it into PostgreSQL's directories.
build_and_install() {
    local src=$1 dest=$2
    mkdir -p "$dest"
    tar -C "$src" --exclude=.git --exclude=node_modules --exclude=.cassert -cf - . | tar -C "$dest" -xf -
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$dest"
    as_postgres make -C "$dest" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
    as_postgres make -C "$dest" -s PG_CONFIG="$PG_CONFIG"
    make -C "$dest" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
}

# start_cluster DIR PORT [extra postgresql.conf lines...]
start_cluster() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        for line in "$@"; do echo "$line"; done
    } >> "$dir/data/postgresql.conf"
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

stop_cluster() {
    local dir=$1
    [ -d "$dir/data" ] && as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
