#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests and benchmarks.
#
#   scripts/start-postgres.sh DATADIR PORT     -> prints the DSN on stdout
#   scripts/start-postgres.sh --stop DATADIR   -> stops that server and removes DATADIR
#
# Initialises DATADIR if it holds no cluster, starts postgres on 127.0.0.1:PORT with
# trust authentication (local test use only), waits until it accepts connections and
# prints postgresql://postgres@127.0.0.1:PORT/postgres.  PostgreSQL refuses to run as
# root, so as root the server runs as the "postgres" user (created if missing).
# When it starts the server (rather than finding it running) and PG_STARTED_FILE is set, it
# creates that file: `make test` stops only a server it started.
set -euo pipefail

STOP=
if [ "${1:-}" = "--stop" ]; then STOP=1; shift; fi

DATADIR=${1:?usage: start-postgres.sh DATADIR PORT | --stop DATADIR}
if [ -n "$STOP" ]; then PORT=; else PORT=${2:?usage: start-postgres.sh DATADIR PORT | --stop DATADIR}; fi

find_bin() {
  local name=$1 dir
  for dir in /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
  done
  command -v "$name" || { echo "start-postgres.sh: $name not found (install postgresql)" >&2; exit 1; }
}
INITDB=$(find_bin initdb)
PG_CTL=$(find_bin pg_ctl)
PG_ISREADY=$(find_bin pg_isready 2>/dev/null || true)

RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  mkdir -p "$DATADIR"
  chown postgres "$DATADIR"
  chmod 700 "$DATADIR"
  RUN_AS=(su postgres -s /bin/bash -c)
else
  mkdir -p "$DATADIR"
  chmod 700 "$DATADIR"
fi

run() {
  if [ ${#RUN_AS[@]} -gt 0 ]; then "${RUN_AS[@]}" "$(printf '%q ' "$@")"; else "$@"; fi
}

if [ -n "$STOP" ]; then
  if [ -f "$DATADIR/PG_VERSION" ]; then
    run "$PG_CTL" -D "$DATADIR" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DATADIR" "$DATADIR.initdb.log"
  exit 0
fi

if [ ! -f "$DATADIR/PG_VERSION" ]; then
  run "$INITDB" -D "$DATADIR" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$DATADIR.initdb.log" 2>&1 \
    || { cat "$DATADIR.initdb.log" >&2; exit 1; }
fi

if ! run "$PG_CTL" -D "$DATADIR" status >/dev/null 2>&1; then
  # Sockets in DATADIR (not /var/run/postgresql, which may not exist or be writable);
  # fsync stays on: the crash tests rely on committed data surviving.
  OPTS="-c listen_addresses=127.0.0.1 -p $PORT -k $DATADIR -c max_connections=200 -c shared_buffers=256MB"
  OPTS="$OPTS -c synchronous_commit=on -c max_wal_size=2GB -c checkpoint_timeout=15min"
  run "$PG_CTL" -D "$DATADIR" -l "$DATADIR/server.log" -o "$OPTS" -w -t 60 start >/dev/null \
    || { cat "$DATADIR/server.log" >&2; exit 1; }
  if [ -n "${PG_STARTED_FILE:-}" ]; then : > "$PG_STARTED_FILE"; fi
fi

for _ in $(seq 1 60); do
  if [ -n "$PG_ISREADY" ]; then
    "$PG_ISREADY" -h 127.0.0.1 -p "$PORT" -q && break
  else
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  fi
  sleep 0.5
done

echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
