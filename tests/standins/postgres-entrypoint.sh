#!/bin/sh
# The official image's first start, reduced to what the compose file uses: a cluster whose
# superuser is POSTGRES_USER with POSTGRES_PASSWORD, a database POSTGRES_DB, password
# (scram-sha-256) sign-in over the network; then the server, as the postgres user.
set -eu
if [ "$(id -u)" = 0 ]; then
    install -d -m 700 -o postgres -g postgres "$PGDATA"
    exec setpriv --reuid postgres --regid postgres --init-groups "$0" "$@"
fi
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 --pgdata="$PGDATA"
    rm "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start
    if [ "$database" != postgres ]; then
        createdb --username="$user" "$database"
    fi
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
fi
exec "$@"
