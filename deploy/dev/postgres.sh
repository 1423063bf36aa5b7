#!/usr/bin/env bash
# Make sure a local PostgreSQL server answers for the store tests, and print its URL.
# Idempotent and quick once set up: exits at once if the test role can already log in to
# the test database. Else installs Debian's `postgresql` if it is missing, starts the
# cluster on SLMFLEET_PG_PORT (creating one if no cluster uses that port) listening on
# 127.0.0.1 only (CI machines have no systemd: pg_ctlcluster starts it), and creates the
# role and the database (UTF8, C collation, owned by the role). Progress goes to stderr
# and to $LOG; the last line on stdout is the SQLAlchemy URL. Run as root. SLMFLEET_PG_USER,
# SLMFLEET_PG_PASSWORD and SLMFLEET_PG_DB change the role, its password and the database.
set -euo pipefail

LOG="${POSTGRES_LOG:-/var/log/slmfleet-postgres.log}"
TIMEOUT_S="${POSTGRES_TIMEOUT_S:-60}"
PORT="${SLMFLEET_PG_PORT:-5432}"
ROLE="${SLMFLEET_PG_USER:-slmfleet}"
PASSWORD="${SLMFLEET_PG_PASSWORD:-slmfleet}"
DB="${SLMFLEET_PG_DB:-slmfleet_test}"
URL="postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"

logging=""  # set once this run writes to $LOG: only then is its tail worth showing
die() {
  echo "postgres.sh: error: $*" >&2
  if [ -n "$logging" ] && [ -f "$LOG" ]; then
    echo "last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
  fi
  exit 1
}

say() {
  echo "postgres.sh: $*" >&2
  echo "$(date '+%F %T') $*" 2>/dev/null >>"$LOG" || true
}

# names and the password go into SQL below: allow only plain identifiers
[[ "$ROLE" =~ ^[a-z_][a-z0-9_]*$ && "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] \
  || die "SLMFLEET_PG_USER and SLMFLEET_PG_DB must be lower-case identifiers"
[[ "$PASSWORD" =~ ^[A-Za-z0-9_.-]+$ ]] || die "SLMFLEET_PG_PASSWORD: letters, digits, _ . - only"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "SLMFLEET_PG_PORT must be a port number"

role_logs_in() {
  command -v psql >/dev/null || return 1
  PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=5 timeout 15 \
    psql -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" -qtAc 'SELECT 1' >/dev/null 2>&1
}

if role_logs_in; then
  say "PostgreSQL answers on 127.0.0.1:$PORT; $ROLE can use $DB"
  echo "$URL"
  exit 0
fi

[ "$(id -u)" -eq 0 ] \
  || die "PostgreSQL is not set up for the tests and setting it up needs root: sudo bash $0"
touch "$LOG"
logging=1

# --- the server package ---------------------------------------------------------------
server_version() {  # the newest installed server, e.g. 15
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$bin" ] && basename "$(dirname "$(dirname "$bin")")"
  done | sort -n | tail -n 1
}

if [ -z "$(server_version)" ] || ! command -v pg_ctlcluster >/dev/null; then
  say "installing Debian's postgresql (log: $LOG)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show postgresql >/dev/null 2>&1; then
    apt-get update -q >>"$LOG" 2>&1 || die "apt-get update failed"
  fi
  if ! apt-get install -y -q --no-install-recommends postgresql >>"$LOG" 2>&1; then
    say "apt-get install failed; updating the package lists and trying again"
    apt-get update -q >>"$LOG" 2>&1 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends postgresql >>"$LOG" 2>&1 \
      || die "apt-get install postgresql failed"
  fi
fi
VERSION="$(server_version)"
[ -n "$VERSION" ] || die "no PostgreSQL server under /usr/lib/postgresql after installing it"

# --- the cluster on $PORT ---------------------------------------------------------------
cluster_on_port() {  # "VERSION NAME STATUS" of the cluster using $PORT, if any
  pg_lsclusters -h | awk -v port="$PORT" '$3 == port { print $1, $2, $4; exit }'
}

read -r CVER CNAME CSTATUS <<<"$(cluster_on_port)" || true
if [ -z "${CNAME:-}" ]; then
  CVER="$VERSION"
  CNAME=main
  [ -d "/etc/postgresql/$CVER/main" ] && CNAME=slmfleet
  say "creating the PostgreSQL $CVER cluster '$CNAME' on port $PORT"
  pg_createcluster --port "$PORT" --encoding UTF8 --locale C.UTF-8 "$CVER" "$CNAME" \
    >>"$LOG" 2>&1 || die "pg_createcluster $CVER $CNAME failed"
  CSTATUS=down
fi

# listen on loopback only: this server is for tests, with a known password
CONF="/etc/postgresql/$CVER/$CNAME/conf.d/slmfleet.conf"
WANT="listen_addresses = '127.0.0.1'  # written by slmfleet deploy/dev/postgres.sh"
changed=""
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  mkdir -p "$(dirname "$CONF")"
  echo "$WANT" >"$CONF"
  changed=1
fi

if [[ "$CSTATUS" == online* ]]; then
  if [ -n "$changed" ]; then
    say "restarting PostgreSQL $CVER/$CNAME to listen on 127.0.0.1 only"
    pg_ctlcluster "$CVER" "$CNAME" restart >>"$LOG" 2>&1 \
      || die "pg_ctlcluster $CVER $CNAME restart failed (server log: /var/log/postgresql/)"
  fi
else
  say "starting PostgreSQL $CVER/$CNAME on 127.0.0.1:$PORT (log: /var/log/postgresql/)"
  # a server killed a moment ago may still hold its lock files: try again a few times
  for attempt in 1 2 3 4 5; do
    pg_ctlcluster "$CVER" "$CNAME" start >>"$LOG" 2>&1 && break
    [ "$attempt" -lt 5 ] \
      || die "pg_ctlcluster $CVER $CNAME start failed (server log: /var/log/postgresql/)"
    say "start failed (attempt $attempt); trying again in 2 s"
    sleep 2
  done
fi

deadline=$((SECONDS + TIMEOUT_S))
until pg_isready -q -h 127.0.0.1 -p "$PORT"; do
  [ $SECONDS -lt $deadline ] || die "PostgreSQL did not answer on 127.0.0.1:$PORT within ${TIMEOUT_S}s"
  sleep 1
done

# --- the role and the database ---------------------------------------------------------
as_postgres() {
  timeout 30 runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qtA "$@" 2>>"$LOG"
}

say "making sure role $ROLE and database $DB exist"
as_postgres -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
  ELSE
    ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
  END IF;
END \$\$;" >>"$LOG" || die "could not create role $ROLE"
if [ "$(as_postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  as_postgres -c "CREATE DATABASE $DB OWNER $ROLE ENCODING 'UTF8' LC_COLLATE 'C'
                  LC_CTYPE 'C' TEMPLATE template0" >>"$LOG" \
    || die "could not create database $DB"
else
  as_postgres -c "ALTER DATABASE $DB OWNER TO $ROLE" >>"$LOG" \
    || die "could not give database $DB to $ROLE"
fi

role_logs_in || die "$ROLE cannot log in to $DB on 127.0.0.1:$PORT with its password; \
check /etc/postgresql/$CVER/$CNAME/pg_hba.conf has a 'host all all 127.0.0.1/32 \
scram-sha-256' line"
say "PostgreSQL answers on 127.0.0.1:$PORT; $ROLE can use $DB"
echo "$URL"
