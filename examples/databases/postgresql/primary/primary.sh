#!/bin/sh
# The primary. The first start initialises the data directory: the replication role,
# the standby's physical replication slot (the primary keeps WAL the standby has not
# received, however long it is away) and the example's table; only then does
# synchronous_standby_names make every commit wait for the standby's flush.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  umask 077
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  initdb -D "$PGDATA" -U postgres --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C
  rm /tmp/pwfile
  cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
unix_socket_directories = '/tmp'
max_connections = 200
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
# Across clusters a path can vanish for seconds (a gateway failover): give up on a
# connection whose data goes unacknowledged for 5 s rather than wait out TCP's backoff,
# and notice a silent standby within 10 s.
tcp_user_timeout = 5000
wal_sender_timeout = 10s
CONF
  cat >>"$PGDATA/pg_hba.conf" <<HBA
host all all all scram-sha-256
host replication replicator all scram-sha-256
HBA
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
  psql -v ON_ERROR_STOP=1 -qX -h /tmp -U postgres -d postgres <<SQL
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '$POSTGRES_PASSWORD';
SELECT pg_create_physical_replication_slot('$STANDBY_NAME');
CREATE TABLE rows (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "synchronous_standby_names = '$STANDBY_NAME'" >>"$PGDATA/postgresql.conf"
fi
exec postgres -D "$PGDATA"
