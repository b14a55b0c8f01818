#!/bin/sh
# The hot standby. The first start copies the primary with pg_basebackup through its
# replication slot, then streams from it as $STANDBY_NAME, the name the primary's
# synchronous_standby_names waits for. A stream whose data goes unacknowledged for 5 s
# is dropped and opened again (tcp_user_timeout, keepalives): after a gateway failover
# that is sooner than TCP's retransmission backoff would try again.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  export PGPASSWORD="$POSTGRES_PASSWORD"
  until pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -X stream -S "$STANDBY_NAME" -c fast; do
    echo "waiting for the primary at $PRIMARY_HOST"
    rm -rf "$PGDATA"
    sleep 2
  done
  cat >>"$PGDATA/postgresql.auto.conf" <<CONF
primary_conninfo = 'host=$PRIMARY_HOST user=replicator password=$POSTGRES_PASSWORD application_name=$STANDBY_NAME connect_timeout=5 tcp_user_timeout=5000 keepalives_idle=2 keepalives_interval=1 keepalives_count=3'
primary_slot_name = '$STANDBY_NAME'
hot_standby = on
wal_receiver_timeout = 10s
wal_retrieve_retry_interval = 1s
CONF
  touch "$PGDATA/standby.signal"
fi
exec postgres -D "$PGDATA"
