#!/usr/bin/env bash
# Make sure a PostgreSQL answers on 127.0.0.1:5432 with trust auth for user postgres.
# Order: already running -> start the installed Debian cluster -> a throwaway initdb cluster.
set -euo pipefail
HOST=127.0.0.1 PORT=5432
ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null && psql -h "$HOST" -p "$PORT" -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; }
if ready; then echo "postgres: answering on $HOST:$PORT"; exit 0; fi

if [ -z "${KG_PG_SKIP_CLUSTER:-}" ] && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if [ -f "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || \
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  for _ in $(seq 1 30); do ready && { echo "postgres: started cluster $version/main"; exit 0; }; sleep 1; done
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bindir" ] || { echo "postgres: no server installed; apt-get install postgresql" >&2; exit 1; }
data=$(mktemp -d /tmp/kg-pg.XXXXXX)
chown postgres "$data"
su postgres -c "$bindir/initdb -D $data/data -A trust -U postgres >/dev/null"
su postgres -c "$bindir/pg_ctl -D $data/data -o '-h $HOST -p $PORT -k $data' -l $data/log -w start >/dev/null"
ready || { echo "postgres: could not start a server on $HOST:$PORT (log: $data/log)" >&2; exit 1; }
echo "postgres: started a temporary cluster in $data"
